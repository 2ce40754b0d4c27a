"""Intel RealSense frames, live from a camera or played back from a recording.

``open_source("realsense")`` streams from the first connected camera;
``open_source("realsense:/path/rec.db3")`` (or ``.bag``) plays a recording back.
librealsense 2.56+ records rosbag2 ``.db3`` files; older versions wrote rosbag1 ``.bag``.

Every frame is converted once, here (see docs/conventions.md):

- depth is registered to colour: ``rs.align(rs.stream.color)`` resamples it onto the
  colour grid, unless the recorded streams already share intrinsics and have identity
  extrinsics (then align is skipped: librealsense's align splats every depth pixel over
  a rounded 2x2 footprint and keeps the minimum, which changes ~4 % of the pixels of an
  already registered image instead of leaving it as it is);
- ``depth_m = raw * depth_units_m`` (float32 metres, 0 = invalid), with ``depth_units_m``
  (metres per raw unit, librealsense's ``depth_units``; the inverse of the dataset readers'
  ``depth_scale``, raw units per metre) read from the (live or recorded) device's depth sensor;
- intrinsics come from the colour stream profile (shared by the aligned depth);
- ``timestamp`` is the colour frame's timestamp in seconds (ms / 1000);
- ``T_world_cam`` is None (poses come from tracking later), ``depth_source`` "sensor".

``pyrealsense2`` is imported inside the methods that need it, never at module import.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from sensors.base import FrameSource
from sensors.camera import Camera
from sensors.frame import Frame, FrameOrigin
from sensors.io import SourceError, require_file

log = logging.getLogger(__name__)

RECORDING_SUFFIXES = (".bag", ".db3")
"""File suffixes of RealSense recordings (rosbag1 and rosbag2/sqlite)."""


COLOR_FORMATS = ("rgb8", "bgr8", "rgba8", "bgra8")
"""Colour stream formats converted to RGB (live cameras are asked for rgb8)."""


def import_pyrealsense2() -> Any:
    """Import and return the ``pyrealsense2`` module, or raise ImportError saying how to install it."""
    try:
        import pyrealsense2 as rs
    except ImportError as e:
        raise ImportError(
            f"Intel RealSense support needs pyrealsense2 (pip install semmap[realsense]); importing it failed: {e}"
        ) from e
    return rs


def depth_raw_to_m(raw: np.ndarray, depth_units_m: float) -> np.ndarray:
    """Convert raw RealSense depth to metres.

    Args:
        raw: (H, W) uint16 depth in device units (0 = no measurement).
        depth_units_m: metres per raw unit (the depth sensor's ``depth_units``, e.g. 0.001).
    Returns:
        (H, W) float32 depth in metres, ``raw * depth_units_m`` (0 stays 0 = invalid).
    """
    return raw.astype(np.float32) * np.float32(depth_units_m)


def color_to_rgb(pixels: np.ndarray, fmt_name: str, where: str) -> np.ndarray:
    """Copy a RealSense colour image into a (H, W, 3) uint8 RGB array.

    Args:
        pixels: (H, W, C) uint8 view of the frame data.
        fmt_name: the stream format name, one of ``COLOR_FORMATS``.
        where: the source name, for the error message.
    """
    if fmt_name == "rgb8":
        return np.array(pixels, dtype=np.uint8, copy=True)
    if fmt_name == "bgr8":
        return np.ascontiguousarray(pixels[..., ::-1])
    if fmt_name == "rgba8":
        return np.ascontiguousarray(pixels[..., :3])
    if fmt_name == "bgra8":
        return np.ascontiguousarray(pixels[..., 2::-1])
    raise SourceError(f"{where}: unsupported colour format {fmt_name!r} (expected one of {COLOR_FORMATS})")


def camera_from_intrinsics(intr: Any) -> Camera:
    """Pinhole ``Camera`` from an ``rs.intrinsics`` (distortion is not modelled)."""
    return Camera(float(intr.fx), float(intr.fy), float(intr.ppx), float(intr.ppy), int(intr.width), int(intr.height))


def streams_registered(depth_profile: Any, color_profile: Any) -> bool:
    """True when depth already lies on the colour grid: same intrinsics and identity extrinsics.

    Args:
        depth_profile, color_profile: ``rs.video_stream_profile`` of the two streams.
    """
    di, ci = depth_profile.get_intrinsics(), color_profile.get_intrinsics()
    same_intrinsics = (
        (di.width, di.height, di.model) == (ci.width, ci.height, ci.model)
        and np.allclose([di.fx, di.fy, di.ppx, di.ppy], [ci.fx, ci.fy, ci.ppx, ci.ppy], rtol=0.0, atol=1e-6)
        and np.allclose(di.coeffs, ci.coeffs, rtol=0.0, atol=1e-9)
    )
    if not same_intrinsics:
        return False
    try:
        ext = depth_profile.get_extrinsics_to(color_profile)
    except RuntimeError:
        return False
    return bool(
        np.allclose(np.asarray(ext.rotation).reshape(3, 3), np.eye(3), rtol=0.0, atol=1e-9)
        and np.allclose(ext.translation, 0.0, rtol=0.0, atol=1e-9)
    )


@dataclass
class StreamStats:
    """Counters of one RealSense stream session (reset on every start).

    Attributes:
        framesets: framesets received from the pipeline (complete or not).
        yielded: frames handed to the caller.
        warmup: complete framesets discarded while auto-exposure settles (live only).
        incomplete: framesets skipped because depth or colour repeated the previous one
            (the other stream had no new frame to pair with).
        dropped_depth, dropped_color: frames the device produced that never reached us,
            counted from frame-number gaps.
        timeouts: waits of ``timeout_ms`` that returned no frames.
    """

    framesets: int = 0
    yielded: int = 0
    warmup: int = 0
    incomplete: int = 0
    dropped_depth: int = 0
    dropped_color: int = 0
    timeouts: int = 0

    @property
    def dropped(self) -> int:
        """Depth plus colour frames lost (frame-number gaps)."""
        return self.dropped_depth + self.dropped_color


class RealSenseSource(FrameSource):
    """Aligned RGB-D frames from an Intel RealSense camera or recording.

    The pipeline starts in the constructor, so a missing camera or a bad recording is
    reported at open time and ``camera``/``depth_units_m`` are known before iterating.
    Iterating a playback a second time restarts it from the beginning; iterating a live
    camera again continues the stream. Length is unknown (``len()`` raises TypeError):
    a recording's duration does not reliably give the number of paired frames.
    """

    kind = "realsense"

    def __init__(
        self,
        recording: Path | str | None = None,
        *,
        width: int = 640,
        height: int = 480,
        fps: int = 30,
        max_frames: int | None = None,
        warmup_frames: int = 30,
        timeout_ms: int = 5000,
        max_consecutive_timeouts: int = 3,
        serial: str | None = None,
    ) -> None:
        """Open a camera (``recording`` None) or a recording and start streaming.

        Args:
            recording: a ``.db3``/``.bag`` file to play back; None for the live camera.
            width, height, fps: stream mode requested from a live camera (playback uses
                what was recorded).
            max_frames: stop after this many frames (None: until the end / forever).
            warmup_frames: live only: complete framesets discarded first so that
                auto-exposure settles.
            timeout_ms: how long one wait for a frameset may take.
            max_consecutive_timeouts: waits in a row without frames before RuntimeError.
            serial: live only: the serial number of the camera to use (default: first).
        """
        if max_frames is not None and max_frames < 0:
            raise ValueError(f"max_frames must be >= 0, got {max_frames}")
        if warmup_frames < 0:
            raise ValueError(f"warmup_frames must be >= 0, got {warmup_frames}")
        if timeout_ms <= 0 or max_consecutive_timeouts < 1:
            raise ValueError(
                f"timeout_ms must be > 0 and max_consecutive_timeouts >= 1, got {timeout_ms}, {max_consecutive_timeouts}"
            )
        self.recording = None if recording is None else require_file(recording, "RealSense recording")
        self.width, self.height, self.fps = int(width), int(height), int(fps)
        self.max_frames = max_frames
        self.warmup_frames = 0 if self.recording is not None else int(warmup_frames)
        self.timeout_ms = int(timeout_ms)
        self.max_consecutive_timeouts = int(max_consecutive_timeouts)
        self.serial = serial
        self.name = f"realsense:{self.recording}" if self.recording is not None else "realsense (live)"
        self.stats = StreamStats()
        self.depth_units_m: float = 0.0
        #: "rs.align" when depth is resampled onto colour, "registered" when it already is
        self.alignment: str = ""
        self._rs: Any = None
        self._pipeline: Any = None
        self._playback: Any = None
        self._align: Any = None
        self._color_format = ""
        self._fresh = False
        self._reported = False
        self._start()

    @classmethod
    def open(cls, location: str, **options) -> "RealSenseSource":
        """``""`` opens the live camera; anything else is a recording path."""
        return cls(Path(location) if location else None, **options)

    @classmethod
    def detect(cls, path: Path) -> bool:
        """A ``.bag`` or ``.db3`` file is taken for a RealSense recording."""
        return path.is_file() and path.suffix.lower() in RECORDING_SUFFIXES

    # ------------------------------------------------------------------ start / stop

    def _start(self) -> None:
        """Configure and start the pipeline; read intrinsics, depth scale and alignment."""
        rs = self._rs = import_pyrealsense2()
        pipeline = rs.pipeline()
        config = rs.config()
        if self.recording is not None:
            config.enable_device_from_file(str(self.recording), repeat_playback=False)
            config.enable_stream(rs.stream.depth)
            config.enable_stream(rs.stream.color)
            try:
                resolved = config.resolve(pipeline)
            except RuntimeError as e:
                raise SourceError(
                    f"{self.recording}: not a playable RealSense recording with depth and colour streams ({e})"
                ) from e
            # Non-real-time before the first frame is read: playback then waits for the
            # consumer instead of dropping frames. start() reuses the resolved device.
            resolved.get_device().as_playback().set_real_time(False)
        else:
            if len(rs.context().query_devices()) == 0:
                raise SourceError("no RealSense device connected (for a recording use 'realsense:/path/to/rec.db3')")
            if self.serial:
                config.enable_device(self.serial)
            config.enable_stream(rs.stream.depth, self.width, self.height, rs.format.z16, self.fps)
            config.enable_stream(rs.stream.color, self.width, self.height, rs.format.rgb8, self.fps)
            if not config.can_resolve(pipeline):
                raise SourceError(
                    f"{self.name}: the camera{f' {self.serial}' if self.serial else ''} cannot stream depth z16 and "
                    f"colour rgb8 at {self.width}x{self.height} @ {self.fps} fps"
                )
        try:
            profile = pipeline.start(config)
        except RuntimeError as e:
            raise SourceError(f"{self.name}: cannot start streaming ({e})") from e
        self._pipeline = pipeline
        device = profile.get_device()
        self._playback = device.as_playback() if self.recording is not None else None
        if self._playback is not None and self._playback.is_real_time():
            self.close()
            raise SourceError(f"{self.recording}: playback could not be switched to non-real-time")
        try:
            self.depth_units_m = float(device.first_depth_sensor().get_depth_scale())
        except RuntimeError as e:
            self.close()
            raise SourceError(f"{self.name}: no depth scale on the depth sensor ({e})") from e
        depth_profile = profile.get_stream(rs.stream.depth).as_video_stream_profile()
        color_profile = profile.get_stream(rs.stream.color).as_video_stream_profile()
        self._color_format = str(color_profile.format()).rsplit(".", 1)[-1]
        if self._color_format not in COLOR_FORMATS:
            self.close()
            raise SourceError(
                f"{self.name}: colour stream format {self._color_format!r} is not supported (expected one of {COLOR_FORMATS})"
            )
        color_intr = color_profile.get_intrinsics()
        if any(abs(c) > 0 for c in color_intr.coeffs):
            log.warning("%s: colour distortion %s %s is ignored (pinhole model)", self.name, color_intr.model, color_intr.coeffs)
        self.camera = camera_from_intrinsics(color_intr)
        if streams_registered(depth_profile, color_profile):
            self.alignment, self._align = "registered", None
        else:
            self.alignment, self._align = "rs.align", rs.align(rs.stream.color)
        self.stats = StreamStats()
        self._fresh = True
        self._reported = False

    def close(self) -> None:
        """Stop the pipeline (idempotent); logs a summary if frames were dropped."""
        if self._pipeline is None:
            return
        pipeline, self._pipeline = self._pipeline, None
        try:
            pipeline.stop()
        except RuntimeError as e:  # already stopped by librealsense
            log.debug("%s: pipeline.stop(): %s", self.name, e)
        self._playback = None
        self._fresh = False
        self._report()

    def _report(self) -> None:
        """Log dropped frames and timeouts once per session (end of playback or close)."""
        if self._reported:
            return
        self._reported = True
        s = self.stats
        if s.dropped or s.timeouts:
            log.warning(
                "%s: %d depth and %d colour frames dropped, %d incomplete framesets skipped, %d timeouts",
                self.name, s.dropped_depth, s.dropped_color, s.incomplete, s.timeouts,
            )

    # ------------------------------------------------------------------ iteration

    def _wait(self) -> Any | None:
        """The next frameset, or None at the end of a recording.

        Raises RuntimeError after ``max_consecutive_timeouts`` waits of ``timeout_ms``
        without frames.
        """
        rs = self._rs
        # Playback waits in short slices so that the end of the file is seen at once.
        slice_ms = min(self.timeout_ms, 100) if self._playback is not None else self.timeout_ms
        consecutive, waited_ms = 0, 0
        while True:
            ok, frames = self._pipeline.try_wait_for_frames(slice_ms)
            if ok:
                return frames
            if self._playback is not None and self._playback.current_status() == rs.playback_status.stopped:
                ok, frames = self._pipeline.try_wait_for_frames(slice_ms)  # anything still in flight
                return frames if ok else None
            waited_ms += slice_ms
            if waited_ms < self.timeout_ms:
                continue
            waited_ms = 0
            consecutive += 1
            self.stats.timeouts += 1
            log.warning("%s: no frames for %d ms (%d in a row)", self.name, self.timeout_ms, consecutive)
            if consecutive >= self.max_consecutive_timeouts:
                raise RuntimeError(
                    f"{self.name}: no frames for {consecutive} x {self.timeout_ms} ms; "
                    f"is the camera still connected (USB 3) and not used by another program?"
                )

    def __iter__(self) -> Iterator[Frame]:
        if self._pipeline is None or (self._playback is not None and not self._fresh):
            self.close()
            self._start()
        self._fresh = False
        last_depth_no = last_color_no = -1  # last numbers seen (any frameset)
        paired_depth_no = paired_color_no = -1  # last numbers yielded or warmed up
        index = 0
        while self.max_frames is None or index < self.max_frames:
            frames = self._wait()
            if frames is None:
                break
            depth, color = frames.get_depth_frame(), frames.get_color_frame()
            if not depth or not color:
                self.stats.incomplete += 1
                continue
            self.stats.framesets += 1
            depth_no, color_no = int(depth.get_frame_number()), int(color.get_frame_number())
            if depth_no < last_depth_no or color_no < last_color_no:  # frame numbers went back
                if self._playback is not None:
                    break  # the recording started over: its end was reached
                last_depth_no = last_color_no = paired_depth_no = paired_color_no = -1  # camera restarted
            if last_depth_no >= 0:
                self.stats.dropped_depth += max(0, depth_no - last_depth_no - 1)
                self.stats.dropped_color += max(0, color_no - last_color_no - 1)
            last_depth_no, last_color_no = depth_no, color_no
            if depth_no == paired_depth_no or color_no == paired_color_no:
                self.stats.incomplete += 1  # one stream repeats its previous frame
                continue
            paired_depth_no, paired_color_no = depth_no, color_no
            if self.stats.warmup < self.warmup_frames:
                self.stats.warmup += 1
                continue
            yield self._to_frame(frames, index)
            self.stats.yielded += 1
            index += 1
        if self._playback is not None:
            self._report()

    def _to_frame(self, frames: Any, index: int) -> Frame:
        """Convert one complete frameset to a ``Frame`` (depth aligned to colour, metres)."""
        if self._align is not None:
            frames = self._align.process(frames)
        depth, color = frames.get_depth_frame(), frames.get_color_frame()
        depth_m = depth_raw_to_m(np.asanyarray(depth.get_data()), self.depth_units_m)
        rgb = color_to_rgb(np.asanyarray(color.get_data()), self._color_format, self.name)
        return Frame(
            rgb=rgb,
            depth=depth_m,
            camera=self.camera,
            T_world_cam=None,
            timestamp=float(color.get_timestamp()) / 1000.0,
            index=index,
            depth_source="sensor",
            name=f"{self.name}#{color.get_frame_number()}",
            origin=FrameOrigin(frame_number=int(depth.get_frame_number()), color_frame_number=int(color.get_frame_number())),
        )
