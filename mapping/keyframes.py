"""Keyframe selection by camera motion: image features are computed only on keyframes.

A frame becomes a keyframe when its camera has moved far enough from the last keyframe:
translation of the camera centre >= ``translation_m`` or rotation angle of
``R_last^T R_now`` >= ``rotation_deg``. The first posed frame is always a keyframe.
Optionally ``max_gap`` forces a keyframe after that many frames without one (for slow
pans that never reach a threshold). The tracker's keyframes (``mapping.tracking.keyframes``)
use the same motion test, :func:`moved_enough`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from mapping.poses import pose_difference

KEYFRAME_TRANSLATION_M = 0.15
"""Default camera motion since the last keyframe that makes a keyframe (semantic and views stages), metres."""
KEYFRAME_ROTATION_DEG = 15.0
"""Default camera rotation since the last keyframe that makes a keyframe (semantic and views stages), degrees."""


def moved_enough(T_world_last: np.ndarray, T_world_now: np.ndarray, translation_m: float, rotation_deg: float) -> bool:
    """True when the camera moved ``translation_m`` metres or turned ``rotation_deg`` degrees between two (4, 4) poses."""
    dt, dr = pose_difference(T_world_last, T_world_now)
    return dt >= translation_m or dr >= rotation_deg


@dataclass
class KeyframeSelector:
    """Decides, frame by frame, whether a posed frame is a keyframe.

    Attributes:
        translation_m: camera-centre motion (metres) since the last keyframe that makes a keyframe.
        rotation_deg: rotation (degrees) since the last keyframe that makes a keyframe.
        max_gap: frames since the last keyframe that force one (None: never forced).
        keyframes: indices (``Frame.index``) of the keyframes chosen so far.
    """

    translation_m: float = KEYFRAME_TRANSLATION_M
    rotation_deg: float = KEYFRAME_ROTATION_DEG
    max_gap: int | None = None
    keyframes: list[int] = field(default_factory=list)
    _last_T: np.ndarray | None = field(default=None, repr=False)
    _since: int = field(default=0, repr=False)

    def __post_init__(self) -> None:
        if not self.translation_m > 0 or not self.rotation_deg > 0:
            raise ValueError(
                f"keyframe thresholds must be positive, got translation {self.translation_m} m, "
                f"rotation {self.rotation_deg} deg"
            )
        if self.max_gap is not None and self.max_gap < 1:
            raise ValueError(f"max_gap must be >= 1 or None, got {self.max_gap}")

    def motion(self, T_world_cam: np.ndarray) -> tuple[float, float]:
        """(translation m, rotation deg) of ``T_world_cam`` relative to the last keyframe (inf, inf if none)."""
        if self._last_T is None:
            return float("inf"), float("inf")
        return pose_difference(self._last_T, T_world_cam)

    def update(self, T_world_cam: np.ndarray, index: int) -> bool:
        """Decide for one frame (4x4 camera-to-world pose, frame index); records it if it is a keyframe."""
        T = np.asarray(T_world_cam, dtype=np.float64)
        if T.shape != (4, 4):
            raise ValueError(f"expected a 4x4 pose, got {T.shape}")
        self._since += 1
        forced = self.max_gap is not None and self._since >= self.max_gap
        if self._last_T is None or forced or moved_enough(self._last_T, T, self.translation_m, self.rotation_deg):
            self._last_T = T.copy()
            self._since = 0
            self.keyframes.append(int(index))
            return True
        return False
