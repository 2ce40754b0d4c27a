"""Dominant planes of the reconstructed surface: floor, walls, ceiling and support surfaces.

Planes are found by iterated RANSAC (Open3D ``PointCloud.segment_plane``) on the
surface nodes, each refined by a least-squares fit to the inliers whose surface
normal agrees with the plane. They are classified with the gravity ("up") direction:

- ``floor``: up-facing, at the bottom of the scene (almost no surface below it);
- ``ceiling``: down-facing, at the top of the scene;
- ``wall``: vertical, tall and large, with almost no surface behind it;
- ``support``: any other up-facing horizontal plane (table tops, counters, shelves);
- ``other``: the rest.

Floor, walls and ceiling are *structure*: their nodes are taken out of the object
proposals and become structure nodes of the scene graph. Support planes stay in
their objects (a table top is part of the table).

Frames and units: world frame of the map, metres. A plane is ``normal . x + offset = 0``
with ``normal`` pointing to the side the surface was observed from.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from scenegraph.surface import SurfaceGraph

STRUCTURE_KINDS = ("floor", "wall", "ceiling")


@dataclass
class Plane:
    """One dominant plane.

    Attributes:
        normal: (3,) unit normal, pointing to the observed side.
        offset: d in ``normal . x + d = 0``, metres.
        nodes: (M,) int64 surface nodes of the plane (inliers of the refined fit whose
            normals agree with it, or the structure region after :func:`structure_regions`).
        area_m2: surface area of ``nodes``.
        kind: "floor", "wall", "ceiling", "support" or "other".
    """

    normal: np.ndarray
    offset: float
    nodes: np.ndarray
    area_m2: float
    kind: str = "other"
    extent: dict = field(default_factory=dict)

    def signed_distance(self, points: np.ndarray) -> np.ndarray:
        """(N,) signed distance of (N, 3) points, positive on the observed side, metres."""
        return np.asarray(points, dtype=np.float64) @ self.normal + self.offset

    @property
    def is_structure(self) -> bool:
        return self.kind in STRUCTURE_KINDS

    def to_json(self) -> dict:
        return {
            "kind": self.kind,
            "normal": [round(float(x), 6) for x in self.normal],
            "offset": round(float(self.offset), 6),
            "area_m2": round(float(self.area_m2), 4),
            "nodes": len(self.nodes),
        }


@dataclass
class PlaneConfig:
    """Settings of plane detection and classification."""

    distance_m: float | None = None
    """RANSAC inlier distance, metres; default 0.6 x the node size (at least 1.5 cm)."""
    normal_tol_deg: float = 25.0
    """Inliers must have a surface normal within this angle of the plane normal."""
    min_area_m2: float = 0.3
    """Smallest plane kept, square metres (smaller ones cannot be floor, wall or ceiling)."""
    max_planes: int = 16
    """Stop after this many planes."""
    iterations: int = 500
    """RANSAC iterations per plane."""
    sample_points: int = 10000
    """RANSAC searches a random subsample of this many nodes (the fit is refined on all)."""
    horizontal_tol_deg: float = 12.0
    """A plane is horizontal / vertical within this angle."""
    floor_min_area_m2: float = 0.5
    """Smallest floor or ceiling, square metres."""
    wall_min_area_m2: float = 0.8
    """Smallest wall, square metres."""
    wall_min_height_m: float = 1.0
    """Smallest vertical extent of a wall, metres."""
    outside_max_fraction: float = 0.03
    """Floor, ceiling and walls bound the scene: at most this fraction of the surface
    may lie more than ``outside_margin_m`` beyond them."""
    outside_margin_m: float = 0.1
    """See ``outside_max_fraction``."""
    against_wall_m: float = 0.3
    """A vertical plane this close in front of a larger parallel wall is furniture standing
    against the wall (a shelf's back panel), not a wall."""
    seed: int = 0
    """Seed of Open3D's RANSAC sampling."""

    def inlier_distance(self, node_size_m: float) -> float:
        return self.distance_m if self.distance_m is not None else max(0.015, 0.6 * node_size_m)


def fit_plane(points: np.ndarray, weights: np.ndarray | None = None) -> tuple[np.ndarray, float]:
    """Least-squares plane through (N, 3) points: unit normal (3,) and offset d (sign arbitrary)."""
    w = np.ones(len(points)) if weights is None else np.asarray(weights, dtype=np.float64)
    c = (points * w[:, None]).sum(axis=0) / w.sum()
    q = (points - c) * np.sqrt(w)[:, None]
    _, _, vt = np.linalg.svd(q, full_matrices=False)
    n = vt[-1]
    return n, float(-n @ c)


def detect_planes(graph: SurfaceGraph, config: PlaneConfig | None = None) -> list[Plane]:
    """Dominant planes of a surface graph by iterated RANSAC (unclassified: kind "other").

    Each RANSAC plane is refined: least-squares refits to the nodes within half the inlier
    distance whose normal is within ``normal_tol_deg`` of the plane (either sign), twice;
    the inliers are then the nodes within the full distance with such normals, and the
    normal is oriented like their surface normals. All RANSAC inliers
    leave the pool whether or not the refined plane is kept.
    """
    import open3d as o3d

    cfg = config or PlaneConfig()
    dist = cfg.inlier_distance(graph.node_size_m)
    cos_tol = np.cos(np.radians(cfg.normal_tol_deg))
    o3d.utility.random.seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    pool = np.arange(len(graph))
    planes: list[Plane] = []
    failures = 0
    while len(planes) < cfg.max_planes and len(pool) >= 50 and failures < 3:
        # search on a random subsample (RANSAC cost ~ iterations x points), refine on all
        sample = pool if len(pool) <= cfg.sample_points else np.sort(rng.choice(pool, cfg.sample_points, replace=False))
        pcd = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(graph.points[sample]))
        model, idx = pcd.segment_plane(dist, 3, cfg.iterations)
        if len(idx) < 10:
            break
        n = np.asarray(model[:3], dtype=np.float64)
        d = float(model[3]) / np.linalg.norm(n)
        n = n / np.linalg.norm(n)
        ransac_inl = pool[np.abs(graph.points[pool] @ n + d) <= dist]
        inl = ransac_inl
        # refit with a shrinking band, so a plane does not settle between two parallel
        # surfaces a little apart (a wall and the back of a shelf against it)
        for band in (0.5 * dist, 0.5 * dist, 0.5 * dist, dist):
            d = _densest_offset(graph, pool, n, d, dist, cos_tol)
            cand = pool[np.abs(graph.points[pool] @ n + d) <= band]
            inl = cand[np.abs(graph.normals[cand] @ n) >= cos_tol]
            if len(inl) < 3:
                break
            if band < dist:
                n, d = fit_plane(graph.points[inl], graph.area_m2[inl])
        pool = np.setdiff1d(pool, ransac_inl, assume_unique=True)
        area = float(graph.area_m2[inl].sum()) if len(inl) else 0.0
        if len(inl) < 3 or area < cfg.min_area_m2:
            failures += 1
            continue
        failures = 0
        if graph.normals[inl] @ n @ graph.area_m2[inl] < 0:
            n, d = -n, -d
        pool = np.setdiff1d(pool, inl, assume_unique=False)
        planes.append(Plane(n, d, inl, area))
    return planes


def _densest_offset(graph: SurfaceGraph, pool: np.ndarray, n: np.ndarray, d: float, dist: float, cos_tol: float) -> float:
    """Shift the offset ``d`` of plane (n, d) to the densest layer of aligned nodes within ``2 dist``.

    Signed distances of the nodes near the plane whose normals agree with it are
    histogrammed (area-weighted, 2 mm bins, smoothed over 5 bins); the plane moves to the peak.
    """
    s = graph.points[pool] @ n + d
    near = (np.abs(s) <= 2 * dist) & (np.abs(graph.normals[pool] @ n) >= cos_tol)
    if near.sum() < 10:
        return d
    bins = np.arange(-2 * dist, 2 * dist + 0.002, 0.002)
    hist, edges = np.histogram(s[near], bins=bins, weights=graph.area_m2[pool][near])
    hist = np.convolve(hist, np.ones(5), mode="same")
    k = int(np.argmax(hist))
    return d - 0.5 * (edges[k] + edges[k + 1])


def estimate_up(planes: list[Plane], hint: np.ndarray, max_angle_deg: float = 30.0) -> np.ndarray:
    """Gravity "up" (3,) unit vector: the normal of the largest up-facing plane near ``hint``.

    Floors and table tops are perpendicular to gravity, so the largest plane whose
    normal is within ``max_angle_deg`` of ``hint`` (e.g. the cameras' mean up axis) gives
    a precise up direction. Falls back to ``hint`` when no plane qualifies.
    """
    h = np.asarray(hint, dtype=np.float64)
    h = h / np.linalg.norm(h)
    cands = [p for p in planes if p.normal @ h >= np.cos(np.radians(max_angle_deg))]
    if not cands:
        return h
    best = max(cands, key=lambda p: p.area_m2)
    return best.normal / np.linalg.norm(best.normal)


def classify_planes(
    planes: list[Plane], graph: SurfaceGraph, up: np.ndarray, config: PlaneConfig | None = None
) -> list[Plane]:
    """Set each plane's ``kind`` (floor, ceiling, wall, support, other) using ``up`` (3,).

    At most one floor and one ceiling (the lowest / highest qualifying plane); any number
    of walls, taken largest first, except planes standing just in front of a larger wall. ``extent`` gets the plane's height range along ``up`` (metres).
    """
    cfg = config or PlaneConfig()
    up = np.asarray(up, dtype=np.float64) / np.linalg.norm(up)
    cos_h = np.cos(np.radians(cfg.horizontal_tol_deg))
    sin_v = np.sin(np.radians(cfg.horizontal_tol_deg))
    heights = graph.points @ up
    total = float(graph.area_m2.sum())

    def outside_fraction(p: Plane) -> float:
        behind = p.signed_distance(graph.points) < -cfg.outside_margin_m
        return float(graph.area_m2[behind].sum()) / max(total, 1e-12)

    floor = ceiling = None
    walls: list[Plane] = []
    for p in sorted(planes, key=lambda q: -q.area_m2):
        h = heights[p.nodes]
        p.extent = {"height_min_m": float(h.min()), "height_max_m": float(h.max())}
        c = float(p.normal @ up)
        if c >= cos_h:
            p.kind = "support"
            bounding = p.area_m2 >= cfg.floor_min_area_m2 and outside_fraction(p) <= cfg.outside_max_fraction
            if bounding and (floor is None or -p.offset < -floor.offset):
                floor = p
        elif c <= -cos_h:
            bounding = p.area_m2 >= cfg.floor_min_area_m2 and outside_fraction(p) <= cfg.outside_max_fraction
            if bounding and (ceiling is None or p.offset > ceiling.offset):
                ceiling = p
        elif abs(c) <= sin_v:
            centre = np.average(graph.points[p.nodes], axis=0, weights=graph.area_m2[p.nodes])
            against = any(
                w.normal @ p.normal >= cos_h and 0 < float(w.signed_distance(centre[None])[0]) <= cfg.against_wall_m
                for w in walls
            )
            if (
                not against
                and p.area_m2 >= cfg.wall_min_area_m2
                and float(h.max() - h.min()) >= cfg.wall_min_height_m
                and outside_fraction(p) <= cfg.outside_max_fraction
            ):
                p.kind = "wall"
                walls.append(p)
    if floor is not None:
        floor.kind = "floor"
    if ceiling is not None:
        ceiling.kind = "ceiling"
    return planes


def structure_regions(
    planes: list[Plane],
    graph: SurfaceGraph,
    band_m: float | None = None,
    rough_band_m: float | None = None,
    rough_cos: float = 0.8,
) -> np.ndarray:
    """Assign surface nodes to the structure planes (floor, walls, ceiling).

    A structure plane's region is every node that is mesh-connected, through such nodes,
    to one of its inliers and either lies within ``band_m`` of the plane (any normal: the
    rounded creases where furniture meets the floor or a wall) or within ``rough_band_m``
    with a normal within ``arccos(rough_cos)`` of the plane's (a wall far from the camera
    is reconstructed rough: depth noise grows with the square of the distance). Surfaces
    that merely lie in the plane's extension elsewhere are not taken. Each plane's
    ``nodes`` is replaced by its region.

    Args:
        band_m: default 0.6 node sizes, at least 1.5 cm.
        rough_band_m: default 2 node sizes, at least 4 cm.
    Returns:
        (N,) int64: index into ``planes`` of the structure plane owning each node, -1 for
        nodes that are not structure.
    """
    owner = np.full(len(graph), -1, np.int64)
    band = band_m if band_m is not None else max(0.015, 0.6 * graph.node_size_m)
    rough = rough_band_m if rough_band_m is not None else max(0.04, 2.0 * graph.node_size_m)
    for k, p in enumerate(planes):
        if not p.is_structure:
            continue
        d = np.abs(p.signed_distance(graph.points))
        near = (d <= band) | ((d <= rough) & (graph.normals @ p.normal >= rough_cos))
        near[p.nodes] = True
        idx = np.flatnonzero(near)
        if len(idx) == 0:
            continue
        sub, remap = graph.subset(near)
        n = len(sub)
        adj = coo_matrix((np.ones(len(sub.edges)), (sub.edges[:, 0], sub.edges[:, 1])), shape=(n, n))
        _, comp = connected_components(adj, directed=False)
        seeds = np.unique(comp[remap[p.nodes]])
        region = idx[np.isin(comp, seeds)]
        region = region[owner[region] < 0]
        owner[region] = k
        p.nodes = region
        p.area_m2 = float(graph.area_m2[region].sum())
    return owner
