"""Per-stage wall-time accounting of the tracker (always on; a ``perf_counter`` pair per section).

``Tracker.times`` collects, for each named stage (``"prepare"``, ``"render"``, ``"odometry:point_to_plane"``
...), the total seconds and the number of calls; benchmarks print it as milliseconds per frame.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field


@dataclass
class StageTimes:
    """Accumulated wall time per stage name.

    Attributes:
        seconds: stage -> total wall seconds.
        cpu_seconds: stage -> total CPU seconds of this process (all its threads; less sensitive than wall
            time to other jobs on a shared machine).
        calls: stage -> number of timed sections.
    """

    seconds: dict[str, float] = field(default_factory=dict)
    cpu_seconds: dict[str, float] = field(default_factory=dict)
    calls: dict[str, int] = field(default_factory=dict)

    @contextmanager
    def section(self, name: str) -> Iterator[None]:
        """Time the enclosed block under ``name`` (nested sections are counted in both)."""
        t0, c0 = time.perf_counter(), time.process_time()
        try:
            yield
        finally:
            self.add(name, time.perf_counter() - t0, time.process_time() - c0)

    def add(self, name: str, seconds: float, cpu_seconds: float = 0.0) -> None:
        self.seconds[name] = self.seconds.get(name, 0.0) + seconds
        self.cpu_seconds[name] = self.cpu_seconds.get(name, 0.0) + cpu_seconds
        self.calls[name] = self.calls.get(name, 0) + 1

    def per_frame_ms(self, frames: int, cpu: bool = False) -> dict[str, float]:
        """stage -> wall (or CPU) milliseconds per frame over ``frames`` frames, largest wall time first."""
        n = max(frames, 1)
        table = self.cpu_seconds if cpu else self.seconds
        order = sorted(self.seconds, key=lambda k: -self.seconds[k])
        return {k: 1000.0 * table[k] / n for k in order}


def null_section(name: str):  # noqa: ARG001 - same signature as StageTimes.section
    """A no-op stand-in for ``StageTimes.section`` when no timer is given."""
    return _NULL


class _Null:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc) -> None:
        return None


_NULL = _Null()
