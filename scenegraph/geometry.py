"""Small geometric helpers shared by the scene-graph modules.

The *gravity frame* ("g") is the world frame rotated so that its z axis is the scene's
up direction: ``p_g = R_g_world @ p_world``. Heights are z in that frame and footprints
are (x, y) in it. Metres throughout.
"""

from __future__ import annotations

import numpy as np


def gravity_rotation(up: np.ndarray) -> np.ndarray:
    """(3, 3) rotation ``R_g_world`` taking the unit vector ``up`` (3,) to +z.

    The rotation is the smallest one (about ``up x z``); for ``up = -z`` it turns by pi
    about x. Deterministic, so the same ``up`` always gives the same frame.
    """
    u = np.asarray(up, dtype=np.float64)
    u = u / np.linalg.norm(u)
    z = np.array([0.0, 0.0, 1.0])
    v = np.cross(u, z)
    s, c = np.linalg.norm(v), float(u @ z)
    if s < 1e-12:
        return np.eye(3) if c > 0 else np.diag([1.0, -1.0, -1.0])
    vx = np.array([[0, -v[2], v[1]], [v[2], 0, -v[0]], [-v[1], v[0], 0]])
    return np.eye(3) + vx + vx @ vx * ((1 - c) / s**2)


def hull_signed_distance(hull_points_xy: np.ndarray, query_xy: np.ndarray) -> np.ndarray:
    """Signed distance of 2D points to the convex hull of other 2D points (inside > 0).

    Inside the hull the value is the distance to the nearest edge line (exact); outside
    it is minus the largest violated edge-line distance (a lower bound of the true
    distance, exact in the edge regions).

    Args:
        hull_points_xy: (M, 2) points spanning the hull (M >= 3, not collinear; otherwise
            every query gets -inf).
        query_xy: (Q, 2) points.
    Returns:
        (Q,) float64 metres.
    """
    from scipy.spatial import ConvexHull, QhullError

    q = np.asarray(query_xy, dtype=np.float64).reshape(-1, 2)
    pts = np.asarray(hull_points_xy, dtype=np.float64).reshape(-1, 2)
    if len(pts) < 3:
        return np.full(len(q), -np.inf)
    try:
        hull = ConvexHull(pts)
    except QhullError:
        return np.full(len(q), -np.inf)
    eq = hull.equations  # (F, 3): n . x + d <= 0 inside, n unit
    d = q @ eq[:, :2].T + eq[:, 2]
    return -d.max(axis=1)


def interval_overlap(a_lo: float, a_hi: float, b_lo: float, b_hi: float) -> float:
    """Length of the overlap of [a_lo, a_hi] and [b_lo, b_hi] (0 when disjoint)."""
    return max(0.0, min(a_hi, b_hi) - max(a_lo, b_lo))


def box_gap(a_lo: np.ndarray, a_hi: np.ndarray, b_lo: np.ndarray, b_hi: np.ndarray) -> float:
    """Euclidean distance between two axis-aligned boxes (0 when they touch or overlap)."""
    d = np.maximum(0.0, np.maximum(np.asarray(a_lo) - b_hi, np.asarray(b_lo) - a_hi))
    return float(np.linalg.norm(d))


def box_iou(a_lo: np.ndarray, a_hi: np.ndarray, b_lo: np.ndarray, b_hi: np.ndarray) -> float:
    """Volume IoU of two axis-aligned boxes (any dimension)."""
    a_lo, a_hi, b_lo, b_hi = (np.asarray(x, dtype=np.float64) for x in (a_lo, a_hi, b_lo, b_hi))
    inter = np.prod(np.maximum(0.0, np.minimum(a_hi, b_hi) - np.maximum(a_lo, b_lo)))
    va, vb = np.prod(np.maximum(0.0, a_hi - a_lo)), np.prod(np.maximum(0.0, b_hi - b_lo))
    union = va + vb - inter
    return float(inter / union) if union > 0 else 0.0
