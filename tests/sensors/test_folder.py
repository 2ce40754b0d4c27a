"""FolderSource manifests and the write_folder_sequence round trip, on real 7-Scenes frames."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image
from scipy.spatial.transform import Rotation

from sensors import Camera, Frame, SourceError, detect_source, open_source
from sensors.folder import FolderSource, write_folder_sequence
from sensors.trajectory_io import Trajectory, write_tum

CAM = Camera(585.0, 585.0, 320.0, 240.0, 640, 480)


@pytest.fixture(scope="module")
def kitchen_frames(kitchen_any) -> list[Frame]:
    """Frames 0, 10, 20 of 7-Scenes redkitchen (real or generated), depth jittered off the mm grid."""
    root = kitchen_any
    rng = np.random.default_rng(3)
    frames = []
    for k, n in enumerate((0, 10, 20)):
        stem = root / f"frame-{n:06d}"
        rgb = np.asarray(Image.open(f"{stem}.color.jpg").convert("RGB"))
        mm = np.asarray(Image.open(f"{stem}.depth.png")).astype(np.float64)
        depth = np.where((mm > 0) & (mm < 65535), mm / 1000.0 + rng.uniform(-4e-4, 4e-4, mm.shape), 0.0)
        T = np.loadtxt(f"{stem}.pose.txt")
        frames.append(Frame(rgb, depth.astype(np.float32), CAM, T, timestamp=1.5 + k / 30.0, index=k))
    # the third frame: rendered depth and no pose; a fourth with no depth at all
    frames[2] = frames[2].with_(T_world_cam=None, depth_source="rendered")
    frames.append(frames[0].with_(depth=None, timestamp=9.25, index=3))
    return frames


def test_round_trip(kitchen_frames, tmp_path):
    out = write_folder_sequence(kitchen_frames, tmp_path / "seq", depth_scale=1000.0)
    assert out == tmp_path / "seq" and (out / "semmap.json").is_file()
    src = FolderSource(out)
    assert len(src) == 4 and src.camera == CAM and not src.has_poses  # frame 2 has no pose
    for orig, f in zip(kitchen_frames, src):
        assert np.array_equal(f.rgb, orig.rgb)  # PNG: exact
        assert f.timestamp == orig.timestamp and f.depth_source == orig.depth_source
        if orig.T_world_cam is None:
            assert f.T_world_cam is None
        else:
            assert np.abs(f.T_world_cam - orig.T_world_cam).max() <= 1e-9
        if orig.depth is None:
            assert f.depth is None
            continue
        assert np.array_equal(f.depth > 0, orig.depth > 0)
        err = np.abs(f.depth - orig.depth).max()
        assert err <= 0.5 / 1000 + 1e-6, err  # quantisation to 1 mm
        assert err > 0.3 / 1000  # the jitter really was quantised away (not stored as float)
    # nothing left behind beside the sequence
    assert sorted(p.name for p in tmp_path.iterdir()) == ["seq"]


def test_round_trip_fine_scale_and_overwrite(kitchen_frames, tmp_path):
    out = tmp_path / "seq"
    write_folder_sequence(kitchen_frames, out)
    write_folder_sequence(kitchen_frames[:2], out, depth_scale=5000.0)  # replaces the previous one
    src = FolderSource(out)
    assert len(src) == 2 and src.has_poses and src.depth_scale == 5000.0
    assert np.abs(src[1].depth - kitchen_frames[1].depth).max() <= 0.5 / 5000 + 1e-6
    assert sorted(p.name for p in tmp_path.iterdir()) == ["seq"]


def test_writer_refuses_foreign_folder_and_leaves_nothing_on_failure(kitchen_frames, tmp_path):
    foreign = tmp_path / "home"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="not a semmap folder sequence"):
        write_folder_sequence(kitchen_frames, foreign)
    assert (foreign / "notes.txt").read_text() == "keep me"

    def failing():
        yield kitchen_frames[0]
        raise RuntimeError("renderer crashed")

    with pytest.raises(RuntimeError, match="renderer crashed"):
        write_folder_sequence(failing(), tmp_path / "seq")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["home"]

    far = kitchen_frames[0].with_(depth=np.full((480, 640), 70.0, np.float32))
    with pytest.raises(ValueError, match="70.00 m does not fit a uint16 PNG"):
        write_folder_sequence([far], tmp_path / "far")
    other_cam = kitchen_frames[1].with_(camera=CAM.scaled(0.5), rgb=kitchen_frames[1].rgb[::2, ::2],
                                        depth=kitchen_frames[1].depth[::2, ::2])
    with pytest.raises(ValueError, match="differs from the first frame"):
        write_folder_sequence([kitchen_frames[0], other_cam], tmp_path / "mixed")


def _pattern_folder(kitchen_frames, root: Path) -> Path:
    """rgb/{1,2,10}.png, depth/{1,2,10}.png, traj.tum; natural order 1, 2, 10."""
    (root / "rgb").mkdir(parents=True)
    (root / "depth").mkdir()
    for name, f in zip(("1", "2", "10"), kitchen_frames[:3]):
        Image.fromarray(f.rgb).save(root / "rgb" / f"{name}.png", compress_level=1)
        Image.fromarray(np.round(f.depth * 1000).astype(np.uint16)).save(root / "depth" / f"{name}.png")
    poses = np.stack([f.T_world_cam if f.T_world_cam is not None else np.eye(4) for f in kitchen_frames[:3]])
    write_tum(root / "traj.tum", Trajectory(np.array([10.0, 10.5, 11.0]), poses))
    return root


def test_pattern_manifest_yaml(kitchen_frames, tmp_path):
    root = _pattern_folder(kitchen_frames, tmp_path / "pat")
    manifest = {"camera": {"fx": 585, "fy": 585, "cx": 320, "cy": 240},  # size from the first image
                "rgb": "rgb/*.png", "depth": "depth/*.png", "trajectory": "traj.tum"}
    (root / "semmap.yaml").write_text(yaml.safe_dump(manifest))
    src = FolderSource(root)
    assert src.camera == CAM and src.has_poses and len(src) == 3
    assert [e.rgb_path.name for e in src.entries] == ["1.png", "2.png", "10.png"]
    assert [e.timestamp for e in src.entries] == [10.0, 10.5, 11.0]
    f = src[2]
    assert np.array_equal(f.rgb, kitchen_frames[2].rgb) and f.name.endswith("rgb/10.png")
    assert np.abs(f.depth - kitchen_frames[2].depth).max() <= 0.5 / 1000 + 1e-6
    # a TUM file stores a quaternion (9 decimals): the rotation comes back orthonormalised
    # (7-Scenes matrices are 5e-5 off orthonormal), translation to the printed 1e-9
    T_ref = kitchen_frames[0].T_world_cam
    np.testing.assert_allclose(src[0].T_world_cam[:3, 3], T_ref[:3, 3], atol=1e-9)
    np.testing.assert_allclose(src[0].T_world_cam[:3, :3], Rotation.from_matrix(T_ref[:3, :3]).as_matrix(), atol=1e-8)
    by_file = FolderSource(root / "semmap.yaml")  # the manifest file itself also opens
    assert [e.rgb_path for e in by_file.entries] == [e.rgb_path for e in src.entries]


def test_detect_and_open_source(kitchen_frames, tmp_path):
    out = write_folder_sequence(kitchen_frames[:2], tmp_path / "seq")
    assert FolderSource.detect(out) and not FolderSource.detect(tmp_path)
    assert detect_source(out) == "folder"
    src = open_source(f"folder:{out}")
    assert isinstance(src, FolderSource) and len(src) == 2


# ---- bad input: every error is a SourceError naming the file ----


def _manifest(root: Path, m: dict) -> Path:
    p = root / "semmap.json"
    p.write_text(json.dumps(m))
    return p


@pytest.fixture(scope="module")
def pattern_template(kitchen_frames, tmp_path_factory) -> Path:
    return _pattern_folder(kitchen_frames, tmp_path_factory.mktemp("template") / "pat")


@pytest.fixture
def pattern_root(pattern_template, tmp_path) -> Path:
    """A fresh copy of the pattern folder (PNG encoding once per module keeps this fast)."""
    return Path(shutil.copytree(pattern_template, tmp_path / "pat"))


GOOD_CAMERA = {"fx": 585, "fy": 585, "cx": 320, "cy": 240, "width": 640, "height": 480}


@pytest.mark.parametrize(
    "manifest, message",
    [
        ({"camera": GOOD_CAMERA}, "either 'frames' .* or 'rgb'"),
        ({"camera": GOOD_CAMERA, "rgb": "rgb/*.png", "frames": []}, "either 'frames'"),
        ({"camera": GOOD_CAMERA, "rgb": "rgb/*.png", "detph": "depth/*.png"}, r"unknown key\(s\) \['detph'\]"),
        ({"camera": {"fx": 585, "fy": 585, "cx": 320}, "rgb": "rgb/*.png"}, r"camera: missing key\(s\) \['cy'\]"),
        ({"rgb": "rgb/*.png"}, "camera: required mapping"),
        ({"camera": {**GOOD_CAMERA, "fx": "585"}, "rgb": "rgb/*.png"}, "camera.fx must be a finite number"),
        ({"camera": GOOD_CAMERA, "rgb": "rgb/*.jpg"}, "pattern rgb='rgb/\\*.jpg' matches no file"),
        ({"camera": GOOD_CAMERA, "rgb": "rgb/*.png", "depth": "depth/1*.png"},
         "matches 3 files but depth=.* matches 2"),
        ({"camera": GOOD_CAMERA, "rgb": "rgb/1*.png", "trajectory": "traj.tum"},
         "matches 2 files but trajectory .*traj.tum has 3 poses"),
        ({"camera": GOOD_CAMERA, "rgb": "rgb/*.png", "trajectory": "none.tum"}, "trajectory file missing: .*none.tum"),
        ({"camera": GOOD_CAMERA, "depth_scale": -1, "rgb": "rgb/*.png"}, "depth_scale must be positive"),
        ({"camera": GOOD_CAMERA, "frames": [{"depth": "depth/1.png"}]}, r"frames\[0\]: missing 'rgb'"),
        ({"camera": GOOD_CAMERA, "frames": [{"rgb": "rgb/1.png", "T_world_cam": np.diag([1, 1, 2, 1]).tolist()}]},
         r"frames\[0\]: pose rotation is not a proper rotation"),
        ({"camera": GOOD_CAMERA, "frames": [{"rgb": "rgb/1.png", "T_world_cam": [[1, 0], [0, 1]]}]},
         r"frames\[0\]: expected a 4x4 pose"),
        ({"camera": GOOD_CAMERA, "frames": [{"rgb": "rgb/3.png"}]}, r"1 listed file\(s\) missing: .*rgb/3.png"),
        ({"camera": GOOD_CAMERA, "frames": [{"rgb": "rgb/1.png", "depth_source": "lidar"}]},
         "unknown depth_source 'lidar'"),
    ],
)
def test_malformed_manifest(pattern_root, manifest, message):
    p = _manifest(pattern_root, manifest)
    with pytest.raises(SourceError, match=message) as info:
        FolderSource(pattern_root)
    assert str(p) in str(info.value)


def test_invalid_json_and_yaml(pattern_root):
    (pattern_root / "semmap.json").write_text('{"camera": {"fx": 1,,}}')
    with pytest.raises(SourceError, match="semmap.json: invalid JSON"):
        FolderSource(pattern_root)
    (pattern_root / "semmap.json").unlink()
    (pattern_root / "semmap.yaml").write_text("camera: [unclosed\n")
    with pytest.raises(SourceError, match="semmap.yaml: invalid YAML"):
        FolderSource(pattern_root)
    (pattern_root / "semmap.yaml").write_text("- just\n- a list\n")
    with pytest.raises(SourceError, match="semmap.yaml: the manifest must be a mapping"):
        FolderSource(pattern_root)


def test_size_mismatch_and_corrupt_image(pattern_root):
    _manifest(pattern_root, {"camera": GOOD_CAMERA, "rgb": "rgb/*.png", "depth": "depth/*.png"})
    src = FolderSource(pattern_root)
    Image.fromarray(np.full((240, 320), 1000, np.uint16)).save(pattern_root / "depth" / "2.png")
    mismatch = r"size mismatch: colour .*rgb/2.png is 640x480 but depth .*depth/2.png is 320x240"
    with pytest.raises(SourceError, match=mismatch):
        src.load(1)
    (pattern_root / "rgb" / "10.png").write_bytes(b"not an image")
    with pytest.raises(SourceError, match="rgb/10.png: cannot decode colour image"):
        src.load(2)
