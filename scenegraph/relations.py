"""Spatial relations between objects, scored from their reconstructed surfaces.

Everything is measured in the gravity frame (z = up, metres) on each object's surface
points. ``A.lo`` / ``A.hi`` are A's robust lowest / highest heights (``lo``: the 0.5th
percentile or, when lower, the ``low_points``-th lowest point: the lowest parts of a
table, the feet of the one or two legs that were reconstructed, are few of its points;
``hi``: the 98th percentile), its *footprint* is the (x, y) of its points and ``size`` its largest
horizontal extent. Tolerances: ``contact`` = ``max(contact_m, 1.5 node sizes)``.

=========  ==========================================================================
relation   definition (score in [0, 1]; stored when >= ``min_score``)
=========  ==========================================================================
on         A rests on B: A's bottom is within ``contact`` of B's top *under A* (B's
           highest points below A's bottom, within ``support_radius`` of A's
           footprint) and at least half of A's footprint lies over B's footprint
           (its convex hull). Score = exp(-(g / contact)^2) x min(1, 2 overlap), with
           g the gap less the band that segmentation gave to the supporting surface
           (``support_band_m``; ``structure_band_m`` for the floor).
supports   the converse of ``on`` (same score).
inside     A lies in B's box (fraction ``c`` of A's points inside B's gravity box
           grown by a node) and B encloses it: B's surface beyond A covers at least
           10 % of A's face (on a grid of up to 8 x 8 cells; the parts behind A are
           hidden by A itself) in at least 3 of the 5 directions up, +-x, +-y, and at
           least half of one side face (a shelf: board above, side panels, back; not
           the legs of a table around a crate).
           Score = clip((c - 0.7) / 0.25) x clip((directions - 2) / 2). Supersedes
           ``on`` for the same pair.
contains   the converse of ``inside``.
above      A is higher than B with a clear gap (g = A.lo - B.hi - band > contact) and
           overlapping footprints. Score = min(1, 2 overlap) x clip((g - contact) / contact).
below      the converse of ``above``.
under      A is beneath part of B: the fraction ``f`` of A's footprint points that
           have B surface above A's top within ``support_radius`` (a chair tucked under a
           table top, a box under a shelf board). Score = clip((f - 0.3) / 0.5).
           Independent of ``below``, which needs all of B above all of A.
near       the smallest distance d between the surfaces is below
           ``tau = clip(near_base_m + near_scale * mean size, near_min_m, near_max_m)``:
           score = 1 - d / tau. Symmetric; objects only (not structure).
next_to    side by side: footprints (almost) disjoint (each overlaps the other's hull by
           < 20 %), horizontal gap g below ``tau = clip(next_to_scale * max size,
           next_to_min_m, next_to_max_m)``, height ranges overlapping by at least 30 %
           of the lower one's height, and neither on / inside the other. Score =
           clip(1.2 - g / tau) x clip(height overlap / (0.3 x lower height)). Symmetric.
against    A touches a wall: the 5th percentile of its points' distance to the wall
           plane is within ``contact``: score = clip(1.5 - d / contact).
=========  ==========================================================================

Relations of the synthetic ground truth (``sensors.scenes``) map one to one: its
``on``, ``inside``, ``next_to`` and ``against`` are defined the same way on boxes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.spatial import cKDTree

from scenegraph.geometry import box_gap, hull_signed_distance
from scenegraph.graph import INVERSE, Relation


@dataclass
class RelationConfig:
    """Thresholds of the relation tests (metres unless noted)."""

    contact_m: float = 0.03
    """Smallest vertical contact / wall contact tolerance (grown to 1.5 node sizes)."""
    support_radius_m: float = 0.06
    """Horizontal radius around A's footprint where B's top under A is measured."""
    near_base_m: float = 0.2
    near_scale: float = 0.5
    near_min_m: float = 0.3
    near_max_m: float = 1.2
    next_to_scale: float = 0.5
    next_to_min_m: float = 0.15
    next_to_max_m: float = 0.6
    min_score: float = 0.3
    """Relations scoring lower are not stored."""
    max_points: int = 4000
    """Points per object used for the tests (evenly subsampled)."""
    low_points: int = 8
    """An object's lowest height is at most that of its ``low_points``-th lowest point
    (a few stray points lower do not count; see the module docstring)."""


@dataclass
class Body:
    """An object (or structure element) as the relation tests see it, in the gravity frame.

    Attributes:
        id: scene graph node id; kind: "object", "floor", "wall", "ceiling".
        points: (M, 3) surface points, gravity frame (empty for structure planes).
        plane_g: (4,) plane ``n . p + d = 0`` in the gravity frame (structure only).
    """

    id: int
    kind: str
    points: np.ndarray
    plane_g: np.ndarray | None = None
    lo: float = 0.0
    """Lowest height (0.5th percentile), metres."""
    hi: float = 0.0
    """Highest height (98th percentile), metres."""
    box_lo: np.ndarray = field(default_factory=lambda: np.zeros(3))
    box_hi: np.ndarray = field(default_factory=lambda: np.zeros(3))
    size: float = 0.0
    _xy_tree: cKDTree | None = None
    _tree: cKDTree | None = None

    @classmethod
    def from_points(
        cls, id: int, points_g: np.ndarray, max_points: int = 4000, kind: str = "object", low_points: int = 8
    ) -> Body:
        p = np.asarray(points_g, dtype=np.float64)
        if len(p) > max_points:
            p = p[np.linspace(0, len(p) - 1, max_points).astype(np.int64)]
        lo3, hi3 = np.percentile(p, 1, axis=0), np.percentile(p, 99, axis=0)
        z_lo, z_hi = np.percentile(p[:, 2], [0.5, 98])
        if low_points > 0:
            z_lo = min(z_lo, float(np.partition(p[:, 2], min(low_points, len(p)) - 1)[min(low_points, len(p)) - 1]))
        return cls(id, kind, p, None, float(z_lo), float(z_hi), lo3, hi3, float(np.max(hi3[:2] - lo3[:2])))

    @classmethod
    def from_plane(cls, id: int, kind: str, plane_g: np.ndarray) -> Body:
        return cls(id, kind, np.zeros((0, 3)), np.asarray(plane_g, dtype=np.float64))

    @property
    def is_structure(self) -> bool:
        return self.kind != "object"

    @property
    def xy_tree(self) -> cKDTree:
        if self._xy_tree is None:
            self._xy_tree = cKDTree(self.points[:, :2])
        return self._xy_tree

    @property
    def tree(self) -> cKDTree:
        if self._tree is None:
            self._tree = cKDTree(self.points)
        return self._tree

    @property
    def height(self) -> float:
        return max(self.hi - self.lo, 1e-6)


def _clip01(x: float) -> float:
    return float(min(1.0, max(0.0, x)))


def footprint_overlap(a: Body, b: Body, margin: float) -> float:
    """Fraction of A's footprint points inside B's footprint hull grown by ``margin``."""
    d = hull_signed_distance(b.points[:, :2], a.points[:, :2])
    return float(np.mean(d >= -margin))


def on_score(a: Body, b: Body, cfg: RelationConfig, contact: float, band: float = 0.0) -> tuple[float, dict]:
    """Score of "A on B" between two objects, with its evidence (gap_m, overlap).

    ``band``: the first ``band`` metres of the gap count as contact (the crease where A
    stands went to B's surface during segmentation, so A's lowest point is that much up).
    """
    idx = b.xy_tree.query_ball_point(a.points[:, :2], cfg.support_radius_m, return_sorted=False)
    under = np.unique(np.concatenate([np.asarray(i, dtype=np.int64) for i in idx])) if len(idx) else np.zeros(0, np.int64)
    if len(under) == 0:
        return 0.0, {}
    z = b.points[under, 2]
    z = z[z <= a.lo + contact]
    if len(z) == 0:
        return 0.0, {}
    top = float(np.percentile(z, 95))
    gap = a.lo - top
    g = max(0.0, abs(gap) - band)
    if g > 2 * contact or a.hi <= top + contact / 2:
        return 0.0, {}
    overlap = footprint_overlap(a, b, contact / 2)
    score = float(np.exp(-((g / contact) ** 2))) * min(1.0, 2.0 * overlap)
    return score, {"gap_m": gap, "overlap": overlap}


def _face_cover(points: np.ndarray, axes: tuple[int, int], lo: np.ndarray, hi: np.ndarray, cell: float) -> float:
    """Fraction of a face's grid cells (face = box [lo, hi] on ``axes``) that ``points`` project into."""
    if len(points) == 0:
        return 0.0
    i, j = axes
    ext = np.maximum(hi[[i, j]] - lo[[i, j]], 1e-6)
    n = np.maximum(1, np.minimum(8, np.ceil(ext / cell))).astype(int)
    uv = (points[:, [i, j]] - lo[[i, j]]) / ext * n
    uv = np.clip(np.floor(uv).astype(int), 0, n - 1)
    return len(np.unique(uv[:, 0] * n[1] + uv[:, 1])) / float(n[0] * n[1])


def inside_score(a: Body, b: Body, node: float, contact: float) -> tuple[float, dict]:
    """Score of "A inside B", with its evidence (contained, directions)."""
    lo, hi = b.box_lo - node, b.box_hi + node
    contained = float(np.mean(np.all((a.points >= lo) & (a.points <= hi), axis=1)))
    if contained < 0.7 or np.prod(b.box_hi - b.box_lo) < 2.0 * np.prod(a.box_hi - a.box_lo):
        return 0.0, {}
    p = b.points
    alo, ahi = a.box_lo - node, a.box_hi + node
    in_x = (p[:, 0] >= alo[0]) & (p[:, 0] <= ahi[0])
    in_y = (p[:, 1] >= alo[1]) & (p[:, 1] <= ahi[1])
    # beside A: at A's height above the contact band at its bottom (not the surface it stands on)
    in_z = (p[:, 2] >= a.lo + contact) & (p[:, 2] <= a.hi)
    # each direction: (B points beyond A that way, the two face axes they are projected on)
    dirs = [
        (in_x & in_y & (p[:, 2] > a.hi), (0, 1)),
        (in_y & in_z & (p[:, 0] > a.box_hi[0]), (1, 2)),
        (in_y & in_z & (p[:, 0] < a.box_lo[0]), (1, 2)),
        (in_x & in_z & (p[:, 1] > a.box_hi[1]), (0, 2)),
        (in_x & in_z & (p[:, 1] < a.box_lo[1]), (0, 2)),
    ]
    face_lo = np.array([a.box_lo[0], a.box_lo[1], a.lo + contact])
    face_hi = np.array([a.box_hi[0], a.box_hi[1], a.hi])
    cover = [_face_cover(p[m], axes, face_lo, face_hi, 2 * node) for m, axes in dirs]
    n_dirs = int(sum(c >= 0.1 for c in cover))
    if max(cover[1:]) < 0.5:  # no wall of B beside A: legs around a crate do not make a container
        return 0.0, {}
    score = _clip01((contained - 0.7) / 0.25) * _clip01((n_dirs - 2) / 2.0)
    return score, {"contained": contained, "directions": n_dirs, "side_cover": max(cover[1:])}


def above_score(a: Body, b: Body, contact: float, band: float = 0.0) -> tuple[float, dict]:
    """Score of "A above B" (clear vertical gap beyond contact, overlapping footprints)."""
    gap = a.lo - b.hi
    g = gap - band
    if g <= contact:
        return 0.0, {}
    overlap = max(footprint_overlap(a, b, contact / 2), footprint_overlap(b, a, contact / 2))
    score = min(1.0, 2.0 * overlap) * _clip01((g - contact) / contact)
    return score, {"gap_m": gap, "overlap": overlap}


def under_score(a: Body, b: Body, cfg: RelationConfig) -> tuple[float, dict]:
    """Score of "A under B" (B's surface overhead of A's footprint)."""
    idx = b.xy_tree.query_ball_point(a.points[:, :2], cfg.support_radius_m, return_sorted=False)
    covered = np.array([bool(len(i)) and bool(np.any(b.points[i, 2] > a.hi)) for i in idx])
    f = float(covered.mean()) if len(covered) else 0.0
    return _clip01((f - 0.3) / 0.5), {"covered": f}


def horizontal_gap(a: Body, b: Body) -> float:
    """Smallest horizontal distance between the two footprints (0 if they overlap)."""
    d, _ = b.xy_tree.query(a.points[:, :2], k=1)
    return float(d.min())


def next_to_score(a: Body, b: Body, cfg: RelationConfig, contact: float) -> tuple[float, dict]:
    """Score of "A next to B" (symmetric)."""
    tau = min(cfg.next_to_max_m, max(cfg.next_to_min_m, cfg.next_to_scale * max(a.size, b.size)))
    if box_gap(a.box_lo[:2], a.box_hi[:2], b.box_lo[:2], b.box_hi[:2]) > 1.2 * tau:
        return 0.0, {}
    if footprint_overlap(a, b, 0.0) > 0.2 or footprint_overlap(b, a, 0.0) > 0.2:
        return 0.0, {}
    g = horizontal_gap(a, b)
    v = min(a.hi, b.hi) - max(a.lo, b.lo)
    low = min(a.height, b.height)
    score = _clip01(1.2 - g / tau) * _clip01(v / (0.3 * low))
    return score, {"gap_m": g, "height_overlap_m": v, "tau_m": tau}


def near_score(a: Body, b: Body, cfg: RelationConfig) -> tuple[float, dict]:
    """Score of "A near B" (symmetric)."""
    tau = min(cfg.near_max_m, max(cfg.near_min_m, cfg.near_base_m + cfg.near_scale * 0.5 * (a.size + b.size)))
    if box_gap(a.box_lo, a.box_hi, b.box_lo, b.box_hi) > tau:
        return 0.0, {}
    d, _ = b.tree.query(a.points, k=1)
    dist = float(d.min())
    return _clip01(1.0 - dist / tau), {"distance_m": dist, "tau_m": tau}


def compute_relations(
    bodies: list[Body],
    node_size_m: float,
    cfg: RelationConfig | None = None,
    structure_band_m: float = 0.0,
    support_band_m: float = 0.0,
) -> list[Relation]:
    """All relations among ``bodies`` with score >= ``min_score``, converses included.

    Structure bodies take part as the object of ``on`` (floor) and ``against`` (walls).
    ``structure_band_m`` is the band next to the floor that went to the floor's region
    (``scenegraph.planes.structure_regions``): an object's lowest remaining point is up to
    that much above the floor, so that much of its gap is not counted.
    ``support_band_m`` is the same for objects standing on objects (the crease around an
    object's foot joins the surface it stands on: ``ProposalConfig.bump_m``).
    """
    cfg = cfg or RelationConfig()
    contact = max(cfg.contact_m, 1.5 * node_size_m)
    objs = [b for b in bodies if not b.is_structure]
    rels: list[Relation] = []

    def add(s: int, name: str, o: int, score: float, ev: dict, converse: bool = True) -> None:
        if score >= cfg.min_score:
            rels.append(Relation(s, name, o, score, ev))
            if converse and name in INVERSE and INVERSE[name] != name:
                rels.append(Relation(o, INVERSE[name], s, score, ev))

    for st in bodies:
        if not st.is_structure:
            continue
        n, d = st.plane_g[:3], st.plane_g[3]
        for a in objs:
            dist = a.points @ n + d
            if st.kind == "floor":
                gap = a.lo - (-d / n[2] if abs(n[2]) > 1e-6 else 0.0)
                g = max(0.0, abs(gap) - structure_band_m)
                score = float(np.exp(-((g / contact) ** 2))) if g <= 2 * contact else 0.0
                add(a.id, "on", st.id, score, {"gap_m": gap})
            elif st.kind == "wall":
                dw = float(np.percentile(np.abs(dist), 5))
                add(a.id, "against", st.id, _clip01(1.5 - dw / contact), {"distance_m": dw}, converse=False)

    for i, a in enumerate(objs):
        for b in objs[i + 1 :]:
            if box_gap(a.box_lo, a.box_hi, b.box_lo, b.box_hi) > cfg.near_max_m:
                continue
            contained = {}
            for x, y in ((a, b), (b, a)):
                s, ev = inside_score(x, y, node_size_m, contact)
                contained[(x.id, y.id)] = s
                add(x.id, "inside", y.id, s, ev)
            for x, y in ((a, b), (b, a)):
                if contained[(x.id, y.id)] < cfg.min_score:
                    s, ev = on_score(x, y, cfg, contact, support_band_m)
                    add(x.id, "on", y.id, s, ev)
                s, ev = above_score(x, y, contact, support_band_m)
                add(x.id, "above", y.id, s, ev)
                s, ev = under_score(x, y, cfg)
                add(x.id, "under", y.id, s, ev, converse=False)
            s, ev = near_score(a, b, cfg)
            add(a.id, "near", b.id, s, ev, converse=False)
            add(b.id, "near", a.id, s, ev, converse=False)
            stacked = any(r.subject in (a.id, b.id) and r.object in (a.id, b.id) and r.relation in ("on", "inside") for r in rels)
            if not stacked:
                s, ev = next_to_score(a, b, cfg, contact)
                add(a.id, "next_to", b.id, s, ev, converse=False)
                add(b.id, "next_to", a.id, s, ev, converse=False)
    return rels
