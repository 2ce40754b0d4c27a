"""RGB-D tracking: frame-to-model odometry, failure detection and recovery, loop closure.

``Tracker(TrackerConfig(), camera).track(frame, tsdf_map)`` estimates ``T_world_cam``
for frames without poses; ``finalize`` closes loops and re-integrates the map.
"""

from mapping.tracking.config import LoopClosureConfig, TrackerConfig
from mapping.tracking.results import (
    TRACK_STATUSES,
    LoopClosureResult,
    TrackingLost,
    TrackingSummary,
    TrackResult,
)
from mapping.tracking.tracker import Tracker

__all__ = [
    "TRACK_STATUSES",
    "LoopClosureConfig",
    "LoopClosureResult",
    "TrackResult",
    "Tracker",
    "TrackerConfig",
    "TrackingLost",
    "TrackingSummary",
]
