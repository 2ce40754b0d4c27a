"""Keyframe selection by camera motion: image features are computed only on keyframes.

A frame becomes a keyframe when its camera has moved far enough from the last keyframe:
translation of the camera centre >= ``translation_m`` or rotation angle of
``R_last^T R_now`` >= ``rotation_deg``. The first posed frame is always a keyframe.
Optionally ``max_gap`` forces a keyframe after that many frames without one (for slow
pans that never reach a threshold).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


def rotation_angle_deg(R_a: np.ndarray, R_b: np.ndarray) -> float:
    """Angle of the relative rotation ``R_a^T R_b`` in degrees, in [0, 180]."""
    c = (np.trace(R_a.T @ R_b) - 1.0) / 2.0
    return float(np.degrees(np.arccos(np.clip(c, -1.0, 1.0))))


@dataclass
class KeyframeSelector:
    """Decides, frame by frame, whether a posed frame is a keyframe.

    Attributes:
        translation_m: camera-centre motion (metres) since the last keyframe that makes a keyframe.
        rotation_deg: rotation (degrees) since the last keyframe that makes a keyframe.
        max_gap: frames since the last keyframe that force one (None: never forced).
        keyframes: indices (``Frame.index``) of the keyframes chosen so far.
    """

    translation_m: float = 0.3
    rotation_deg: float = 20.0
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
        dt = float(np.linalg.norm(T_world_cam[:3, 3] - self._last_T[:3, 3]))
        return dt, rotation_angle_deg(self._last_T[:3, :3], T_world_cam[:3, :3])

    def update(self, T_world_cam: np.ndarray, index: int) -> bool:
        """Decide for one frame (4x4 camera-to-world pose, frame index); records it if it is a keyframe."""
        T = np.asarray(T_world_cam, dtype=np.float64)
        if T.shape != (4, 4):
            raise ValueError(f"expected a 4x4 pose, got {T.shape}")
        dt, dr = self.motion(T)
        self._since += 1
        forced = self.max_gap is not None and self._since >= self.max_gap
        if dt >= self.translation_m or dr >= self.rotation_deg or forced:
            self._last_T = T.copy()
            self._since = 0
            self.keyframes.append(int(index))
            return True
        return False
