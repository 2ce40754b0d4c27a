"""Latest-frame reading: a source read in its own thread, only the newest frame kept.

A live camera delivers frames at its own rate whether or not the mapper keeps up. If
the frames were queued, a mapper slower than the sensor would fall further behind
without bound (in memory and in latency). :class:`LatestFrameSource` reads any source
in a background thread into a one-frame slot: the consumer always gets the newest frame,
every frame overwritten before it was taken is counted as dropped, and memory stays at
one frame. With ``fps`` the reader is paced (frame k is released ``k / fps`` seconds
after the first), so a recorded dataset replays at sensor rate.

Dropped frames show up as gaps in ``Frame.index``; each delivered frame also carries
``frame.frames_dropped_before`` (frames dropped since the previous delivered
one), and :attr:`LatestFrameSource.stats` has the totals.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

from sensors.base import FrameSource
from sensors.frame import Frame


@dataclass
class LatestFrameStats:
    """Counts of one run of a :class:`LatestFrameSource` (safe to read while it runs).

    Attributes:
        read: frames read from the wrapped source.
        delivered: frames handed to the consumer.
        dropped: frames overwritten in the slot before the consumer took them.
        late_s: how far the reader fell behind its pacing schedule at worst, seconds
            (0 without ``fps``; > 0 means the source itself is slower than ``fps``).
    """

    read: int = 0
    delivered: int = 0
    dropped: int = 0
    late_s: float = 0.0


class LatestFrameSource(FrameSource):
    """Wrap ``source``: read it in a thread, keep only the newest frame, count the dropped ones.

    Args:
        source: any frame source (dataset, recording, live camera).
        fps: pace the reader at this many frames per second (replaying a dataset at sensor
            rate); None reads as fast as the source delivers (a live camera paces itself).
        poll_s: how often a waiting consumer wakes to check for Ctrl-C, seconds.

    ``frames(stride, max_frames)`` applies stride and limit to the wrapped source's frames
    before dropping (they select which sensor frames exist; dropping then picks among them).
    """

    kind = "latest"

    def __init__(self, source: FrameSource, fps: float | None = None, poll_s: float = 0.05) -> None:
        if fps is not None and not fps > 0:
            raise ValueError(f"fps must be positive, got {fps}")
        self.source = source
        self.fps = fps
        self.poll_s = poll_s
        self.camera = source.camera
        self.has_poses = source.has_poses
        self.stats = LatestFrameStats()
        self._cond = threading.Condition()
        self._slot: Frame | None = None
        self._pending_drops = 0
        self._done = False
        self._error: BaseException | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __len__(self) -> int:
        return len(self.source)

    def __iter__(self) -> Iterator[Frame]:
        return self.frames()

    @property
    def dropped(self) -> int:
        """Frames dropped so far."""
        return self.stats.dropped

    def frames(self, stride: int = 1, max_frames: int | None = None) -> Iterator[Frame]:
        """The newest frame each time the consumer asks, until the wrapped source ends."""
        if self._thread is not None:
            raise RuntimeError("a LatestFrameSource can be iterated once")
        inner = self.source.frames(stride, max_frames)
        self._thread = threading.Thread(target=self._read, args=(inner,), name="latest-frame-reader", daemon=True)
        self._thread.start()
        return self._deliver()

    def _read(self, inner: Iterator[Frame]) -> None:
        t0 = None
        try:
            for k, frame in enumerate(inner):
                if self._stop.is_set():
                    break
                if self.fps is not None:
                    now = time.perf_counter()
                    t0 = now if t0 is None else t0
                    due = t0 + k / self.fps
                    if due > now:
                        if self._stop.wait(due - now):
                            break
                    else:
                        self.stats.late_s = max(self.stats.late_s, now - due)
                with self._cond:
                    self.stats.read += 1
                    if self._slot is not None:
                        self.stats.dropped += 1
                        self._pending_drops += 1
                    self._slot = frame
                    self._cond.notify()
        except BaseException as e:  # handed to the consumer, raised there
            self._error = e
        finally:
            with self._cond:
                self._done = True
                self._cond.notify()

    def _deliver(self) -> Iterator[Frame]:
        try:
            while True:
                with self._cond:
                    while self._slot is None and not self._done:
                        self._cond.wait(self.poll_s)  # wakes regularly so Ctrl-C gets through
                    if self._slot is None:
                        break
                    frame, self._slot = self._slot, None
                    frame.frames_dropped_before = self._pending_drops
                    self._pending_drops = 0
                    self.stats.delivered += 1
                yield frame
            if self._error is not None:
                raise self._error
        finally:
            self._stop.set()

    def close(self) -> None:
        """Stop the reader thread and close the wrapped source."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
        self.source.close()
