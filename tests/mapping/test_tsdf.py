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
