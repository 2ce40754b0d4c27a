"""Reconstruction metrics: accuracy, completion, completion ratio, precision / recall / F-score, Chamfer-L1.

Frames and units: both geometries are in the same world frame, metres. Errors are
unsigned Euclidean distances in metres (figures show centimetres).

Definitions (R = points on the reconstruction, G = points on the ground truth):

- accuracy      = mean over r in R of dist(r, GT)      (also the median)
- completion    = mean over g in G of dist(g, recon)   (also the median)
- completion ratio = fraction of G with dist(g, recon) < ``completion_ratio_threshold_m`` (5 cm)
- precision(t)  = fraction of R with dist < t;  recall(t) = fraction of G with dist < t;
  F-score(t) = 2 P R / (P + R) (0 when both are 0); thresholds default to 1, 2 and 5 cm.
- Chamfer-L1    = (accuracy + completion) / 2.

Protocol (written into ``ReconMetrics.protocol`` and the JSON, because numbers from
different papers are only comparable under the same protocol):

``mode="samples"`` (NICE-SLAM style): ``num_samples`` points are drawn uniformly by
area on each mesh (point clouds are randomly subsampled to ``num_samples`` if larger,
else used whole); distances are nearest-neighbour distances between the two sample
sets (scipy ``cKDTree``). The target side is itself a sample set, so even a perfect
reconstruction scores a *sampling floor* of about half the sample spacing,
``0.5 / sqrt(num_samples / area)``: measured on the Replica office0 ground-truth mesh
(101 m^2) against itself, 200k samples give accuracy = completion = 1.12 cm (F-score
at 1 cm only 46 %) and 1M samples 0.50 cm (F-score at 1 cm 96 %). This is why a reconstruction that is 1.3 mm from the true surface is
reported near 1.1 cm by NICE-SLAM-protocol tables, and why F-score at 1 cm is
depressed in that mode. Numbers from this mode are only comparable at the same
``num_samples`` and the same culling.

``mode="exact"``: the same sampled query points, but distances are point-to-triangle
distances to the other *mesh surface* (Open3D ``RaycastingScene.compute_distance``),
so there is no floor on the target side (the ground truth against itself scores ~0).
A point-cloud target has no surface; distances to it are nearest-point distances to
all of its points.

Sampling: triangles are chosen with probability proportional to area and points
placed with uniform barycentric coordinates, with ``numpy.random.default_rng`` seeded
from ``SeedSequence(seed).spawn(2)`` (one stream for the reconstruction, one for the
ground truth, so the same mesh on both sides does not give identical samples).
Results are reproducible for a given seed.

Culling (optional, ``Culling``): the ground truth is restricted to what the cameras
saw. The GT mesh's depth is rendered per pose (one ray through every pixel centre,
``RaycastingScene.cast_rays``); a GT sample point is kept if, for at least one pose,
it lies in front of the camera, projects inside the image (nearest pixel), is within
``max_depth_m`` (if set) and its depth is <= rendered GT depth at that pixel +
``eps_m`` (frustum + occlusion test). The culled GT points are the completion side. By
default accuracy is still measured against the whole GT; with
``accuracy_target="culled"`` it is measured against the culled GT too (samples mode:
culled GT samples; exact mode: the mesh-level variant, the GT triangles hit by at least
one pixel ray). Whole-mesh and culled numbers differ a lot (unseen GT counts as
missing in completion): on office0 with 100 poses (every 20th), 24 % of the GT area is
never seen. The protocol records what was done, with epsilon, pose count and kept
fractions. The reconstruction itself is never culled.

Cost (2 CPU cores): exact mode with 1M samples takes ~3 s on office0 against itself
and ~20 s against a 3.2M-triangle reconstruction (samples mode about the same).
Culling adds one H x W ray cast plus one projection of the not-yet-seen GT samples
per pose: ~17 s for 100 poses of 1200x680 with 1M samples (rendering at
``camera.scaled(0.5)`` saves little there; subsample the poses instead).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy.spatial import cKDTree

from sensors.camera import Camera
from sensors.frame import check_pose

DEFAULT_THRESHOLDS_M: tuple[float, ...] = (0.01, 0.02, 0.05)
"""Precision / recall / F-score thresholds, metres."""
DEFAULT_NUM_SAMPLES = 200_000
"""Points sampled per mesh (NICE-SLAM uses 200k)."""
MODES = ("exact", "samples")
_INVALID_PRIMITIVE = 4294967295  # RaycastingScene.INVALID_ID (uint32 max)
_POINT_CLOUD_SUFFIXES = {".pcd", ".xyz", ".xyzn", ".xyzrgb", ".pts"}
_MESH_SUFFIXES = {".ply", ".obj", ".off", ".stl", ".gltf", ".glb"}


# ---------------------------------------------------------------------------- geometry
@dataclass
class Surface:
    """A triangle mesh (``triangles`` set) or a point cloud (``triangles`` None), world frame.

    Attributes:
        vertices: (V, 3) float64 positions, metres.
        triangles: (T, 3) int64 vertex indices, or None for a point cloud.
        name: where it came from (file path or type), for messages.
    """

    vertices: np.ndarray
    triangles: np.ndarray | None = None
    name: str = ""
    is_canonical: bool = field(default=False, repr=False, compare=False)
    """Set by :meth:`canonical`: the order already depends only on the geometry."""

    def __post_init__(self) -> None:
        self.vertices = np.ascontiguousarray(self.vertices, dtype=np.float64)
        where = self.name or "geometry"
        if self.vertices.ndim != 2 or self.vertices.shape[1] != 3:
            raise ValueError(f"{where}: vertices must be (N, 3), got {self.vertices.shape}")
        if len(self.vertices) == 0:
            raise ValueError(f"{where}: geometry has no points")
        if not np.all(np.isfinite(self.vertices)):
            raise ValueError(f"{where}: geometry has non-finite vertex coordinates")
        if self.triangles is not None:
            self.triangles = np.ascontiguousarray(self.triangles, dtype=np.int64)
            if self.triangles.ndim != 2 or self.triangles.shape[1] != 3:
                raise ValueError(f"{where}: triangles must be (T, 3), got {self.triangles.shape}")
            if len(self.triangles) == 0:
                self.triangles = None
            elif self.triangles.min() < 0 or self.triangles.max() >= len(self.vertices):
                raise ValueError(f"{where}: triangle indices out of range [0, {len(self.vertices)})")

    @property
    def is_mesh(self) -> bool:
        return self.triangles is not None

    def describe(self) -> str:
        if self.is_mesh:
            return f"mesh ({len(self.vertices)} vertices, {len(self.triangles)} triangles)"
        return f"point cloud ({len(self.vertices)} points)"

    def triangle_areas(self) -> np.ndarray:
        """(T,) triangle areas in m^2 (mesh only)."""
        if self.triangles is None:
            raise ValueError(f"{self.name or 'geometry'}: a point cloud has no triangles")
        v = self.vertices
        t = self.triangles
        return 0.5 * np.linalg.norm(np.cross(v[t[:, 1]] - v[t[:, 0]], v[t[:, 2]] - v[t[:, 0]]), axis=1)

    def canonical(self) -> Surface:
        """The same geometry in an order that depends only on it (:func:`canonical_triangles`;
        a point cloud's points sorted by coordinate key); itself when already canonical."""
        if self.is_canonical:
            return self
        if self.triangles is None:
            order = np.argsort(_coordinate_keys(self.vertices), kind="stable")
            return Surface(self.vertices[order], None, self.name, is_canonical=True)
        return Surface(self.vertices, canonical_triangles(self.vertices, self.triangles), self.name, is_canonical=True)

    def submesh(self, triangle_mask: np.ndarray) -> Surface:
        """The mesh made of the triangles where ``triangle_mask`` (T,) is True (vertices kept)."""
        if self.triangles is None:
            raise ValueError(f"{self.name or 'geometry'}: a point cloud has no triangles")
        kept = self.triangles[np.asarray(triangle_mask, dtype=bool)]
        if len(kept) == 0:
            raise ValueError(f"{self.name or 'geometry'}: no triangle left after culling")
        return Surface(self.vertices, kept, name=f"{self.name} (culled)")


def _ply_face_count(path: Path) -> int:
    """Number of faces declared in a PLY header (0 for a point-cloud PLY)."""
    with open(path, "rb") as f:
        if f.readline().strip() != b"ply":
            raise ValueError(f"{path}: not a PLY file (missing 'ply' magic)")
        for _ in range(1000):
            line = f.readline()
            if not line:
                break
            parts = line.split()
            if parts[:2] == [b"element", b"face"] and len(parts) == 3:
                return int(parts[2])
            if parts[:1] == [b"end_header"]:
                break
    return 0


def _read_surface_file(path: Path) -> Surface:
    import open3d as o3d

    if not path.is_file():
        raise FileNotFoundError(f"missing geometry file: {path}")
    suffix = path.suffix.lower()
    if suffix not in _MESH_SUFFIXES | _POINT_CLOUD_SUFFIXES:
        raise ValueError(f"{path}: unsupported geometry file type {suffix!r}")
    as_mesh = suffix in _MESH_SUFFIXES and (suffix != ".ply" or _ply_face_count(path) > 0)
    if as_mesh:
        mesh = o3d.io.read_triangle_mesh(str(path))
        v, t = np.asarray(mesh.vertices), np.asarray(mesh.triangles)
        if len(v) == 0:
            raise ValueError(f"{path}: Open3D read no vertices from this file")
        return Surface(v, t if len(t) else None, name=str(path))
    pcd = o3d.io.read_point_cloud(str(path))
    if len(pcd.points) == 0:
        raise ValueError(f"{path}: Open3D read no points from this file")
    return Surface(np.asarray(pcd.points), None, name=str(path))


def load_surface(src: Any, name: str = "") -> Surface:
    """Turn any supported geometry into a :class:`Surface`.

    Args:
        src: a ``Surface``; a path to a mesh (.ply with faces, .obj, .off, .stl, .gltf, .glb)
            or point cloud (.ply without faces, .pcd, .xyz, .pts); a legacy or tensor Open3D
            ``TriangleMesh`` / ``PointCloud``; or an (N, 3) array of points.
        name: label for messages (defaults to the path or type).
    """
    if isinstance(src, Surface):
        return src
    if isinstance(src, (str, Path)):
        return _read_surface_file(Path(src))
    if isinstance(src, np.ndarray):
        return Surface(src, None, name or "array")
    import open3d as o3d

    if isinstance(src, o3d.geometry.TriangleMesh):
        t = np.asarray(src.triangles)
        return Surface(np.asarray(src.vertices), t if len(t) else None, name or "TriangleMesh")
    if isinstance(src, o3d.geometry.PointCloud):
        return Surface(np.asarray(src.points), None, name or "PointCloud")
    if isinstance(src, o3d.t.geometry.TriangleMesh):
        v = src.vertex.positions.cpu().numpy()
        t = src.triangle.indices.cpu().numpy() if "indices" in src.triangle else None
        return Surface(v, t, name or "t.TriangleMesh")
    if isinstance(src, o3d.t.geometry.PointCloud):
        return Surface(src.point.positions.cpu().numpy(), None, name or "t.PointCloud")
    raise TypeError(f"cannot evaluate a {type(src).__name__}: pass a path, an Open3D mesh/cloud or an (N, 3) array")


def _coordinate_keys(coords: np.ndarray) -> np.ndarray:
    """(N,) uint64 keys of (N, K) float64 coordinate rows that depend only on their values
    (a multiply-xorshift hash of the bit patterns; equal rows, equal keys)."""
    bits = np.ascontiguousarray(coords, dtype=np.float64).view(np.uint64)
    key = np.zeros(len(bits), np.uint64)
    with np.errstate(over="ignore"):
        for k in range(bits.shape[1]):
            key ^= bits[:, k] + np.uint64(0x9E3779B97F4A7C15) + (key << np.uint64(6)) + (key >> np.uint64(2))
            key *= np.uint64(0xBF58476D1CE4E5B9)
            key ^= key >> np.uint64(31)
    return key


def canonical_triangles(vertices: np.ndarray, triangles: np.ndarray) -> np.ndarray:
    """``triangles`` (T, 3) in an order that depends only on the geometry, not on how the
    vertices and triangles are numbered: each triangle starts at the corner with the
    smallest coordinate key (winding kept), triangles sorted by the key of their corners.

    Open3D's marching cubes emits the same surface in a different order from run to run
    (its hash map's block order), so sampling must not depend on the order. About 2 s per
    million triangles.
    """
    vertex_keys = _coordinate_keys(vertices)
    corner_keys = vertex_keys[triangles]
    first = corner_keys.argmin(axis=1)
    turn = (first[:, None] + np.arange(3)) % 3
    rotated = np.take_along_axis(triangles, turn, axis=1)
    keys = _coordinate_keys(np.take_along_axis(corner_keys, turn, axis=1).view(np.float64))
    return rotated[np.argsort(keys, kind="stable")]


def sample_surface(surface: Surface, num_points: int, rng: np.random.Generator) -> np.ndarray:
    """Points on a surface, (n, 3) float64; the same points for the same geometry and ``rng``
    whatever the order of its vertices and triangles (:meth:`Surface.canonical`).

    Mesh: ``num_points`` points uniform by area (triangle chosen with probability
    proportional to its area, uniform barycentric coordinates). Point cloud: a random
    subset of ``num_points`` points without replacement, or all points if it has fewer.
    """
    if num_points <= 0:
        raise ValueError(f"num_points must be positive, got {num_points}")
    surface = surface.canonical()
    v = surface.vertices
    if surface.triangles is None:
        if len(v) <= num_points:
            return v.copy()
        return v[np.sort(rng.choice(len(v), size=num_points, replace=False))]
    t = surface.triangles
    cdf = np.cumsum(surface.triangle_areas())
    total = cdf[-1]
    if not total > 0:
        raise ValueError(f"{surface.name or 'mesh'}: mesh has zero surface area")
    tri = np.minimum(np.searchsorted(cdf, rng.random(num_points) * total, side="right"), len(t) - 1)
    r1 = np.sqrt(rng.random(num_points))[:, None]
    r2 = rng.random(num_points)[:, None]
    a, b, c = v[t[tri, 0]], v[t[tri, 1]], v[t[tri, 2]]
    return (1.0 - r1) * a + r1 * (1.0 - r2) * b + (r1 * r2) * c


class _MeshScene:
    """An Open3D ``RaycastingScene`` of a mesh, shifted to the mesh centroid for float32 precision."""

    def __init__(self, surface: Surface) -> None:
        import open3d as o3d

        if surface.triangles is None:
            raise ValueError(f"{surface.name or 'geometry'}: a point cloud has no surface to raycast")
        self.o3d = o3d
        self.origin = surface.vertices.mean(axis=0)
        mesh = o3d.t.geometry.TriangleMesh()
        mesh.vertex.positions = o3d.core.Tensor((surface.vertices - self.origin).astype(np.float32))
        mesh.triangle.indices = o3d.core.Tensor(surface.triangles.astype(np.int32))
        self.scene = o3d.t.geometry.RaycastingScene()
        self.scene.add_triangles(mesh)

    def distance(self, points: np.ndarray, batch_size: int = 1_000_000) -> np.ndarray:
        """(N,) float64 unsigned distance of (N, 3) world points to the mesh surface, metres."""
        out = np.empty(len(points), dtype=np.float64)
        for s in range(0, len(points), batch_size):
            q = (points[s : s + batch_size] - self.origin).astype(np.float32)
            out[s : s + batch_size] = self.scene.compute_distance(self.o3d.core.Tensor(q)).numpy()
        return out

    def render(
        self, camera: Camera, T_world_cam: np.ndarray, pixel_rays: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Cast one ray per pixel centre.

        Args:
            camera: intrinsics of the rendered image.
            T_world_cam: (4, 4) camera-to-world pose.
            pixel_rays: ``camera.pixel_rays()`` as float32 (pass it when rendering many poses).
        Returns:
            depth: (H, W) float32 z-depth in metres along the optical axis (inf = no hit);
            primitive_ids: (H, W) int64 hit triangle index, -1 = no hit.
        """
        if pixel_rays is None:
            pixel_rays = camera.pixel_rays().astype(np.float32)
        R = T_world_cam[:3, :3].astype(np.float32)
        rays = np.empty(pixel_rays.shape[:2] + (6,), dtype=np.float32)
        rays[..., :3] = (T_world_cam[:3, 3] - self.origin).astype(np.float32)
        rays[..., 3:] = pixel_rays @ R.T  # z = 1 in the camera frame, so t_hit is z-depth
        hit = self.scene.cast_rays(self.o3d.core.Tensor(rays))
        depth = hit["t_hit"].numpy()
        prim = hit["primitive_ids"].numpy().astype(np.int64)
        prim[prim == _INVALID_PRIMITIVE] = -1
        return depth, prim


def distance_to_surface(points: np.ndarray, surface: Surface) -> np.ndarray:
    """(N,) float64 distance of (N, 3) points to ``surface``: point-to-triangle for a mesh
    (Open3D RaycastingScene), nearest point for a cloud (scipy cKDTree), metres."""
    points = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    if surface.is_mesh:
        return _MeshScene(surface).distance(points)
    return nearest_distance(points, surface.vertices)


def nearest_distance(points: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """(N,) float64 distance from each of (N, 3) ``points`` to its nearest of (M, 3) ``targets``."""
    d, _ = cKDTree(np.asarray(targets, dtype=np.float64)).query(np.asarray(points, dtype=np.float64), k=1, workers=-1)
    return np.asarray(d, dtype=np.float64)


# ---------------------------------------------------------------------------- culling
@dataclass
class Culling:
    """Restrict the ground truth to what a set of cameras saw (frustum + occlusion test).

    Attributes:
        camera: intrinsics used to render the GT depth (pass ``camera.scaled(0.5)`` to
            render at half resolution, 4x faster, slightly coarser occlusion test).
        T_world_cam: (P, 4, 4) camera-to-world poses (subsample long sequences, e.g. every
            10th frame: each pose costs one render of H x W rays).
        eps_m: a point counts as seen if its depth <= rendered GT depth + eps_m (metres).
        max_depth_m: points (and triangle hits) farther than this along the optical axis
            are not seen (sensor range); None = unlimited.
        accuracy_target: "whole": accuracy is measured against the whole GT (only
            completion uses the culled GT; a reconstruction point is judged by how close it
            is to the true surface, wherever it is). "culled": accuracy against the culled
            GT as well (peers that cull the GT mesh itself: culled GT samples in samples
            mode, the GT triangles hit by a pixel ray in exact mode); reconstructed surface
            the culling test did not count as seen then scores large errors.
    """

    camera: Camera
    T_world_cam: np.ndarray
    eps_m: float = 0.03
    max_depth_m: float | None = None
    accuracy_target: str = "whole"

    def __post_init__(self) -> None:
        poses = np.asarray(self.T_world_cam, dtype=np.float64)
        if poses.ndim == 2:
            poses = poses[None]
        if poses.ndim != 3 or poses.shape[1:] != (4, 4) or len(poses) == 0:
            raise ValueError(f"culling poses must be (P, 4, 4) with P >= 1, got {poses.shape}")
        self.T_world_cam = np.stack([check_pose(T, f"culling pose {i}") for i, T in enumerate(poses)])
        if not self.eps_m >= 0:
            raise ValueError(f"eps_m must be >= 0, got {self.eps_m}")
        if self.max_depth_m is not None and not self.max_depth_m > 0:
            raise ValueError(f"max_depth_m must be positive or None, got {self.max_depth_m}")
        if self.accuracy_target not in ("whole", "culled"):
            raise ValueError(f"accuracy_target must be 'whole' or 'culled', got {self.accuracy_target!r}")

    def describe(self) -> dict[str, Any]:
        return {
            "method": "frustum+depth",
            "eps_m": float(self.eps_m),
            "max_depth_m": None if self.max_depth_m is None else float(self.max_depth_m),
            "num_poses": len(self.T_world_cam),
            "camera": self.camera.to_dict(),
            "accuracy_target": self.accuracy_target,
        }


def visibility(
    surface: Surface, points: np.ndarray, culling: Culling, scene: _MeshScene | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Which points of a mesh, and which of its triangles, the cameras saw.

    Args:
        surface: the GT mesh (occluder and triangle source).
        points: (N, 3) world points (usually samples on ``surface``).
        culling: cameras, poses and tolerance.
        scene: a prebuilt scene of ``surface`` (optional).
    Returns:
        point_visible: (N,) bool, seen by at least one pose (frustum + depth test);
        triangle_hit: (T,) bool, hit by at least one pixel ray (within ``max_depth_m``).
    """
    scene = scene or _MeshScene(surface)
    cam = culling.camera
    points = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    visible = np.zeros(len(points), dtype=bool)
    hit = np.zeros(len(surface.triangles), dtype=bool)
    rays = cam.pixel_rays().astype(np.float32)
    # Work in float32, relative to the scene origin, on the points not yet seen.
    todo = np.arange(len(points))
    rest = (points - scene.origin).astype(np.float32)
    for T in culling.T_world_cam:
        depth, prim = scene.render(cam, T, rays)
        if culling.max_depth_m is not None:
            prim = np.where(depth <= culling.max_depth_m, prim, -1)
        hit[prim[prim >= 0]] = True
        if len(todo) == 0:
            continue
        R = T[:3, :3].astype(np.float32)
        p_cam = (rest - (T[:3, 3] - scene.origin).astype(np.float32)) @ R  # R^T (p - c), row-wise
        z = p_cam[:, 2]
        front = np.flatnonzero(z > 1e-6 if culling.max_depth_m is None else (z > 1e-6) & (z <= culling.max_depth_m))
        zf = z[front]
        u = np.round(cam.fx * p_cam[front, 0] / zf + cam.cx)
        v = np.round(cam.fy * p_cam[front, 1] / zf + cam.cy)
        inside = (u >= 0) & (u < cam.width) & (v >= 0) & (v < cam.height)
        idx = front[inside]
        # z-depth test against the rendered GT; no hit (inf) at the pixel centre: nothing occludes.
        seen = z[idx] <= depth[v[inside].astype(np.int64), u[inside].astype(np.int64)] + culling.eps_m
        if seen.any():
            visible[todo[idx[seen]]] = True
            keep = np.ones(len(todo), dtype=bool)
            keep[idx[seen]] = False
            todo, rest = todo[keep], rest[keep]
    return visible, hit


# ---------------------------------------------------------------------------- metrics
@dataclass
class ReconErrors:
    """Per-point errors behind the summary numbers (for figures; not written to JSON).

    Attributes:
        recon_points: (N, 3) query points on the reconstruction, world frame, metres.
        accuracy_m: (N,) distance of each to the ground truth.
        gt_points: (M, 3) query points on the ground truth (after culling).
        completion_m: (M,) distance of each to the reconstruction.
    """

    recon_points: np.ndarray
    accuracy_m: np.ndarray
    gt_points: np.ndarray
    completion_m: np.ndarray


@dataclass
class ReconMetrics:
    """Reconstruction quality; distances in metres, ratios in [0, 1].

    ``precision``, ``recall`` and ``fscore`` are aligned with ``thresholds_m``.
    ``protocol`` says how the numbers were obtained (see the module docstring).
    """

    accuracy_m: float
    accuracy_median_m: float
    completion_m: float
    completion_median_m: float
    completion_ratio: float
    completion_ratio_threshold_m: float
    chamfer_l1_m: float
    thresholds_m: tuple[float, ...]
    precision: tuple[float, ...]
    recall: tuple[float, ...]
    fscore: tuple[float, ...]
    num_recon_points: int
    num_gt_points: int
    seconds: float
    protocol: dict[str, Any] = field(default_factory=dict)
    errors: ReconErrors | None = field(default=None, repr=False, metadata={"json": False})

    def at(self, threshold_m: float) -> tuple[float, float, float]:
        """(precision, recall, F-score) at one of ``thresholds_m``."""
        for i, t in enumerate(self.thresholds_m):
            if abs(t - threshold_m) < 1e-12:
                return self.precision[i], self.recall[i], self.fscore[i]
        raise KeyError(f"threshold {threshold_m} m not evaluated; have {list(self.thresholds_m)}")

    def summary(self) -> str:
        """One line in centimetres / percent, for logs."""
        f = ", ".join(f"F@{t * 100:g}cm {s * 100:.1f}%" for t, s in zip(self.thresholds_m, self.fscore))
        return (
            f"acc {self.accuracy_m * 100:.2f} cm, comp {self.completion_m * 100:.2f} cm, "
            f"comp ratio(<{self.completion_ratio_threshold_m * 100:g} cm) {self.completion_ratio * 100:.1f}%, "
            f"chamfer-L1 {self.chamfer_l1_m * 100:.2f} cm, {f} [{self.protocol.get('mode', '?')}]"
        )


def fscore(precision: float, recall: float) -> float:
    """Harmonic mean 2 P R / (P + R), 0 when both are 0."""
    return 0.0 if precision + recall <= 0 else 2.0 * precision * recall / (precision + recall)


def metrics_from_errors(
    accuracy_m: np.ndarray,
    completion_m: np.ndarray,
    thresholds_m: Sequence[float] = DEFAULT_THRESHOLDS_M,
    completion_ratio_threshold_m: float = 0.05,
) -> dict[str, Any]:
    """Summary numbers from per-point errors ((N,) recon -> GT, (M,) GT -> recon, metres).

    Returns a dict of the :class:`ReconMetrics` number fields. "Within threshold" is strict (d < t).
    """
    acc = np.asarray(accuracy_m, dtype=np.float64)
    comp = np.asarray(completion_m, dtype=np.float64)
    if len(acc) == 0 or len(comp) == 0:
        raise ValueError(
            f"need points on both sides, got {len(acc)} reconstruction and {len(comp)} ground-truth points"
        )
    prec = tuple(float(np.mean(acc < t)) for t in thresholds_m)
    rec = tuple(float(np.mean(comp < t)) for t in thresholds_m)
    a, c = float(acc.mean()), float(comp.mean())
    return {
        "accuracy_m": a,
        "accuracy_median_m": float(np.median(acc)),
        "completion_m": c,
        "completion_median_m": float(np.median(comp)),
        "completion_ratio": float(np.mean(comp < completion_ratio_threshold_m)),
        "completion_ratio_threshold_m": float(completion_ratio_threshold_m),
        "chamfer_l1_m": 0.5 * (a + c),
        "thresholds_m": tuple(float(t) for t in thresholds_m),
        "precision": prec,
        "recall": rec,
        "fscore": tuple(fscore(p, r) for p, r in zip(prec, rec)),
        "num_recon_points": len(acc),
        "num_gt_points": len(comp),
    }


def evaluate_reconstruction(
    recon: Any,
    gt: Any,
    *,
    mode: str = "exact",
    num_samples: int = DEFAULT_NUM_SAMPLES,
    thresholds_m: Sequence[float] = DEFAULT_THRESHOLDS_M,
    completion_ratio_threshold_m: float = 0.05,
    culling: Culling | None = None,
    seed: int = 0,
    keep_errors: bool = True,
) -> ReconMetrics:
    """Compare a reconstruction with ground truth (same world frame, metres).

    Args:
        recon: reconstruction: path, Open3D mesh/cloud (legacy or tensor), (N, 3) array or Surface.
        gt: ground truth, same kinds (a mesh is needed for culling).
        mode: "exact" (point-to-surface distances, no sampling floor) or "samples"
            (NICE-SLAM: nearest neighbour between ``num_samples`` samples of each side).
        num_samples: query points drawn per mesh (clouds are subsampled to this if larger).
        thresholds_m: precision / recall / F-score thresholds, metres.
        completion_ratio_threshold_m: completion ratio counts GT points closer than this.
        culling: restrict the GT to what these cameras saw; None = whole GT.
        seed: sampling seed (reproducible results).
        keep_errors: keep per-point errors in ``ReconMetrics.errors`` (for figures).
    Raises:
        ValueError: unknown mode, culling without a GT mesh, or culling that removes all GT points.
    """
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; choose one of {MODES}")
    if not completion_ratio_threshold_m > 0 or any(not t > 0 for t in thresholds_m) or len(thresholds_m) == 0:
        raise ValueError(f"thresholds must be positive, got {list(thresholds_m)} and {completion_ratio_threshold_m}")
    t0 = time.perf_counter()
    recon_s = load_surface(recon, "reconstruction").canonical()  # results independent of vertex / triangle order
    gt_s = load_surface(gt, "ground truth").canonical()
    rng_recon, rng_gt = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(2))
    p_recon = sample_surface(recon_s, num_samples, rng_recon)
    p_gt = sample_surface(gt_s, num_samples, rng_gt)
    n_gt_before = len(p_gt)

    # Accuracy target: whole GT unless culling asks for the culled GT (see Culling.accuracy_target).
    acc_surface, acc_points = gt_s, p_gt
    gt_scene = None
    cull_info: dict[str, Any] = {"method": "none"}
    if culling is not None:
        if not gt_s.is_mesh:
            raise ValueError(f"{gt_s.name}: culling renders the ground truth and needs a mesh, got a point cloud")
        gt_scene = _MeshScene(gt_s)
        seen, tri_hit = visibility(gt_s, p_gt, culling, gt_scene)
        if not seen.any():
            raise ValueError(f"culling with {len(culling.T_world_cam)} poses left no ground-truth point in view")
        p_gt = p_gt[seen]
        cull_info = culling.describe()
        cull_info["gt_points_kept_fraction"] = float(seen.mean())
        cull_info["gt_triangles_hit_fraction"] = float(tri_hit.mean())
        if culling.accuracy_target == "culled":
            acc_surface, acc_points, gt_scene = gt_s.submesh(tri_hit), p_gt, None

    if mode == "exact":
        if acc_surface.is_mesh:
            acc = (gt_scene or _MeshScene(acc_surface)).distance(p_recon)
        else:
            acc = nearest_distance(p_recon, acc_surface.vertices)
        comp = distance_to_surface(p_gt, recon_s)
        distance = "point-to-triangle (Open3D RaycastingScene.compute_distance); nearest point for a point-cloud target"
        acc_target = f"GT surface: {acc_surface.describe()}"
    else:
        acc = nearest_distance(p_recon, acc_points)
        comp = nearest_distance(p_gt, p_recon)
        distance = "nearest neighbour between sample sets (scipy cKDTree)"
        acc_target = f"{len(acc_points)} GT sample points"

    numbers = metrics_from_errors(acc, comp, thresholds_m, completion_ratio_threshold_m)
    protocol = {
        "mode": mode,
        "distance": distance,
        "num_samples": int(num_samples),
        "sampling": "uniform by triangle area, numpy default_rng from SeedSequence(seed).spawn(2) [recon, gt]; clouds subsampled",
        "seed": int(seed),
        "recon": recon_s.describe(),
        "gt": gt_s.describe(),
        "accuracy_target": acc_target,
        "gt_points_before_culling": int(n_gt_before),
        "within_threshold": "strict (d < t)",
        "culling": cull_info,
        "units": "metres",
    }
    errors = ReconErrors(p_recon, acc, p_gt, comp) if keep_errors else None
    return ReconMetrics(**numbers, seconds=time.perf_counter() - t0, protocol=protocol, errors=errors)
