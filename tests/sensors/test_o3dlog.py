"""O3DLogSource on Open3D's real ICL-NUIM test frames (shared data) and broken copies."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy.spatial import cKDTree

from sensors import Camera, SourceError, detect_source, open_source
from sensors.o3dlog import PRIMESENSE, O3DLogSource, read_o3d_intrinsic
from sensors.trajectory_io import read_o3d_log
from tests.sensors.conftest import SOURCES, dataset


@pytest.fixture(scope="module", params=SOURCES)
def rgbd(request, generated) -> Path:
    """Open3D's ICL-NUIM test frames, or 5 generated frames in their layout (tests/sensors/minidata.py)."""
    return dataset(request.param, generated, "open3d-rgbd", "RGBD")


@pytest.fixture
def rgbd_copy(rgbd, tmp_path) -> Path:
    """A writable copy: <tmp>/RGBD with camera_primesense.json one level up, as shared."""
    dst = tmp_path / "RGBD"
    shutil.copytree(rgbd, dst, ignore=shutil.ignore_patterns("other_formats"))
    shutil.copy(rgbd.parent / "camera_primesense.json", tmp_path)
    for p in [dst, *dst.rglob("*")]:
        p.chmod(0o755 if p.is_dir() else 0o644)
    return dst


def _world_cloud(frame, step: int = 2, invert: bool = False) -> np.ndarray:
    d = frame.depth[::step, ::step]
    cam = frame.camera.resized(d.shape[1], d.shape[0])
    T = np.linalg.inv(frame.T_world_cam) if invert else frame.T_world_cam
    return cam.backproject_valid(d, T)


def test_loads_five_metric_frames(rgbd):
    src = O3DLogSource(rgbd)
    assert len(src) == 5 and src.has_poses
    assert src.camera == PRIMESENSE and src.camera_origin.endswith("camera_primesense.json")
    log = read_o3d_log(rgbd / "trajectory.log").T_world_cam
    for i, f in enumerate(src):
        raw = np.asarray(Image.open(rgbd / "depth" / f"{i:05d}.png")).astype(np.float64)
        assert f.rgb.shape == (480, 640, 3) and f.depth.dtype == np.float32
        assert np.abs(f.depth - raw / 1000.0).max() < 1e-6
        # the living-room frames look at a wall ~1.9 m away (millimetres, not 0.1 mm units)
        assert 1.5 < np.median(f.depth[f.depth > 0]) < 2.5
        np.testing.assert_allclose(f.T_world_cam, log[i], atol=1e-12)
        assert f.name == str(rgbd / "color" / f"{i:05d}.jpg") and f.timestamp == i


def test_poses_are_camera_to_world(rgbd):
    src = O3DLogSource(rgbd)
    a, b = src[0], src[4]  # camera moved 9.8 cm between them
    dist, _ = cKDTree(_world_cloud(a)).query(_world_cloud(b))
    # measured 5.4 mm (the sampling floor at step 2 is ~5 mm); identity poses give 22 mm
    assert np.median(dist) < 0.01, np.median(dist)
    dist_inv, _ = cKDTree(_world_cloud(a, invert=True)).query(_world_cloud(b, invert=True))
    # reading the log as world-to-camera would misalign the clouds: measured 52 mm
    assert np.median(dist_inv) > 0.03, np.median(dist_inv)


def test_detect_and_open_source(rgbd):
    assert O3DLogSource.detect(rgbd) and not O3DLogSource.detect(rgbd / "depth")
    assert detect_source(rgbd) == "o3dlog"
    src = open_source(f"o3dlog:{rgbd}")
    assert isinstance(src, O3DLogSource) and len(src) == 5


def test_image_folder_and_default_camera(rgbd_copy):
    (rgbd_copy / "color").rename(rgbd_copy / "image")
    (rgbd_copy.parent / "camera_primesense.json").unlink()
    with pytest.warns(UserWarning, match="PrimeSense defaults"):
        src = O3DLogSource(rgbd_copy)
    assert src.camera_origin == "default" and src.color_paths[0].parent.name == "image"
    assert src[2].rgb.shape == (480, 640, 3)


def test_intrinsic_json_is_column_major(tmp_path):
    p = tmp_path / "camera_x.json"
    p.write_text(json.dumps({"width": 320, "height": 240, "intrinsic_matrix": [300, 0, 0, 0, 310, 0, 160, 120, 1]}))
    assert read_o3d_intrinsic(p) == Camera(300.0, 310.0, 160.0, 120.0, 320, 240)
    p.write_text(json.dumps({"width": 320, "height": 240, "intrinsic_matrix": [300, 0, 160, 0, 310, 120, 0, 0, 1]}))
    with pytest.raises(SourceError, match="camera_x.json: intrinsic_matrix is not a pinhole K"):
        read_o3d_intrinsic(p)
    p.write_text(json.dumps({"width": 320, "intrinsic_matrix": [1, 0, 0]}))
    with pytest.raises(SourceError, match="camera_x.json: expected Open3D intrinsics"):
        read_o3d_intrinsic(p)


def test_missing_pose_in_log_warns(rgbd_copy):
    log = rgbd_copy / "trajectory.log"
    log.write_text("\n".join(log.read_text().splitlines()[:20]) + "\n")  # poses for frames 0-3 only
    with pytest.warns(UserWarning, match="1 of 5 frames have no pose"):
        src = O3DLogSource(rgbd_copy)
    assert src[4].T_world_cam is None and src[3].T_world_cam is not None


# ---- bad input: every error is a SourceError naming the file ----


def test_count_mismatch(rgbd_copy):
    (rgbd_copy / "depth" / "00003.png").unlink()
    with pytest.raises(SourceError, match="5 colour images in color/ but 4 depth images"):
        O3DLogSource(rgbd_copy)


def test_log_with_bad_pose_or_frame_id(rgbd_copy):
    log = rgbd_copy / "trajectory.log"
    lines = log.read_text().splitlines()
    bad = list(lines)
    bad[6] = "2 0 0 0"  # first matrix row of frame 1 scaled: not a rotation
    log.write_text("\n".join(bad) + "\n")
    with pytest.raises(SourceError, match="trajectory.log: frame 1: pose rotation is not a proper rotation"):
        O3DLogSource(rgbd_copy)
    bad = list(lines)
    bad[20] = "7 7 8"
    log.write_text("\n".join(bad) + "\n")
    with pytest.raises(SourceError, match="trajectory.log: pose for frame 7 but the folder has 5 frames"):
        O3DLogSource(rgbd_copy)


def test_corrupt_depth_and_ambiguous_camera(rgbd_copy):
    src = O3DLogSource(rgbd_copy)
    (rgbd_copy / "depth" / "00002.png").write_bytes(b"\x89PNG\r\n\x1a\ntruncated")
    with pytest.raises(SourceError, match="00002.png: cannot decode depth image"):
        src.load(2)
    shutil.copy(rgbd_copy.parent / "camera_primesense.json", rgbd_copy / "camera_a.json")
    shutil.copy(rgbd_copy.parent / "camera_primesense.json", rgbd_copy / "camera_b.json")
    with pytest.raises(SourceError, match="several camera\\*.json \\(camera_a.json, camera_b.json\\)"):
        O3DLogSource(rgbd_copy)


def test_camera_size_mismatch(rgbd_copy):
    cam = Camera(525.0, 525.0, 159.5, 119.5, 320, 240)
    src = O3DLogSource(rgbd_copy, camera=cam)
    with pytest.raises(SourceError, match="00000.jpg: image is 640x480 but the camera .* is 320x240"):
        src.load(0)
