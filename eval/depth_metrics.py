"""Depth accuracy: the standard monocular-depth metrics over valid ground-truth pixels.

Definitions (pred p, ground truth g, metres, over the N evaluated pixels; Eigen et
al. 2014 and the BTS/AdaBins evaluation code):

- AbsRel   = mean(|p - g| / g)
- SqRel    = mean((p - g)^2 / g)
- RMSE     = sqrt(mean((p - g)^2))                         [m]
- RMSE log = sqrt(mean((ln p - ln g)^2))
- SILog    = 100 * sqrt(mean(e^2) - mean(e)^2), e = ln p - ln g
- log10    = mean(|log10 p - log10 g|)
- delta_k  = fraction with max(p / g, g / p) < 1.25^k, k = 1, 2, 3

Evaluated pixels: finite ground truth with ``min_depth < g < max_depth`` (and an
optional extra mask). Predictions are first aligned (``align``), then clipped to
``[min_depth, max_depth]``; missing predictions (0, negative, non-finite) are
clipped to ``min_depth`` and thus counted as errors, with their fraction reported
as ``1 - coverage``. Depth caps per dataset are in :data:`DEPTH_CAPS`.

Alignment modes: "none" (metric), "median" (scale = median(g) / median(p), the
usual protocol for scale-ambiguous models), "lsq" (least-squares scale and shift
in depth), "lsq_inverse" (least-squares scale and shift in inverse depth, the
MiDaS protocol for disparity models; the prediction is then inverse depth).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, fields

import numpy as np

DEPTH_CAPS: dict[str, tuple[float, float]] = {
    "nyu": (1e-3, 10.0),
    "kitti": (1e-3, 80.0),
    "7scenes": (1e-3, 10.0),
    "replica": (1e-3, 10.0),
    "tum": (1e-3, 10.0),
}
"""(min_depth, max_depth) in metres per dataset (NYU 10 m and KITTI 80 m are the standard caps)."""

ALIGN_MODES = ("none", "median", "lsq", "lsq_inverse")


@dataclass(frozen=True)
class DepthMetrics:
    """Depth errors of one prediction (or the mean over several).

    Attributes:
        abs_rel, sq_rel, rmse (m), rmse_log, silog (x100), log10: error measures.
        d1, d2, d3: fractions with ratio below 1.25, 1.25^2, 1.25^3.
        n_pixels: evaluated pixels (summed when averaged).
        coverage: fraction of evaluated pixels that had a valid prediction.
        scale, shift: the alignment applied (1, 0 for "none").
        align: the alignment mode.
    """

    abs_rel: float
    sq_rel: float
    rmse: float
    rmse_log: float
    silog: float
    log10: float
    d1: float
    d2: float
    d3: float
    n_pixels: int
    coverage: float
    scale: float = 1.0
    shift: float = 0.0
    align: str = "none"

    def to_dict(self) -> dict:
        return asdict(self)


_ERROR_FIELDS = ("abs_rel", "sq_rel", "rmse", "rmse_log", "silog", "log10", "d1", "d2", "d3")


def mean_metrics(items: Sequence[DepthMetrics]) -> DepthMetrics:
    """Per-image mean of each measure (the usual benchmark aggregation); n_pixels is summed."""
    if not items:
        raise ValueError("mean_metrics needs at least one DepthMetrics")
    vals = {f: float(np.mean([getattr(m, f) for m in items])) for f in _ERROR_FIELDS}
    return DepthMetrics(
        **vals,
        n_pixels=int(sum(m.n_pixels for m in items)),
        coverage=float(np.mean([m.coverage for m in items])),
        scale=float(np.mean([m.scale for m in items])),
        shift=float(np.mean([m.shift for m in items])),
        align=items[0].align,
    )


def _lsq(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    A = np.stack([x, np.ones_like(x)], axis=1)
    (s, t), *_ = np.linalg.lstsq(A, y, rcond=None)
    return float(s), float(t)


def depth_metrics(
    pred: np.ndarray,
    gt: np.ndarray,
    *,
    mask: np.ndarray | None = None,
    align: str = "none",
    min_depth: float | None = None,
    max_depth: float | None = None,
    dataset: str | None = None,
) -> DepthMetrics:
    """Compare a predicted depth map with ground truth.

    Args:
        pred: (H, W) prediction: metres, or inverse depth for ``align="lsq_inverse"``.
        gt: (H, W) ground-truth depth in metres, 0 / non-finite = invalid.
        mask: optional (H, W) bool restricting the evaluated pixels (e.g. holes filled).
        align: "none", "median", "lsq" or "lsq_inverse" (see module docstring).
        min_depth, max_depth: evaluation range in metres; defaults from
            ``DEPTH_CAPS[dataset]``, else (1e-3, no cap).
        dataset: key of :data:`DEPTH_CAPS` ("nyu", "kitti", ...).
    Returns:
        :class:`DepthMetrics`.
    Raises:
        ValueError: shape mismatch, unknown mode or dataset, no valid ground truth.
    """
    pred = np.asarray(pred, dtype=np.float64)
    gt = np.asarray(gt, dtype=np.float64)
    if pred.shape != gt.shape:
        raise ValueError(f"prediction shape {pred.shape} does not match ground truth {gt.shape}")
    if align not in ALIGN_MODES:
        raise ValueError(f"align must be one of {ALIGN_MODES}, got {align!r}")
    lo, hi = 1e-3, np.inf
    if dataset is not None:
        if dataset not in DEPTH_CAPS:
            raise ValueError(f"unknown dataset {dataset!r}; known: {', '.join(DEPTH_CAPS)}")
        lo, hi = DEPTH_CAPS[dataset]
    lo = lo if min_depth is None else float(min_depth)
    hi = hi if max_depth is None else float(max_depth)
    valid = np.isfinite(gt) & (gt > lo) & (gt < hi)
    if mask is not None:
        mask = np.asarray(mask, bool)
        if mask.shape != gt.shape:
            raise ValueError(f"mask shape {mask.shape} does not match ground truth {gt.shape}")
        valid &= mask
    n = int(valid.sum())
    if n == 0:
        raise ValueError(f"no valid ground-truth pixels in ({lo:g}, {hi:g}) m to evaluate")
    p, g = pred[valid], gt[valid]
    have = np.isfinite(p) & (p > 0) if align != "lsq" else np.isfinite(p)
    coverage = float(have.mean())
    scale, shift = 1.0, 0.0
    if align != "none":
        if have.sum() < 2:
            raise ValueError(f"alignment {align!r} needs at least 2 valid predictions, got {int(have.sum())}")
        if align == "median":
            scale = float(np.median(g[have]) / np.median(p[have]))
            p = p * scale
        elif align == "lsq":
            scale, shift = _lsq(p[have], g[have])
            p = scale * p + shift
        else:
            scale, shift = _lsq(p[have], 1.0 / g[have])
            q = scale * p + shift
            with np.errstate(divide="ignore"):
                p = np.where(q > 0, 1.0 / np.where(q > 0, q, 1.0), 0.0)
        have = np.isfinite(p) & (p > 0)
        coverage = float(have.mean())
    p = np.where(have, p, lo)
    p = np.clip(p, max(lo, 1e-12), hi)
    g = np.clip(g, 1e-12, None)
    diff = p - g
    e = np.log(p) - np.log(g)
    ratio = np.maximum(p / g, g / p)
    return DepthMetrics(
        abs_rel=float(np.mean(np.abs(diff) / g)),
        sq_rel=float(np.mean(diff**2 / g)),
        rmse=float(np.sqrt(np.mean(diff**2))),
        rmse_log=float(np.sqrt(np.mean(e**2))),
        silog=float(100.0 * np.sqrt(max(np.mean(e**2) - np.mean(e) ** 2, 0.0))),
        log10=float(np.mean(np.abs(np.log10(p) - np.log10(g)))),
        d1=float(np.mean(ratio < 1.25)),
        d2=float(np.mean(ratio < 1.25**2)),
        d3=float(np.mean(ratio < 1.25**3)),
        n_pixels=n,
        coverage=coverage,
        scale=scale,
        shift=shift,
        align=align,
    )


def format_depth_table(
    rows: Mapping[str, DepthMetrics] | Iterable[tuple[str, DepthMetrics]],
    columns: Sequence[str] = ("abs_rel", "sq_rel", "rmse", "rmse_log", "silog", "d1", "d2", "d3", "n_pixels"),
) -> str:
    """A Markdown table, one row per named result.

    Args:
        rows: name -> metrics (or (name, metrics) pairs).
        columns: DepthMetrics fields to show.
    """
    items = list(rows.items()) if isinstance(rows, Mapping) else list(rows)
    known = {f.name for f in fields(DepthMetrics)}
    bad = [c for c in columns if c not in known]
    if bad:
        raise ValueError(f"unknown columns {bad}; known: {sorted(known)}")
    width = max([len("name")] + [len(name) for name, _ in items])
    head = "| " + "name".ljust(width) + " | " + " | ".join(f"{c:>8}" for c in columns) + " |"
    sep = "|" + "-" * (width + 2) + "|" + "|".join("-" * 10 for _ in columns) + "|"
    lines = [head, sep]
    for name, m in items:
        cells = []
        for c in columns:
            v = getattr(m, c)
            cells.append(f"{v:>8d}" if isinstance(v, int) else (f"{v:>8}" if isinstance(v, str) else f"{v:>8.4f}"))
        lines.append("| " + name.ljust(width) + " | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def random_blob_mask(valid: np.ndarray, fraction: float = 0.3, seed: int = 0, blob_sigma_px: float = 12.0) -> np.ndarray:
    """Random blob-shaped holes covering ``fraction`` of the valid pixels (for completion tests).

    Thresholds Gaussian-smoothed white noise (standard deviation ``blob_sigma_px``)
    at the quantile that selects ``fraction`` of the valid pixels, which gives
    blobs a few ``blob_sigma_px`` across.

    Args:
        valid: (H, W) bool, pixels with ground truth.
        fraction: share of the valid pixels to mask, in (0, 1).
        seed: RNG seed.
    Returns:
        (H, W) bool, a subset of ``valid``.
    """
    from scipy.ndimage import gaussian_filter

    if not 0 < fraction < 1:
        raise ValueError(f"fraction must be in (0, 1), got {fraction}")
    valid = np.asarray(valid, bool)
    if not valid.any():
        raise ValueError("no valid pixels to mask")
    rng = np.random.default_rng(seed)
    noise = gaussian_filter(rng.standard_normal(valid.shape), blob_sigma_px, mode="reflect")
    thr = np.quantile(noise[valid], 1.0 - fraction)
    return valid & (noise > thr)
