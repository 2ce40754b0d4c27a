"""Feature fusion into the semantic voxel grid: keys, running means, weights, frames, persistence."""

from __future__ import annotations

import numpy as np
import pytest

from mapping.features import DenseFeatures
from mapping.fusion import (
    FeatureGrid,
    FusionConfig,
    fusion_weights,
    normals_from_points,
    pack_keys,
    sample_depth,
    unpack_keys,
)
from mapping.keyframes import KeyframeSelector
from mapping.poses import rotation_angle_deg
from sensors.camera import Camera


def unit(v) -> np.ndarray:
    """Rows of ``v`` (..., D) scaled to unit length, float64 (test_query uses it too)."""
    v = np.asarray(v, np.float64)
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def rot_y(deg: float) -> np.ndarray:
    a = np.radians(deg)
    T = np.eye(4)
    T[:3, :3] = [[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]]
    return T


# -- keys ------------------------------------------------------------------------------------
def test_pack_unpack_round_trip_and_order():
    rng = np.random.default_rng(0)
    c = rng.integers(-(1 << 20), 1 << 20, (1000, 3))
    np.testing.assert_array_equal(unpack_keys(pack_keys(c)), c)
    assert len(np.unique(pack_keys(c))) == len(np.unique(c, axis=0))
    with pytest.raises(ValueError, match="out of range"):
        pack_keys([[1 << 20, 0, 0]])


# -- running means ---------------------------------------------------------------------------
def test_fused_embedding_is_the_weighted_mean_over_all_calls():
    rng = np.random.default_rng(1)
    g = FeatureGrid(0.1, 8)
    pts = np.array([[0.01, 0.02, 0.03], [0.09, 0.05, 0.01], [0.25, 0.0, 0.0], [-0.05, 0.0, 0.0]])
    all_f, all_w, all_p = [], [], []
    for _ in range(3):  # three "frames" hitting the same voxels
        f = unit(rng.normal(size=(4, 8)))
        w = rng.uniform(0.1, 2.0, 4)
        assert g.fuse_points(pts, f, w) == 3  # points 0 and 1 share voxel (0, 0, 0)
        all_f.append(f), all_w.append(w), all_p.append(pts)
    f, w = np.concatenate(all_f), np.concatenate(all_w)
    keys = pack_keys(np.floor(np.concatenate(all_p) / 0.1))
    assert len(g) == 3
    for key in np.unique(keys):
        sel = keys == key
        row = g.find(np.array([key]))[0]
        ref = (f[sel] * w[sel, None]).sum(0) / w[sel].sum()
        np.testing.assert_allclose(g.embeddings[row].astype(np.float64), ref, atol=2e-3)  # float16 storage
        assert g.weights[row] == pytest.approx(w[sel].sum(), rel=1e-5)
        assert g.counts[row] == sel.sum()
    np.testing.assert_allclose(np.linalg.norm(g.unit_embeddings(), axis=1), 1.0, atol=1e-5)
    assert g.embeddings.dtype == np.float16 and g.weights.dtype == np.float32 and g.counts.dtype == np.int32


def test_zero_weight_points_are_ignored_and_lookup_misses_give_minus_one():
    g = FeatureGrid(0.05, 3)
    assert g.fuse_points(np.zeros((2, 3)), np.eye(3)[:2], np.array([0.0, 0.0])) == 0
    assert len(g) == 0 and g.lookup(np.zeros((1, 3)))[0] == -1
    g.fuse_points(np.array([[0.07, 0.0, 0.0]]), np.eye(3)[:1], np.ones(1))
    assert g.lookup(np.array([[0.051, 0.049, 0.0], [0.0, 0.0, 0.0]])).tolist() == [0, -1]
    np.testing.assert_allclose(g.centres(), [[0.075, 0.025, 0.025]])
    with pytest.raises(ValueError, match="dimension 4"):
        g.fuse_points(np.zeros((1, 3)), np.ones((1, 4)), np.ones(1))


def test_many_inserts_keep_the_index_consistent():
    rng = np.random.default_rng(2)
    g = FeatureGrid(0.05, 4)
    for _ in range(20):
        g.fuse_points(rng.uniform(-2, 2, (300, 3)), unit(rng.normal(size=(300, 4))), np.ones(300))
    rows = g.find(g.keys)
    np.testing.assert_array_equal(rows, np.arange(len(g)))
    assert len(np.unique(g.keys)) == len(g)


def test_copies_are_independent_and_keep_their_index():
    import copy
    import pickle

    rng = np.random.default_rng(4)
    g = FeatureGrid(0.05, 4)
    g.fuse_points(rng.uniform(-1, 1, (500, 3)), unit(rng.normal(size=(500, 4))), np.ones(500))
    for h in (copy.deepcopy(g), pickle.loads(pickle.dumps(g))):
        np.testing.assert_array_equal(h.find(g.keys), np.arange(len(g)))
        np.testing.assert_array_equal(h.embeddings, g.embeddings)
        n = len(h)
        h.fuse_points(np.array([[5.0, 5.0, 5.0]]), unit(np.ones((1, 4))), np.ones(1))
        assert len(h) == n + 1 and len(g) == n and g.lookup(np.array([[5.0, 5.0, 5.0]]))[0] == -1


def test_bytes_per_voxel():
    g = FeatureGrid(0.05, 384)
    assert g.bytes_per_voxel == 784
    g.fuse_points(np.zeros((1, 3)), unit(np.ones((1, 384))), np.ones(1))
    assert g.memory_bytes() == 784


# -- weights and frames ------------------------------------------------------------------------
def wall_points(cam: Camera, depth: float, tilt_deg: float = 0.0) -> np.ndarray:
    """(H, W, 3) camera-frame points of a plane through (0, 0, depth) rotated about y by tilt."""
    n = np.array([np.sin(np.radians(tilt_deg)), 0.0, -np.cos(np.radians(tilt_deg))])
    rays = cam.pixel_rays()
    t = (n @ np.array([0.0, 0.0, depth])) / (rays @ n)
    return rays * t[..., None]


def test_normals_face_the_camera_and_weights_follow_distance_and_angle():
    cam = Camera(50.0, 50.0, 15.5, 11.5, 32, 24)
    cfg = FusionConfig()
    front = cam.backproject(np.full((24, 32), 2.0))
    n = normals_from_points(front, np.ones((24, 32), bool), cfg.max_depth_jump)
    np.testing.assert_allclose(n[12, 16], [0, 0, -1], atol=1e-9)
    assert np.isnan(n[0]).all() and np.isnan(n[:, -1]).all()  # borders have no neighbours
    conf = np.full((24, 32), 0.8)
    w = fusion_weights(front, np.ones((24, 32), bool), conf, cfg)
    ray = np.linalg.norm(front[12, 16])
    cos = 2.0 / ray
    assert w[12, 16] == pytest.approx(0.8 * (1.0 / ray) ** 2 * cos, rel=1e-5)
    assert w[0, 0] == pytest.approx(0.8 * (1.0 / np.linalg.norm(front[0, 0])) ** 2 * cfg.unknown_normal_cos, rel=1e-5)
    # a plane seen at 60 degrees weighs about half of a frontal one at the same distance
    tilted = wall_points(cam, 2.0, 60.0)
    wt = fusion_weights(tilted, np.ones((24, 32), bool), conf, cfg)
    nt = normals_from_points(tilted, np.ones((24, 32), bool), 1.0)
    cos_t = -(nt[12, 16] @ tilted[12, 16]) / np.linalg.norm(tilted[12, 16])
    assert cos_t == pytest.approx(np.cos(np.radians(60)), abs=0.02)
    assert wt[12, 16] == pytest.approx(0.8 * np.linalg.norm(tilted[12, 16]) ** -2 * cos_t, rel=1e-4)
    # near points are not up-weighted beyond 1
    near = fusion_weights(cam.backproject(np.full((24, 32), 0.5)), np.ones((24, 32), bool), conf, cfg)
    assert near[12, 16] == pytest.approx(0.8, rel=1e-3)


def test_depth_edges_have_no_normal():
    cam = Camera(50.0, 50.0, 15.5, 11.5, 32, 24)
    d = np.full((24, 32), 2.0)
    d[:, 16:] = 3.0
    n = normals_from_points(cam.backproject(d), np.ones((24, 32), bool), 0.1)
    assert np.isnan(n[12, 15]).all() and np.isnan(n[12, 16]).all() and np.isfinite(n[12, 10]).all()


def test_fuse_frame_places_a_wall_where_it_is():
    """A frontal wall 2 m in front of a camera at x = 1 m: every voxel lies in the wall's slab."""
    cam = Camera(100.0, 100.0, 31.5, 23.5, 64, 48)
    depth = np.full((48, 64), 2.0, np.float32)
    depth[:4] = 0.0  # invalid rows are skipped
    feats = np.zeros((12, 16, 5), np.float32)
    feats[..., 1] = 1.0
    dense = DenseFeatures(feats, np.ones((12, 16), np.float32), (48, 64))
    T = np.eye(4)
    T[0, 3] = 1.0
    g = FeatureGrid(0.05, 5)
    touched = g.fuse_frame(dense, depth, cam, T)
    c = g.centres()
    assert touched == len(g) > 10
    np.testing.assert_allclose(c[:, 2], 2.025)  # z index floor(2.0 / 0.05) = 40
    half_w = 2.0 * 32 / 100.0
    assert c[:, 0].min() > 1.0 - half_w - 0.05 and c[:, 0].max() < 1.0 + half_w + 0.05
    assert c[:, 1].min() > -2.0 * 24 / 100.0 + 2.0 * 4 / 100.0 - 0.05  # the invalid top rows are missing
    np.testing.assert_allclose(g.unit_embeddings()[:, 1], 1.0, atol=1e-3)
    assert g.counts.sum() == 11 * 16  # one feature pixel per (valid) 4x4 block
    # the same features at feature resolution (e.g. a raycast) fuse to the same voxels
    g2 = FeatureGrid(0.05, 5)
    g2.fuse_frame(dense, sample_depth(depth, dense), cam, T, depth_is_feature_res=True)
    np.testing.assert_array_equal(np.sort(g2.keys), np.sort(g.keys))


def test_fuse_frame_checks_shapes():
    cam = Camera(100.0, 100.0, 31.5, 23.5, 64, 48)
    dense = DenseFeatures(np.zeros((12, 16, 5), np.float32), np.ones((12, 16), np.float32), (48, 64))
    with pytest.raises(ValueError, match="dimension 5"):
        FeatureGrid(0.05, 4).fuse_frame(dense, np.ones((48, 64)), cam, np.eye(4))
    with pytest.raises(ValueError, match="does not match"):
        FeatureGrid(0.05, 5).fuse_frame(dense, np.ones((40, 64)), cam, np.eye(4))


# -- persistence -------------------------------------------------------------------------------
def test_save_load_round_trip_is_exact(tmp_path):
    rng = np.random.default_rng(3)
    g = FeatureGrid(0.05, 6)
    g.fuse_points(rng.uniform(-1, 1, (500, 3)), unit(rng.normal(size=(500, 6))), rng.uniform(0, 1, 500))
    g.save_npz(tmp_path / "f.npz")
    h = FeatureGrid.load_npz(tmp_path / "f.npz")
    assert h.voxel_size_m == 0.05 and h.dim == 6 and len(h) == len(g)
    for a in ("keys", "embeddings", "weights", "counts"):
        np.testing.assert_array_equal(getattr(h, a), getattr(g, a))
    np.testing.assert_array_equal(h.lookup(g.centres()), np.arange(len(g)))


def test_load_rejects_an_inconsistent_file(tmp_path):
    np.savez(tmp_path / "bad.npz", keys=np.arange(3), embeddings=np.zeros((2, 4), np.float16),
             weights=np.ones(3), counts=np.ones(3), voxel_size_m=0.05)
    with pytest.raises(ValueError, match="inconsistent feature grid"):
        FeatureGrid.load_npz(tmp_path / "bad.npz")
    np.savez(tmp_path / "other.npz", x=np.zeros(3))
    with pytest.raises(ValueError, match="missing"):
        FeatureGrid.load_npz(tmp_path / "other.npz")


# -- keyframes ---------------------------------------------------------------------------------
def test_keyframes_by_translation_and_rotation():
    sel = KeyframeSelector(translation_m=0.2, rotation_deg=10.0)
    T = np.eye(4)
    decisions = []
    for i in range(10):  # 5 cm steps: a keyframe every 4 frames
        T = T.copy()
        T[0, 3] = 0.05 * i
        decisions.append(sel.update(T, i))
    assert [i for i, d in enumerate(decisions) if d] == [0, 4, 8] == sel.keyframes
    sel2 = KeyframeSelector(translation_m=1.0, rotation_deg=10.0)
    picked = [sel2.update(rot_y(3.0 * i), i) for i in range(10)]
    assert [i for i, d in enumerate(picked) if d] == [0, 4, 8]  # 12 degrees >= 10
    assert rotation_angle_deg(np.eye(3).T @ rot_y(33.0)[:3, :3]) == pytest.approx(33.0)
    forced = KeyframeSelector(1.0, 90.0, max_gap=3)
    assert [forced.update(np.eye(4), i) for i in range(7)] == [True, False, False, True, False, False, True]
    with pytest.raises(ValueError, match="positive"):
        KeyframeSelector(0.0, 10.0)
