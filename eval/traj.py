"""Trajectory metrics: ATE (absolute trajectory error) and RPE (relative pose error).

Frames and units: poses are ``T_world_cam`` (camera-to-world), metres; each
trajectory has its own world frame, related by the alignment found here.

Protocol (the same as evo's ``evo_ape`` / ``evo_rpe`` with ``--align`` /
``--correct_scale`` and translation / rotation-angle relations, checked against evo
in the tests):

1. Association. ``associate_by="time"``: starting from the trajectory with fewer poses,
   each pose is matched to the pose of the other with the nearest timestamp if the
   difference is <= ``max_time_diff`` s (evo ``sync.associate_trajectories``; a pose of
   the longer trajectory may be matched twice). ``"index"``: pose i with pose i, over the
   shorter length.
2. Alignment of the estimate's camera centres to the reference's by Umeyama's
   least-squares method: ``"se3"`` (rotation + translation), ``"sim3"`` (+ scale, for
   monocular), or ``"none"``. The alignment maps the estimate's world into the
   reference's: ``p_ref ~ s R p_est + t``.
3. ATE: per matched pose, ``|| p_ref - (s R p_est + t) ||`` (m); also the rotation
   angle of ``R_ref^T R R_est`` (deg). Statistics: RMSE, mean, median, std, min, max.
4. RPE over a frame delta (pairs (i, i + delta) of associated poses, consecutive and
   non-overlapping: i = 0, delta, 2 delta, ... as evo does by default; ``all_pairs``
   uses every i): ``E = (Q_i^-1 Q_j)^-1 (P_i^-1 P_j)`` with Q the reference and P the
   aligned estimate; translation error ``||t(E)||`` (m), rotation error angle(R(E))
   (deg). With a Sim(3) alignment the estimate is scaled first; SE(3) alignment does
   not change RPE.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mapping.poses import rotation_angle_deg
from sensors.trajectory_io import Trajectory, read_trajectory

ALIGNMENTS = ("se3", "sim3", "none")
ASSOCIATIONS = ("time", "index")


# ---------------------------------------------------------------------------- alignment
@dataclass
class TrajectoryAlignment:
    """A similarity transform taking estimate-world points to reference-world points.

    ``p_ref = scale * R @ p_est + t``.

    Attributes:
        R: (3, 3) rotation.
        t: (3,) translation, metres (reference frame).
        scale: scale factor (1 for SE(3)).
        kind: "se3", "sim3" or "none".
    """

    R: np.ndarray
    t: np.ndarray
    scale: float = 1.0
    kind: str = "se3"

    @classmethod
    def identity(cls) -> TrajectoryAlignment:
        return cls(np.eye(3), np.zeros(3), 1.0, "none")

    @property
    def matrix(self) -> np.ndarray:
        """(4, 4) homogeneous similarity ``[[s R, t], [0, 1]]``."""
        S = np.eye(4)
        S[:3, :3] = self.scale * self.R
        S[:3, 3] = self.t
        return S

    def apply_points(self, points: np.ndarray) -> np.ndarray:
        """(N, 3) -> (N, 3): ``s R p + t``."""
        return self.scale * np.asarray(points, dtype=np.float64) @ self.R.T + self.t

    def apply_poses(self, T_world_cam: np.ndarray) -> np.ndarray:
        """(N, 4, 4) -> (N, 4, 4): rotation ``R R_i``, position ``s R p_i + t`` (rotations stay orthonormal)."""
        T = np.array(T_world_cam, dtype=np.float64, copy=True).reshape(-1, 4, 4)
        T[:, :3, :3] = self.R @ T[:, :3, :3]
        T[:, :3, 3] = self.apply_points(T[:, :3, 3])
        return T

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "R": self.R.tolist(), "t": self.t.tolist(), "scale": float(self.scale)}


def umeyama(src: np.ndarray, dst: np.ndarray, with_scale: bool = False) -> TrajectoryAlignment:
    """Least-squares similarity ``dst ~ s R src + t`` (Umeyama, PAMI 1991).

    Args:
        src: (N, 3) points (e.g. estimated camera centres).
        dst: (N, 3) corresponding points (reference camera centres).
        with_scale: also estimate the scale (Sim(3)); otherwise s = 1 (SE(3)).
    Raises:
        ValueError: shape mismatch, fewer than 3 points, or degenerate geometry
            (points on a line or a single point: the rotation is not determined).
    """
    x = np.asarray(src, dtype=np.float64)
    y = np.asarray(dst, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 2 or x.shape[1] != 3:
        raise ValueError(f"umeyama needs two (N, 3) arrays of equal shape, got {x.shape} and {y.shape}")
    n = len(x)
    if n < 3:
        raise ValueError(f"umeyama needs at least 3 corresponding points, got {n}")
    mx, my = x.mean(axis=0), y.mean(axis=0)
    xc, yc = x - mx, y - my
    cov = yc.T @ xc / n  # (3, 3) Sigma_xy of eq. 38
    U, d, Vt = np.linalg.svd(cov)
    if np.count_nonzero(d > max(d[0], 1.0) * 1e-12) < 2:
        raise ValueError("degenerate point configuration (collinear or coincident): rotation is not determined")
    S = np.eye(3)
    if np.linalg.det(U) * np.linalg.det(Vt) < 0:
        S[2, 2] = -1.0
    R = U @ S @ Vt
    if with_scale:
        var_x = np.sum(xc * xc) / n
        if not var_x > 0:
            raise ValueError("degenerate point configuration: source points coincide, scale is not determined")
        s = float(np.trace(np.diag(d) @ S) / var_x)
    else:
        s = 1.0
    t = my - s * R @ mx
    return TrajectoryAlignment(R, t, s, "sim3" if with_scale else "se3")


# ---------------------------------------------------------------------------- association
def associate(
    est: Trajectory, ref: Trajectory, *, by: str = "time", max_time_diff: float = 0.02
) -> tuple[np.ndarray, np.ndarray]:
    """Matched pose indices ``(idx_est, idx_ref)``, each (M,) int64.

    ``by="time"``: from the shorter trajectory, each pose is matched to the nearest
    timestamp of the other when within ``max_time_diff`` seconds (ties go to the earlier
    timestamp; a pose of the longer trajectory may be matched twice, as in evo).
    ``by="index"``: i <-> i over the shorter length.
    """
    if by not in ASSOCIATIONS:
        raise ValueError(f"unknown association {by!r}; choose one of {ASSOCIATIONS}")
    if by == "index":
        n = min(len(est), len(ref))
        return np.arange(n), np.arange(n)
    if not max_time_diff >= 0:
        raise ValueError(f"max_time_diff must be >= 0, got {max_time_diff}")
    est_shorter = len(est) <= len(ref)
    short, long_ = (est.timestamps, ref.timestamps) if est_shorter else (ref.timestamps, est.timestamps)
    order = np.argsort(long_, kind="stable")
    sl = long_[order]
    hi = np.clip(np.searchsorted(sl, short, side="right"), 0, len(sl) - 1)
    lo = np.maximum(hi - 1, 0)
    d_hi = np.abs(sl[hi] - short)
    d_lo = np.where(hi > 0, np.abs(short - sl[lo]), np.inf)
    pick_hi = d_hi < d_lo
    best = np.where(pick_hi, hi, lo)
    diff = np.where(pick_hi, d_hi, d_lo)
    ok = np.flatnonzero(diff <= max_time_diff)
    i_short, i_long = ok, order[best[ok]]
    return (i_short, i_long) if est_shorter else (i_long, i_short)


# ---------------------------------------------------------------------------- metrics
@dataclass
class ErrorStats:
    """Statistics of a set of non-negative errors (unit given by the field name that holds it)."""

    rmse: float
    mean: float
    median: float
    std: float
    min: float
    max: float
    count: int

    @classmethod
    def of(cls, errors: np.ndarray) -> ErrorStats:
        e = np.asarray(errors, dtype=np.float64).reshape(-1)
        if len(e) == 0:
            nan = float("nan")
            return cls(nan, nan, nan, nan, nan, nan, 0)
        return cls(
            rmse=float(np.sqrt(np.mean(e * e))),
            mean=float(e.mean()),
            median=float(np.median(e)),
            std=float(e.std()),
            min=float(e.min()),
            max=float(e.max()),
            count=len(e),
        )


@dataclass
class TrajErrors:
    """Per-pose data behind the statistics (for figures; not written to JSON).

    Attributes:
        timestamps: (M,) timestamps of the matched reference poses.
        ref_xyz: (M, 3) reference camera centres.
        est_xyz: (M, 3) aligned estimated camera centres (reference frame).
        ate_m: (M,) position error per matched pose.
        ate_rot_deg: (M,) rotation error per matched pose.
        rpe_index: (K, 2) index pairs (i, j) into the matched poses.
        rpe_trans_m: (K,) relative translation error per pair.
        rpe_rot_deg: (K,) relative rotation error per pair.
    """

    timestamps: np.ndarray
    ref_xyz: np.ndarray
    est_xyz: np.ndarray
    ate_m: np.ndarray
    ate_rot_deg: np.ndarray
    rpe_index: np.ndarray
    rpe_trans_m: np.ndarray
    rpe_rot_deg: np.ndarray


@dataclass
class TrajMetrics:
    """ATE / RPE of an estimated trajectory against a reference (see module docstring).

    Attributes:
        ate_m: position error statistics after alignment, metres.
        ate_rot_deg: orientation error statistics after alignment, degrees.
        rpe_trans_m: relative translation error over ``delta`` frames, metres.
        rpe_rot_deg: relative rotation error over ``delta`` frames, degrees.
        alignment: the transform applied to the estimate.
        num_matched, num_est, num_ref: associated pose count and input lengths.
        protocol: how it was computed (association, alignment, delta).
    """

    ate_m: ErrorStats
    ate_rot_deg: ErrorStats
    rpe_trans_m: ErrorStats
    rpe_rot_deg: ErrorStats
    alignment: TrajectoryAlignment
    num_matched: int
    num_est: int
    num_ref: int
    protocol: dict[str, Any] = field(default_factory=dict)
    errors: TrajErrors | None = field(default=None, repr=False, metadata={"json": False})

    @property
    def ate_rmse_m(self) -> float:
        return self.ate_m.rmse

    def summary(self) -> str:
        """One line for logs."""
        scale = f", scale {self.alignment.scale:.4f}" if self.alignment.kind == "sim3" else ""
        return (
            f"ATE RMSE {self.ate_m.rmse * 100:.2f} cm ({self.alignment.kind}{scale}), "
            f"RPE {self.rpe_trans_m.rmse * 100:.2f} cm / {self.rpe_rot_deg.rmse:.3f} deg per "
            f"{self.protocol.get('delta_frames', '?')} frame(s), {self.num_matched} matched poses"
        )


def _as_trajectory(x: Any, what: str) -> Trajectory:
    if isinstance(x, Trajectory):
        return x
    if isinstance(x, (str, Path)):
        return read_trajectory(x)
    T = np.asarray(x, dtype=np.float64)
    if T.ndim == 3 and T.shape[1:] == (4, 4):
        return Trajectory(np.arange(len(T), dtype=np.float64), T)
    raise TypeError(f"{what}: expected a Trajectory, a trajectory file or an (N, 4, 4) array, got {type(x).__name__}")


def relative_pose_errors(
    T_ref: np.ndarray, T_est: np.ndarray, delta: int = 1, all_pairs: bool = False
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """RPE between two associated pose sequences.

    Args:
        T_ref, T_est: (M, 4, 4) associated camera-to-world poses.
        delta: frame distance of a pair.
        all_pairs: every i (overlapping pairs) instead of i = 0, delta, 2 delta, ...
    Returns:
        pairs (K, 2) int64, translation errors (K,) metres, rotation errors (K,) degrees.
    """
    if delta < 1:
        raise ValueError(f"delta must be >= 1 frame, got {delta}")
    m = len(T_ref)
    starts = np.arange(0, m - delta) if all_pairs else np.arange(0, m, delta)[:-1]
    starts = starts[starts + delta < m]
    pairs = np.stack([starts, starts + delta], axis=1).astype(np.int64)
    if len(pairs) == 0:
        return pairs, np.zeros(0), np.zeros(0)
    Q_rel = np.linalg.inv(T_ref[pairs[:, 0]]) @ T_ref[pairs[:, 1]]
    P_rel = np.linalg.inv(T_est[pairs[:, 0]]) @ T_est[pairs[:, 1]]
    E = np.linalg.inv(Q_rel) @ P_rel
    return pairs, np.linalg.norm(E[:, :3, 3], axis=1), rotation_angle_deg(E[:, :3, :3])


def evaluate_trajectory(
    est: Any,
    gt: Any,
    *,
    align: str = "se3",
    delta: int = 1,
    max_time_diff: float = 0.02,
    associate_by: str = "time",
    all_pairs: bool = False,
    keep_errors: bool = True,
) -> TrajMetrics:
    """ATE and RPE of ``est`` against ``gt``.

    Args:
        est, gt: ``Trajectory``, a trajectory file (TUM, 4x4-per-line, .log; read with
            ``sensors.trajectory_io.read_trajectory``) or an (N, 4, 4) camera-to-world array
            (timestamps = indices).
        align: "se3", "sim3" (monocular scale) or "none".
        delta: RPE frame distance (in associated poses).
        max_time_diff: association tolerance in seconds (``associate_by="time"``).
        associate_by: "time" or "index".
        all_pairs: RPE over all overlapping pairs instead of consecutive ones.
        keep_errors: keep per-pose errors in ``TrajMetrics.errors`` (for figures).
    Raises:
        ValueError: unknown option, fewer than 3 associated poses, degenerate alignment.
    """
    if align not in ALIGNMENTS:
        raise ValueError(f"unknown alignment {align!r}; choose one of {ALIGNMENTS}")
    est_t = _as_trajectory(est, "estimate")
    ref_t = _as_trajectory(gt, "ground truth")
    i_est, i_ref = associate(est_t, ref_t, by=associate_by, max_time_diff=max_time_diff)
    if len(i_est) < 3:
        raise ValueError(
            f"only {len(i_est)} poses associated (by {associate_by}, max_time_diff={max_time_diff} s) "
            f"between {len(est_t)} estimated and {len(ref_t)} reference poses; need >= 3"
        )
    T_est = est_t.T_world_cam[i_est]
    T_ref = ref_t.T_world_cam[i_ref]
    if align == "none":
        alignment = TrajectoryAlignment.identity()
    else:
        alignment = umeyama(T_est[:, :3, 3], T_ref[:, :3, 3], with_scale=(align == "sim3"))
    T_est_aligned = alignment.apply_poses(T_est)

    ate = np.linalg.norm(T_ref[:, :3, 3] - T_est_aligned[:, :3, 3], axis=1)
    ate_rot = rotation_angle_deg(np.transpose(T_ref[:, :3, :3], (0, 2, 1)) @ T_est_aligned[:, :3, :3])
    pairs, rpe_t, rpe_r = relative_pose_errors(T_ref, T_est_aligned, delta, all_pairs)

    protocol = {
        "association": associate_by,
        "max_time_diff_s": float(max_time_diff) if associate_by == "time" else None,
        "alignment": align,
        "alignment_on": "camera centres, Umeyama least squares" if align != "none" else None,
        "delta_frames": int(delta),
        "rpe_pairs": "all overlapping" if all_pairs else "consecutive (i = 0, delta, 2 delta, ...)",
        "rpe_on": "scale-corrected estimate" if align == "sim3" else "estimate (a rigid alignment does not change RPE)",
        "units": "metres, degrees",
    }
    errors = None
    if keep_errors:
        errors = TrajErrors(
            timestamps=ref_t.timestamps[i_ref],
            ref_xyz=T_ref[:, :3, 3],
            est_xyz=T_est_aligned[:, :3, 3],
            ate_m=ate,
            ate_rot_deg=ate_rot,
            rpe_index=pairs,
            rpe_trans_m=rpe_t,
            rpe_rot_deg=rpe_r,
        )
    return TrajMetrics(
        ate_m=ErrorStats.of(ate),
        ate_rot_deg=ErrorStats.of(ate_rot),
        rpe_trans_m=ErrorStats.of(rpe_t),
        rpe_rot_deg=ErrorStats.of(rpe_r),
        alignment=alignment,
        num_matched=len(i_est),
        num_est=len(est_t),
        num_ref=len(ref_t),
        protocol=protocol,
        errors=errors,
    )
