"""Replica (NICE-SLAM layout) reader: real office0 frames against the ground-truth mesh, bad input."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy.spatial import cKDTree

import sensors
from sensors.camera import Camera
from sensors.frame import FrameOrigin
from sensors.io import SourceError
from sensors.replica import ReplicaSource
from tests.sensors.conftest import SOURCES, dataset

OFFICE0_CAMERA = Camera(600.0, 600.0, 599.5, 339.5, 1200, 680)


@pytest.fixture(scope="module", params=SOURCES)
def office_root(request, generated) -> Path:
    """The folder holding cam_params.json, office0/ and the mesh (real, or generated:
    tests/sensors/minidata.py renders 4 frames of a generated room with office0's camera)."""
    return dataset(request.param, generated, "replica-office0")


@pytest.fixture(scope="module")
def office0(office_root: Path) -> ReplicaSource:
    return ReplicaSource(office_root / "office0")


def make_mini(root: Path, tmp_path: Path, numbers: tuple[int, ...] = (0, 1), n_poses: int = 3) -> Path:
    """A writable copy of office0 frames ``numbers`` with the first ``n_poses`` poses; returns the parent."""
    parent = tmp_path / "replica"
    results = parent / "office0" / "results"
    results.mkdir(parents=True)
    for n in numbers:
        for name in (f"frame{n:06d}.jpg", f"depth{n:06d}.png"):
            shutil.copyfile(root / "office0" / "results" / name, results / name)
    lines = (root / "office0" / "traj.txt").read_text().splitlines()[:n_poses]
    (parent / "office0" / "traj.txt").write_text("\n".join(lines) + "\n")
    shutil.copyfile(root / "cam_params.json", parent / "cam_params.json")
    return parent


# -- real data ----------------------------------------------------------------------


def test_loads_office0(office0: ReplicaSource, office_root: Path) -> None:
    assert len(office0) == 4 and office0.has_poses
    assert office0.camera == OFFICE0_CAMERA and office0.depth_scale == 6553.5
    f = office0[2]
    assert f.rgb.shape == (680, 1200, 3) and f.rgb.dtype == np.uint8
    assert f.depth.shape == (680, 1200) and f.depth.dtype == np.float32
    assert f.index == 2 and f.timestamp == 2.0 and f.origin == FrameOrigin(frame_number=2)
    assert f.name == str(office_root / "office0" / "results" / "frame000002.jpg")
    T_line2 = np.array(
        (office_root / "office0" / "traj.txt").read_text().splitlines()[2].split(), dtype=np.float64
    ).reshape(4, 4)
    np.testing.assert_allclose(f.T_world_cam, T_line2, atol=1e-12)
    raw = np.asarray(Image.open(office_root / "office0" / "results" / "depth000002.png"))
    np.testing.assert_allclose(f.depth, raw / 6553.5, rtol=1e-6)
    assert 0.5 < float(np.median(f.depth[f.depth > 0])) < 5.0


def test_depth_and_pose_lie_on_the_ground_truth_mesh(office0: ReplicaSource, office_root: Path) -> None:
    """Back-projected world points of frames 0 and 3 are within a few mm of office0_mesh.ply.

    This pins the conventions: z-depth (not ray length), scale 6553.5, OpenCV camera axes.
    """
    import open3d as o3d

    mesh = o3d.t.io.read_triangle_mesh(str(office_root / "office0_mesh.ply"))
    scene = o3d.t.geometry.RaycastingScene()
    scene.add_triangles(mesh)

    def distance_m(points: np.ndarray) -> np.ndarray:
        return scene.compute_distance(o3d.core.Tensor(points.astype(np.float32))).numpy()

    for i in (0, 3):
        f = office0[i]
        d = distance_m(f.points_world()[::16])
        # measured (frame 0): median 1.3 mm, p90 2.3 mm (the mesh is decimated to 25k vertices)
        assert np.median(d) < 0.005 and np.percentile(d, 90) < 0.01, (i, np.median(d), np.percentile(d, 90))
    # The tolerance separates the plausible mistakes (measured on frame 0):
    f = office0[0]
    pts = f.camera.backproject_valid(f.depth * 1.02, f.T_world_cam)[::16]  # 2% scale error: 38 mm
    assert np.median(distance_m(pts)) > 0.02
    opengl = f.T_world_cam @ np.diag([1.0, -1.0, -1.0, 1.0])  # NICE-SLAM's internal axes: 0.67 m
    assert np.median(distance_m(f.camera.backproject_valid(f.depth, opengl)[::16])) > 0.2


def test_two_frames_agree_in_world(office0: ReplicaSource) -> None:
    a, b = office0[0], office0[1]
    tree = cKDTree(b.points_world(), balanced_tree=False, compact_nodes=False)
    nn = float(np.median(tree.query(a.points_world()[::8])[0]))
    # measured 1.4 mm; frames 0 and 1 are 2.2 cm apart, and ignoring that motion gives 14.5 mm
    assert nn < 0.004, f"median NN {nn * 1000:.1f} mm"
    static = float(np.median(tree.query(a.camera.backproject_valid(a.depth, b.T_world_cam)[::8])[0]))
    assert static > 3 * nn


def test_detection_and_open_source(office_root: Path, tmp_path: Path) -> None:
    assert sensors.detect_source(office_root / "office0") == "replica"
    assert sensors.detect_source(office_root) == "replica"  # parent with one scene + cam_params.json
    for spec in ("replica:" + str(office_root), "replica:" + str(office_root / "office0"), str(office_root)):
        src = sensors.open_source(spec)
        assert isinstance(src, ReplicaSource) and len(src) == 4
        assert src.scene == office_root / "office0"
    for suffix in ("color.jpg", "depth.png", "pose.txt"):  # a 7-Scenes layout is not Replica
        (tmp_path / f"frame-000000.{suffix}").write_bytes(b"")
    assert not ReplicaSource.detect(tmp_path)


def test_depth_scale_override(office_root: Path, tmp_path: Path) -> None:
    parent = make_mini(office_root, tmp_path)
    params = json.loads((parent / "cam_params.json").read_text())
    params["camera"]["scale"] = 1000.0
    (parent / "cam_params.json").write_text(json.dumps(params))
    assert ReplicaSource(parent).depth_scale == 1000.0
    src = ReplicaSource(parent, depth_scale=6553.5)
    assert src.depth_scale == 6553.5 and 0.5 < float(np.median(src[0].depth[src[0].depth > 0])) < 5.0


# -- bad input: each a SourceError naming the file ----------------------------------


def test_missing_cam_params(office_root: Path, tmp_path: Path) -> None:
    parent = make_mini(office_root, tmp_path)
    (parent / "cam_params.json").unlink()
    with pytest.raises(SourceError, match=r"missing camera parameters: .*office0/cam_params\.json"):
        ReplicaSource(parent / "office0")
    assert not ReplicaSource.detect(parent)  # the parent is only a Replica root with cam_params.json


def test_bad_cam_params(office_root: Path, tmp_path: Path) -> None:
    parent = make_mini(office_root, tmp_path)
    (parent / "cam_params.json").write_text(json.dumps({"camera": {"w": 1200, "h": 680, "fx": 600}}))
    with pytest.raises(SourceError, match=r"cam_params\.json: 'camera' lacks fy, cx, cy"):
        ReplicaSource(parent)
    (parent / "cam_params.json").write_text("{not json")
    with pytest.raises(SourceError, match=r"cam_params\.json: invalid JSON"):
        ReplicaSource(parent)


def test_missing_depth_file_names_it(office_root: Path, tmp_path: Path) -> None:
    parent = make_mini(office_root, tmp_path)
    (parent / "office0" / "results" / "depth000001.png").unlink()
    src = ReplicaSource(parent)
    assert len(src) == 2
    src[0]
    with pytest.raises(SourceError, match=r"missing depth image: .*depth000001\.png"):
        src[1]


def test_corrupt_colour_names_it(office_root: Path, tmp_path: Path) -> None:
    parent = make_mini(office_root, tmp_path)
    (parent / "office0" / "results" / "frame000000.jpg").write_bytes(b"\xff\xd8 truncated garbage" * 20)
    with pytest.raises(SourceError, match=r"frame000000\.jpg: cannot decode colour image"):
        ReplicaSource(parent)[0]


def test_wrong_depth_scale_is_implausible(office_root: Path, tmp_path: Path) -> None:
    parent = make_mini(office_root, tmp_path)
    with pytest.raises(SourceError, match=r"depth000000\.png: median depth .* implausible"):
        ReplicaSource(parent, depth_scale=1.0)[0]


def test_size_mismatch_names_the_files(office_root: Path, tmp_path: Path) -> None:
    parent = make_mini(office_root, tmp_path)
    results = parent / "office0" / "results"
    Image.open(results / "frame000001.jpg").resize((600, 340)).save(results / "frame000001.jpg")
    with pytest.raises(SourceError, match=r"size mismatch: colour .*frame000001\.jpg is 600x340"):
        ReplicaSource(parent)[1]
    # Both images resized consistently, but no longer what cam_params.json says.
    depth = Image.open(results / "depth000001.png")
    depth.resize((600, 340), Image.NEAREST).save(results / "depth000001.png")
    with pytest.raises(SourceError, match=r"depth000001\.png: image is 600x340 but the camera parameters say 1200x680"):
        ReplicaSource(parent)[1]


def test_nan_in_trajectory_names_it(office_root: Path, tmp_path: Path) -> None:
    parent = make_mini(office_root, tmp_path)
    traj = parent / "office0" / "traj.txt"
    lines = traj.read_text().splitlines()
    lines[1] = " ".join(["nan"] + lines[1].split()[1:])
    traj.write_text("\n".join(lines) + "\n")
    with pytest.raises(SourceError, match=r"traj\.txt:2: non-finite"):
        ReplicaSource(parent)


def test_non_rigid_pose_names_the_line(office_root: Path, tmp_path: Path) -> None:
    parent = make_mini(office_root, tmp_path)
    traj = parent / "office0" / "traj.txt"
    lines = traj.read_text().splitlines()
    values = np.array(lines[1].split(), dtype=np.float64)
    values[0] *= 2.0  # scale one rotation entry
    lines[1] = " ".join(f"{x:.9g}" for x in values)
    traj.write_text("\n".join(lines) + "\n")
    src = ReplicaSource(parent)
    src[0]
    with pytest.raises(SourceError, match=r"traj\.txt:2: pose rotation is not a proper rotation"):
        src[1]


def test_frame_beyond_trajectory(office_root: Path, tmp_path: Path) -> None:
    parent = make_mini(office_root, tmp_path, numbers=(0, 3), n_poses=3)
    with pytest.raises(SourceError, match=r"traj\.txt: has 3 poses but frame number 3 needs line 4"):
        ReplicaSource(parent)


def test_unknown_layout(office_root: Path, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(SourceError, match=re.escape(f"{empty}: not a Replica (NICE-SLAM) folder")):
        ReplicaSource(empty)
    # Two scenes beside one cam_params.json: ambiguous, so the parent is not a source.
    parent = make_mini(office_root, tmp_path)
    shutil.copytree(parent / "office0", parent / "office1")
    assert not ReplicaSource.detect(parent)
    assert ReplicaSource.detect(parent / "office1")
    with pytest.raises(SourceError, match="not a Replica"):
        ReplicaSource(parent)
    (parent / "office1" / "results" / "frame000000.jpg").unlink()
    (parent / "office1" / "results" / "depth000000.png").unlink()
    (parent / "office1" / "results" / "frame000001.jpg").unlink()
    (parent / "office1" / "results" / "depth000001.png").unlink()
    with pytest.raises(SourceError, match=r"office1/results: no frameNNNNNN\.jpg"):
        ReplicaSource(parent / "office1")
