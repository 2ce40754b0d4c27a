"""Tracking stage: estimate ``T_world_cam`` for frames that come without poses.

``--poses auto`` (default) tracks only frames whose source gives no pose (a live
RealSense, a recording, a folder without a trajectory); ``--poses estimate`` tracks
every frame even when poses exist (for evaluation: compare ``trajectory.tum`` with the
dataset's poses); ``--poses given`` never tracks (frames without poses are skipped).

Frames that cannot be tracked are skipped (never integrated) and reported; when
tracking is lost for good the run stops and the frames mapped so far are saved.
After the last frame, loop closure may correct the keyframes; ``finish`` then hands the
corrected poses to the pipeline, which re-integrates the frames as they were integrated and
lets every stage follow (``semmap.pipeline``, ``Stage.on_poses_corrected``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from mapping.tracking import Tracker, TrackerConfig, TrackingLost
from mapping.tracking.config import ODOMETRY_METHODS
from mapping.tsdf import TSDFMap
from semmap.config_args import add_dataclass_arguments, config_kwargs
from semmap.pipeline import MapResult, SkipFrame, Stage, StopMapping
from sensors.base import FrameSource
from sensors.frame import Frame

ORDER = 30
POSE_MODES = ("auto", "estimate", "given")
TRACKING_FLAGS = {"method": "--odometry", "model_render": "--model-render", "downsample": "--track-downsample",
                  "iterations": "--track-iterations"}
"""``TrackerConfig`` field -> its ``semmap map`` option (depth range and device come from ``MapConfig``)."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("tracking (frames without poses)")
    g.add_argument("--poses", choices=POSE_MODES, default="auto",
                   help="auto: track frames that have no pose; estimate: track every frame (ignore given poses); "
                        "given: never track")
    add_dataclass_arguments(g, TrackerConfig, TRACKING_FLAGS, method={"choices": list(ODOMETRY_METHODS)},
                            model_render={"choices": ["raycast", "mesh"]},
                            iterations={"nargs": "+", "type": int, "metavar": "N"})
    g.add_argument("--no-loop-closure", action="store_true", help="skip loop closure after the last frame")


def from_args(args: argparse.Namespace) -> Stage | None:
    if args.poses == "given":
        return None
    from semmap.commands.map import map_config

    # depth range and device: semmap map's (MapConfig.tracker_config), the other fields from the flags
    cfg = map_config(args).tracker_config(**config_kwargs(args, TrackerConfig, TRACKING_FLAGS))
    cfg.loop.enabled = not args.no_loop_closure
    return TrackingStage(cfg, force=args.poses == "estimate")


class TrackingStage(Stage):
    """Wraps :class:`mapping.tracking.Tracker` for the mapping loop."""

    name = "tracking"

    def __init__(self, config: TrackerConfig, force: bool = False) -> None:
        """Args:
            config: tracker settings.
            force: track every frame, ignoring given poses (``--poses estimate``).
        """
        self.config = config
        self.force = force
        self.tracker: Tracker | None = None
        self.loop_result = None
        self.can_correct = True
        """Whether the pipeline keeps the frames a closure needs (``begin``); a closure found without
        them is reported, not applied."""

    def corrects_poses(self, source: FrameSource) -> bool:
        """Loop closure is on and frames will be tracked (every frame, or a source without poses)."""
        return self.config.loop.enabled and (self.force or not getattr(source, "has_poses", False))

    def begin(self, poses_may_change: bool) -> None:
        self.can_correct = poses_may_change

    def before_integrate(self, frame: Frame, tsdf: TSDFMap) -> Frame:
        if frame.T_world_cam is not None and not self.force:
            return frame
        if self.tracker is None:
            self.tracker = Tracker(self.config, frame.camera)
        # The first frame keeps its given pose as the anchor; later given poses are not used.
        to_track = frame if not self.tracker.results else frame.with_(T_world_cam=None)
        try:
            r = self.tracker.track(to_track, tsdf)
        except TrackingLost as e:
            raise StopMapping(str(e)) from e
        if not r.ok:
            raise SkipFrame(f"tracking {r.status}: {r.reason}")
        return frame.with_(T_world_cam=r.T_world_cam)

    def finish(self, result: MapResult) -> dict[int, np.ndarray] | None:
        """Close loops; returns the corrected poses of the tracked frames when a closure moved them."""
        if self.tracker is None:
            return None
        corrected = self._close_loops() if self.config.loop.enabled else None
        for line in self.tracker.summary().lines():
            print(f"tracking: {line}")
        return corrected

    def _close_loops(self) -> dict[int, np.ndarray] | None:
        """``Tracker.finalize`` without re-integration: the pipeline re-integrates what it integrated."""
        if not self.can_correct:
            print("tracking: loop closure skipped: the source reported poses, so the integrated frames were "
                  "not kept for re-integration (use --poses estimate to track and close loops)")
            return None
        lc = self.tracker.finalize()
        if lc is None:
            return None
        self.loop_result = lc
        return self.tracker.poses_by_index()

    def save_into(self, directory: Path) -> list[str]:
        if self.tracker is None:
            return []
        s = self.tracker.summary()
        report = {
            "frames": s.frames,
            "status_counts": s.status_counts,
            "events": [list(e) for e in s.events],
            "keyframes": s.keyframes,
            "loops": s.loops,
            "mean_ms": s.mean_ms,
            "source_frames_skipped": s.source_frames_skipped,
            "max_index_gap": s.max_index_gap,
            "loop_closure_applied": self.loop_result is not None,
        }
        (directory / "tracking.json").write_text(json.dumps(report, indent=1))
        return ["tracking.json"]

    def metadata(self) -> dict:
        if self.tracker is None:
            return {"tracked_frames": 0}
        s = self.tracker.summary()
        return {"tracked_frames": s.frames, "method": self.config.method, "status_counts": s.status_counts,
                "loops": s.loops}
