"""Where frames come from: cameras, dataset readers, RealSense, synthetic renders (I/O only)."""

from sensors.base import SOURCES, FrameSource, IndexedSource, detect_source, open_source
from sensors.camera import Camera
from sensors.frame import Frame, check_pose
from sensors.io import SourceError

__all__ = [
    "Camera",
    "Frame",
    "FrameSource",
    "IndexedSource",
    "SOURCES",
    "SourceError",
    "check_pose",
    "detect_source",
    "open_source",
]
