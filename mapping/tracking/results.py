"""What the tracker hands back: per-frame results, the lost-tracking error, summaries."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from mapping.tracking.loop_closure import LoopEdge
    from mapping.tsdf import TSDFMap
    from sensors.trajectory_io import Trajectory

TRACK_STATUSES = ("ok", "recovered", "frame_to_frame", "lost", "skipped")
"""Per-frame statuses. Tracked (integrate the frame): "ok" (frame-to-model),
"recovered" (first success after untracked frames, or relocalised on a keyframe),
"frame_to_frame" (fallback alignment to the last keyframe). Not tracked (never
integrate): "lost" (every alignment was rejected), "skipped" (no usable depth)."""


class TrackingLost(RuntimeError):
    """Tracking failed for too many consecutive frames; the message says where and why.

    Attributes:
        frame_index: ``Frame.index`` of the frame at which tracking gave up.
        last_good_index: ``Frame.index`` of the last tracked frame (None if none was tracked).
        frames_lost: consecutive untracked frames.
    """

    def __init__(self, message: str, frame_index: int, last_good_index: int | None, frames_lost: int) -> None:
        super().__init__(message)
        self.frame_index = frame_index
        self.last_good_index = last_good_index
        self.frames_lost = frames_lost


@dataclass
class TrackResult:
    """Outcome of tracking one frame.

    Attributes:
        T_world_cam: (4, 4) float64 estimated pose, or None when ``ok`` is False.
        ok: True when the frame was tracked and may be integrated.
        status: one of ``TRACK_STATUSES``.
        fitness: fraction of the frame's valid pixels with a correspondence in the accepted
            alignment (1.0 for the first frame, 0.0 when nothing was accepted).
        inlier_rmse: RMS point-to-plane residual of those correspondences, metres.
        ms: wall time of ``Tracker.track`` for this frame, milliseconds.
        index: ``Frame.index``.
        reason: why the frame was not tracked normally ("" for "ok").
        keyframe: the frame was made a keyframe.
    """

    T_world_cam: np.ndarray | None
    ok: bool
    status: str
    fitness: float
    inlier_rmse: float
    ms: float
    index: int = 0
    reason: str = ""
    keyframe: bool = False


@dataclass
class TrackingSummary:
    """Counts and failure events of a tracking run.

    Attributes:
        frames: frames passed to ``track``.
        status_counts: status -> number of frames.
        events: (frame index, status, reason) for every frame that was not "ok".
        keyframes: keyframes kept.
        mean_ms: mean ``track`` time per frame, milliseconds.
        loops: verified loop closures (after ``finalize``).
        source_frames_skipped: frames the source never handed to ``track``, from the gaps between
            consecutive ``Frame.index`` values (a live source that kept only the newest frame, or a stride).
        max_index_gap: largest such gap plus one (1 when no frame was skipped).
    """

    frames: int
    status_counts: dict[str, int]
    events: list[tuple[int, str, str]]
    keyframes: int
    mean_ms: float
    loops: int = 0
    source_frames_skipped: int = 0
    max_index_gap: int = 1

    @classmethod
    def from_results(cls, results: list[TrackResult], keyframes: int, loops: int = 0) -> TrackingSummary:
        counts = Counter(r.status for r in results)
        gaps = np.diff([r.index for r in results]) if len(results) > 1 else np.zeros(0, int)
        return cls(
            frames=len(results),
            status_counts={s: counts.get(s, 0) for s in TRACK_STATUSES},
            events=[(r.index, r.status, r.reason) for r in results if r.status != "ok"],
            keyframes=keyframes,
            mean_ms=float(np.mean([r.ms for r in results])) if results else 0.0,
            loops=loops,
            source_frames_skipped=int(np.clip(gaps - 1, 0, None).sum()),
            max_index_gap=int(max(gaps.max(initial=1), 1)),
        )

    def lines(self) -> list[str]:
        """Human-readable report lines (one per untracked interval, not per frame)."""
        counts = ", ".join(f"{k} {v}" for k, v in self.status_counts.items() if v)
        out = [f"{self.frames} frames ({counts}); {self.keyframes} keyframes; {self.loops} loops; {self.mean_ms:.0f} ms/frame"]
        if self.source_frames_skipped:
            out.append(f"{self.source_frames_skipped} source frames skipped between tracked ones (largest index gap "
                       f"{self.max_index_gap})")
        start = None
        for i, (idx, status, reason) in enumerate(self.events):
            nxt = self.events[i + 1] if i + 1 < len(self.events) else None
            if start is None:
                start = (idx, status, reason)
            if nxt is None or nxt[1] != status or nxt[2].split(" ")[0] != reason.split(" ")[0]:
                span = f"frame {start[0]}" if start[0] == idx else f"frames {start[0]}-{idx}"
                out.append(f"{span}: {status}: {start[2]}")
                start = None
        return out


@dataclass
class LoopClosureResult:
    """What ``Tracker.finalize`` returns when a loop closure changed the trajectory.

    Attributes:
        trajectory: corrected poses of all tracked frames (timestamps = ``Frame.timestamp``).
        tsdf_map: a fresh map re-integrated with the corrected poses (None when ``finalize`` was
            asked for the poses only).
        loops: the verified loop edges that entered the pose graph.
        max_keyframe_correction_m: largest keyframe translation change, metres.
        reintegrated_frames: frames fused into ``tsdf_map``.
        seconds: wall time of loop detection, optimisation and re-integration.
    """

    trajectory: Trajectory
    tsdf_map: TSDFMap | None
    loops: list[LoopEdge] = field(default_factory=list)
    max_keyframe_correction_m: float = 0.0
    reintegrated_frames: int = 0
    seconds: float = 0.0
