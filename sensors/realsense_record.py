"""Write frames into an Intel RealSense recording (librealsense software device + recorder).

The recording holds one depth sensor (z16, ``depth_units`` = ``depth_units_m``) and one
colour sensor (rgb8) with the frames' intrinsics and identity depth-to-colour
extrinsics, so ``RealSenseSource`` plays it back without resampling. librealsense
stores both images PNG-compressed (lossless): depth round-trips exactly whenever it is
a multiple of ``depth_units_m`` (millimetre data with 0.001 m units).

librealsense 2.56+ writes rosbag2 sqlite files and insists on the ``.db3`` suffix; older
versions wrote rosbag1 ``.bag``. ``record_frames`` uses the suffix of ``path`` when the
installed librealsense accepts it, otherwise the one it asks for, and returns the path
it really wrote.

The recorder stamps each message with the wall-clock time it was written, so a
real-time playback of such a file would rush through it; ``RealSenseSource`` plays
recordings back in non-real-time mode, which is unaffected.
"""

from __future__ import annotations

import itertools
import os
import re
import uuid
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from sensors.camera import Camera
from sensors.frame import Frame
from sensors.realsense import import_pyrealsense2


def depth_m_to_raw(depth_m: np.ndarray, depth_units_m: float, where: str) -> np.ndarray:
    """Quantise metric depth to RealSense z16 units.

    Args:
        depth_m: (H, W) float depth in metres, 0 (or non-finite) = invalid.
        depth_units_m: metres per raw unit.
        where: the frame's name, for error messages.
    Returns:
        (H, W) uint16 ``round(depth_m / depth_units_m)``, 0 where invalid.
    Raises:
        ValueError if some depth is negative or beyond ``65535 * depth_units_m``.
    """
    d = np.where(np.isfinite(depth_m), depth_m, 0.0).astype(np.float64)
    raw = np.rint(d / depth_units_m)
    if raw.min(initial=0.0) < 0:
        raise ValueError(f"{where}: negative depth {float(d.min()):.4f} m cannot be recorded")
    if raw.max(initial=0.0) > 65535:
        raise ValueError(
            f"{where}: depth {float(d.max()):.3f} m exceeds the z16 range of {65535 * depth_units_m:.3f} m "
            f"at depth_units_m {depth_units_m} m"
        )
    return raw.astype(np.uint16)


def _intrinsics(rs: Any, camera: Camera) -> Any:
    intr = rs.intrinsics()
    intr.width, intr.height = camera.width, camera.height
    intr.fx, intr.fy, intr.ppx, intr.ppy = camera.fx, camera.fy, camera.cx, camera.cy
    intr.model = rs.distortion.none
    intr.coeffs = [0.0] * 5
    return intr


def _video_stream(rs: Any, kind: Any, uid: int, fmt: Any, bpp: int, camera: Camera, fps: int) -> Any:
    vs = rs.video_stream()
    vs.type, vs.index, vs.uid = kind, 0, uid
    vs.width, vs.height, vs.fps, vs.bpp, vs.fmt = camera.width, camera.height, fps, bpp, fmt
    vs.intrinsics = _intrinsics(rs, camera)
    return vs


def _make_recorder(rs: Any, path: Path, device: Any) -> tuple[Any, Path]:
    """``rs.recorder`` on ``path``, or on ``path`` with the suffix librealsense demands."""
    try:
        return rs.recorder(str(path), device), path
    except RuntimeError as e:
        m = re.search(r"must have (\.\w+) extension", str(e))
        if not m or path.suffix == m.group(1):
            raise
        path = path.with_suffix(m.group(1))
        return rs.recorder(str(path), device), path


def record_frames(frames: Iterable[Frame], path: Path, depth_units_m: float = 0.001, fps: int = 30) -> Path:
    """Record RGB-D frames as a RealSense recording.

    Args:
        frames: frames with depth, all with the same camera and strictly increasing
            ``index`` and ``timestamp`` (seconds); colour (H, W, 3) uint8 RGB, depth
            (H, W) metres. ``index + 1`` becomes the frame number of both streams, so
            gaps in ``index`` are gaps in the recording, which a player reports as drops.
        path: where to write; the suffix may change to the one librealsense writes.
        depth_units_m: metres per z16 unit stored as the depth sensor's ``depth_units``.
        fps: nominal frame rate of both streams (stream metadata only).
    Returns:
        The path of the finished recording. It is written under a temporary name in
        the same folder and renamed when complete; nothing is left behind on error.
    """
    if not depth_units_m > 0:
        raise ValueError(f"depth_units_m must be positive, got {depth_units_m}")
    if fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    path = Path(path)
    it = iter(frames)
    first = next(it, None)
    if first is None:
        raise ValueError(f"{path}: no frames to record")
    camera = first.camera
    rs = import_pyrealsense2()
    path.parent.mkdir(parents=True, exist_ok=True)

    device = rs.software_device()
    depth_sensor = device.add_sensor("Depth")
    color_sensor = device.add_sensor("Color")
    depth_sensor.add_read_only_option(rs.option.depth_units, float(depth_units_m))
    depth_profile = depth_sensor.add_video_stream(_video_stream(rs, rs.stream.depth, 0, rs.format.z16, 2, camera, fps))
    color_profile = color_sensor.add_video_stream(_video_stream(rs, rs.stream.color, 1, rs.format.rgb8, 3, camera, fps))
    identity = rs.extrinsics()
    identity.rotation = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
    identity.translation = [0.0, 0.0, 0.0]
    depth_profile.register_extrinsics_to(color_profile, identity)

    tmp = path.with_name(f".{path.stem}.{uuid.uuid4().hex[:8]}.partial{path.suffix}")
    recorder, tmp = _make_recorder(rs, tmp, device)
    sensors = (depth_sensor, color_sensor)
    opened = started = complete = False
    try:
        sink = rs.frame_queue(1)  # the recorder stores frames on their way to the sink
        depth_sensor.open(depth_profile)
        color_sensor.open(color_profile)
        opened = True
        depth_sensor.start(sink)
        color_sensor.start(sink)
        started = True
        last_t, last_index = -np.inf, -1
        for frame in itertools.chain([first], it):
            where = frame.name or f"frame {frame.index}"
            if frame.camera != camera:
                raise ValueError(f"{where}: camera {frame.camera} differs from the first frame's {camera}")
            if frame.depth is None:
                raise ValueError(f"{where}: has no depth; a RealSense recording needs depth")
            if not frame.timestamp > last_t:
                raise ValueError(f"{where}: timestamp {frame.timestamp} s does not increase (previous {last_t} s)")
            if not frame.index > last_index:
                raise ValueError(f"{where}: index {frame.index} does not increase (previous {last_index})")
            last_t, last_index = frame.timestamp, frame.index
            raw = depth_m_to_raw(frame.depth, depth_units_m, where)
            rgb = np.ascontiguousarray(frame.rgb, dtype=np.uint8)
            for sensor, profile, pixels, bpp in ((depth_sensor, depth_profile, raw, 2), (color_sensor, color_profile, rgb, 3)):
                sw = rs.software_video_frame()
                sw.pixels = pixels  # copied by pyrealsense2
                sw.bpp = bpp
                sw.stride = camera.width * bpp
                sw.timestamp = frame.timestamp * 1000.0  # ms
                sw.domain = rs.timestamp_domain.hardware_clock
                sw.frame_number = frame.index + 1
                sw.profile = profile.as_video_stream_profile()
                if bpp == 2:
                    sw.depth_units = float(depth_units_m)
                sensor.on_video_frame(sw)
        complete = True
    finally:
        if started:
            for sensor in sensors:
                sensor.stop()
        if opened:
            for sensor in sensors:
                sensor.close()
        recorder.pause()
        recorder = None  # the last reference: librealsense finalises the file in the destructor
        if not complete:
            tmp.unlink(missing_ok=True)
    if not tmp.is_file() or tmp.stat().st_size == 0:
        tmp.unlink(missing_ok=True)
        raise RuntimeError(f"{path}: librealsense wrote no recording at {tmp}")
    final = path.with_suffix(tmp.suffix)
    os.replace(tmp, final)
    return final
