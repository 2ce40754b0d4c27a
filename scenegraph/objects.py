"""Object proposals: FH segments merged into objects, then cleaned.

Pipeline (all on the non-structure surface nodes, in the gravity frame):

1. FH segments (:mod:`scenegraph.segmentation`).
2. *Support surfaces*: up-facing, flat segments (normal within ``support_tilt_deg`` of
   up, height spread below ``support_flatness_m``, area above ``support_min_area_m2``);
   adjacent ones at the same height are grouped, so a table top split by texture is one
   surface.
3. Merge: adjacent segments (joined by a mesh edge, or closer than ``bridge_m``) are
   merged, except across a *resting contact*: segment B rests on support surface S when
   B does not reach below S (its lowest point is within ``contact_tol_m`` of S's height),
   rises above it, and most of B's footprint lies inside S's footprint. This keeps a mug
   apart from the table it stands on while a table's edge, legs and top, whose parts
   reach below the top, become one object; a chair back that continues the seat's side
   face is joined through that face. Across a concave or flat crease, two growing
   objects of different colour are not merged either (region merging, most similar
   pairs first, so blended crease segments cannot bridge two objects). When segment
   embeddings are given (``scenegraph.build`` passes the semantic map's voxel features,
   less what the whole map shares), adjacent segments whose embeddings are dissimilar
   (cosine below ``feature_min_similarity``) are not merged.
   Objects larger than any furniture (footprint above ``split_footprint_m2``: a counter
   run joined to the things on and under it over convex edges) are merged again with a
   colour check on convex boundaries between grown parts; furniture-sized parts leave
   (:func:`split_oversized`).
4. Clean-up (DBSCAN-style, radius graph with scipy's cKDTree): nodes with fewer than
   ``min_neighbours`` neighbours within ``eps`` are noise; the rest split into
   radius-connected clusters; parts hanging just under a larger cluster of the same
   colour join it (table legs under the never-seen underside of the top); clusters with
   less than ``min_area_m2`` of surface or a longest side under ``min_extent_m`` are dropped.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree

from mapping.graph_segments import UnionFind
from scenegraph.geometry import hull_signed_distance


@dataclass
class ProposalConfig:
    """Settings of the segment merging and clean-up (lengths in metres)."""

    fh_k: float = 0.05
    """Felzenszwalb-Huttenlocher scale parameter."""
    fh_min_size: int = 10
    """Smallest FH segment, nodes."""
    fh_color_weight: float = 0.3
    """Weight of the RGB distance in the FH edge weights."""
    support_tilt_deg: float = 25.0
    """A support surface's mean normal is within this angle of up."""
    support_up_fraction: float = 0.5
    """A support segment has at least this area fraction of up-facing nodes (the rest may
    be the rounded edge of a board)."""
    support_flatness_m: float | None = None
    """Largest height spread (std) of a support surface; default 0.5 x node size (>= 1 cm)."""
    support_link_m: float = 0.0
    """Support segments this close join one surface without sharing a mesh edge (0: mesh
    edges only; a larger value also joins two chair seats side by side)."""
    support_min_area_m2: float = 0.02
    """Smallest support surface."""
    contact_tol_m: float | None = None
    """How far a resting segment may reach below the support's height; default 1 node
    size (>= 1.5 cm)."""
    rise_m: float | None = None
    """How far a resting segment must rise above the support; default half a node size
    (>= 1 cm)."""
    bump_m: float | None = None
    """Segments beside a support surface that stay within this height above it are part
    of it (the rounded crease around an object standing on it); default 1 node size."""
    footprint_inside: float = 0.5
    """Fraction of a resting segment's nodes that must lie inside the support's footprint
    (the convex hull of the surface's visible nodes, grown by ``footprint_margin_m``)."""
    footprint_margin_m: float | None = None
    """See ``footprint_inside``; default 2 node sizes (the hidden part of a surface under
    an object reaches a little beyond what is visible around it)."""
    bridge_m: float = 0.0
    """Segments closer than this are adjacent even without a mesh edge (0: mesh edges only;
    a bridge also joins two chairs whose TSDF skirts come close)."""
    crease_concave_fraction: float = 0.5
    """Adjacent segments whose shared boundary is mostly concave (a crease folding
    inwards, as where a box touches the panel beside it) ..."""
    crease_colour_distance: float = 0.12
    """... and whose colours differ by at least this :func:`colour_distance` are two objects."""
    flat_colour_distance: float = 0.25
    """Colour difference that separates segments meeting at a flat (not convex) boundary."""
    convex_colour_distance: float | None = None
    """Colour difference that separates two growing objects meeting at a convex boundary
    (None: a convex boundary never separates; used by :func:`split_oversized`)."""
    min_boundary_edges: int = 2
    """Segments sharing fewer mesh edges are not merged directly (an accidental contact
    of two objects through reconstruction noise is a thin link)."""
    small_segment_nodes: int = 10
    """Segments with fewer nodes do not take part in merging; each joins the neighbour it
    shares the longest boundary with (:func:`absorb_small_segments`)."""
    feature_min_similarity: float | None = 0.3
    """When segment embeddings are given (``scenegraph.build`` passes the semantic map's
    features with the map's common part removed, :func:`scenegraph.embedding.contrast_features`):
    adjacent segments with a lower cosine similarity are not merged (None: embeddings are
    not used for merging). On redkitchen (``lite``) adjacent segments have median 0.90 and
    5th percentile 0.38. At 0.2-0.4 the white mug leaves the paper it stands on (0.18;
    its proposal's box IoU 0.01 -> 0.43) and nothing else changes; at 0.6 the proposals
    grow from 50 to 59 and relational queries lose a hit, at 0.75 to 68."""
    eps_m: float | None = None
    """Clean-up neighbourhood radius; default 2 node sizes."""
    min_neighbours: int = 4
    """Clean-up: nodes with fewer neighbours within ``eps_m`` (itself included) are noise."""
    min_area_m2: float = 0.01
    """Smallest object surface area, square metres (a mug shows about 0.03)."""
    hang_gap_m: float = 0.1
    """Largest gap between a part and the object above it that it joins (legs under an
    unseen table underside; see :func:`attach_hanging_parts`)."""
    fragment_ratio: float = 5.0
    """A fragment joins a cluster with at least this many times its area
    (:func:`absorb_fragments`)."""
    fragment_gap_m: float = 0.06
    """... that comes within this distance of it."""
    stub_height_m: float = 0.25
    """Tallest stub (see :func:`attach_hanging_parts`)."""
    stub_area_m2: float = 0.03
    """Largest stub surface area."""
    stub_gap_m: float = 0.4
    """Largest gap between a stub (or a post) and the object above it."""
    post_width_m: float = 0.2
    """Widest post: a slender upright part (height at least ``post_slenderness`` times its
    width, its top under a larger object's footprint) joins that object whatever its
    colour (a table leg in shadow under the top; see :func:`attach_hanging_parts`)."""
    post_slenderness: float = 2.5
    """See ``post_width_m``."""
    leg_gap_m: float = 1.2
    """Largest gap between a stub or post that stands on the floor (a leg's foot) and the
    object above it (see :func:`attach_hanging_parts`; needs the floor height)."""
    leg_floor_m: float = 0.1
    """A part stands on the floor when its bottom is at most this far above it."""
    hang_radius_m: float = 0.05
    """Horizontal search radius above a part's top for :func:`attach_hanging_parts`."""
    min_extent_m: float = 0.06
    """Smallest longest side of an object's box."""
    split_footprint_m2: float | None = 3.0
    """Objects whose footprint (robust horizontal box, 2nd-98th percentile) is larger than
    any single piece of furniture are merged again, stricter (:func:`split_oversized`;
    None: never)."""
    split_convex_colour_distance: float = 0.14
    """Colour difference that separates two growing parts of an oversized object at a
    convex boundary (a dark keyboard on the rounded edge of a light counter)."""
    split_part_max_m: float = 1.0
    """Only parts of an oversized object up to this long (robust longest horizontal side)
    and with at least ``split_part_min_area_m2`` of surface leave it; the rest stays one
    object (the counter is not cut into its panels)."""
    split_part_min_area_m2: float = 0.03
    """See ``split_part_max_m``."""

    def resolved(self, node_size_m: float) -> ProposalConfig:
        """A copy with the node-size dependent defaults filled in."""
        from dataclasses import replace

        return replace(
            self,
            support_flatness_m=self.support_flatness_m or max(0.01, 0.5 * node_size_m),
            contact_tol_m=self.contact_tol_m or max(0.015, node_size_m),
            rise_m=self.rise_m or max(0.01, 0.5 * node_size_m),
            bump_m=self.bump_m or node_size_m,
            footprint_margin_m=self.footprint_margin_m if self.footprint_margin_m is not None else 2.0 * node_size_m,
            eps_m=self.eps_m or 2.0 * node_size_m,
        )


@dataclass
class SurfaceSegment:
    """Summary of one FH segment in the gravity frame.

    Attributes:
        nodes: (M,) int64 node indices (into the non-structure node arrays).
        area_m2: surface area.
        z_lo, z_hi, z_med: robust lowest / highest / median height (2nd, 98th, 50th pct), metres.
        up_nodes: (K,) int64 the nodes whose normal is within the support tilt of up.
        up_frac: area fraction of ``up_nodes``.
        z_up_med, z_up_std: median and spread of the heights of ``up_nodes`` (nan if none).
    """

    nodes: np.ndarray
    area_m2: float
    z_lo: float
    z_hi: float
    z_med: float
    up_nodes: np.ndarray
    up_frac: float
    z_up_med: float
    z_up_std: float


def segment_summaries(
    points_g: np.ndarray, normals_g: np.ndarray, area: np.ndarray, labels: np.ndarray, support_tilt_deg: float
) -> list[SurfaceSegment]:
    """One :class:`SurfaceSegment` per label of (N,) ``labels`` (gravity-frame points and normals)."""
    order = np.argsort(labels, kind="stable")
    bounds = np.searchsorted(labels[order], np.arange(labels.max() + 2))
    up = normals_g[:, 2] >= np.cos(np.radians(support_tilt_deg))
    out = []
    for s in range(labels.max() + 1):
        idx = order[bounds[s] : bounds[s + 1]]
        z = points_g[idx, 2]
        a = area[idx]
        lo, med, hi = np.percentile(z, [2, 50, 98])
        u = idx[up[idx]]
        zu = points_g[u, 2]
        out.append(
            SurfaceSegment(
                idx,
                float(a.sum()),
                float(lo),
                float(hi),
                float(med),
                u,
                float(area[u].sum() / max(a.sum(), 1e-12)),
                float(np.median(zu)) if len(u) else float("nan"),
                float(zu.std()) if len(u) else float("nan"),
            )
        )
    return out


def segment_adjacency(edges: np.ndarray, labels: np.ndarray, points: np.ndarray, bridge_m: float) -> np.ndarray:
    """(P, 2) unique segment pairs ``a < b`` joined by a mesh edge or closer than ``bridge_m``."""
    la, lb = labels[edges[:, 0]], labels[edges[:, 1]]
    pairs = [np.stack([la, lb], axis=1)]
    if bridge_m > 0 and len(points) > 1:
        near = cKDTree(points).query_pairs(bridge_m, output_type="ndarray")
        if len(near):
            pairs.append(np.stack([labels[near[:, 0]], labels[near[:, 1]]], axis=1))
    p = np.concatenate(pairs)
    p = p[p[:, 0] != p[:, 1]]
    p.sort(axis=1)
    return np.unique(p, axis=0)


def support_groups(
    segments: list[SurfaceSegment], adjacency: np.ndarray, points_g: np.ndarray, seg_rgb: np.ndarray, cfg: ProposalConfig
) -> tuple[np.ndarray, dict[int, np.ndarray]]:
    """Group support segments into support surfaces.

    Flat up-facing segments of like colour (``seg_rgb``: (S, 3) mean RGB per segment;
    :func:`colour_distance` below ``crease_colour_distance``) at the same height (within
    ``rise_m``) that are adjacent (or closer than ``support_link_m``) form one surface (the visible pieces of a shelf
    board around a box standing on it); then adjacent low segments that stay within
    ``[z - contact_tol_m, z + bump_m)`` of a surface's height z and lie inside its
    footprint (the rounded fillet around an object standing on it, a thin mat) join it.

    Returns (S,) int64 group id per segment (-1 for segments outside every surface) and,
    per group id, the (M,) up-facing node indices of its segments (the visible surface).
    """
    is_sup = np.array(
        [
            s.up_frac >= cfg.support_up_fraction
            and s.z_up_std <= cfg.support_flatness_m
            and len(s.nodes) >= cfg.small_segment_nodes
            for s in segments
        ],
        dtype=bool,
    )
    uf = UnionFind(len(segments))
    links = [adjacency]
    cand = np.flatnonzero(is_sup)
    if len(cand) and cfg.support_link_m > 0:
        nodes = np.concatenate([segments[s].up_nodes for s in cand])
        owner = np.repeat(cand, [len(segments[s].up_nodes) for s in cand])
        near = cKDTree(points_g[nodes]).query_pairs(cfg.support_link_m, output_type="ndarray")
        if len(near):
            links.append(np.stack([owner[near[:, 0]], owner[near[:, 1]]], axis=1))
    for a, b in np.unique(np.concatenate(links), axis=0):
        if (
            a != b
            and is_sup[a]
            and is_sup[b]
            and abs(segments[a].z_up_med - segments[b].z_up_med) <= cfg.rise_m
            and float(colour_distance(seg_rgb[a], seg_rgb[b])) < cfg.crease_colour_distance
        ):
            uf.union(int(a), int(b))
    lab = uf.labels()
    group = np.full(len(segments), -1, np.int64)
    for g in np.unique(lab[is_sup]):
        segs = np.flatnonzero((lab == g) & is_sup)
        if sum(segments[s].area_m2 * segments[s].up_frac for s in segs) >= cfg.support_min_area_m2:
            group[segs] = g

    def surface_nodes() -> dict[int, np.ndarray]:
        return {
            int(g): np.concatenate([segments[s].up_nodes for s in np.flatnonzero(group == g)])
            for g in np.unique(group[group >= 0])
        }

    members = surface_nodes()
    z = {g: float(np.median(points_g[n, 2])) for g, n in members.items()}
    bumps: dict[int, list[int]] = {}
    for a, b in adjacency:
        for s, o in ((int(a), int(b)), (int(b), int(a))):
            g = int(group[s])
            if g < 0 or group[o] >= 0 or len(segments[o].nodes) < cfg.small_segment_nodes:
                continue
            seg = segments[o]
            if seg.z_lo >= z[g] - cfg.contact_tol_m and seg.z_hi < z[g] + cfg.bump_m:
                xy = points_g[seg.nodes, :2]
                inside = hull_signed_distance(points_g[members[g], :2], xy) >= -cfg.footprint_margin_m
                if inside.mean() >= cfg.footprint_inside:
                    bumps.setdefault(o, []).append(g)
    for o, gs in bumps.items():
        group[o] = min(gs, key=lambda g: abs(segments[o].z_med - z[g]))
    return group, surface_nodes()


def rests_on(seg: SurfaceSegment, seg_xy: np.ndarray, support_z: float, support_xy: np.ndarray, cfg: ProposalConfig) -> bool:
    """Whether a segment stands on a support surface (see the module docstring).

    Args:
        seg: the segment; seg_xy: (M, 2) its gravity-frame footprint points.
        support_z: the support surface's height; support_xy: (K, 2) its footprint points.
    """
    if seg.z_lo < support_z - cfg.contact_tol_m or seg.z_hi < support_z + cfg.rise_m:
        return False
    inside = hull_signed_distance(support_xy, seg_xy) >= -cfg.footprint_margin_m
    return bool(inside.mean() >= cfg.footprint_inside)


def colour_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Shading-tolerant distance of RGB colours in [0, 1] (broadcasts over leading axes).

    ``2 |chroma_a - chroma_b| + 0.5 |I_a - I_b|`` with intensity ``I`` the channel mean
    and chromaticity ``rgb / (r + g + b)``: a face in shadow differs mainly in intensity,
    which weighs a quarter as much as a change of hue.
    """
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    sa, sb = a.sum(axis=-1, keepdims=True), b.sum(axis=-1, keepdims=True)
    ca, cb = a / np.maximum(sa, 1e-6), b / np.maximum(sb, 1e-6)
    return 2.0 * np.linalg.norm(ca - cb, axis=-1) + 0.5 * np.abs(sa[..., 0] - sb[..., 0]) / 3.0


def boundary_shape(
    points: np.ndarray, normals: np.ndarray, edges: np.ndarray, labels: np.ndarray, n_segments: int
) -> dict[tuple[int, int], tuple[float, float, int]]:
    """Fractions of concave and convex mesh edges on the boundary of each pair of adjacent segments.

    An edge (i, j) is concave when ``(n_i - n_j) . (p_i - p_j) < -0.1 |p_i - p_j|``
    (the surfaces fold towards each other, as where a box meets the panel beside it),
    convex when that is above ``+0.1 |p_i - p_j|``, flat otherwise.

    Returns {(a, b) with a < b: (concave fraction, convex fraction, number of edges)}.
    """
    la, lb = labels[edges[:, 0]], labels[edges[:, 1]]
    cross = la != lb
    e, la, lb = edges[cross], la[cross], lb[cross]
    d = points[e[:, 0]] - points[e[:, 1]]
    s = np.einsum("ij,ij->i", normals[e[:, 0]] - normals[e[:, 1]], d)
    tol = 0.1 * np.linalg.norm(d, axis=1)
    key = np.minimum(la, lb) * n_segments + np.maximum(la, lb)
    uk, inv = np.unique(key, return_inverse=True)
    total = np.bincount(inv)
    concave = np.bincount(inv, (s < -tol).astype(np.float64)) / total
    convex = np.bincount(inv, (s > tol).astype(np.float64)) / total
    return {
        (int(k // n_segments), int(k % n_segments)): (float(cc), float(cv), int(t))
        for k, cc, cv, t in zip(uk, concave, convex, total)
    }


def crease_cut(concave: float, convex: float, colour_dist: float, cfg: ProposalConfig) -> bool:
    """Whether a boundary between two segments (or growing objects) separates two objects.

    A mostly concave boundary (``concave >= crease_concave_fraction``: a crease folding
    inwards, as where a box meets the panel beside it) separates when the colours differ
    by ``crease_colour_distance``; a boundary that is not convex either (``convex <
    0.25``: flat, as where a box face meets the board's rounded edge) needs the larger
    ``flat_colour_distance``; a convex one (the edge of one solid) never does: TSDF colours
    along silhouette edges are blended with the background behind them.
    """
    if concave >= cfg.crease_concave_fraction:
        return colour_dist >= cfg.crease_colour_distance
    if convex < 0.25:
        return colour_dist >= cfg.flat_colour_distance
    return cfg.convex_colour_distance is not None and colour_dist >= cfg.convex_colour_distance


def merge_segments(
    points_g: np.ndarray,
    normals_g: np.ndarray,
    colors: np.ndarray,
    area: np.ndarray,
    edges: np.ndarray,
    labels: np.ndarray,
    cfg: ProposalConfig,
    segment_embeddings: np.ndarray | None = None,
    trace: list | None = None,
) -> np.ndarray:
    """Merge FH segments into objects (steps 2-3 of the module docstring).

    Args:
        points_g, normals_g: (N, 3) gravity-frame node positions and normals.
        colors: (N, 3) node colours, RGB in [0, 1].
        area: (N,) node areas; edges: (E, 2) node adjacency; labels: (N,) FH segment ids.
        cfg: resolved config (:meth:`ProposalConfig.resolved`).
        segment_embeddings: optional (S, D) unit embeddings per segment (rows of zeros =
            unknown), used with ``cfg.feature_min_similarity``.
        trace: when a list is given, each union is appended as (segment a, segment b, why)
            (for inspecting a merge).
    Returns:
        (N,) int64 object id per node (0..O-1).
    """
    segs = segment_summaries(points_g, normals_g, area, labels, cfg.support_tilt_deg)
    n_seg = len(segs)
    adj = segment_adjacency(edges, labels, points_g, cfg.bridge_m)
    w = area / np.maximum(np.bincount(labels, area, n_seg)[labels], 1e-12)
    seg_rgb = np.stack([np.bincount(labels, colors[:, i] * w, n_seg) for i in range(3)], axis=1)
    group, members = support_groups(segs, adj, points_g, seg_rgb, cfg)
    sup_z = {g: float(np.median(points_g[n, 2])) for g, n in members.items()}
    sup_xy = {g: points_g[n, :2] for g, n in members.items()}
    shape = boundary_shape(points_g, normals_g, edges, labels, n_seg)
    small = np.array([len(sg.nodes) < cfg.small_segment_nodes and group[i] < 0 for i, sg in enumerate(segs)])
    uf = UnionFind(n_seg)
    candidates: list[tuple[float, int, int]] = []
    resting: dict[int, float] = {}  # segment -> height of the support it stands on
    pending = []
    for a, b in adj:
        a, b = int(a), int(b)
        if small[a] or small[b]:
            continue
        if group[a] >= 0 and group[a] == group[b]:
            uf.union(a, b)  # a support surface is one piece
            if trace is not None:
                trace.append((a, b, "support surface"))
            continue
        cut = False
        for s, o in ((a, b), (b, a)):
            g = group[s]
            if g >= 0 and rests_on(segs[o], points_g[segs[o].nodes, :2], sup_z[g], sup_xy[g], cfg):
                cut = True
                resting[o] = max(resting.get(o, -np.inf), sup_z[g])
        if not cut and segment_embeddings is not None and cfg.feature_min_similarity is not None:
            ea, eb = segment_embeddings[a], segment_embeddings[b]
            if np.any(ea) and np.any(eb) and float(ea @ eb) < cfg.feature_min_similarity:
                cut = True
        if not cut:
            pending.append((a, b))
    for a, b in pending:
        # what stands on a surface is not joined, over a convex edge, to what lies under
        # that surface (a book near a table's edge and the edge itself)
        convex = shape.get((a, b), (0.0, 0.0, 0))[1] >= 0.75
        if convex and any(
            s in resting and segs[o].z_hi < resting[s] - cfg.rise_m for s, o in ((a, b), (b, a))
        ):
            continue
        candidates.append((float(colour_distance(seg_rgb[a], seg_rgb[b])), a, b))
    # Region merging, most similar pairs first. Across a crease the colours compared are
    # those of the two growing objects, not of the two segments: a segment of blended
    # colour where two objects touch joins one of them and cannot bridge them.
    seg_area = np.array([sg.area_m2 for sg in segs])
    sums = seg_rgb * seg_area[:, None]
    weight = seg_area.copy()
    for root in range(n_seg):
        r = uf.find(root)
        if r != root:
            sums[r] += sums[root]
            weight[r] += weight[root]
    for _, a, b in sorted(candidates):
        ra, rb = uf.find(a), uf.find(b)
        if ra == rb:
            continue
        if (a, b) in shape:
            cc, cv, count = shape[(a, b)]
            if count < cfg.min_boundary_edges:
                continue
            cd = float(colour_distance(sums[ra] / max(weight[ra], 1e-12), sums[rb] / max(weight[rb], 1e-12)))
            if crease_cut(cc, cv, cd, cfg):
                continue
        r = uf.union(a, b)
        if trace is not None:
            trace.append((a, b, f"merge {shape.get((a, b))}"))
        o = rb if r == ra else ra
        sums[r] += sums[o]
        weight[r] += weight[o]
    absorb_small_segments(small, shape, uf, trace)
    seg_obj = uf.labels()
    return seg_obj[labels]


def split_oversized(
    points_g: np.ndarray,
    normals_g: np.ndarray,
    colors: np.ndarray,
    area: np.ndarray,
    edges: np.ndarray,
    labels: np.ndarray,
    object_of: np.ndarray,
    cfg: ProposalConfig,
) -> np.ndarray:
    """Merge the segments of each oversized object again, cutting convex boundaries on colour.

    :func:`merge_segments` never separates two parts at a convex boundary (TSDF colours
    along silhouettes are blended), so a keyboard lying at the rounded front edge of a
    counter, or a computer under it, can join the counter and the cabinets beside it into
    one object the size of a kitchen. Such an object (robust footprint above
    ``split_footprint_m2``) is re-merged from its own segments with
    ``convex_colour_distance = split_convex_colour_distance``: region merging compares
    the colours of whole growing parts, not of the blended strips, so a convex boundary
    between two coherent parts of different colour separates them (the recursive split
    of over-merged regions, as in hierarchical segmentation). Objects of furniture size
    are left alone, so a table top and its legs stay one object.

    Args:
        points_g, normals_g: (N, 3) gravity-frame nodes; colors: (N, 3) RGB in [0, 1];
        area: (N,) node areas; edges: (E, 2) node adjacency; labels: (N,) FH segment ids;
        object_of: (N,) object ids from :func:`merge_segments`.
        cfg: resolved config.
    Returns:
        (N,) int64 object ids 0..O-1 (not ordered).
    """
    if cfg.split_footprint_m2 is None or len(object_of) == 0:
        return object_of
    from dataclasses import replace

    strict = replace(cfg, convex_colour_distance=cfg.split_convex_colour_distance)
    out = object_of.copy()
    next_id = int(object_of.max()) + 1
    local = np.full(len(object_of), -1, np.int64)
    for o in np.unique(object_of):
        nodes = np.flatnonzero(object_of == o)
        lo, hi = np.percentile(points_g[nodes, :2], [2, 98], axis=0)
        if float(np.prod(hi - lo)) <= cfg.split_footprint_m2:
            continue
        local[nodes] = np.arange(len(nodes))
        inner = edges[(local[edges[:, 0]] >= 0) & (local[edges[:, 1]] >= 0)]
        seg = np.unique(labels[nodes], return_inverse=True)[1]
        parts = merge_segments(
            points_g[nodes], normals_g[nodes], colors[nodes], area[nodes], local[inner], seg, strict
        )
        local[nodes] = -1
        for p in range(int(parts.max()) + 1):
            sel = nodes[parts == p]
            lo, hi = np.percentile(points_g[sel, :2], [2, 98], axis=0)
            if float(np.max(hi - lo)) <= cfg.split_part_max_m and float(area[sel].sum()) >= cfg.split_part_min_area_m2:
                out[sel] = next_id
                next_id += 1
    return np.unique(out, return_inverse=True)[1].astype(np.int64)


def absorb_small_segments(
    small: np.ndarray, shape: dict[tuple[int, int], tuple[float, float, int]], uf: UnionFind, trace: list | None = None
) -> None:
    """Join each small segment to the neighbour it shares the longest boundary with.

    Small segments (the blended creases where two objects touch) take no part in the
    pairwise merging, so they cannot bridge two objects; afterwards each joins the
    already placed neighbour with the most shared mesh edges, repeatedly, so chains of
    small segments follow their largest neighbour. Small segments with no placed
    neighbour stay on their own (the clean-up drops them if they are too small).
    """
    nbrs: dict[int, list[tuple[int, int]]] = {}
    for (a, b), (_, _, count) in shape.items():
        if small[a]:
            nbrs.setdefault(a, []).append((count, b))
        if small[b]:
            nbrs.setdefault(b, []).append((count, a))
    placed = ~small.copy()
    pending = [s for s in np.flatnonzero(small).tolist() if s in nbrs]
    while pending:
        still = []
        for s in pending:
            options = [(c, o) for c, o in nbrs[s] if placed[o]]
            if options:
                uf.union(s, max(options)[1])
                if trace is not None:
                    trace.append((s, max(options)[1], "small"))
        for s in pending:
            if any(placed[o] for _, o in nbrs[s]):
                placed[s] = True
            else:
                still.append(s)
        if len(still) == len(pending):
            break
        pending = still


def dbscan_split(points: np.ndarray, object_of: np.ndarray, cfg: ProposalConfig) -> np.ndarray:
    """DBSCAN within each object: (N,) int64 cluster ids (0..C-1), -1 for noise.

    Nodes with fewer than ``min_neighbours`` neighbours (itself included) within ``eps_m``
    in the same object are not core; clusters are core nodes linked within ``eps_m``;
    border nodes join the cluster of a linked core node; the rest is noise. Clusters never
    span two objects.
    """
    n = len(points)
    if n == 0:
        return np.zeros(0, np.int64)
    pairs = cKDTree(points).query_pairs(cfg.eps_m, output_type="ndarray")
    pairs = pairs[(object_of[pairs[:, 0]] == object_of[pairs[:, 1]]) & (object_of[pairs[:, 0]] >= 0)]
    deg = np.bincount(pairs.reshape(-1), minlength=n) + 1
    core = (deg >= cfg.min_neighbours) & (object_of >= 0)
    cc = pairs[core[pairs[:, 0]] & core[pairs[:, 1]]]
    adj = coo_matrix((np.ones(len(cc)), (cc[:, 0], cc[:, 1])), shape=(n, n))
    _, comp = connected_components(adj, directed=False)
    lab = np.where(core, comp, -1)
    border = pairs[core[pairs[:, 0]] != core[pairs[:, 1]]]
    if len(border):
        c_side = np.where(core[border[:, 0]], border[:, 0], border[:, 1])
        b_side = np.where(core[border[:, 0]], border[:, 1], border[:, 0])
        lab[b_side] = lab[c_side]
    out = np.full(n, -1, np.int64)
    ok = lab >= 0
    out[ok] = np.unique(lab[ok], return_inverse=True)[1]
    return out


def attach_hanging_parts(
    points_g: np.ndarray,
    colors: np.ndarray,
    area: np.ndarray,
    labels: np.ndarray,
    cfg: ProposalConfig,
    floor_z: float | None = None,
) -> np.ndarray:
    """Join parts that stand just under a larger object to it (legs under a table top).

    The underside of a table or chair seat is never seen from above, so the TSDF leaves
    a gap between its legs and its top. A cluster L joins the cluster S above it when
    S has surface within ``hang_radius_m`` (horizontally) of L's top points and at most
    ``hang_gap_m`` above them, L is narrower than half of S, and their colours are alike
    (:func:`colour_distance` below ``flat_colour_distance``). A short stub (at most
    ``stub_height_m`` tall and ``stub_area_m2`` of surface: the foot of a leg whose middle
    was never reconstructed) joins a cluster up to ``stub_gap_m`` above it when it lies
    within that cluster's footprint, whatever its colour (it is blended with the floor's).
    So does a *post*: a slender upright part (at most ``post_width_m`` wide and
    ``post_slenderness`` times as tall as wide: a table leg, dark in the shadow of the top,
    whose top was never seen) whose top lies in the footprint of a cluster at least four
    times as wide, up to ``stub_gap_m`` above it. A stub or post that stands on the floor
(bottom at most ``leg_floor_m`` above ``floor_z``: the foot of a leg, whose shadowed
middle may be missing for most of the leg's height) may lie up to ``leg_gap_m`` under
the object. Applied top-down, so a leg broken in two pieces is joined piece by piece.

    Args:
        points_g: (N, 3) gravity-frame nodes; colors: (N, 3) RGB in [0, 1]; area: (N,) node areas;
        labels: (N,) cluster ids (-1: none).
        floor_z: the floor's height in the gravity frame (None: unknown, no floor-standing rule).
    Returns:
        (N,) int64 cluster ids after joining (not renumbered).
    """
    labels = labels.copy()
    ids = [int(c) for c in np.unique(labels[labels >= 0])]
    if len(ids) < 2:
        return labels
    members = {c: np.flatnonzero(labels == c) for c in ids}

    def stats(c: int) -> tuple[float, float, float, np.ndarray]:
        p = points_g[members[c]]
        lo, hi = np.percentile(p, [2, 98], axis=0)
        return float(np.max(hi[:2] - lo[:2])), float(hi[2]), float(lo[2]), colors[members[c]].mean(axis=0)

    info = {c: stats(c) for c in ids}
    tree = cKDTree(points_g[:, :2])
    for c in sorted(ids, key=lambda k: -info[k][1]):
        size, top, bottom, rgb = info[c]
        p = points_g[members[c]]
        tops = p[p[:, 2] >= top - cfg.hang_gap_m / 2]
        above = np.unique(np.concatenate([np.asarray(i, np.int64) for i in tree.query_ball_point(tops[:, :2], cfg.hang_radius_m)]))
        above = above[(labels[above] >= 0) & (labels[above] != labels[members[c][0]])]
        above = above[points_g[above, 2] > top]
        target = None
        near = above[points_g[above, 2] <= top + cfg.hang_gap_m]
        if len(near) >= 3:  # just under a larger cluster of the same colour
            t = int(np.bincount(labels[near]).argmax())
            t_size, _, _, t_rgb = info[t]
            if size <= 0.5 * t_size and float(colour_distance(rgb, t_rgb)) < cfg.flat_colour_distance:
                target = t
        height = top - bottom
        stub = height <= cfg.stub_height_m and area[members[c]].sum() <= cfg.stub_area_m2
        post = size <= cfg.post_width_m and height >= cfg.post_slenderness * max(size, 1e-3)
        on_floor = floor_z is not None and bottom <= floor_z + cfg.leg_floor_m
        far = above[points_g[above, 2] <= top + (cfg.leg_gap_m if on_floor else cfg.stub_gap_m)]
        if target is None and (stub or post) and len(far) >= 3:
            # a short stub far below (the foot of a leg whose middle was never
            # reconstructed), or a post (a leg in the shadow of the top): any colour, but
            # inside the footprint of a much wider cluster
            t = int(np.bincount(labels[far]).argmax())
            if size <= (0.5 if stub else 0.25) * info[t][0]:
                inside = hull_signed_distance(points_g[members[t], :2], p[:, :2]) >= -cfg.eps_m
                if inside.mean() >= 0.9:
                    target = t
        if target is None:
            continue
        old = int(labels[members[c][0]])
        labels[labels == old] = target
        members[target] = np.flatnonzero(labels == target)
        info[target] = stats(target)
    return labels


def absorb_fragments(points_g: np.ndarray, colors: np.ndarray, area: np.ndarray, labels: np.ndarray, cfg: ProposalConfig) -> np.ndarray:
    """Join small clusters that lie within a larger cluster of the same colour.

    Unseen nodes are dropped before segmentation, which leaves islands: a strip of a
    shelf's top seen only at grazing angles, the stub of a chair leg. A cluster joins a
    cluster with at least ``1 / fragment_ratio`` times its area when at least 90 % of its
    nodes lie in that cluster's box (1st-99th percentile, grown by ``eps_m``), the two
    come within ``fragment_gap_m``, their colours are alike (below
    ``flat_colour_distance``), and it does not stand on the larger cluster (it is not
    at least ``2 contact_tol_m`` tall with its median height more than ``contact_tol_m``,
    or its 90th percentile more than ``1.5 contact_tol_m``, above the larger cluster's
    surface under it: a white mug on a light table stays a mug, and so does a flat game
    controller; a flat strip of a shelf's top board joins the shelf).

    Returns (N,) int64 cluster ids (not renumbered).
    """
    labels = labels.copy()
    ids = [int(c) for c in np.unique(labels[labels >= 0])]
    if len(ids) < 2:
        return labels
    members = {c: np.flatnonzero(labels == c) for c in ids}
    size = {c: float(area[m].sum()) for c, m in members.items()}
    for c in sorted(ids, key=lambda k: size[k]):
        pc = points_g[members[c]]
        rgb = colors[members[c]].mean(axis=0)
        best = None
        for t in ids:
            if t == c or t not in members or size[t] < cfg.fragment_ratio * size[c]:
                continue
            pt = points_g[members[t]]
            lo = np.percentile(pt, 1, axis=0) - cfg.eps_m
            hi = np.percentile(pt, 99, axis=0) + cfg.eps_m
            if np.mean(np.all((pc >= lo) & (pc <= hi), axis=1)) < 0.9:
                continue
            if float(colour_distance(rgb, colors[members[t]].mean(axis=0))) >= cfg.flat_colour_distance:
                continue
            d, _ = cKDTree(pt).query(pc, k=1, distance_upper_bound=cfg.fragment_gap_m)
            if not np.isfinite(d).any():
                continue
            # something standing on the cluster's surface is an object, not a fragment of it
            under = cKDTree(pt[:, :2]).query_ball_point(pc[:, :2], cfg.hang_radius_m)
            zs = np.concatenate([pt[np.asarray(i, np.int64), 2] for i in under if len(i)] or [np.zeros(0)])
            zs = zs[zs <= np.median(pc[:, 2])]
            rises = np.ptp(pc[:, 2]) >= 2 * cfg.contact_tol_m
            if rises and len(zs):
                surface = np.percentile(zs, 95)
                mid, high = np.percentile(pc[:, 2], [50, 90])
                if mid > surface + cfg.contact_tol_m or high > surface + 1.5 * cfg.contact_tol_m:
                    continue
            if best is None or size[t] > size[best]:
                best = t
        if best is not None:
            labels[members[c]] = best
            members[best] = np.concatenate([members[best], members.pop(c)])
            size[best] += size.pop(c)
            ids.remove(c)
    return labels


def clean_objects(
    points_g: np.ndarray,
    colors: np.ndarray,
    area: np.ndarray,
    object_of: np.ndarray,
    cfg: ProposalConfig,
    floor_z: float | None = None,
) -> np.ndarray:
    """Clean-up (step 4): DBSCAN split, hanging parts and fragments joined, small clusters dropped.

    ``floor_z``: the floor's height in the gravity frame, when known (legs standing on it).

    Returns (N,) int64 object ids 0..O-1 (ordered by first node), -1 for dropped nodes.
    """
    lab = dbscan_split(points_g, object_of, cfg)
    lab = attach_hanging_parts(points_g, colors, area, lab, cfg, floor_z)
    lab = absorb_fragments(points_g, colors, area, lab, cfg)
    out = np.full(len(points_g), -1, np.int64)
    for c in np.unique(lab[lab >= 0]):
        idx = np.flatnonzero(lab == c)
        ext = points_g[idx].max(axis=0) - points_g[idx].min(axis=0)
        if area[idx].sum() >= cfg.min_area_m2 and ext.max() >= cfg.min_extent_m:
            out[idx] = c
    ok = out >= 0
    if ok.any():
        firsts = {}
        for i in np.flatnonzero(ok):
            firsts.setdefault(int(out[i]), len(firsts))
        out[ok] = np.array([firsts[int(x)] for x in out[ok]])
    return out
