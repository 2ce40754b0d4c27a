"""7-Scenes and 3DMatch readers: real data, colour registration measured on edges, bad input."""

from __future__ import annotations

import re
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage
from scipy.spatial import cKDTree

import sensors
from sensors.camera import Camera
from sensors.frame import FrameOrigin
from sensors.io import SourceError, read_depth_m, read_rgb
from sensors.registration import register_depth_to_color
from sensors.sevenscenes import (
    SEVENSCENES_COLOR_TO_DEPTH,
    ColorToDepthPixelMap,
    SevenScenesSource,
    ThreeDMatchSource,
)
from tests.conftest import data_path
from tests.sensors.conftest import SOURCES, dataset

KINECT = Camera(585.0, 585.0, 320.0, 240.0, 640, 480)


@pytest.fixture(scope="module")
def kitchen() -> Path:
    return data_path("7scenes-redkitchen")


@pytest.fixture(scope="module", params=SOURCES)
def match3d(request, generated) -> Path:
    """3DMatch seq01, or its generated stand-in (same camera and frame numbers)."""
    return dataset(request.param, generated, "3dmatch-seq01")


# -- helpers ------------------------------------------------------------------------


def median_nn_m(src_points: np.ndarray, dst: np.ndarray | cKDTree, step: int = 8) -> float:
    """Median distance (m) from every ``step``-th source point to its nearest destination point.

    ``dst`` is an (N, 3) array or a KD-tree built on one (to reuse it).
    """
    tree = dst if isinstance(dst, cKDTree) else cKDTree(dst, balanced_tree=False, compact_nodes=False)
    d, _ = tree.query(src_points[::step])
    return float(np.median(d))


def colour_edges(rgb: np.ndarray) -> np.ndarray:
    """(H, W) bool: the strongest 10% of Sobel gradient magnitudes of the smoothed grey image."""
    grey = ndimage.gaussian_filter(rgb.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32), 1.0)
    mag = np.hypot(ndimage.sobel(grey, 1), ndimage.sobel(grey, 0))
    return mag > np.percentile(mag, 90)


def depth_edges(depth_m: np.ndarray) -> np.ndarray:
    """(H, W) bool: foreground side of jumps > max(5 cm, 5%) between valid 4-neighbours."""
    edges = np.zeros(depth_m.shape, bool)
    for axis in (0, 1):
        a = depth_m
        b = np.roll(depth_m, -1, axis=axis)
        ok = (a > 0) & (b > 0)
        if axis == 0:
            ok[-1, :] = False
        else:
            ok[:, -1] = False
        jump = ok & (np.abs(a - b) > np.maximum(0.05, 0.05 * np.minimum(a, b)))
        edges |= jump & (a < b)
        edges |= np.roll(jump & (b < a), 1, axis=axis)
    return edges


def edge_distance_px(depth_m: np.ndarray, rgb: np.ndarray) -> float:
    """Median distance (px) from depth-discontinuity pixels to the nearest colour edge."""
    dist = ndimage.distance_transform_edt(~colour_edges(rgb))
    de = depth_edges(depth_m)
    assert de.sum() > 200, "too few depth edges to measure alignment"
    return float(np.median(dist[de]))


def pixel_map_camera(scale: float, dx: float, dy: float) -> Camera:
    return ColorToDepthPixelMap(scale, dx, dy).color_camera(KINECT, 640, 480)


def copy_frames(src: Path, dst: Path, numbers: list[int], color_ext: str = "jpg") -> Path:
    """Writable copies of real frames (and the intrinsics) in ``dst``."""
    dst.mkdir(parents=True, exist_ok=True)
    for n in numbers:
        for suffix in (f"color.{color_ext}", "depth.png", "pose.txt"):
            shutil.copyfile(src / f"frame-{n:06d}.{suffix}", dst / f"frame-{n:06d}.{suffix}")
    return dst


@pytest.fixture
def mini(kitchen_any: Path, tmp_path: Path) -> Path:
    """Three redkitchen frames (0, 1, 2; real or generated) with their intrinsics, in a writable folder."""
    d = copy_frames(kitchen_any, tmp_path / "mini", [0, 1, 2])
    shutil.copyfile(kitchen_any / "camera-intrinsics.txt", d / "camera-intrinsics.txt")
    return d


# -- 7-Scenes on real data ----------------------------------------------------------


def test_colour_camera_follows_from_the_measured_pixel_map() -> None:
    cam = SEVENSCENES_COLOR_TO_DEPTH.color_camera(KINECT, 640, 480)
    assert cam.fx == pytest.approx(531.818, abs=1e-3) and cam.fy == cam.fx
    assert cam.cx == pytest.approx(313.636, abs=1e-3)
    assert cam.cy == pytest.approx(238.182, abs=1e-3)
    # A point seen at colour pixel (u, v) is seen at depth pixel (320 + 1.1 (u - 320) + 7, 240 + 1.1 (v - 240) + 2).
    rng = np.random.default_rng(0)
    pts = np.column_stack([rng.uniform(-1, 1, 50), rng.uniform(-1, 1, 50), rng.uniform(0.5, 4, 50)])
    uv_c, _ = cam.project(pts)
    uv_d, _ = KINECT.project(pts)
    np.testing.assert_allclose(uv_d[:, 0], 320 + 1.1 * (uv_c[:, 0] - 320) + 7, atol=1e-9)
    np.testing.assert_allclose(uv_d[:, 1], 240 + 1.1 * (uv_c[:, 1] - 240) + 2, atol=1e-9)


def test_loads_redkitchen_frames(kitchen: Path) -> None:
    src = SevenScenesSource(kitchen)
    assert len(src) == 1000 and src.has_poses
    assert src.camera == SEVENSCENES_COLOR_TO_DEPTH.color_camera(KINECT, 640, 480)
    assert src.depth_camera == KINECT
    f = src[30]
    assert f.rgb.shape == (480, 640, 3) and f.rgb.dtype == np.uint8
    assert f.depth.shape == (480, 640) and f.depth.dtype == np.float32
    assert f.camera == src.camera
    assert f.index == 30 and f.timestamp == pytest.approx(1.0)
    assert f.name == str(kitchen / "frame-000030.color.jpg")
    assert f.origin == FrameOrigin(sequence=kitchen.name, frame_number=30)
    np.testing.assert_allclose(f.T_world_cam, np.loadtxt(kitchen / "frame-000030.pose.txt"))
    valid = f.depth[f.depth > 0]
    assert 0.5 < float(np.median(valid)) < 4.0 and valid.max() < 10.0  # a kitchen, in metres
    # Colour pixels outside the depth camera's view have no depth (left band ~22 px).
    assert np.all(f.depth[:, :20] == 0) and np.all(f.depth[:18, :] == 0)
    assert (f.depth > 0).mean() > 0.65


def test_register_color_false_keeps_the_stored_depth(kitchen_any: Path) -> None:
    kitchen = kitchen_any
    src = SevenScenesSource(kitchen, register_color=False)
    f = src[0]
    assert src.camera == KINECT and f.camera == KINECT
    raw = read_depth_m(kitchen / "frame-000000.depth.png", 1000.0, (0, 65535))
    np.testing.assert_array_equal(f.depth, raw)


def test_registered_depth_is_the_same_surface(kitchen_any: Path) -> None:
    """Registered depth + colour camera back-projects onto raw depth + depth camera (identity extrinsic)."""
    kitchen = kitchen_any
    reg = SevenScenesSource(kitchen)[0]
    raw = SevenScenesSource(kitchen, register_color=False)[0]
    pts_reg = reg.camera.backproject_valid(reg.depth)
    pts_raw = raw.camera.backproject_valid(raw.depth)
    d, _ = cKDTree(pts_raw).query(pts_reg[::4])
    # measured: median 1.2 mm, p99 2.9 mm (half a colour pixel of surface shift at most)
    assert np.median(d) < 0.002 and np.percentile(d, 99) < 0.005, (np.median(d), np.percentile(d, 99))


@pytest.mark.parametrize("kind, i, j", [("real", 0, 30), ("real", 500, 530), ("generated", 0, 30)])
def test_two_frames_agree_in_world(kind: str, generated, i: int, j: int) -> None:
    """Frames 30 apart (5-23 cm, 3-11 degrees) overlap to within a few mm with their poses."""
    src = SevenScenesSource(dataset(kind, generated, "7scenes-redkitchen"))
    position = {int(src.frame_file(k, "pose").name[6:12]): k for k in range(len(src))}  # frame number -> index
    a, b = src[position[i]], src[position[j]]
    tree = cKDTree(b.points_world(), balanced_tree=False, compact_nodes=False)
    nn = median_nn_m(a.points_world(), tree)
    # measured: 5.4 mm (0, 30) and 6.6 mm (500, 530)
    assert nn <= 0.01, f"median NN {nn * 1000:.1f} mm"
    # The poses matter: pretending frame i sat at frame j's pose is much worse (26, 102 mm).
    static = median_nn_m(a.camera.backproject_valid(a.depth, b.T_world_cam), tree)
    assert static > 3 * nn


@pytest.fixture(scope="module")
def kitchen_edge_frames(kitchen: Path) -> list[tuple[np.ndarray, np.ndarray]]:
    """(rgb, raw depth in metres) of redkitchen frames 0, 250, 500, 750."""
    return [
        (
            read_rgb(kitchen / f"frame-{n:06d}.color.jpg"),
            read_depth_m(kitchen / f"frame-{n:06d}.depth.png", 1000.0, (0, 65535)),
        )
        for n in (0, 250, 500, 750)
    ]


def mean_edge_distance(frames: list[tuple[np.ndarray, np.ndarray]], color_cam: Camera | None) -> float:
    """Mean over frames of the median depth-edge -> colour-edge distance (px); None = unregistered."""
    return float(
        np.mean(
            [
                edge_distance_px(
                    d if color_cam is None else register_depth_to_color(d, KINECT, color_cam, np.eye(4)), rgb
                )
                for rgb, d in frames
            ]
        )
    )


def test_registration_moves_depth_edges_onto_colour_edges(kitchen: Path, kitchen_edge_frames) -> None:
    src = SevenScenesSource(kitchen)
    unregistered = mean_edge_distance(kitchen_edge_frames, None)
    registered = float(
        np.mean([edge_distance_px(src[n].depth, rgb) for n, (rgb, _) in zip((0, 250, 500, 750), kitchen_edge_frames)])
    )
    # measured: 6.85 px unregistered -> 1.56 px registered
    assert registered < 2.0, f"registered depth edges {registered:.2f} px from colour edges"
    assert unregistered > 3.0 * registered, f"unregistered {unregistered:.2f} px vs registered {registered:.2f} px"


def test_pixel_map_constants_are_a_local_optimum(kitchen_edge_frames) -> None:
    """The calibrated map beats the plausible mistakes and its neighbours on the same edge score."""
    best = mean_edge_distance(kitchen_edge_frames, pixel_map_camera(1.1, 7.0, 2.0))
    perturbed = {
        "offset sign flipped": (pixel_map_camera(1.1, -7.0, -2.0), 1.5),  # measured 4.65 px
        "no offset": (pixel_map_camera(1.1, 0.0, 0.0), 1.0),  # 3.31 px
        "scale 1.07": (pixel_map_camera(1.07, 7.0, 2.0), 0.8),  # 3.12 px
        "scale 1.13": (pixel_map_camera(1.13, 7.0, 2.0), 0.4),  # 2.31 px
        "dy - 3 px": (pixel_map_camera(1.1, 7.0, -1.0), 0.4),  # 2.46 px
        "dy + 3 px": (pixel_map_camera(1.1, 7.0, 5.0), 0.4),  # 2.50 px
        "dx - 3 px": (pixel_map_camera(1.1, 4.0, 2.0), 0.2),  # 2.09 px
        "dx + 3 px": (pixel_map_camera(1.1, 10.0, 2.0), -0.05),  # 1.56 px: x offset is the least certain
    }
    for name, (cam, margin) in perturbed.items():
        score = mean_edge_distance(kitchen_edge_frames, cam)
        assert score > best + margin, f"{name}: {score:.2f} px vs calibrated {best:.2f} px"


# -- 3DMatch ------------------------------------------------------------------------


def test_loads_3dmatch_from_scene_and_sequence_folder(match3d: Path) -> None:
    for path in (match3d, match3d / "seq-01"):
        src = ThreeDMatchSource(path)
        assert len(src) == 5
        assert src.camera == Camera(570.342205, 570.342205, 320.0, 240.0, 640, 480)
        assert src.camera is src.depth_camera  # colour already registered
        numbers = [src.load(i).origin.frame_number for i in range(len(src))]
        assert numbers == [0, 1, 2, 116, 422]
    f = ThreeDMatchSource(match3d)[3]
    assert f.name == str(match3d / "seq-01" / "frame-000116.color.png")
    assert f.timestamp == pytest.approx(116 / 30.0) and f.index == 3
    assert 1.0 < float(np.median(f.depth[f.depth > 0])) < 6.0
    # register_color is accepted and has nothing to do.
    g = ThreeDMatchSource(match3d, register_color=False)[3]
    np.testing.assert_array_equal(g.depth, f.depth)


def test_3dmatch_two_frames_agree_in_world(match3d: Path) -> None:
    src = ThreeDMatchSource(match3d)
    a, b = src[0], src[1]
    nn = median_nn_m(a.points_world(), b.points_world())
    # measured 9.1 mm: median depth 3.1 m, where Kinect quantisation is ~2.6 cm. These two frames
    # move only 1.5 cm, so this checks scale and units, not the poses (the static guess scores ~0).
    assert nn <= 0.015, f"median NN {nn * 1000:.1f} mm"


def test_3dmatch_colour_is_already_registered(match3d: Path) -> None:
    """Why ThreeDMatchSource applies no correction: stored depth edges already sit on colour edges."""
    seq = match3d / "seq-01"
    cam = ThreeDMatchSource(match3d).depth_camera
    frames = [
        (read_rgb(seq / f"frame-{n:06d}.color.png"), read_depth_m(seq / f"frame-{n:06d}.depth.png", 1000.0, (0, 65535)))
        for n in (0, 116, 422)
    ]
    as_stored = np.mean([edge_distance_px(d, rgb) for rgb, d in frames])
    seven = SEVENSCENES_COLOR_TO_DEPTH.color_camera(cam, 640, 480)
    corrected = np.mean([edge_distance_px(register_depth_to_color(d, cam, seven, np.eye(4)), rgb) for rgb, d in frames])
    # measured: 0.33 px as stored, 2.4 px with the 7-Scenes correction
    assert as_stored <= 1.0, f"stored depth edges {as_stored:.2f} px from colour edges"
    assert corrected > 2 * max(as_stored, 0.5)


# -- detection and spec strings -----------------------------------------------------


def test_detection_and_open_source(kitchen: Path, match3d: Path) -> None:
    assert sensors.detect_source(kitchen) == "7scenes"
    assert sensors.detect_source(match3d) == "3dmatch"
    assert sensors.detect_source(match3d / "seq-01") == "3dmatch"
    src = sensors.open_source("7scenes:" + str(kitchen))
    assert isinstance(src, SevenScenesSource) and len(src) == 1000
    src = sensors.open_source(str(kitchen), register_color=False)
    assert type(src) is SevenScenesSource and src.camera == KINECT
    src = sensors.open_source("3dmatch:" + str(match3d))
    assert type(src) is ThreeDMatchSource and len(src) == 5
    assert not SevenScenesSource.detect(data_path("replica-office0"))
    assert not ThreeDMatchSource.detect(data_path("replica-office0"))


def test_opening_3dmatch_as_7scenes_warns(match3d: Path) -> None:
    with pytest.warns(UserWarning, match="not the 7-Scenes Kinect"):
        SevenScenesSource(match3d)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        SevenScenesSource(match3d, register_color=False)


def test_seq_subfolders_are_concatenated(kitchen_any: Path, tmp_path: Path) -> None:
    kitchen = kitchen_any
    scene = tmp_path / "scene"
    copy_frames(kitchen, scene / "seq-01", [0, 1])
    copy_frames(kitchen, scene / "seq-02", [5])
    # No camera-intrinsics.txt: the original 7-Scenes download; the published Kinect K is used.
    assert sensors.detect_source(scene) == "7scenes"
    src = SevenScenesSource(scene)
    assert len(src) == 3 and src.depth_camera == KINECT
    frames = list(src)
    assert [f.origin.sequence for f in frames] == ["seq-01", "seq-01", "seq-02"]
    assert [f.timestamp for f in frames] == pytest.approx([0.0, 1 / 30, 5 / 30])
    assert [f.index for f in frames] == [0, 1, 2]
    with pytest.raises(SourceError, match="missing intrinsics"):
        ThreeDMatchSource(scene)


def test_65535_is_invalid(mini: Path) -> None:
    raw = np.asarray(Image.open(mini / "frame-000000.depth.png")).copy()
    raw[100:110, 200:210] = 65535
    Image.fromarray(raw).save(mini / "frame-000000.depth.png")
    f = SevenScenesSource(mini, register_color=False)[0]
    assert np.all(f.depth[100:110, 200:210] == 0)
    assert np.median(f.depth[f.depth > 0]) < 4.0


# -- bad input: each a SourceError naming the file ----------------------------------


def test_missing_depth_file_names_it(mini: Path) -> None:
    (mini / "frame-000001.depth.png").unlink()
    src = SevenScenesSource(mini)
    assert len(src) == 3  # the gap is kept, not skipped
    src[0]
    with pytest.raises(SourceError, match=r"missing depth image: .*frame-000001\.depth\.png"):
        src[1]


def test_missing_colour_file_names_it(mini: Path) -> None:
    (mini / "frame-000002.color.jpg").unlink()
    with pytest.raises(SourceError, match=r"missing colour image: .*frame-000002\.color\.jpg"):
        SevenScenesSource(mini)[2]


def test_missing_pose_file_names_it(mini: Path) -> None:
    (mini / "frame-000000.pose.txt").unlink()
    with pytest.raises(SourceError, match=r"frame-000000\.pose\.txt"):
        SevenScenesSource(mini)[0]


def test_corrupt_colour_image_names_it(mini: Path) -> None:
    (mini / "frame-000001.color.jpg").write_bytes(b"\x00garbage, not a JPEG" * 50)
    with pytest.raises(SourceError, match=r"frame-000001\.color\.jpg: cannot decode colour image"):
        SevenScenesSource(mini)[1]


def test_wrong_depth_scale_is_implausible(mini: Path) -> None:
    with pytest.raises(SourceError, match=r"frame-000000\.depth\.png: median depth .* implausible"):
        SevenScenesSource(mini, depth_scale=1.0)[0]
    with pytest.raises(SourceError, match="depth_scale must be positive"):
        SevenScenesSource(mini, depth_scale=0.0)


def test_colour_depth_size_mismatch_names_both(mini: Path) -> None:
    Image.open(mini / "frame-000001.color.jpg").resize((320, 240)).save(mini / "frame-000001.color.jpg")
    with pytest.raises(SourceError, match=r"size mismatch: colour .*frame-000001\.color\.jpg is 320x240.*depth"):
        SevenScenesSource(mini)[1]


def test_nan_in_pose_names_the_file(mini: Path) -> None:
    pose = np.loadtxt(mini / "frame-000002.pose.txt")
    pose[1, 3] = np.nan
    np.savetxt(mini / "frame-000002.pose.txt", pose)
    with pytest.raises(SourceError, match=r"frame-000002\.pose\.txt.*non-finite"):
        SevenScenesSource(mini)[2]


def test_bad_intrinsics_file_names_it(mini: Path) -> None:
    (mini / "camera-intrinsics.txt").write_text("585 0 320\n0 585\n")
    with pytest.raises(SourceError, match=r"camera-intrinsics\.txt"):
        SevenScenesSource(mini)


def test_unknown_layout(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("not a dataset")
    (tmp_path / "image_0.png").write_bytes(b"")
    assert not SevenScenesSource.detect(tmp_path) and not ThreeDMatchSource.detect(tmp_path)
    with pytest.raises(SourceError, match=re.escape(f"{tmp_path}: not a 7scenes folder")):
        SevenScenesSource(tmp_path)
    with pytest.raises(SourceError, match="not a 3dmatch folder"):
        ThreeDMatchSource(tmp_path)
    with pytest.raises(SourceError, match="unknown layout"):
        sensors.detect_source(tmp_path)


def test_two_colour_files_for_one_frame(mini: Path) -> None:
    Image.open(mini / "frame-000001.color.jpg").save(mini / "frame-000001.color.png")
    with pytest.raises(SourceError, match=r"mini: frame 000001 has both \.color\.jpg and \.color\.png"):
        SevenScenesSource(mini)
