"""Align relative depth predictions to metric anchors: robust scale and shift.

Model (MiDaS, Ranftl et al. 2020), in one of two spaces:

- ``space="depth"``:          ``d_anchor ~= s * p + t``          (relative depth p)
- ``space="inverse_depth"``:  ``1 / d_anchor ~= s * p + t``      (relative inverse depth p)

The fit minimises the *relative* residual ``r_i = (s p_i + t - y_i) / y_i`` with
``y_i`` the anchor in the fitting space (``d`` or ``1/d``), so near and far anchors
count alike; to first order ``|r_i|`` is the relative depth error of the aligned
prediction at anchor i in both spaces.

Robustness: RANSAC over minimal samples (2 anchors; 1 for scale only) scored by
the number of anchors with ``|r_i| < inlier_tol``, then iteratively reweighted least
squares (Cauchy weights, scale from the inliers' MAD) on the consensus set.
Guards: a minimum number of valid anchors, positive scale within ``scale_bounds``,
and a minimum inlier fraction; a failed guard raises :class:`AlignmentError`.

Anchors are metric depths at pixels: sensor depth, a map raycast, or map points
projected with :func:`anchors_from_points` (all (H, W) float32 metres, 0 = none).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from sensors.camera import Camera

ALIGN_SPACES = ("depth", "inverse_depth")
ROBUST_METHODS = ("ransac", "irls", "none")


class AlignmentError(ValueError):
    """Alignment to anchors is impossible or untrustworthy (too few anchors, bad scale, few inliers)."""


@dataclass(frozen=True)
class AlignmentResult:
    """A fitted scale/shift and how well it fits.

    Attributes:
        scale, shift: ``y ~= scale * p + shift`` in ``space`` (shift in metres for
            ``"depth"``, in 1/metres for ``"inverse_depth"``).
        space: "depth" or "inverse_depth".
        num_anchors: valid anchors used.
        num_inliers: anchors with relative residual below the inlier tolerance at the end.
        residual_rms: RMS relative residual ``(s p + t - y) / y`` over the inliers.
        abs_rel: mean ``|d_aligned - d_anchor| / d_anchor`` over the inliers (metric depth).
        inliers: (num_anchors,) bool, in the order of the valid anchors given.
    """

    scale: float
    shift: float
    space: str
    num_anchors: int
    num_inliers: int
    residual_rms: float
    abs_rel: float
    inliers: np.ndarray = field(repr=False, compare=False)

    @property
    def inlier_fraction(self) -> float:
        return self.num_inliers / max(self.num_anchors, 1)

    def to_metric(self, values: np.ndarray) -> np.ndarray:
        """Apply the fit to a prediction and return metric depth.

        Args:
            values: prediction in the fitted relative space, any shape.
        Returns:
            float32 depth in metres, same shape; 0 where the aligned value is not a
            positive finite depth (e.g. non-positive inverse depth).
        """
        y = self.scale * np.asarray(values, dtype=np.float64) + self.shift
        with np.errstate(divide="ignore", invalid="ignore"):
            d = y if self.space == "depth" else 1.0 / y
        ok = np.isfinite(d) & (d > 0) & (y > 0)
        return np.where(ok, d, 0.0).astype(np.float32)

    def to_dict(self) -> dict:
        """JSON-friendly summary (no inlier mask)."""
        return {
            "scale": self.scale,
            "shift": self.shift,
            "space": self.space,
            "num_anchors": self.num_anchors,
            "num_inliers": self.num_inliers,
            "residual_rms": self.residual_rms,
            "abs_rel": self.abs_rel,
        }


def _weighted_fit(p: np.ndarray, y: np.ndarray, w: np.ndarray, with_shift: bool) -> tuple[float, float]:
    """Minimise sum w_i ((s p_i + t - y_i) / y_i)^2 in closed form (normal equations)."""
    a = w / (y * y)
    if not with_shift:
        den = float(np.sum(a * p * p))
        return (float(np.sum(a * p * y)) / den if den > 0 else np.nan), 0.0
    spp, sp, s1 = np.sum(a * p * p), np.sum(a * p), np.sum(a)
    spy, sy = np.sum(a * p * y), np.sum(a * y)
    det = spp * s1 - sp * sp
    if not det > 1e-12 * max(spp * s1, 1e-300):
        return np.nan, np.nan
    return float((spy * s1 - sp * sy) / det), float((spp * sy - sp * spy) / det)


def _rel_residual(p: np.ndarray, y: np.ndarray, s: float, t: float) -> np.ndarray:
    return (s * p + t - y) / y


def _ransac(
    p: np.ndarray,
    y: np.ndarray,
    with_shift: bool,
    inlier_tol: float,
    iterations: int,
    scale_bounds: tuple[float, float],
    rng: np.random.Generator,
    max_score_points: int = 4000,
) -> tuple[float, float]:
    """Best (s, t) by inlier count over random minimal samples (vectorised)."""
    n = len(p)
    idx = rng.choice(n, size=min(n, max_score_points), replace=False) if n > max_score_points else np.arange(n)
    ps, ys = p[idx], y[idx]
    i = rng.integers(0, n, size=iterations)
    if with_shift:
        j = rng.integers(0, n, size=iterations)
        dp = p[i] - p[j]
        with np.errstate(divide="ignore", invalid="ignore"):
            s = (y[i] - y[j]) / dp
        t = y[i] - s * p[i]
    else:
        with np.errstate(divide="ignore", invalid="ignore"):
            s = y[i] / p[i]
        t = np.zeros_like(s)
    ok = np.isfinite(s) & np.isfinite(t) & (s >= scale_bounds[0]) & (s <= scale_bounds[1])
    if not ok.any():
        return np.nan, np.nan
    s, t = s[ok], t[ok]
    r = np.abs((s[:, None] * ps[None] + t[:, None] - ys[None]) / ys[None])
    inl = r < inlier_tol
    count = inl.sum(axis=1)
    # tie-break by the summed (truncated) residual: MSAC-like score
    cost = np.where(inl, r, inlier_tol).sum(axis=1)
    best = np.lexsort((cost, -count))[0]
    return float(s[best]), float(t[best])


def fit_scale_shift(
    pred: np.ndarray,
    target_depth_m: np.ndarray,
    *,
    space: str = "depth",
    with_shift: bool = True,
    robust: str = "ransac",
    inlier_tol: float = 0.05,
    min_anchors: int = 20,
    min_inlier_fraction: float = 0.2,
    scale_bounds: tuple[float, float] = (1e-4, 1e4),
    ransac_iterations: int = 256,
    irls_iterations: int = 10,
    seed: int = 0,
) -> AlignmentResult:
    """Fit ``target ~= scale * pred + shift`` robustly in depth or inverse-depth space.

    Args:
        pred: (N,) relative prediction at the anchors (depth-like for ``space="depth"``,
            inverse-depth-like for ``space="inverse_depth"``).
        target_depth_m: (N,) anchor depths in metres; non-positive or non-finite
            entries (and non-finite predictions) are ignored.
        space: "depth" or "inverse_depth" (the target is inverted for the latter).
        with_shift: fit a shift as well as a scale (False: scale only, ``shift = 0``).
        robust: "ransac" (RANSAC then IRLS), "irls" (IRLS from a median-ratio start), or
            "none" (one least-squares solve).
        inlier_tol: relative residual below which an anchor is an inlier.
        min_anchors: fewer valid anchors raise :class:`AlignmentError`.
        min_inlier_fraction: a consensus smaller than this fraction raises.
        scale_bounds: allowed (min, max) scale; the scale must also be positive.
        ransac_iterations: minimal samples drawn (seeded by ``seed``).
        irls_iterations: reweighting rounds after the initial fit.
    Returns:
        An :class:`AlignmentResult` with the residuals of the final fit.
    """
    if space not in ALIGN_SPACES:
        raise ValueError(f"space must be one of {ALIGN_SPACES}, got {space!r}")
    if robust not in ROBUST_METHODS:
        raise ValueError(f"robust must be one of {ROBUST_METHODS}, got {robust!r}")
    p = np.asarray(pred, dtype=np.float64).ravel()
    d = np.asarray(target_depth_m, dtype=np.float64).ravel()
    if p.shape != d.shape:
        raise ValueError(f"pred and target must have the same number of values, got {p.size} and {d.size}")
    valid = np.isfinite(p) & np.isfinite(d) & (d > 0)
    n = int(valid.sum())
    if n < max(min_anchors, 2 if with_shift else 1):
        raise AlignmentError(
            f"only {n} valid anchors (finite prediction and positive metric depth), need at least "
            f"{max(min_anchors, 2 if with_shift else 1)}; give more anchors (sensor depth, map points) or a metric model"
        )
    p, d = p[valid], d[valid]
    y = d if space == "depth" else 1.0 / d

    if robust == "ransac":
        rng = np.random.default_rng(seed)
        s, t = _ransac(p, y, with_shift, inlier_tol, ransac_iterations, scale_bounds, rng)
        if not np.isfinite(s):
            raise AlignmentError(f"RANSAC found no scale within bounds {scale_bounds} among {n} anchors")
    elif robust == "irls":
        pos = p > 0
        s = float(np.median(y[pos] / p[pos])) if pos.any() else np.nan
        t = 0.0
        if not np.isfinite(s):
            raise AlignmentError("cannot start IRLS: no anchor with a positive prediction")
    else:
        s, t = _weighted_fit(p, y, np.ones_like(p), with_shift)

    if robust != "none":
        # Iteratively reweighted least squares on the current consensus (hard gate at
        # a few times inlier_tol, Cauchy weights scaled by the inliers' MAD).
        for _ in range(irls_iterations):
            r = _rel_residual(p, y, s, t)
            gate = np.abs(r) < (inlier_tol if robust == "ransac" else max(inlier_tol, 3 * _mad(r)))
            if gate.sum() < (2 if with_shift else 1):
                break
            sigma = max(_mad(r[gate]), 1e-9)
            w = gate / (1.0 + (r / (2.0 * sigma)) ** 2)
            s_new, t_new = _weighted_fit(p, y, w, with_shift)
            if not np.isfinite(s_new):
                break
            converged = abs(s_new - s) <= 1e-10 * abs(s) and abs(t_new - t) <= 1e-10 * max(abs(t), abs(s))
            s, t = s_new, t_new
            if converged:
                break

    if not (np.isfinite(s) and np.isfinite(t)):
        raise AlignmentError("least squares is degenerate: the prediction is (nearly) constant at the anchors")
    if not scale_bounds[0] <= s <= scale_bounds[1]:
        raise AlignmentError(
            f"fitted scale {s:.4g} is outside the allowed bounds {scale_bounds} (a negative scale means the "
            f"prediction is ordered the wrong way: check the output kind, depth vs inverse depth)"
        )
    r = _rel_residual(p, y, s, t)
    inliers = np.abs(r) < inlier_tol
    k = int(inliers.sum())
    if robust != "none" and k < min_inlier_fraction * n:
        raise AlignmentError(
            f"only {k} of {n} anchors ({100 * k / n:.0f} %) agree with the fit within {100 * inlier_tol:.0f} %; "
            f"need {100 * min_inlier_fraction:.0f} %"
        )
    sel = inliers if k > 0 else np.ones_like(inliers)
    y_fit = s * p[sel] + t
    with np.errstate(divide="ignore", invalid="ignore"):
        d_fit = y_fit if space == "depth" else 1.0 / y_fit
    abs_rel = float(np.mean(np.abs(d_fit - d[sel]) / d[sel]))
    full = np.zeros(valid.size, bool)
    full[np.flatnonzero(valid)[inliers]] = True
    return AlignmentResult(
        scale=float(s),
        shift=float(t),
        space=space,
        num_anchors=n,
        num_inliers=k,
        residual_rms=float(np.sqrt(np.mean(r[sel] ** 2))),
        abs_rel=abs_rel,
        inliers=full,
    )


def _mad(r: np.ndarray) -> float:
    """Normal-consistent median absolute deviation of ``r`` about 0."""
    return float(1.4826 * np.median(np.abs(r))) if r.size else 0.0


def space_for_kind(kind: str) -> str:
    """The fitting space of a prediction kind: "relative_inverse" -> inverse depth, else depth."""
    return "inverse_depth" if kind == "relative_inverse" else "depth"


def align_to_anchors(
    values: np.ndarray,
    kind: str,
    anchors_depth_m: np.ndarray,
    **fit_options,
) -> tuple[np.ndarray, AlignmentResult]:
    """Align a dense prediction to sparse metric anchors and return metric depth.

    Args:
        values: (H, W) prediction of ``kind`` ("metric", "relative" or "relative_inverse").
        kind: output kind; "relative_inverse" is fitted in inverse-depth space, the others in depth.
        anchors_depth_m: (H, W) metric depth at anchor pixels, 0 (or non-finite) elsewhere.
        **fit_options: passed to :func:`fit_scale_shift`.
    Returns:
        depth_m: (H, W) float32 metres (0 where the aligned value is not a valid depth);
        the :class:`AlignmentResult`. ``inliers`` follows the row-major order of the
        anchor pixels ``np.flatnonzero(anchors > 0)`` restricted to finite predictions.
    """
    values = np.asarray(values)
    anchors = np.asarray(anchors_depth_m)
    if values.shape != anchors.shape:
        raise ValueError(f"prediction shape {values.shape} and anchor shape {anchors.shape} differ")
    m = np.isfinite(anchors) & (anchors > 0)
    result = fit_scale_shift(values[m], anchors[m], space=space_for_kind(kind), **fit_options)
    return result.to_metric(values), result


def anchors_from_points(
    points_world: np.ndarray,
    camera: Camera,
    T_world_cam: np.ndarray,
    min_depth_m: float = 1e-3,
) -> np.ndarray:
    """Project 3D points (e.g. map surface points) into a sparse anchor depth image.

    Args:
        points_world: (N, 3) points in the world frame, metres.
        camera: intrinsics of the target image.
        T_world_cam: (4, 4) camera-to-world pose of the target image.
        min_depth_m: points closer than this (or behind the camera) are dropped.
    Returns:
        (H, W) float32 depth in metres along the optical axis; the nearest point per
        pixel wins (z-buffer); 0 where no point projects.
    """
    pts = np.asarray(points_world, dtype=np.float64).reshape(-1, 3)
    T_cam_world = np.linalg.inv(np.asarray(T_world_cam, dtype=np.float64))
    p_cam = pts @ T_cam_world[:3, :3].T + T_cam_world[:3, 3]
    front = p_cam[:, 2] > min_depth_m
    uv, z = camera.project(p_cam[front])
    inside = camera.in_image(uv)
    u = np.round(uv[inside, 0]).astype(np.int64)
    v = np.round(uv[inside, 1]).astype(np.int64)
    z = z[inside]
    depth = np.full(camera.height * camera.width, np.inf)
    np.minimum.at(depth, v * camera.width + u, z)
    depth[~np.isfinite(depth)] = 0.0
    return depth.reshape(camera.shape).astype(np.float32)
