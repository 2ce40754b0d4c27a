"""Rigid-motion measures shared by keyframe selection, tracking and trajectory evaluation.

Poses are ``T_world_cam`` (camera-to-world, (4, 4) float64, metres; see docs/conventions.md).
Angles come from the rotation vector (scipy ``Rotation.magnitude``), which stays accurate
near 0 where ``arccos((trace - 1) / 2)`` loses half its digits.
"""

from __future__ import annotations

import numpy as np


def rotation_angle_deg(R: np.ndarray) -> float | np.ndarray:
    """Rotation angle of (3, 3) or (..., 3, 3) rotation matrices, degrees in [0, 180].

    Returns a float for one matrix, an array of shape ``R.shape[:-2]`` otherwise.
    """
    from scipy.spatial.transform import Rotation

    R = np.asarray(R, dtype=np.float64)
    if R.shape[-2:] != (3, 3):
        raise ValueError(f"rotation_angle_deg: expected (..., 3, 3) rotations, got shape {R.shape}")
    shape = R.shape[:-2]
    angles = np.degrees(Rotation.from_matrix(R.reshape(-1, 3, 3)).magnitude())
    return float(angles[0]) if not shape else angles.reshape(shape)


def rotation_vector(R: np.ndarray) -> np.ndarray:
    """(3,) axis-angle vector (radians) of a (3, 3) rotation matrix."""
    from scipy.spatial.transform import Rotation

    return Rotation.from_matrix(np.asarray(R, dtype=np.float64)).as_rotvec()


def pose_difference(T_world_a: np.ndarray, T_world_b: np.ndarray) -> tuple[float, float]:
    """(translation metres, rotation degrees) of the relative motion ``inv(T_world_a) @ T_world_b``."""
    T_a_b = np.linalg.inv(T_world_a) @ T_world_b
    return float(np.linalg.norm(T_a_b[:3, 3])), rotation_angle_deg(T_a_b[:3, :3])
