"""Surface graph and Felzenszwalb-Huttenlocher segmentation against hand-made answers."""

from __future__ import annotations

import numpy as np
import pytest

from scenegraph.segmentation import edge_weights, felzenszwalb, segment_surface
from scenegraph.surface import surface_graph


def reference_fh(n: int, edges: np.ndarray, weights: np.ndarray, k: float, min_size: int) -> np.ndarray:
    """Independent FH: components as explicit sets, Int(C) kept as the max MST weight."""
    comp = {i: {i} for i in range(n)}
    owner = list(range(n))
    internal = {i: 0.0 for i in range(n)}
    order = sorted(range(len(edges)), key=lambda e: (weights[e], e))
    for e in order:
        a, b = owner[edges[e][0]], owner[edges[e][1]]
        if a == b:
            continue
        w = weights[e]
        if w <= min(internal[a] + k / len(comp[a]), internal[b] + k / len(comp[b])):
            keep, gone = (a, b) if len(comp[a]) >= len(comp[b]) else (b, a)
            comp[keep] |= comp.pop(gone)
            for x in comp[keep]:
                owner[x] = keep
            internal[keep] = max(internal[keep], internal.pop(gone), w)
    for e in order:
        a, b = owner[edges[e][0]], owner[edges[e][1]]
        if a != b and (len(comp[a]) < min_size or len(comp[b]) < min_size):
            keep, gone = (a, b) if len(comp[a]) >= len(comp[b]) else (b, a)
            comp[keep] |= comp.pop(gone)
            for x in comp[keep]:
                owner[x] = keep
    return np.array(owner)


def same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    pairs = set(zip(a.tolist(), b.tolist()))
    return len(pairs) == len(set(a.tolist())) == len(set(b.tolist()))


def test_fh_two_plateaus():
    """Two chains of light edges joined by one heavy edge split there."""
    edges = np.array([[0, 1], [1, 2], [2, 3], [3, 4], [4, 5], [5, 6]])
    w = np.array([0.01, 0.02, 0.01, 0.9, 0.02, 0.01])
    lab = felzenszwalb(7, edges, w, k=0.1)
    assert lab.tolist() == [0, 0, 0, 0, 1, 1, 1]
    # a scale big enough to swallow the heavy edge merges everything
    assert set(felzenszwalb(7, edges, w, k=10.0).tolist()) == {0}


@pytest.mark.parametrize("seed", range(6))
def test_fh_matches_reference_on_random_graphs(seed):
    rng = np.random.default_rng(seed)
    n = 60
    edges = np.unique(np.sort(rng.integers(0, n, (150, 2)), axis=1), axis=0)
    edges = edges[edges[:, 0] != edges[:, 1]]
    w = rng.random(len(edges)) ** 2
    for k, min_size in ((0.05, 1), (0.3, 1), (0.2, 4)):
        got = felzenszwalb(n, edges, w, k, min_size)
        ref = reference_fh(n, edges, w, k, min_size)
        assert same_partition(got, ref), (seed, k, min_size)


def test_fh_bad_input():
    with pytest.raises(ValueError):
        felzenszwalb(3, np.array([[0, 5]]), np.array([0.1]), 0.1)
    with pytest.raises(ValueError):
        felzenszwalb(3, np.array([[0, 1]]), np.array([0.1, 0.2]), 0.1)


def test_edge_weights_concave_costs_more_than_convex():
    """A 30 degree fold weighs 1 - cos when concave (folding towards the viewer side), its square when convex."""
    p = np.array([[0.0, 0, 0], [1.0, 0, 0]])
    edges = np.array([[0, 1]])
    up = [0.0, 0.0, 1.0]
    towards = [-np.sin(0.5), 0.0, np.cos(0.5)]  # normal at p1 leaning back over p0: concave
    away = [np.sin(0.5), 0.0, np.cos(0.5)]  # leaning away from p0: convex
    concave = edge_weights(p, np.array([up, towards]), None, edges)[0]
    convex = edge_weights(p, np.array([up, away]), None, edges)[0]
    assert concave == pytest.approx(1 - np.cos(0.5))
    assert convex == pytest.approx((1 - np.cos(0.5)) ** 2)
    assert convex < concave
    rgb = np.array([[1.0, 0, 0], [0, 0, 1.0]])
    assert edge_weights(p, np.array([up, up]), rgb, edges, color_weight=0.5)[0] == pytest.approx(0.5 * np.sqrt(2))


def test_surface_graph_of_two_boxes_segments_them():
    """Two separate unit boxes on a grid: node areas add up, FH gives one segment per face."""
    from sensors.scenes import box_surface, merge_parts

    v, t = merge_parts([box_surface([0, 0, 0], [1, 1, 1], 0.1), box_surface([3, 0, 0], [4, 1, 1], 0.1)])
    g = surface_graph(v, t, None, 0.1)
    assert g.area_m2.sum() == pytest.approx(12.0, rel=1e-6)
    assert np.allclose(np.linalg.norm(g.normals, axis=1), 1.0)
    assert (g.edges[:, 0] < g.edges[:, 1]).all() and len(np.unique(g.edges, axis=0)) == len(g.edges)
    lab = segment_surface(g, k=0.05, min_size=1, color_weight=0.0)
    # no segment spans both boxes, and every face of a box is in few segments
    left = g.points[:, 0] < 2
    assert not set(lab[left]) & set(lab[~left])
    assert 6 <= len(set(lab[left])) <= 30


def test_surface_graph_rejects_empty():
    with pytest.raises(ValueError):
        surface_graph(np.zeros((3, 3)), np.zeros((0, 3), np.int64), None, 0.02)


def _grid(lo, hi, step=0.02):
    """(N, 3) points filling the box [lo, hi] on a ``step`` grid (a flat box when lo == hi on an axis)."""
    axes = [np.arange(a, b + 1e-9, step) if b > a else np.array([a]) for a, b in zip(lo, hi)]
    return np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 3)


def _table_part_and_box(leg_top_z: float):
    """A light 1.2 x 0.8 m table top at 0.75 m (label 0), a dark 4 cm leg piece from the floor
    up to ``leg_top_z`` (label 1) and a dark 30 cm box on the floor under the top (label 2).

    Returns (N, 3) points, (N, 3) colours, (N,) node areas and (N,) labels.
    """
    top = _grid([0.0, 0.0, 0.75], [1.2, 0.8, 0.75])
    leg = _grid([0.06, 0.06, 0.0], [0.1, 0.1, leg_top_z])
    box = _grid([0.5, 0.3, 0.0], [0.8, 0.6, 0.3])
    pts = np.concatenate([top, leg, box])
    lab = np.repeat([0, 1, 2], [len(top), len(leg), len(box)])
    rgb = np.array([[0.8, 0.65, 0.5], [0.2, 0.15, 0.15], [0.2, 0.15, 0.15]])[lab]
    return pts, rgb, np.full(len(pts), 0.0004), lab


def test_attach_hanging_parts_joins_a_dark_post_not_a_box_under_a_table():
    """A slender dark leg whose top is 12 cm under a light table top joins it whatever its
    colour; a dark box under the top, as wide as it is tall, stays an object."""
    from scenegraph.objects import ProposalConfig, attach_hanging_parts

    pts, rgb, area, lab = _table_part_and_box(leg_top_z=0.63)
    out = attach_hanging_parts(pts, rgb, area, lab, ProposalConfig().resolved(0.02))
    assert (out[lab == 1] == out[lab == 0][0]).all(), "the leg joins the table"
    assert (out[lab == 2] != out[lab == 0][0]).all(), "the box stays apart"


def test_attach_hanging_parts_joins_a_leg_foot_standing_on_the_floor():
    """The foot of a leg (a short stub on the floor, 65 cm under the table top, its
    shadowed middle missing) joins the table when the floor height is known, and only
    then; a dark box under the top stays an object either way."""
    from scenegraph.objects import ProposalConfig, attach_hanging_parts

    pts, rgb, area, lab = _table_part_and_box(leg_top_z=0.1)
    cfg = ProposalConfig().resolved(0.02)
    out = attach_hanging_parts(pts, rgb, area, lab, cfg, floor_z=0.0)
    assert (out[lab == 1] == out[lab == 0][0]).all(), "the foot on the floor joins the table"
    assert (out[lab == 2] != out[lab == 0][0]).all(), "the box stays apart"
    out = attach_hanging_parts(pts, rgb, area, lab, cfg)
    assert (out[lab == 1] != out[lab == 0][0]).all(), "without the floor height the 65 cm gap is too wide"


def _counter_with_dark_front(width_m: float, depth_m: float):
    """A light counter top (z = 0.9, normals up) whose front edge (y = 0) folds, over a
    convex edge, into a 0.4 m wide dark panel hanging down the front (normals -y).
    Returns points, normals, colours, areas, 4-neighbour grid edges and FH labels (0 top, 1 panel)."""
    s = 0.02
    top = _grid([0.0, s, 0.9], [width_m, depth_m, 0.9], s)
    panel = _grid([0.6, 0.0, 0.7], [1.0, 0.0, 0.88], s)
    pts = np.concatenate([top, panel])
    lab = np.repeat([0, 1], [len(top), len(panel)])
    nrm = np.where(lab[:, None] == 0, [0.0, 0.0, 1.0], [0.0, -1.0, 0.0])
    rgb = np.array([[0.6, 0.6, 0.6], [0.2, 0.2, 0.2]])[lab]
    key = {tuple(np.round(p / s).astype(int)): i for i, p in enumerate(pts)}
    edges = []
    for i, p in enumerate(pts):
        c = tuple(np.round(p / s).astype(int))
        for d in ((1, 0, 0), (0, 1, 0), (0, 0, 1), (0, 1, 1)):  # (0, 1, 1): panel's top row to the top's front row
            j = key.get((c[0] + d[0], c[1] + d[1], c[2] + d[2]))
            if j is not None:
                edges.append((i, j))
    return pts, nrm, rgb, np.full(len(pts), s * s), np.array(edges, np.int64), lab


@pytest.mark.parametrize("size, split", [((2.0, 2.0), True), ((1.2, 0.8), False)])
def test_split_oversized_cuts_a_dark_part_off_a_light_counter_over_a_convex_edge(size, split):
    """A dark panel meeting a light counter top only over a convex edge joins it in
    merge_segments (convex boundaries never separate); split_oversized cuts it off when
    the object is larger than furniture (2 x 2 m), and leaves a table-sized one whole."""
    from scenegraph.objects import ProposalConfig, merge_segments, split_oversized

    pts, nrm, rgb, area, edges, lab = _counter_with_dark_front(*size)
    cfg = ProposalConfig().resolved(0.02)
    obj = merge_segments(pts, nrm, rgb, area, edges, lab, cfg)
    assert len(np.unique(obj)) == 1, "merge_segments joins across the convex edge"
    out = split_oversized(pts, nrm, rgb, area, edges, lab, obj, cfg)
    apart = len(set(out[lab == 0]) | set(out[lab == 1])) == 2
    assert apart == split, f"parts {np.unique(out)} for a {size} m counter"
    assert len(set(out[lab == 0])) == 1 and len(set(out[lab == 1])) == 1


def test_merge_segments_keeps_apart_segments_whose_features_differ():
    """Two same-coloured halves of a flat patch joined by many mesh edges merge, unless
    their segment embeddings are less similar than ``feature_min_similarity``; a segment
    without an embedding (zeros) does not block a merge."""
    from scenegraph.objects import ProposalConfig, merge_segments

    s = 0.02
    pts = _grid([0.0, 0.0, 0.0], [0.3, 0.1, 0.0], s) + [0.0, 0.0, 0.8]
    pts[:, 2] += 0.2 * pts[:, 1]  # tilted: not a support surface
    lab = (pts[:, 0] > 0.15).astype(np.int64)
    nrm = np.tile([0.0, -0.98, 0.2], (len(pts), 1))
    rgb = np.full((len(pts), 3), 0.5)
    cells = [tuple(np.round(p[:2] / s).astype(int)) for p in pts]
    key = {c: i for i, c in enumerate(cells)}
    edges = []
    for i, (x, y) in enumerate(cells):
        edges += [(i, key[n]) for n in ((x + 1, y), (x, y + 1)) if n in key]
    edges = np.array(edges, np.int64)
    area = np.full(len(pts), s * s)
    cfg = ProposalConfig().resolved(0.02)
    assert cfg.feature_min_similarity == 0.3
    alike = np.array([[1.0, 0.0], [0.8, 0.6]], np.float32)  # cosine 0.8
    unlike = np.array([[1.0, 0.0], [0.0, 1.0]], np.float32)  # cosine 0
    unknown = np.array([[1.0, 0.0], [0.0, 0.0]], np.float32)
    for emb, parts in ((None, 1), (alike, 1), (unlike, 2), (unknown, 1)):
        obj = merge_segments(pts, nrm, rgb, area, edges, lab, cfg, emb)
        assert len(np.unique(obj)) == parts, (emb, np.unique(obj))
