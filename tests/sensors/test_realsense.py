"""RealSense recording round trip on real 7-Scenes frames (no camera needed).

Real Kinect frames are written into a librealsense recording with a software device
and recorder, then played back through ``open_source("realsense:<file>")``: depth,
colour, intrinsics and timestamps must come back unchanged.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from sensors import Camera, Frame, SourceError, open_source
from sensors.io import read_depth_m, read_rgb

rs = pytest.importorskip("pyrealsense2", reason="pyrealsense2 is not installed (pip install semmap[realsense])")

from sensors.realsense import RealSenseSource, depth_raw_to_m  # noqa: E402
from sensors.realsense_record import depth_m_to_raw, record_frames  # noqa: E402

N_FRAMES = 5
KINECT = Camera(fx=585.0, fy=585.0, cx=320.0, cy=240.0, width=640, height=480)


def load_redkitchen(root: Path, n: int = N_FRAMES) -> list[Frame]:
    """The first ``n`` redkitchen frames (of ``root``, real or generated): colour, depth in
    metres (mm / 1000), t = i / 30 s."""
    return [
        Frame(
            rgb=read_rgb(root / f"frame-{i:06d}.color.jpg"),
            depth=read_depth_m(root / f"frame-{i:06d}.depth.png", 1000.0, (0, 65535)),
            camera=KINECT,
            timestamp=i / 30.0,
            index=i,
            name=f"redkitchen {i}",
        )
        for i in range(n)
    ]


@pytest.fixture(scope="module")
def frames(kitchen_any: Path) -> list[Frame]:
    return load_redkitchen(kitchen_any)


@pytest.fixture(scope="module")
def recording(frames: list[Frame], tmp_path_factory: pytest.TempPathFactory) -> Path:
    return record_frames(frames, tmp_path_factory.mktemp("rs") / "redkitchen.db3", depth_units_m=0.001, fps=30)


def assert_depth_equal(played: np.ndarray, original: np.ndarray, depth_units_m: float, where: str) -> None:
    """Same raw units everywhere, and metres equal up to float32 rounding of raw * scale (1 ulp)."""
    assert played.dtype == np.float32 and played.shape == original.shape, where
    raw_played = np.rint(played.astype(np.float64) / depth_units_m)
    raw_original = np.rint(original.astype(np.float64) / depth_units_m)
    n_diff = int((raw_played != raw_original).sum())
    assert n_diff == 0, f"{where}: {n_diff} depth pixels changed"
    assert np.array_equal(played > 0, original > 0), f"{where}: valid-depth mask changed"
    err = np.abs(played - original)
    ulp = np.spacing(np.abs(original))
    assert np.all(err <= ulp), f"{where}: depth differs by up to {err.max():.3g} m (> 1 ulp)"


def test_recording_is_a_finished_file_with_the_real_suffix(recording: Path) -> None:
    assert recording.is_file() and recording.stat().st_size > 0
    assert recording.suffix in (".db3", ".bag")
    # no temporary/partial recordings left beside it
    assert [p.name for p in recording.parent.iterdir()] == [recording.name]


def test_playback_returns_the_recorded_frames(frames: list[Frame], recording: Path) -> None:
    with open_source("realsense:" + str(recording)) as src:
        assert isinstance(src, RealSenseSource)
        assert src.camera == KINECT
        assert src.depth_units_m == pytest.approx(0.001, rel=1e-6)
        assert src.alignment == "registered"  # same intrinsics, identity extrinsics: no resampling
        played = list(src)
        stats = src.stats
    assert len(played) == len(frames)
    assert stats.yielded == len(frames) and stats.dropped == 0 and stats.timeouts == 0
    for i, (got, ref) in enumerate(zip(played, frames)):
        where = f"frame {i}"
        assert got.index == i
        assert got.camera == KINECT, where
        assert got.rgb.dtype == np.uint8 and np.array_equal(got.rgb, ref.rgb), f"{where}: colour changed"
        assert_depth_equal(got.depth, ref.depth, 0.001, where)
        assert got.timestamp == pytest.approx(ref.timestamp, abs=1e-6), where
        assert got.depth_source == "sensor"
        assert got.T_world_cam is None
    stamps = np.array([f.timestamp for f in played])
    assert np.all(np.diff(stamps) > 0), f"timestamps do not increase: {stamps}"


def test_depth_scale_is_read_from_the_recording(kitchen_any: Path, tmp_path: Path) -> None:
    """Half-millimetre units: the player must use the recorded scale, not assume 1 mm."""
    frames = load_redkitchen(kitchen_any, 2)
    path = record_frames(frames, tmp_path / "half_mm.db3", depth_units_m=0.0005)
    with RealSenseSource(path) as src:
        assert src.depth_units_m == pytest.approx(0.0005, rel=1e-6)
        played = list(src)
    assert len(played) == 2
    for got, ref in zip(played, frames):
        assert_depth_equal(got.depth, ref.depth, 0.0005, ref.name)


def test_max_frames_and_replay(recording: Path) -> None:
    src = open_source("realsense:" + str(recording), max_frames=2)
    try:
        first = [f.index for f in src]
        again = [f.index for f in src]  # a playback restarts from the beginning
    finally:
        src.close()
    assert first == [0, 1] and again == [0, 1]


def test_frame_number_gaps_are_counted_as_drops(frames: list[Frame], tmp_path: Path) -> None:
    """Frame 2 is missing from the recording (indices 0, 1, 3, 4 -> frame numbers 1, 2, 4, 5)."""
    kept = [frames[0], frames[1], frames[3], frames[4]]
    path = record_frames(kept, tmp_path / "gap.db3")
    with RealSenseSource(path) as src:
        played = list(src)
        stats = src.stats
    assert [f.origin.frame_number for f in played] == [1, 2, 4, 5]
    assert stats.dropped_depth == 1 and stats.dropped_color == 1 and stats.yielded == 4
    for got, ref in zip(played, kept):
        assert np.array_equal(got.rgb, ref.rgb), ref.name


def test_length_is_unknown(recording: Path) -> None:
    with RealSenseSource(recording) as src:
        with pytest.raises(TypeError):
            len(src)


def test_missing_recording_names_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.db3"
    with pytest.raises(SourceError, match="nowhere.db3"):
        open_source("realsense:" + str(missing))


@pytest.mark.parametrize("name", ["notes.db3", "image.bag"])
def test_non_recording_file_is_a_clear_error(kitchen_any: Path, tmp_path: Path, name: str) -> None:
    bad = tmp_path / name
    if name.endswith(".bag"):
        shutil.copy(kitchen_any / "frame-000000.depth.png", bad)
    else:
        bad.write_text("not a recording\n")
    with pytest.raises(SourceError, match=f"{name}.*not a playable RealSense recording"):
        RealSenseSource.open(str(bad))


def test_live_without_camera_is_a_clear_error() -> None:
    if len(rs.context().query_devices()) > 0:
        pytest.skip("a RealSense camera is connected")
    with pytest.raises(SourceError, match="no RealSense device connected"):
        open_source("realsense")


def test_record_refuses_bad_frames_and_leaves_nothing(kitchen_any: Path, tmp_path: Path) -> None:
    good = load_redkitchen(kitchen_any, 2)
    too_far = good[1].with_(depth=np.full(KINECT.shape, 70.0, np.float32))  # > 65.535 m at 1 mm
    no_depth = good[1].with_(depth=None)
    same_time = good[1].with_(timestamp=good[0].timestamp)
    same_index = good[1].with_(index=good[0].index)
    other_camera = good[1].with_(camera=Camera(580.0, 585.0, 320.0, 240.0, 640, 480))
    cases = (
        (too_far, "exceeds the z16 range"),
        (no_depth, "has no depth"),
        (same_time, "timestamp .* does not increase"),
        (same_index, "index .* does not increase"),
        (other_camera, "differs from the first frame"),
    )
    for bad, message in cases:
        with pytest.raises(ValueError, match=message):
            record_frames([good[0], bad], tmp_path / "bad.db3")
        assert list(tmp_path.iterdir()) == [], f"leftover files after {message!r}"


def test_depth_unit_conversion_is_inverse() -> None:
    raw = np.array([[0, 1, 1234], [4095, 65535, 7]], dtype=np.uint16)
    depth_m = depth_raw_to_m(raw, 0.001)
    assert depth_m.dtype == np.float32
    np.testing.assert_allclose(depth_m, raw / 1000.0, rtol=1e-7)
    assert np.array_equal(depth_m_to_raw(depth_m, 0.001, "t"), raw)
    with pytest.raises(ValueError, match="negative depth"):
        depth_m_to_raw(-depth_m, 0.001, "t")
