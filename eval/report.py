"""Evaluation reports: metrics as JSON, error figures as PNG.

JSON: dataclasses become objects (fields marked ``metadata={"json": False}``, the
per-point error arrays, are left out), numpy arrays become lists, non-finite floats
become null. Files are written to a temporary name and renamed, so a report is never
left half-written.

Figures are drawn on a ``matplotlib.figure.Figure`` with an Agg canvas attached
inside each function: no pyplot, no global backend switch, nothing at import.
Top-down views look down the world axis with the smallest extent of the ground
truth (``up_axis=None``), or the given axis (0 = x, 1 = y, 2 = z); axes in metres,
errors in centimetres.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from eval.recon import ReconMetrics
from eval.traj import TrajMetrics

_AXIS_NAMES = "xyz"


def to_jsonable(obj: Any) -> Any:
    """Convert dataclasses, numpy values, paths and tuples to plain JSON types."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {
            f.name: to_jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj) if f.metadata.get("json", True)
        }
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        return to_jsonable(obj.item())
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, Path):
        return str(obj)
    if obj is None or isinstance(obj, (bool, int, str)):
        return obj
    raise TypeError(f"cannot write a {type(obj).__name__} to JSON")


def write_json(obj: Any, path: Path | str) -> Path:
    """Write ``to_jsonable(obj)`` to ``path`` atomically (temp file in the same folder, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(to_jsonable(obj), indent=2, allow_nan=False)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text + "\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _new_figure(figsize: tuple[float, float]):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save_figure(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".png", dir=path.parent)
    os.close(fd)
    try:
        fig.savefig(tmp, format="png")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def top_down_axes(points: np.ndarray, up_axis: int | None = None) -> tuple[int, int, int]:
    """(up, horizontal, vertical) world axis indices for a top-down view of (N, 3) points.

    ``up_axis=None`` picks the axis with the smallest extent; the other two follow in
    cyclic order, so the view is right-handed seen from +up.
    """
    if up_axis is None:
        p = np.asarray(points).reshape(-1, 3)
        up_axis = int(np.argmin(np.ptp(p, axis=0))) if len(p) else 2
    if up_axis not in (0, 1, 2):
        raise ValueError(f"up_axis must be 0, 1 or 2, got {up_axis}")
    return up_axis, (up_axis + 1) % 3, (up_axis + 2) % 3


def _subsample(n: int, max_points: int, rng: np.random.Generator) -> np.ndarray:
    return np.arange(n) if n <= max_points else np.sort(rng.choice(n, size=max_points, replace=False))


def _error_scatter(fig, ax, xy: np.ndarray, err_m: np.ndarray, vmax_cm: float, title: str, labels: tuple[str, str]):
    order = np.argsort(err_m, kind="stable")  # largest errors drawn last, on top
    sc = ax.scatter(
        xy[order, 0],
        xy[order, 1],
        c=err_m[order] * 100.0,
        s=0.3,
        cmap="viridis",
        vmin=0.0,
        vmax=vmax_cm,
        linewidths=0,
        rasterized=True,
    )
    ax.set_aspect("equal", adjustable="datalim")
    ax.set_title(title, fontsize=10)
    ax.set_xlabel(f"{labels[0]} (m)")
    ax.set_ylabel(f"{labels[1]} (m)")
    fig.colorbar(sc, ax=ax, extend="max", label="error (cm)", shrink=0.85)


def plot_recon_errors(
    metrics: ReconMetrics,
    path: Path | str,
    *,
    up_axis: int | None = None,
    vmax_m: float | None = None,
    max_points: int = 200_000,
    seed: int = 0,
) -> Path:
    """PNG: top-down views, reconstruction points coloured by accuracy error (left), GT
    points coloured by completion error (right); colour bar in cm clipped at ``vmax_m``
    (default: the largest F-score threshold); at most ``max_points`` per panel.
    """
    if metrics.errors is None:
        raise ValueError("metrics carry no per-point errors: evaluate with keep_errors=True")
    e = metrics.errors
    vmax_cm = 100.0 * (vmax_m if vmax_m is not None else max(metrics.thresholds_m))
    up, a, b = top_down_axes(e.gt_points, up_axis)
    rng = np.random.default_rng(seed)
    fig = _new_figure((13.0, 6.0))
    ax_acc, ax_comp = fig.subplots(1, 2)
    i = _subsample(len(e.recon_points), max_points, rng)
    _error_scatter(
        fig,
        ax_acc,
        e.recon_points[i][:, [a, b]],
        e.accuracy_m[i],
        vmax_cm,
        f"accuracy: reconstruction -> GT\nmean {metrics.accuracy_m * 100:.2f} cm, "
        f"median {metrics.accuracy_median_m * 100:.2f} cm",
        (_AXIS_NAMES[a], _AXIS_NAMES[b]),
    )
    j = _subsample(len(e.gt_points), max_points, rng)
    _error_scatter(
        fig,
        ax_comp,
        e.gt_points[j][:, [a, b]],
        e.completion_m[j],
        vmax_cm,
        f"completion: GT -> reconstruction\nmean {metrics.completion_m * 100:.2f} cm, ratio(<"
        f"{metrics.completion_ratio_threshold_m * 100:g} cm) {metrics.completion_ratio * 100:.1f} %",
        (_AXIS_NAMES[a], _AXIS_NAMES[b]),
    )
    cull = metrics.protocol.get("culling", {}).get("method", "none")
    fig.suptitle(
        f"top-down (looking down -{_AXIS_NAMES[up]}), mode {metrics.protocol.get('mode', '?')}, "
        f"culling {cull}, F@{', '.join(f'{t * 100:g}' for t in metrics.thresholds_m)} cm = "
        f"{', '.join(f'{f * 100:.1f}' for f in metrics.fscore)} %",
        fontsize=10,
    )
    return _save_figure(fig, Path(path))


def plot_traj_errors(metrics: TrajMetrics, path: Path | str, *, up_axis: int | None = None) -> Path:
    """PNG: top-down reference (grey) vs aligned estimate coloured by ATE (left); ATE and
    RPE translation over time (right), in cm."""
    if metrics.errors is None:
        raise ValueError("metrics carry no per-pose errors: evaluate with keep_errors=True")
    e = metrics.errors
    up, a, b = top_down_axes(e.ref_xyz, up_axis)
    fig = _new_figure((13.0, 5.5))
    ax_map, ax_t = fig.subplots(1, 2, width_ratios=[1.0, 1.3])
    ax_map.plot(e.ref_xyz[:, a], e.ref_xyz[:, b], color="0.6", lw=1.5, label="reference")
    ax_map.plot(e.est_xyz[:, a], e.est_xyz[:, b], color="0.2", lw=0.5, alpha=0.6)
    sc = ax_map.scatter(
        e.est_xyz[:, a],
        e.est_xyz[:, b],
        c=e.ate_m * 100.0,
        s=4,
        cmap="viridis",
        linewidths=0,
        label=f"estimate ({metrics.alignment.kind}-aligned)",
        zorder=3,
    )
    fig.colorbar(sc, ax=ax_map, label="ATE (cm)", shrink=0.85)
    ax_map.set_aspect("equal", adjustable="datalim")
    ax_map.set_xlabel(f"{_AXIS_NAMES[a]} (m)")
    ax_map.set_ylabel(f"{_AXIS_NAMES[b]} (m)")
    ax_map.set_title(f"top-down (looking down -{_AXIS_NAMES[up]})", fontsize=10)
    ax_map.legend(loc="best", fontsize=8)

    t = e.timestamps - e.timestamps[0]
    ax_t.plot(t, e.ate_m * 100.0, lw=1.0, label=f"ATE (RMSE {metrics.ate_m.rmse * 100:.2f} cm)")
    if len(e.rpe_index):
        ax_t.plot(
            t[e.rpe_index[:, 1]],
            e.rpe_trans_m * 100.0,
            lw=0.8,
            label=f"RPE translation, delta {metrics.protocol.get('delta_frames', '?')} (RMSE {metrics.rpe_trans_m.rmse * 100:.2f} cm)",
        )
    ax_t.axhline(metrics.ate_m.rmse * 100.0, color="C0", ls="--", lw=0.8)
    ax_t.set_xlabel("time since first matched pose (s, or frames when timestamps are indices)")
    ax_t.set_ylabel("error (cm)")
    ax_t.set_ylim(bottom=0.0)
    ax_t.grid(alpha=0.3)
    ax_t.legend(loc="upper left", fontsize=8)
    ax_t.set_title(metrics.summary(), fontsize=9)
    return _save_figure(fig, Path(path))


def _write_metrics_report(
    metrics: ReconMetrics | TrajMetrics,
    out: Path,
    name: str,
    plot: Callable[..., Path],
    plot_kwargs: dict[str, Any],
) -> list[Path]:
    """``<name>_metrics.json`` in ``out`` and, when ``metrics.errors`` is kept, ``plot``'s ``<name>_errors.png``."""
    paths = [write_json(metrics, out / f"{name}_metrics.json")]
    if metrics.errors is not None:
        paths.append(plot(metrics, out / f"{name}_errors.png", **plot_kwargs))
    return paths


def write_recon_report(
    metrics: ReconMetrics, out_dir: Path | str, *, name: str = "recon", **plot_kwargs: Any
) -> list[Path]:
    """Write ``<name>_metrics.json`` and, when per-point errors are kept, ``<name>_errors.png``.

    ``plot_kwargs`` go to :func:`plot_recon_errors`. Returns the written paths.
    """
    return _write_metrics_report(metrics, Path(out_dir), name, plot_recon_errors, plot_kwargs)


def write_traj_report(
    metrics: TrajMetrics, out_dir: Path | str, *, name: str = "traj", **plot_kwargs: Any
) -> list[Path]:
    """Write ``<name>_metrics.json`` and, when per-pose errors are kept, ``<name>_errors.png``.

    ``plot_kwargs`` go to :func:`plot_traj_errors`. Returns the written paths.
    """
    return _write_metrics_report(metrics, Path(out_dir), name, plot_traj_errors, plot_kwargs)
