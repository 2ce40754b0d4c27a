"""TSDFMap: integration, growth, extraction, raycast, atomic save/load."""

from __future__ import annotations

import numpy as np
import pytest

from mapping import TSDFConfig, TSDFMap
from sensors import Camera, Frame


def plane_frame(distance_m: float = 1.0, index: int = 0, T: np.ndarray | None = None) -> Frame:
    """A fronto-parallel plane at ``distance_m`` seen by a 64x48 camera."""
    cam = Camera(50.0, 50.0, 31.5, 23.5, 64, 48)
    rgb = np.full((48, 64, 3), 128, np.uint8)
    depth = np.full((48, 64), distance_m, np.float32)
    return Frame(rgb, depth, cam, np.eye(4) if T is None else T, index=index)


def test_plane_raycast_recovers_depth():
    m = TSDFMap(TSDFConfig(voxel_size_m=0.01, initial_block_count=8))
    for i in range(3):
        m.integrate(plane_frame(1.003, i))
    r = m.raycast(plane_frame().camera, np.eye(4), ("depth",))["depth"]
    hit = r > 0
    assert hit.mean() > 0.8
    assert np.abs(r[hit] - 1.003).max() < 0.005


def test_slanted_plane_is_integrated_where_its_pixels_see_it():
    """Open3D reads the pixel int(u) for a voxel projecting to u; without the half-pixel shift of
    ``integration_intrinsics`` a plane slanted in both image directions came out half a pixel
    (1 cm at 1 m with f = 50 px) off along x and y, about 9 mm off this plane along its normal."""
    cam = Camera(50.0, 50.0, 31.5, 23.5, 64, 48)
    n = np.array([-0.5, -0.5, 1.0]) / np.linalg.norm([-0.5, -0.5, 1.0])  # plane n . p = d
    d = n[2] * 1.0
    rays = cam.pixel_rays()  # (H, W, 3), z = 1
    depth = (d / (rays @ n)).astype(np.float32)
    m = TSDFMap(TSDFConfig(voxel_size_m=0.01))
    m.integrate(Frame(np.full((48, 64, 3), 128, np.uint8), depth, cam, np.eye(4)))
    v = m.extract_mesh().vertex.positions.numpy()
    assert len(v) > 100
    signed = v @ n - d
    assert abs(np.median(signed)) < 0.001, np.median(signed)  # measured -9.1 mm before the shift, 0.4 mm after


def test_block_growth_never_drops_blocks():
    m = TSDFMap(TSDFConfig(voxel_size_m=0.01, initial_block_count=1))
    m.integrate(plane_frame(1.0))
    assert m.num_blocks > 1
    assert m.vbg.hashmap().capacity() >= m.num_blocks


def test_mesh_vertices_on_plane():
    m = TSDFMap(TSDFConfig(voxel_size_m=0.01))
    m.integrate(plane_frame(0.803))
    v = m.extract_mesh().vertex.positions.numpy()
    assert len(v) > 100
    assert np.abs(v[:, 2] - 0.803).max() < 0.005


def test_min_observations_filters_surface():
    m = TSDFMap(TSDFConfig(voxel_size_m=0.01, min_observations=2))
    m.integrate(plane_frame(0.803))
    with pytest.raises(RuntimeError, match="weight threshold"):
        m.extract_mesh()
    m.integrate(plane_frame(0.803, 1))
    assert len(m.extract_mesh().vertex.positions) > 100


def test_empty_map_errors():
    m = TSDFMap()
    with pytest.raises(RuntimeError, match="empty"):
        m.extract_mesh()


def test_frame_without_pose_or_depth_rejected():
    m = TSDFMap()
    f = plane_frame()
    with pytest.raises(ValueError, match="pose"):
        m.integrate(f.with_(T_world_cam=None))
    with pytest.raises(ValueError, match="depth"):
        m.integrate(f.with_(depth=None))


def test_save_load_roundtrip(tmp_path):
    m = TSDFMap(TSDFConfig(voxel_size_m=0.01))
    m.integrate(plane_frame(1.003))
    out = m.save(tmp_path / "map")
    m2 = TSDFMap.load(out)
    assert m2.num_blocks == m.num_blocks
    assert m2.config == m.config
    a = m.extract_mesh().vertex.positions.numpy()
    b = m2.extract_mesh().vertex.positions.numpy()
    np.testing.assert_allclose(np.sort(a, axis=0), np.sort(b, axis=0))


def test_interrupted_save_leaves_no_map(tmp_path, monkeypatch):
    m = TSDFMap(TSDFConfig(voxel_size_m=0.01))
    m.integrate(plane_frame(1.0))

    def boom(directory):
        (directory / "tsdf.npz").write_bytes(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(m, "save_into", boom)
    with pytest.raises(KeyboardInterrupt):
        m.save(tmp_path / "map")
    assert not (tmp_path / "map").exists()
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------- weighted integration
def voxels(m: TSDFMap) -> dict[str, np.ndarray]:
    """Every observed voxel (weight > 0): global voxel coords (N, 3) int, tsdf (N,), weight (N,), color (N, 3).

    Sorted by coordinate, so two maps can be compared voxel by voxel. A block's buffer
    is laid out (z, y, x) (Open3D's voxel index = (z * res + y) * res + x).
    """
    hm = m.vbg.hashmap()
    idx = hm.active_buf_indices().to(m._o3c.int64)
    keys = hm.key_tensor()[idx].numpy().astype(np.int64)
    res = m.config.block_resolution
    z, y, x = np.meshgrid(np.arange(res), np.arange(res), np.arange(res), indexing="ij")
    local = np.stack([x, y, z], axis=-1).reshape(-1, 3)
    coords = (keys[:, None, :] * res + local[None]).reshape(-1, 3)
    out = {"coords": coords}
    for name in ("tsdf", "weight", "color"):
        a = m.vbg.attribute(name)[idx].numpy()
        out[name] = a.reshape(len(coords), -1).squeeze(-1) if a.shape[-1] == 1 else a.reshape(len(coords), -1)
    keep = out["weight"] > 0
    order = np.lexsort(coords[keep].T[::-1])
    return {k: v[keep][order] for k, v in out.items()}


def coloured_plane(distance_m: float, grey: int, index: int) -> Frame:
    f = plane_frame(distance_m, index)
    return f.with_(rgb=np.full_like(f.rgb, grey))


def test_weight_half_twice_equals_weight_one_once():
    """(W t + 0.5 s) / (W + 0.5) applied twice == (W t + s) / (W + 1) once, weight W + 1 both ways."""
    halves, ones = TSDFMap(TSDFConfig(voxel_size_m=0.01)), TSDFMap(TSDFConfig(voxel_size_m=0.01))
    for m in (halves, ones):
        m.integrate(coloured_plane(1.0, 40, 0))
    halves.integrate(coloured_plane(1.02, 200, 1), weight=0.5)
    halves.integrate(coloured_plane(1.02, 200, 2), weight=0.5)
    ones.integrate(coloured_plane(1.02, 200, 1))
    a, b = voxels(halves), voxels(ones)
    np.testing.assert_array_equal(a["coords"], b["coords"])
    np.testing.assert_array_equal(a["weight"], b["weight"])
    assert set(np.unique(a["weight"])) <= {1.0, 2.0} and (a["weight"] == 2.0).sum() > 1000
    np.testing.assert_allclose(a["tsdf"], b["tsdf"], atol=2e-7)
    np.testing.assert_allclose(a["color"], b["color"], atol=2e-7)


def test_weighted_tsdf_matches_closed_form_and_surface_lands_at_weighted_mean():
    """Planes at 1.00 m (weight 1) and 1.03 m (weight 0.25): every voxel seen by both holds
    (s1 + 0.25 s2) / 1.25 with s = clip(d - z, trunc) / trunc (an independent reference), and
    the surface sits at the weighted mean depth 1.006 m, not the plain mean 1.015 m."""
    cfg = TSDFConfig(voxel_size_m=0.01, trunc_voxels=4.0)
    m = TSDFMap(cfg)
    m.integrate(coloured_plane(1.00, 0, 0))
    m.integrate(coloured_plane(1.03, 255, 1), weight=0.25)
    v = voxels(m)
    assert set(np.round(np.unique(v["weight"]), 6)) <= {0.25, 1.0, 1.25}
    both = v["weight"] == np.float32(1.25)
    assert both.sum() > 1000
    z = v["coords"][both, 2] * cfg.voxel_size_m  # identity pose: camera z = world z
    trunc = cfg.sdf_trunc_m

    def s(d):
        return np.minimum(d - z, trunc) / trunc

    np.testing.assert_allclose(v["tsdf"][both], (s(1.00) + 0.25 * s(1.03)) / 1.25, atol=1e-5)
    # colour (Open3D stores it x 255): (1 * black + 0.25 * white) / 1.25
    np.testing.assert_allclose(v["color"][both], 255 * 0.25 / 1.25, rtol=1e-6)
    depth = m.raycast(plane_frame().camera, np.eye(4))["depth"]
    hit = depth > 0
    assert hit.mean() > 0.8
    assert np.abs(depth[hit] - (1.00 + 0.25 * 1.03) / 1.25).max() < 1e-3


def test_per_pixel_weights_equal_scalar_weights_on_their_pixels():
    """A weight map (left half 1, right half 0.5) gives each voxel exactly what the scalar
    weight of its pixel gives: compared with two maps integrated with scalar weights."""
    cfg = TSDFConfig(voxel_size_m=0.01)
    maps = {k: TSDFMap(cfg) for k in ("map", 1.0, 0.5)}
    for m in maps.values():
        m.integrate(coloured_plane(1.0, 40, 0))
    second = coloured_plane(1.02, 200, 1)
    wmap = np.ones(second.camera.shape, np.float32)
    wmap[:, 32:] = 0.5
    maps["map"].integrate(second, weight=wmap)
    maps[1.0].integrate(second, weight=1.0)
    maps[0.5].integrate(second, weight=0.5)
    v, ref = voxels(maps["map"]), {k: voxels(maps[k]) for k in (1.0, 0.5)}
    seen = 0
    for a, total in ((1.0, 2.0), (0.5, 1.5)):
        r = ref[a]
        sel = v["weight"] == np.float32(total)
        seen += sel.sum()
        # each such voxel is present in the scalar map with the same values
        pos = np.searchsorted(r["coords"].view("i8,i8,i8").ravel(), v["coords"][sel].copy().view("i8,i8,i8").ravel())
        np.testing.assert_array_equal(r["coords"][pos], v["coords"][sel])
        np.testing.assert_array_equal(r["weight"][pos], v["weight"][sel])
        np.testing.assert_allclose(r["tsdf"][pos], v["tsdf"][sel], atol=1e-7)
        np.testing.assert_allclose(r["color"][pos], v["color"][sel], atol=1e-7)
        assert sel.sum() > 500
    assert seen == (v["weight"] > 1.0).sum()  # every voxel of the second frame is one of the two


def test_min_observations_is_summed_weight():
    m = TSDFMap(TSDFConfig(voxel_size_m=0.01, min_observations=1))
    for i in range(3):
        m.integrate(plane_frame(0.803, i), weight=0.3)
    with pytest.raises(RuntimeError, match="weight threshold"):  # 0.9 < 1
        m.extract_mesh()
    assert len(m.extract_mesh(min_observations=0.9).vertex.positions) > 100
    m.integrate(plane_frame(0.803, 3), weight=0.1)  # 0.3 * 3 + 0.1 = 1 (within float32 rounding)
    assert len(m.extract_mesh().vertex.positions) > 100
    assert m.frames_integrated == [0, 1, 2, 3]


def test_bad_weights_are_clear_errors():
    m = TSDFMap(TSDFConfig(voxel_size_m=0.01))
    f = plane_frame()
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="positive finite"):
            m.integrate(f, weight=bad)
    with pytest.raises(ValueError, match="does not match the frame"):
        m.integrate(f, weight=np.ones((10, 10), np.float32))
    with pytest.raises(ValueError, match="finite and >= 0"):
        m.integrate(f, weight=np.full(f.camera.shape, -1.0, np.float32))
    many = np.random.default_rng(0).uniform(0.1, 1.0, f.camera.shape).astype(np.float32)
    with pytest.raises(ValueError, match="distinct positive values"):
        m.integrate(f, weight=many)
    assert m.num_blocks == 0 and m.frames_integrated == []
    with pytest.raises(ValueError, match="positive"):
        TSDFConfig(min_observations=0)


def test_tensor_reweighting_path_matches_numpy_path():
    """The Open3D-tensor weight update (used on CUDA) gives the same volume as the CPU numpy one."""
    maps = []
    for numpy_views in (True, False):
        m = TSDFMap(TSDFConfig(voxel_size_m=0.01))
        m._numpy_views = numpy_views
        m.integrate(coloured_plane(1.0, 40, 0))
        m.integrate(coloured_plane(1.02, 200, 1), weight=0.4)
        maps.append(voxels(m))
    a, b = maps
    np.testing.assert_array_equal(a["coords"], b["coords"])
    for k in ("tsdf", "weight", "color"):
        np.testing.assert_array_equal(a[k], b[k])
    assert (a["weight"] == np.float32(1.4)).sum() > 1000


def test_frame_with_no_depth_in_range_adds_nothing():
    """All depth beyond depth_max (e.g. an outdoor model's prediction): no blocks, no error."""
    m = TSDFMap(TSDFConfig(voxel_size_m=0.01, depth_max_m=4.0))
    m.integrate(plane_frame(9.0), weight=0.3)
    m.integrate(plane_frame(9.0, 1))
    assert m.num_blocks == 0 and m.frames_integrated == [0, 1]
