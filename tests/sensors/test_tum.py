"""TUMSource on a TUM-layout sequence built from real 7-Scenes frames.

The sequence is written in the test: 7-Scenes depth (mm) re-encoded at TUM's 5000
units per metre, colour as PNG, rgb/depth timestamps jittered by a few ms plus decoy
depth entries, and a 100 Hz ground truth with jittered timestamps sampled from a
smooth spline (scipy CubicSpline / RotationSpline) through the 7-Scenes poses at the
colour times. Interpolating that ground truth back at the colour times must recover
the 7-Scenes poses; the reference is the spline, not the reader's slerp.
"""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy.interpolate import CubicSpline
from scipy.spatial import cKDTree
from scipy.spatial.transform import Rotation, RotationSpline

from sensors import Camera, SourceError, detect_source, open_source
from sensors.tum import TUM_INTRINSICS, TUMSource, associate_times, tum_camera

T0 = 1305031102.0  # a TUM-like epoch time: float64 keeps ~0.2 us here
KNOT_FRAMES = list(range(0, 120, 10))  # 12 7-Scenes frames, 1/3 s apart at 30 Hz
SEQ_KNOTS = list(range(1, 11))  # knots that become sequence frames (7-Scenes 10..100)
DEPTH_CAM = Camera(585.0, 585.0, 320.0, 240.0, 640, 480)  # 7-Scenes depth intrinsics


def _frame_paths(root: Path, idx: int) -> tuple[Path, Path, Path]:
    stem = root / f"frame-{idx:06d}"
    return Path(f"{stem}.color.jpg"), Path(f"{stem}.depth.png"), Path(f"{stem}.pose.txt")


def _write_tum_depth(src_png: Path, dst_png: Path) -> np.ndarray:
    """7-Scenes mm PNG -> TUM 5000/m PNG; returns the reference depth in metres (0 = invalid)."""
    mm = np.asarray(Image.open(src_png)).astype(np.int64)
    valid = (mm > 0) & (mm < 65535)
    ref_m = np.where(valid, mm / 1000.0, 0.0)
    raw = np.where(valid, np.round(ref_m * 5000.0), 0).astype(np.uint16)
    Image.fromarray(raw).save(dst_png)
    return ref_m


def _write_rgb_png(src: Path, dst: Path) -> None:
    Image.open(src).convert("RGB").save(dst, compress_level=1)


def build_tum_sequence(root: Path, out: Path) -> dict:
    """Write a TUM-layout folder at ``out``; return the reference values for the checks."""
    rng = np.random.default_rng(7)
    (out / "rgb").mkdir(parents=True)
    (out / "depth").mkdir()
    knot_t = T0 + np.arange(len(KNOT_FRAMES)) / 3.0 + rng.uniform(-0.003, 0.003, len(KNOT_FRAMES))
    knot_T = np.stack([np.loadtxt(_frame_paths(root, f)[2]) for f in KNOT_FRAMES])

    rgb_lines, depth_lines = [], []
    ref = {"rgb_t": [], "depth_name": [], "depth_m": [], "T": []}
    for k in SEQ_KNOTS:
        color, depth, _ = _frame_paths(root, KNOT_FRAMES[k])
        t_rgb = knot_t[k]
        t_depth = t_rgb + rng.uniform(-0.004, 0.004)
        name = f"{t_depth:.6f}.png"
        _write_rgb_png(color, out / "rgb" / f"{t_rgb:.6f}.png")
        ref["depth_m"].append(_write_tum_depth(depth, out / "depth" / name))
        rgb_lines.append(f"{t_rgb:.6f} rgb/{t_rgb:.6f}.png")
        depth_lines.append(f"{t_depth:.6f} depth/{name}")
        # a decoy depth 15.5 ms away: inside the 20 ms window but farther than the true partner
        depth_lines.append(f"{t_rgb + (0.0155 if k % 2 else -0.0155):.6f} depth/decoy.png")
        ref["rgb_t"].append(t_rgb)
        ref["depth_name"].append(name)
        ref["T"].append(knot_T[k])
    _write_tum_depth(_frame_paths(root, 5)[1], out / "depth" / "decoy.png")

    # before the ground truth starts: has depth, no pose
    t_pre = T0 - 0.2
    _write_rgb_png(_frame_paths(root, 5)[0], out / "rgb" / "pre.png")
    rgb_lines.append(f"{t_pre:.6f} rgb/pre.png")
    depth_lines.append(f"{t_pre + 0.002:.6f} depth/decoy.png")
    # half-way between two frames: has a pose, no depth within 20 ms
    t_nodepth = (knot_t[5] + knot_t[6]) / 2
    _write_rgb_png(_frame_paths(root, 55)[0], out / "rgb" / "nodepth.png")
    rgb_lines.append(f"{t_nodepth:.6f} rgb/nodepth.png")

    rng.shuffle(depth_lines)  # the reader must not rely on file order
    header = "# timestamp filename\n"
    (out / "rgb.txt").write_text(header + "\n".join(rgb_lines) + "\n")
    (out / "depth.txt").write_text(header + "\n".join(depth_lines) + "\n")

    # 100 Hz ground truth with +-2 ms jitter on a smooth curve through the 7-Scenes poses
    pos = CubicSpline(knot_t, knot_T[:, :3, 3])
    rot = RotationSpline(knot_t, Rotation.from_matrix(knot_T[:, :3, :3]))
    t_gt = np.arange(knot_t[0] + 0.005, knot_t[-1] - 0.005, 0.01)
    t_gt = t_gt + rng.uniform(-0.002, 0.002, len(t_gt))
    rows = np.column_stack([t_gt, pos(t_gt), rot(t_gt).as_quat()])
    np.savetxt(out / "groundtruth.txt", rows, fmt="%.6f %.9f %.9f %.9f %.9f %.9f %.9f %.9f",
               header="timestamp tx ty tz qx qy qz qw", comments="# ")
    (out / "camera.json").write_text(json.dumps(DEPTH_CAM.to_dict()))
    ref["t_pre"], ref["t_nodepth"] = t_pre, t_nodepth
    return ref


@pytest.fixture(scope="module")
def tum_seq(kitchen_any, tmp_path_factory) -> tuple[Path, dict]:
    root = kitchen_any
    out = tmp_path_factory.mktemp("tum") / "rgbd_dataset_freiburg1_test"
    return out, build_tum_sequence(root, out)


def _copy(tum_seq, tmp_path: Path) -> Path:
    dst = tmp_path / "seq"
    shutil.copytree(tum_seq[0], dst)
    return dst


def quiet_source(path: Path, **options) -> TUMSource:
    """TUMSource with the expected "dropped frames" warnings silenced."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return TUMSource(path, **options)


def _rot_err_deg(Ra: np.ndarray, Rb: np.ndarray) -> float:
    return float(np.degrees(Rotation.from_matrix(Ra.T @ Rb).magnitude()))


def test_association_picks_true_depth_and_drops_unpaired(tum_seq):
    path, ref = tum_seq
    with pytest.warns(UserWarning) as record:
        src = TUMSource(path)
    messages = " | ".join(str(w.message) for w in record)
    assert "dropped 1 colour image(s) with no depth" in messages
    assert "dropped 1 frame(s) without ground truth" in messages
    assert len(src) == len(SEQ_KNOTS)  # pre-groundtruth and no-depth frames dropped
    assert src.has_poses and src.camera == DEPTH_CAM and src.camera_origin.endswith("camera.json")
    for i, e in enumerate(src.entries):
        assert e.rgb_time == pytest.approx(ref["rgb_t"][i], abs=1e-6)
        assert e.depth_path.name == ref["depth_name"][i]
        assert abs(e.depth_time - e.rgb_time) < 0.0045


def test_interpolated_poses_and_metric_depth(tum_seq):
    path, ref = tum_seq
    src = quiet_source(path)
    t_err, r_err = [], []
    for i in range(len(src)):
        f = src[i]
        T_ref = ref["T"][i]
        t_err.append(np.linalg.norm(f.T_world_cam[:3, 3] - T_ref[:3, 3]))
        r_err.append(_rot_err_deg(f.T_world_cam[:3, :3], T_ref[:3, :3]))
        assert f.timestamp == pytest.approx(ref["rgb_t"][i], abs=1e-6)
        assert f.depth.dtype == np.float32 and f.depth.shape == (480, 640)
        assert np.array_equal(f.depth > 0, ref["depth_m"][i] > 0)
        assert np.abs(f.depth - ref["depth_m"][i]).max() <= 0.5 / 5000 + 1e-6
        assert f.name.endswith(".png") and "/rgb/" in f.name
    # measured: 7e-6 m, 1.2e-3 deg (linear/slerp vs the spline between 100 Hz samples)
    assert max(t_err) < 1e-3, t_err
    assert max(r_err) < 0.05, r_err


def test_two_frames_overlap_in_world(tum_seq):
    path, _ = tum_seq
    src = quiet_source(path)
    clouds = []
    for f in (src[0], src[1]):
        d = f.depth[::4, ::4]
        cam = f.camera.resized(d.shape[1], d.shape[0])
        clouds.append(cam.backproject_valid(d, f.T_world_cam))
    dist, _ = cKDTree(clouds[0]).query(clouds[1], k=1)
    # measured median 8.0 mm (7-Scenes frames 10 and 20); a 1 deg rotation error on one
    # pose raises it to 18.5 mm, so the bound is tighter than the 2 cm brief
    assert np.median(dist) <= 0.012, np.median(dist)


def test_require_options_keep_unposed_and_depthless(tum_seq):
    path, ref = tum_seq
    src = TUMSource(path, require_poses=False, require_depth=False)
    assert len(src) == len(SEQ_KNOTS) + 2
    by_time = {round(e.rgb_time, 4): e for e in src.entries}
    pre = by_time[round(ref["t_pre"], 4)]
    assert pre.T_world_cam is None and pre.depth_path.name == "decoy.png"
    nodepth = by_time[round(ref["t_nodepth"], 4)]
    assert nodepth.depth_path is None and nodepth.T_world_cam is not None
    f = src[[e.rgb_time for e in src.entries].index(nodepth.rgb_time)]
    assert f.depth is None and f.rgb.shape == (480, 640, 3)


def test_no_groundtruth_means_no_poses(tum_seq, tmp_path):
    path = _copy(tum_seq, tmp_path)
    (path / "groundtruth.txt").unlink()
    src = quiet_source(path)
    assert not src.has_poses and len(src) == len(SEQ_KNOTS) + 1  # only the depth-less frame goes
    assert all(e.T_world_cam is None for e in src.entries)
    with pytest.raises(SourceError, match="groundtruth.txt"):
        quiet_source(path, require_poses=True)


def test_detect_and_open_source(tum_seq):
    path, _ = tum_seq
    assert TUMSource.detect(path) and not TUMSource.detect(path / "rgb")
    assert detect_source(path) == "tum"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        src = open_source("tum:" + str(path))
    assert isinstance(src, TUMSource) and len(src) == len(SEQ_KNOTS)


def test_camera_choice(tmp_path):
    fr2 = tmp_path / "rgbd_dataset_freiburg2_desk"
    fr2.mkdir()
    cam, origin = tum_camera(fr2, None, 640, 480)
    assert (cam.fx, cam.fy, cam.cx, cam.cy) == TUM_INTRINSICS["fr2"] and "fr2" in origin
    cam, _ = tum_camera(fr2, "fr3", 640, 480)
    assert (cam.fx, cam.fy, cam.cx, cam.cy) == TUM_INTRINSICS["fr3"]
    (fr2 / "calibration.txt").write_text("# fx fy cx cy\n500 501 320.5 240.5 0 0 0 0 0\n")
    cam, _ = tum_camera(fr2, None, 640, 480)
    assert (cam.fx, cam.fy, cam.cx, cam.cy) == (500, 501, 320.5, 240.5)
    other = tmp_path / "mystery"
    other.mkdir()
    with pytest.warns(UserWarning, match="unknown TUM camera"):
        cam, origin = tum_camera(other, None, 640, 480)
    assert (cam.fx, cam.cx) == (525.0, 319.5) and origin == "default"
    with pytest.raises(SourceError, match="unknown TUM camera 'fr9'"):
        tum_camera(other, "fr9", 640, 480)


def test_associate_is_one_to_one():
    t_rgb = np.array([0.0, 0.010, 1.0])
    t_depth = np.array([0.004, 0.5])
    # both early rgb times are within 20 ms of depth 0; only the closer one (0.0, 4 ms) gets it
    assert associate_times(t_rgb, t_depth, 0.02).tolist() == [0, -1, -1]


# ---- bad input: every error is a SourceError naming the file ----


def test_missing_listed_image(tum_seq, tmp_path):
    path = _copy(tum_seq, tmp_path)
    victim = sorted((path / "rgb").glob("13*.png"))[3]
    victim.unlink()
    with pytest.raises(SourceError, match=f"missing.*{victim.name}"):
        TUMSource(path)


def test_corrupt_image(tum_seq, tmp_path):
    path = _copy(tum_seq, tmp_path)
    src = quiet_source(path)
    src.entries[2].rgb_path.write_bytes(b"\x89PNG\r\n\x1a\nnot really a png")
    with pytest.raises(SourceError, match=f"{src.entries[2].rgb_path.name}.*cannot decode"):
        src.load(2)


def test_nan_pose_in_groundtruth(tum_seq, tmp_path):
    path = _copy(tum_seq, tmp_path)
    gt = path / "groundtruth.txt"
    lines = gt.read_text().splitlines()
    parts = lines[40].split()
    parts[5] = "nan"
    lines[40] = " ".join(parts)
    gt.write_text("\n".join(lines) + "\n")
    with pytest.raises(SourceError, match="groundtruth.txt:41: non-finite"):
        quiet_source(path)


def test_depth_size_mismatch(tum_seq, tmp_path):
    path = _copy(tum_seq, tmp_path)
    src = quiet_source(path)
    d = src.entries[1].depth_path
    Image.fromarray(np.full((240, 320), 5000, np.uint16)).save(d)
    with pytest.raises(SourceError, match=f"size mismatch.*{d.name}.*320x240"):
        src.load(1)


def test_malformed_list_line(tum_seq, tmp_path):
    path = _copy(tum_seq, tmp_path)
    with open(path / "depth.txt", "a") as f:
        f.write("1305031102.5\n")
    with pytest.raises(SourceError, match=r"depth.txt:\d+: expected 'timestamp filename'"):
        TUMSource(path)
