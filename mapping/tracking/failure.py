"""Tracking failure tests: unusable depth, weak alignment, implausible pose jumps.

Each test returns None when the frame passes, or a short human-readable reason
that the tracker reports (and puts into ``TrackingLost`` messages).
"""

from __future__ import annotations

import numpy as np

from mapping.poses import pose_difference  # noqa: F401 (imported from here by the tracker)
from mapping.tracking.config import TrackerConfig
from mapping.tracking.odometry import Alignment


def check_depth(valid_fraction: float, config: TrackerConfig) -> str | None:
    """Reason the frame's depth is unusable (too few valid pixels in range), or None."""
    if valid_fraction < config.min_valid_depth_fraction:
        return (
            f"no usable depth ({100 * valid_fraction:.1f}% valid pixels in "
            f"[{config.depth_min_m}, {config.depth_max_m}] m, need {100 * config.min_valid_depth_fraction:.0f}%)"
        )
    return None


def allowed_jump(config: TrackerConfig, frames_missed: int) -> tuple[float, float]:
    """(metres, degrees) a tracked pose may differ from its prediction after ``frames_missed`` untracked frames."""
    return (
        config.max_pose_jump_m + config.jump_growth_m_per_frame * frames_missed,
        config.max_pose_jump_deg + config.jump_growth_deg_per_frame * frames_missed,
    )


def check_alignment(
    result: Alignment,
    T_world_pred: np.ndarray,
    T_world_est: np.ndarray,
    config: TrackerConfig,
    frames_missed: int = 0,
) -> str | None:
    """Reason an alignment is rejected, or None if it is accepted.

    Args:
        result: the odometry result (fitness, residual).
        T_world_pred: (4, 4) pose predicted before alignment (constant velocity, last good pose or keyframe).
        T_world_est: (4, 4) pose after alignment.
        frames_missed: untracked frames since the last good pose (widens the jump limit).
    """
    if not result.converged:
        return "alignment found no correspondences"
    if result.overlap_fitness < config.min_fitness:
        return f"low fitness {result.overlap_fitness:.2f} < {config.min_fitness:.2f} (inliers / overlapping pixels)"
    if result.residual_m > config.max_residual_m:
        return f"high residual {100 * result.residual_m:.1f} cm > {100 * config.max_residual_m:.1f} cm"
    dt, dr = pose_difference(T_world_pred, T_world_est)
    max_t, max_r = allowed_jump(config, frames_missed)
    if dt > max_t or dr > max_r:
        return f"pose jump {100 * dt:.0f} cm / {dr:.1f} deg from prediction exceeds {100 * max_t:.0f} cm / {max_r:.1f} deg"
    return None
