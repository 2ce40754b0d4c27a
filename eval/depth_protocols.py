"""Depth evaluation runs over a frame source: saved predictions, a model, or hole filling.

Three protocols (``semmap eval depth`` is the CLI):

- ``"pred"``: predictions written by ``semmap depth`` (``<stem>.depth.npy``, float32 metres,
  or ``<stem>.depth.png``, uint16 millimetres; ``stem`` from :func:`prediction_stem`)
  against the source's depth, on every valid ground-truth pixel;
- ``"model"``: a depth model run on each frame (its raw output, aligned as ``align`` says),
  on every valid ground-truth pixel;
- ``"fill"``: synthetic holes (:func:`eval.depth_metrics.random_blob_mask`, ``hole_fraction`` of the
  valid pixels, seed ``seed + frame position``) cut into the source's own sensor depth and
  filled again (:func:`mapping.depth.complete_depth` on *every* unknown pixel, so sparse
  ground truth such as KITTI can be filled too), scored on the removed pixels only. Fill
  ``"guided"``: colour-guided harmonic interpolation (plus the model's prediction aligned
  to the remaining depth when a model is given); ``"map"``: a TSDF of the neighbouring
  frames (``map_window`` frames either side, the target left out) rendered at the target's
  pose first (posed sequences only).

Ground truth is the frame's ``depth``; the evaluated range is ``DEPTH_CAPS[dataset]``
(NYU 10 m, KITTI 80 m, 7-Scenes 10 m; no KITTI Garg/Eigen crop). Results are the standard
table (AbsRel, SqRel, RMSE, RMSE log, SILog, delta 1-3), per image and their mean.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from eval.depth_metrics import DEPTH_CAPS, DepthMetrics, depth_metrics, mean_metrics, random_blob_mask
from sensors.camera import Camera
from sensors.frame import Frame

FILL_METHODS = ("guided", "map")

SOURCE_DATASETS = {"7scenes": "7scenes", "3dmatch": "7scenes", "replica": "replica", "tum": "tum", "scannet": "nyu"}
"""Depth-cap key of ``eval.depth_metrics.DEPTH_CAPS`` for each source kind (indoor sequences: 10 m)."""


def prediction_stem(frame: Frame) -> str:
    """File stem of a frame's prediction files: its colour file's stem, else ``frame-NNNNNN``."""
    return Path(frame.name).stem if frame.name else f"frame-{frame.index:06d}"


def dataset_of(source: Any, frame: Frame | None = None) -> str | None:
    """Depth-cap key for a source: ``frame.origin.dataset``, the source's ``dataset``, or by kind."""
    if frame is not None and frame.origin.dataset in DEPTH_CAPS:
        return frame.origin.dataset
    key = getattr(source, "dataset", None)
    if key in DEPTH_CAPS:
        return key
    return SOURCE_DATASETS.get(getattr(source, "kind", ""))


def read_prediction(folder: Path, frame: Frame) -> np.ndarray:
    """(H, W) float32 metres from ``<stem>.depth.npy`` (preferred) or ``<stem>.depth.png`` (mm) in ``folder``.

    Raises:
        FileNotFoundError: neither file exists (names both).
        ValueError: the prediction's size differs from the frame's.
    """
    stem = prediction_stem(frame)
    npy, png = Path(folder) / f"{stem}.depth.npy", Path(folder) / f"{stem}.depth.png"
    if npy.is_file():
        pred = np.load(npy).astype(np.float32)
        where = npy
    elif png.is_file():
        from sensors.io import read_depth_m

        pred, where = read_depth_m(png, 1000.0, (0,), max_plausible_m=1e9), png
    else:
        raise FileNotFoundError(f"no prediction for {frame.name or frame.index}: neither {npy} nor {png} exists")
    if pred.shape != frame.camera.shape:
        raise ValueError(f"{where}: prediction is {pred.shape[::-1]} but the frame is {frame.camera.shape[::-1]}")
    return pred


@dataclass
class DepthEvalResult:
    """Per-image metrics, their mean and how they were obtained."""

    rows: list[tuple[str, DepthMetrics]]
    mean: DepthMetrics
    dataset: str | None
    protocol: dict[str, Any] = field(default_factory=dict)

    def table_rows(self) -> list[tuple[str, DepthMetrics]]:
        return [*self.rows, (f"mean ({len(self.rows)})", self.mean)]


def neighbour_map_prior(
    source,
    i: int,
    camera: Camera,
    T_world_cam: np.ndarray,
    *,
    window: int = 10,
    step: int = 2,
    voxel_size_m: float = 0.01,
    depth_max_m: float = 4.0,
) -> np.ndarray:
    """Depth at frame ``i``'s pose rendered from a TSDF of frames ``i - window .. i + window`` (step ``step``), ``i`` excluded.

    Args:
        source: an indexed, posed source (``source[j]`` frames with depth and ``T_world_cam``).
        camera, T_world_cam: the target frame's camera and (4, 4) camera-to-world pose.
    Returns:
        (H, W) float32 metres, 0 where the neighbours' map shows nothing.
    """
    from mapping.depth import map_prior_depth
    from mapping.tsdf import TSDFConfig, TSDFMap

    tsdf = TSDFMap(TSDFConfig(voxel_size_m=voxel_size_m, depth_max_m=depth_max_m, integrate_color=False))
    for j in range(max(0, i - window), min(len(source), i + window + 1), step):
        if j == i:
            continue
        f = source[j]
        if f.depth is not None and f.T_world_cam is not None:
            tsdf.integrate(f)
    return map_prior_depth(tsdf, camera, T_world_cam)


def evaluate_depth(
    source,
    *,
    protocol: str,
    pred_dir: Path | None = None,
    model=None,
    fill: str | None = None,
    align: str = "none",
    dataset: str | None = None,
    hole_fraction: float = 0.3,
    seed: int = 0,
    indices: Sequence[int] | None = None,
    map_window: int = 10,
    map_voxel_m: float = 0.01,
    progress: Callable[[str], None] | None = None,
) -> DepthEvalResult:
    """Evaluate depth over the frames of an indexed source (see the module docstring).

    Args:
        source: an indexed source (``len`` and ``source[i]``) whose frames have ground-truth depth.
        protocol: "pred", "model" or "fill".
        pred_dir: folder of saved predictions ("pred").
        model: a :class:`mapping.depth.DepthEstimator` ("model"; optional for "fill").
        fill: "guided" or "map" ("fill").
        align: alignment of the prediction before scoring (``eval.depth_metrics.ALIGN_MODES``);
            "fill" is always scored as is (metric).
        dataset: depth-cap key; default from the source (:func:`dataset_of`).
        hole_fraction, seed: synthetic holes ("fill").
        indices: frame positions to evaluate (default all).
        map_window, map_voxel_m: neighbour map for ``fill="map"``.
        progress: called with each frame's name.
    Raises:
        ValueError: a bad combination (missing folder/model/fill, relative model with
            ``align="none"``, map fill on a source without poses), frames without depth.
    """
    if protocol not in ("pred", "model", "fill"):
        raise ValueError(f"protocol must be 'pred', 'model' or 'fill', got {protocol!r}")
    if protocol == "pred" and pred_dir is None:
        raise ValueError("protocol 'pred' needs a predictions folder")
    if protocol == "model" and model is None:
        raise ValueError("protocol 'model' needs a depth model")
    if protocol == "fill" and fill not in FILL_METHODS:
        raise ValueError(f"protocol 'fill' needs fill in {FILL_METHODS}, got {fill!r}")
    if protocol == "model" and model.output_kind != "metric" and align == "none":
        raise ValueError(
            f"{model.name} outputs {model.output_kind.replace('_', ' ')} depth, which has no metric scale: evaluate "
            f"it with an alignment (--align {'lsq_inverse' if model.output_kind == 'relative_inverse' else 'median or lsq'})"
        )
    if protocol == "fill" and fill == "map" and not getattr(source, "has_poses", False):
        raise ValueError(
            f"--fill map renders a map of the neighbouring frames and needs a posed sequence (e.g. 7scenes:...); "
            f"{getattr(source, 'path', source)} ({getattr(source, 'kind', '?')}) has no poses: use --fill guided"
        )
    from mapping.depth import complete_depth

    idx = list(range(len(source))) if indices is None else list(indices)
    rows: list[tuple[str, DepthMetrics]] = []
    for k, i in enumerate(idx):
        frame = source[i]
        name = prediction_stem(frame)
        if progress is not None:
            progress(name)
        if frame.depth is None:
            raise ValueError(f"{frame.name or i}: no ground-truth depth to evaluate against")
        key = dataset or dataset_of(source, frame)
        gt = frame.depth
        mask = None
        frame_align = align
        if protocol == "pred":
            pred = read_prediction(pred_dir, frame)
        elif protocol == "model":
            pred = model.predict(frame.rgb, frame.camera).values
        else:
            frame_align = "none"
            mask = random_blob_mask(gt > 0, hole_fraction, seed=seed + k)
            holey = np.where(mask, 0.0, gt).astype(np.float32)
            prior = None
            if fill == "map":
                if frame.T_world_cam is None:
                    raise ValueError(f"{frame.name or i}: --fill map needs a pose")
                prior = neighbour_map_prior(
                    source, i, frame.camera, frame.T_world_cam, window=map_window, voxel_size_m=map_voxel_m
                )
            prediction = model.predict(frame.rgb, frame.camera) if model is not None else None
            pred = complete_depth(holey, frame.rgb, prior_depth=prior, prediction=prediction).depth_m
        rows.append((name, depth_metrics(pred, gt, mask=mask, align=frame_align, dataset=key)))
    if not rows:
        raise ValueError("no frames to evaluate")
    key = dataset or dataset_of(source)
    proto = {
        "protocol": protocol,
        "align": "none" if protocol == "fill" else align,
        "dataset": key,
        "depth_range_m": list(DEPTH_CAPS[key]) if key in DEPTH_CAPS else [1e-3, None],
        "frames": len(rows),
        "aggregation": "per-image mean of each measure",
    }
    if protocol == "fill":
        proto.update(
            fill=fill,
            model=getattr(model, "name", None),
            hole_fraction=hole_fraction,
            seed=seed,
            holes="eval.depth_metrics.random_blob_mask on valid GT (seed + frame position); scored on the removed pixels",
        )
        if fill == "map":
            proto.update(map_window_frames=map_window, map_voxel_m=map_voxel_m)
    elif protocol == "model":
        proto["model"] = model.name
    else:
        proto["predictions"] = str(pred_dir)
    return DepthEvalResult(rows, mean_metrics([m for _, m in rows]), key, proto)
