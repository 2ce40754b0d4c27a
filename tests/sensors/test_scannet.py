"""ScanNetSource on a mini ScanNet export written from real 7-Scenes frames.

The export mimics ScanNet: colour at twice the depth resolution (1280x960 JPEG,
intrinsics = depth intrinsics scaled by 2), depth as uint16 mm at 640x480,
unpadded frame numbers, 4x4 intrinsics/extrinsics, and one all -inf pose.
"""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy.spatial import cKDTree

from sensors import Camera, SourceError, detect_source, open_source
from sensors.scannet import ScanNetSource

FRAME_IDS = [0, 5, 10, 20, 100]  # lexicographic order differs from numeric
BAD_POSE_ID = 10
DEPTH_CAM = Camera(585.0, 585.0, 320.0, 240.0, 640, 480)
COLOR_CAM = DEPTH_CAM.scaled(2.0)


def _write_4x4(path: Path, K3: np.ndarray | None = None, M: np.ndarray | None = None) -> None:
    if M is None:
        M = np.eye(4)
        M[:3, :3] = K3
    np.savetxt(path, M, fmt="%.6f")


def build_scannet(root: Path, out: Path) -> dict:
    for sub in ("color", "depth", "pose", "intrinsic"):
        (out / sub).mkdir(parents=True)
    ref = {"rgb": {}, "depth_m": {}, "T": {}}
    for n in FRAME_IDS:
        stem = root / f"frame-{n:06d}"
        rgb = Image.open(f"{stem}.color.jpg").convert("RGB")
        ref["rgb"][n] = np.asarray(rgb)
        rgb.resize((1280, 960), Image.Resampling.BICUBIC).save(out / "color" / f"{n}.jpg", quality=95)
        shutil.copy(f"{stem}.depth.png", out / "depth" / f"{n}.png")
        mm = np.asarray(Image.open(f"{stem}.depth.png")).astype(np.float64)
        ref["depth_m"][n] = np.where(mm == 65535, 0.0, mm / 1000.0)  # 65535 is not in these frames
        if n == BAD_POSE_ID:
            (out / "pose" / f"{n}.txt").write_text("\n".join(["-inf -inf -inf -inf"] * 4) + "\n")
        else:
            shutil.copy(f"{stem}.pose.txt", out / "pose" / f"{n}.txt")
            ref["T"][n] = np.loadtxt(f"{stem}.pose.txt")
    _write_4x4(out / "intrinsic" / "intrinsic_color.txt", COLOR_CAM.K)
    _write_4x4(out / "intrinsic" / "intrinsic_depth.txt", DEPTH_CAM.K)
    _write_4x4(out / "intrinsic" / "extrinsic_color.txt", M=np.eye(4))
    _write_4x4(out / "intrinsic" / "extrinsic_depth.txt", M=np.eye(4))
    return ref


@pytest.fixture(scope="module")
def scene(kitchen_any, tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("scannet") / "scene0000_00"
    return out, build_scannet(kitchen_any, out)


def quiet(path: Path, **options) -> ScanNetSource:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return ScanNetSource(path, **options)


def test_invalid_pose_frame_skipped_with_warning(scene):
    path, _ = scene
    with pytest.warns(UserWarning, match=r"skipping 1 frame\(s\) with an invalid \(-inf\) pose: 10$"):
        src = ScanNetSource(path)
    assert src.frame_ids == [0, 5, 20, 100] and src.skipped_ids == [BAD_POSE_ID]
    assert len(src) == 4 and all(f.origin.frame_number != BAD_POSE_ID for f in src)


def test_color_to_depth(scene):
    path, ref = scene
    src = quiet(path)
    assert src.camera == DEPTH_CAM
    for i, n in enumerate(src.frame_ids):
        f = src[i]
        assert f.rgb.shape == (480, 640, 3) and f.depth.shape == (480, 640)
        assert f.name.endswith(f"color/{n}.jpg")
        # depth is the file's millimetres in metres, untouched by resampling
        assert np.abs(f.depth - ref["depth_m"][n]).max() < 1e-6
        np.testing.assert_allclose(f.T_world_cam, ref["T"][n], atol=1e-9)
        # colour went 640 -> 1280 (bicubic, JPEG) -> 640: must match the original closely;
        # measured mean abs difference 0.7-1.4 grey levels; a one-pixel shift gives 2.9-4.5
        diff = np.abs(f.rgb.astype(np.int16) - ref["rgb"][n].astype(np.int16)).mean()
        assert diff < 2.0, diff


def test_depth_to_color(scene):
    path, ref = scene
    src = quiet(path, align="depth_to_color")
    assert src.camera == COLOR_CAM and (src.camera.cx, src.camera.fx) == (640.5, 1170.0)
    for i in (0, 3):
        n = src.frame_ids[i]
        f = src[i]
        assert f.rgb.shape == (960, 1280, 3) and f.depth.shape == (960, 1280)
        d = ref["depth_m"][n]
        # each depth pixel (u, v) lands on colour (2u + 0.5, 2v + 0.5): its 2x2 splat covers
        # colour pixels 2u..2u+1, so the even grid reproduces the depth image exactly
        same = np.abs(f.depth[::2, ::2] - d) < 1e-5
        assert same.mean() > 0.99, same.mean()
        # and the registered depth describes the same surface in 3D (metric, not rescaled);
        # measured median 1.0-1.1 mm, 95th percentile 1.5-1.8 mm (splat copies sit 1/4 px off)
        p_col = COLOR_CAM.backproject_valid(f.depth)[::7]
        p_dep = DEPTH_CAM.backproject_valid(d.astype(np.float32))
        dist, _ = cKDTree(p_dep).query(p_col)
        assert np.median(dist) < 0.002 and np.percentile(dist, 95) < 0.004
        np.testing.assert_allclose(f.T_world_cam, ref["T"][n], atol=1e-9)


def test_detect_and_open_source(scene):
    path, _ = scene
    assert ScanNetSource.detect(path) and not ScanNetSource.detect(path / "color")
    assert detect_source(path) == "scannet"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        src = open_source(f"scannet:{path}", align="depth_to_color")
    assert isinstance(src, ScanNetSource) and src.camera == COLOR_CAM


# ---- bad input: every error is a SourceError naming the file ----


def _copy(scene, tmp_path: Path) -> Path:
    dst = tmp_path / "scene"
    shutil.copytree(scene[0], dst)
    return dst


def test_missing_depth_file(scene, tmp_path):
    path = _copy(scene, tmp_path)
    (path / "depth" / "20.png").unlink()
    with pytest.raises(SourceError, match=r"1 file\(s\) missing: .*depth/20.png"):
        ScanNetSource(path)


def test_malformed_pose(scene, tmp_path):
    path = _copy(scene, tmp_path)
    (path / "pose" / "5.txt").write_text("1 0 0\n0 1 0\n")
    with pytest.raises(SourceError, match=r"pose/5.txt: expected a 4x4 matrix"):
        quiet(path)


def test_non_rigid_pose(scene, tmp_path):
    path = _copy(scene, tmp_path)
    np.savetxt(path / "pose" / "20.txt", np.diag([2.0, 1.0, 1.0, 1.0]))
    with pytest.raises(SourceError, match=r"pose/20.txt: pose rotation is not a proper rotation"):
        quiet(path)


def test_corrupt_color_and_size_mismatch(scene, tmp_path):
    path = _copy(scene, tmp_path)
    src = quiet(path)
    (path / "color" / "20.jpg").write_bytes(b"\xff\xd8\xff garbage")
    with pytest.raises(SourceError, match=r"color/20.jpg: cannot decode"):
        src.load(2)
    Image.fromarray(np.full((240, 320), 1000, np.uint16)).save(path / "depth" / "100.png")
    with pytest.raises(SourceError, match=r"depth/100.png: image is 320x240 .* 640x480"):
        src.load(3)


def test_bad_align_and_all_poses_invalid(scene, tmp_path):
    path = _copy(scene, tmp_path)
    with pytest.raises(SourceError, match="align must be one of"):
        ScanNetSource(path, align="both")
    for p in (path / "pose").glob("*.txt"):
        p.write_text("\n".join(["-inf -inf -inf -inf"] * 4) + "\n")
    with pytest.raises(SourceError, match="every pose is invalid"):
        quiet(path)
