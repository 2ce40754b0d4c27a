"""Relevancy (LERF) and region clustering against hand-computed answers."""

from __future__ import annotations

import numpy as np
import pytest

from mapping.query import (
    DEFAULT_NEGATIVES,
    QueryConfig,
    best_match,
    connected_components,
    find_regions,
    lerf_relevancy,
    region_threshold,
    split_by_peaks,
)
from tests.mapping.test_fusion import unit


def test_relevancy_is_the_min_over_negatives_of_the_pairwise_softmax():
    rng = np.random.default_rng(0)
    emb = unit(rng.normal(size=(50, 16))).astype(np.float32)
    q = unit(rng.normal(size=16))
    negs = unit(rng.normal(size=(4, 16)))
    got = lerf_relevancy(emb, q, negs, temperature=0.1)
    for i in range(50):  # LERF's formula written out: min_k softmax([phi.q, phi.n_k] / T)[0]
        pair = [np.exp(10 * emb[i] @ q) / (np.exp(10 * emb[i] @ q) + np.exp(10 * emb[i] @ n)) for n in negs]
        assert got[i] == pytest.approx(min(pair), rel=1e-5)
    assert got.dtype == np.float32 and got.shape == (50,)


def test_relevancy_is_one_half_when_the_query_is_a_negative_and_zero_rows_are_neutral():
    negs = np.eye(3)
    emb = np.array([[1.0, 0, 0], [0, 0, 0]], np.float32)
    np.testing.assert_allclose(lerf_relevancy(emb, negs[0], negs), [0.5, 0.5])
    with pytest.raises(ValueError, match="dimension"):
        lerf_relevancy(emb, np.ones(4), np.ones((1, 4)))


def test_config_defaults_and_checks():
    cfg = QueryConfig()
    assert cfg.negatives == DEFAULT_NEGATIVES == ("object", "things", "stuff", "texture")
    assert cfg.temperature == 0.1 and cfg.threshold == 0.0 and cfg.relative_threshold == 0.5
    with pytest.raises(ValueError, match="negatives"):
        QueryConfig(negatives=("object", " "))
    with pytest.raises(ValueError, match="temperature"):
        QueryConfig(temperature=0.0)
    assert cfg.reference_names == "auto"  # per-encoder defaults (ENCODER_QUERY_DEFAULTS)
    assert cfg.for_encoder("lite").reference_names == "imagenet"
    assert cfg.for_encoder("clip:/models/clip").reference_names is None
    assert QueryConfig(reference_names=None).for_encoder("lite").reference_names is None  # explicit wins
    with pytest.raises(ValueError, match="reference_names"):
        QueryConfig(reference_names="wordnet")
    with pytest.raises(ValueError, match="reference_names"):
        QueryConfig(reference_names=("mug", ""))
    with pytest.raises(ValueError, match="at least 2"):
        QueryConfig(reference_names=("mug",))


def test_reference_names_keep_the_voxel_the_query_describes_best():
    # axes: 0 "chair", 1 "dining table", 2 "object", 3 what no name describes; voxel A is a
    # chair also close to "dining table", voxel B a table top that only "dining table" fits
    names = ("chair", "dining table", "lamp")
    name_emb = unit([[1.0, 0.1, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0], [0.1, 0.0, 1.0, 0.0]])
    emb = unit([[1.0, 0.9, 0.0, 0.0], [0.2, 0.6, 0.0, 0.75]]).astype(np.float32)
    negatives = unit([[0.0, 0.0, 1.0, 0.0]])
    query = name_emb[1]
    plain = lerf_relevancy(emb, query, negatives)
    assert plain[0] > plain[1]  # the chair is nearer "dining table" than the table is
    match = best_match(emb, names, name_emb, chunk=1)
    assert match.best_index.tolist() == [0, 1]
    np.testing.assert_allclose(match.best, [emb[0] @ name_emb[0], emb[1] @ name_emb[1]], rtol=1e-6)
    np.testing.assert_allclose(match.second, [emb[0] @ name_emb[1], emb[1] @ name_emb[0]], rtol=1e-6)
    # the query's own name is left out (case-insensitively): on B it competes with "chair"
    floor = match.floor("Dining Table")
    np.testing.assert_allclose(floor, [match.best[0], match.second[1]])
    ranked = lerf_relevancy(emb, query, negatives, floor=floor)
    assert ranked[1] > 0.5 > ranked[0]  # "chair" describes A better; nothing beats "dining table" on B
    # a query outside the names competes with every name
    np.testing.assert_array_equal(match.floor("coffee mug"), match.best)
    with pytest.raises(ValueError, match="at least 2"):
        best_match(emb, names[:1], name_emb[:1])


@pytest.mark.parametrize("gap,radius,expected", [(0, 0, 1), (1, 0, 2), (1, 1, 1), (2, 1, 1), (3, 1, 2), (4, 2, 1)])
def test_connected_components_bridge_gaps_up_to_twice_the_radius(gap, radius, expected):
    a = np.array([[0, 0, 0], [1, 0, 0]])
    b = a + [2 + gap, 0, 0]  # gap empty voxels between the two pairs
    labels = connected_components(np.concatenate([a, b]), radius)
    assert len(np.unique(labels)) == expected
    assert labels[0] == labels[1] and labels[2] == labels[3]


def test_diagonal_neighbours_are_connected():
    labels = connected_components(np.array([[0, 0, 0], [1, 1, 1], [5, 5, 5]]), 0)
    assert labels[0] == labels[1] != labels[2]


def blob(centre, r: int) -> np.ndarray:
    g = np.stack(np.meshgrid(*[np.arange(-r, r + 1)] * 3, indexing="ij"), -1).reshape(-1, 3)
    return g + np.asarray(centre)


def test_regions_are_ranked_with_their_geometry():
    small = blob([10, 0, 0], 0)  # one voxel: dropped (min_voxels 2)
    a = blob([0, 0, 0], 1)  # 27 voxels, relevancy 0.8 (peak 0.9)
    b = blob([0, 20, 0], 1)  # 27 voxels, relevancy 0.7
    bg = blob([0, 0, 20], 2)  # 125 background voxels, 0.2
    coords = np.concatenate([small, a, b, bg])
    rel = np.concatenate([[0.99], np.full(27, 0.8), np.full(27, 0.7), np.full(125, 0.2)]).astype(np.float32)
    rel[1 + 13] = 0.9  # the centre voxel of a
    regions = find_regions(coords, rel, 0.05, QueryConfig(threshold=0.5, relative_threshold=0.0, support_weight=0))
    assert [r.rank for r in regions] == [1, 2]
    ra, rb = regions
    assert ra.voxel_count == 27 and rb.voxel_count == 27
    assert ra.score == pytest.approx((0.9 + 4 * 0.8) / 5)  # mean of the 5 most relevant voxels
    assert rb.score == pytest.approx(0.7) and ra.max_relevancy == pytest.approx(0.9)
    np.testing.assert_allclose(ra.centroid, [0.025, 0.025, 0.025], atol=1e-9)  # symmetric blob
    np.testing.assert_allclose(ra.bbox_min, [-0.05, -0.05, -0.05])
    np.testing.assert_allclose(ra.bbox_max, [0.1, 0.1, 0.1])
    np.testing.assert_allclose(rb.centroid, [0.025, 1.025, 0.025], atol=1e-6)
    assert ra.contains([0.0, 0.0, 0.0]) and not ra.contains([0.0, 1.0, 0.0])
    assert set(ra.to_dict()) == {"rank", "score", "centroid", "bbox_min", "bbox_max", "voxel_count", "max_relevancy"}
    assert len(find_regions(coords, rel, 0.05, QueryConfig(threshold=0.5, relative_threshold=0.0), top=1)) == 1
    # candidates exclude a region
    allowed = np.ones(len(rel), bool)
    allowed[1:28] = False
    only_b = find_regions(coords, rel, 0.05, QueryConfig(threshold=0.5, relative_threshold=0.0), candidates=allowed)
    assert len(only_b) == 1 and only_b[0].voxel_count == 27


def test_relative_threshold_singles_out_the_peak_when_everything_is_above_one_half():
    coords = np.concatenate([blob([0, 0, 0], 1), blob([0, 10, 0], 1), blob([10, 0, 0], 3)])
    rel = np.concatenate([np.full(27, 0.95), np.full(27, 0.7), np.full(343, 0.6)]).astype(np.float32)
    cfg = QueryConfig(threshold=0.5, relative_threshold=0.5)
    assert region_threshold(rel, cfg) == pytest.approx(0.6 + 0.5 * 0.35)
    regions = find_regions(coords, rel, 0.05, cfg)
    assert len(regions) == 1 and regions[0].voxel_count == 27
    assert len(find_regions(coords, rel, 0.05, QueryConfig(threshold=0.5, relative_threshold=0.0))) == 3
    assert find_regions(coords, rel, 0.05, QueryConfig(threshold=0.96)) == []  # absolute floor


def test_a_component_with_two_peaks_is_split_between_them():
    """Two screens on one wall: a row of 30 voxels (1.5 m) whose relevancy peaks at both ends."""
    coords = np.stack([np.arange(30), np.zeros(30, int), np.zeros(30, int)], -1)
    x = np.arange(30)
    rel = (0.6 + 0.3 * np.maximum(np.exp(-0.5 * ((x - 4) / 3) ** 2), np.exp(-0.5 * ((x - 25) / 3) ** 2))).astype(
        np.float32
    )
    whole = find_regions(coords, rel, 0.05, QueryConfig(relative_threshold=0.0, split_radius_m=None))
    assert len(whole) == 1 and whole[0].voxel_count == 30
    parts = find_regions(coords, rel, 0.05, QueryConfig(relative_threshold=0.0, split_radius_m=0.3))
    assert len(parts) == 2 and sum(r.voxel_count for r in parts) == 30
    ends = sorted(r.centroid[0] for r in parts)
    assert ends[0] < 0.5 < 1.0 < ends[1]  # each part is centred on its own peak
    # voxels go to the nearer peak: the split falls half-way between x = 4 and x = 25
    labels = split_by_peaks((coords + 0.5) * 0.05, rel, np.zeros(30, np.int64), 0.3)
    assert (labels[:15] == labels[0]).all() and (labels[15:] == labels[29]).all() and labels[0] != labels[29]
    # a plateau gives one peak (ties broken by index), and peaks closer than the radius merge
    pts, one = (coords + 0.5) * 0.05, np.zeros(30, np.int64)
    assert len(np.unique(split_by_peaks(pts, np.ones(30, np.float32), one, 0.3))) == 1
    assert len(np.unique(split_by_peaks(pts, rel, one, 2.0))) == 1


def test_scores_are_shrunk_towards_the_median_by_the_evidence_behind_them():
    """A 2-voxel speck at relevancy 0.9 seen once from afar (weight 0.05 each) and an
    object-sized blob at 0.8 seen well (weight 1 each): without the prior the speck ranks
    first; with it the score is median + (peak - median) W / (W + W0)."""
    speck = blob([10, 0, 0], 0)
    speck = np.concatenate([speck, speck + [1, 0, 0]])
    obj = blob([0, 0, 0], 1)
    bg = blob([0, 0, 20], 2)
    coords = np.concatenate([speck, obj, bg])
    rel = np.concatenate([np.full(2, 0.9), np.full(27, 0.8), np.full(125, 0.2)]).astype(np.float32)
    weights = np.concatenate([np.full(2, 0.05), np.full(27, 1.0), np.full(125, 1.0)]).astype(np.float32)
    base = {"threshold": 0.5, "relative_threshold": 0.0}
    plain = find_regions(coords, rel, 0.05, QueryConfig(**base, support_weight=0), weights=weights)
    assert [r.voxel_count for r in plain] == [2, 27]
    ranked = find_regions(coords, rel, 0.05, QueryConfig(**base, support_weight=1.0), weights=weights)
    assert [r.voxel_count for r in ranked] == [27, 2]
    assert ranked[0].score == pytest.approx(0.2 + 0.6 * 27 / 28)
    assert ranked[1].score == pytest.approx(0.2 + 0.7 * 0.1 / 1.1)
    # without weights every voxel counts 1
    unweighted = find_regions(coords, rel, 0.05, QueryConfig(**base, support_weight=1.0))
    assert [r.score for r in unweighted] == pytest.approx([0.2 + 0.6 * 27 / 28, 0.2 + 0.7 * 2 / 3])
    with pytest.raises(ValueError, match="support_weight"):
        QueryConfig(support_weight=-1)
