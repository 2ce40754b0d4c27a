"""Depth completion: fill the holes of sensor depth, keeping measured values exactly.

Sources, tried in this order for each hole pixel (:func:`complete_depth`):

1. **map prior**: depth rendered from the current TSDF map at the frame's pose
   (:func:`map_prior_depth`, a ``TSDFMap.raycast``);
2. **prediction**: a monocular prediction aligned to the known depth (robust
   scale/shift in its own space, :mod:`mapping.depth.align`);
3. **guided fill**: colour-guided harmonic interpolation of inverse depth
   (:func:`~mapping.depth.guided_fill.guided_fill`), when no model is configured or
   where the others have no value.

Seams: a dense proposal (map render, aligned prediction) rarely agrees exactly with
the sensor at the hole border. Its residual ``r = d_known - d_proposal`` on the known
pixels is spread into the hole by normalised Gaussian convolution and faded with
the distance to the border,

    d_hole = d_proposal + exp(-dist / feather_px) * (G * (r m)) / (G * m),

(``m`` = known pixels whose residual is below ``residual_outlier_rel`` relative), so
the fill meets the known depth without a step and reverts to the proposal deep
inside large holes. Known pixels are never changed.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from mapping.depth.align import AlignmentError, AlignmentResult, align_to_anchors
from mapping.depth.base import DepthPrediction
from mapping.depth.guided_fill import guided_fill
from sensors.camera import Camera

SOURCE_NONE, SOURCE_KNOWN, SOURCE_MAP, SOURCE_PREDICTION, SOURCE_GUIDED = 0, 1, 2, 3, 4
SOURCE_NAMES = {
    SOURCE_NONE: "none",
    SOURCE_KNOWN: "known",
    SOURCE_MAP: "map",
    SOURCE_PREDICTION: "prediction",
    SOURCE_GUIDED: "guided",
}


@dataclass
class CompletionConfig:
    """How holes are filled."""

    feather_px: float = 20.0
    """Length scale (pixels) of the residual blending at hole borders."""
    residual_outlier_rel: float = 0.1
    """Known pixels whose proposal disagrees by more than this (relative) do not steer the blend."""
    guided: bool = True
    """Fill what the map and the prediction leave with the colour-guided fill."""
    sigma_color: float = 0.05
    """Colour scale of the guided fill (RGB in [0, 1])."""
    align_metric: bool = True
    """Also fit scale and shift of a *metric* prediction to the known depth (relative ones always are)."""
    min_anchors: int = 50
    """Fewest known pixels to align a prediction; with fewer it is used only if metric."""

    def __post_init__(self) -> None:
        if not self.feather_px > 0:
            raise ValueError(f"feather_px must be positive, got {self.feather_px}")
        if not self.residual_outlier_rel > 0:
            raise ValueError(f"residual_outlier_rel must be positive, got {self.residual_outlier_rel}")


@dataclass
class CompletionResult:
    """A completed depth map and where each value came from.

    Attributes:
        depth_m: (H, W) float32 metres, 0 where still unknown.
        source: (H, W) uint8 codes, see ``SOURCE_NAMES`` (known, map, prediction, guided, none).
        alignment: the prediction's fit to the known depth, if a prediction was aligned.
    """

    depth_m: np.ndarray
    source: np.ndarray
    alignment: AlignmentResult | None = None

    def fraction(self, code: int) -> float:
        """Share of pixels whose value came from source ``code``."""
        return float((self.source == code).mean())


def _valid(d: np.ndarray) -> np.ndarray:
    return np.isfinite(d) & (d > 0)


def blend_residual(
    known_depth: np.ndarray,
    known: np.ndarray,
    proposal: np.ndarray,
    feather_px: float,
    outlier_rel: float = 0.1,
) -> np.ndarray:
    """Correct a dense proposal so that it meets the known depth at hole borders.

    Args:
        known_depth: (H, W) metres, meaningful where ``known``.
        known: (H, W) bool.
        proposal: (H, W) metres (0 = none).
        feather_px: blending length scale in pixels.
        outlier_rel: residuals above this relative size are ignored.
    Returns:
        (H, W) float32: ``proposal + alpha * residual`` on every pixel where the
        proposal is valid (callers take it only in holes), 0 elsewhere.
    """
    from scipy.ndimage import distance_transform_edt, gaussian_filter

    prop_ok = _valid(proposal)
    r = np.zeros(known.shape)
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = np.abs(known_depth - proposal) / known_depth
    support = known & prop_ok & (rel < outlier_rel)
    out = np.where(prop_ok, proposal, 0.0)
    if not support.any():
        return out.astype(np.float32)
    r[support] = (known_depth - proposal)[support]
    num = gaussian_filter(r, feather_px, mode="nearest")
    den = gaussian_filter(support.astype(np.float64), feather_px, mode="nearest")
    r_fill = np.where(den > 1e-6, num / np.maximum(den, 1e-6), 0.0)
    alpha = np.exp(-distance_transform_edt(~support) / feather_px)
    corrected = proposal + alpha * r_fill
    return np.where(prop_ok & (corrected > 0), corrected, 0.0).astype(np.float32)


def _align_prediction(
    prediction: DepthPrediction, known_depth: np.ndarray, known: np.ndarray, config: CompletionConfig
) -> tuple[np.ndarray | None, AlignmentResult | None]:
    """Metric depth from a prediction, aligned to the known pixels where possible."""
    if prediction.kind == "metric" and (not config.align_metric or known.sum() < config.min_anchors):
        return np.where(_valid(prediction.values), prediction.values, 0.0).astype(np.float32), None
    anchors = np.where(known, known_depth, 0.0).astype(np.float32)
    try:
        return align_to_anchors(prediction.values, prediction.kind, anchors, min_anchors=config.min_anchors)
    except AlignmentError as e:
        if prediction.kind == "metric":
            return np.where(_valid(prediction.values), prediction.values, 0.0).astype(np.float32), None
        warnings.warn(f"{prediction.model}: {prediction.kind} prediction not used for completion: {e}", stacklevel=3)
        return None, None


def complete_depth(
    depth_m: np.ndarray | None,
    rgb: np.ndarray | None = None,
    *,
    prior_depth: np.ndarray | None = None,
    prediction: DepthPrediction | None = None,
    fill_mask: np.ndarray | None = None,
    config: CompletionConfig | None = None,
) -> CompletionResult:
    """Fill depth holes from a map prior, an aligned prediction and/or the guided fill.

    Args:
        depth_m: (H, W) float32 sensor depth in metres, 0 = hole; None = no sensor depth.
        rgb: (H, W, 3) uint8 colour registered to the depth (guides the classical fill).
        prior_depth: (H, W) metres rendered from the map at this pose (0 = no hit), or None.
        prediction: a monocular prediction at (H, W) (any output kind), or None.
        fill_mask: (H, W) bool, the holes to fill (default: every pixel without sensor depth).
        config: :class:`CompletionConfig`.
    Returns:
        :class:`CompletionResult`; pixels with sensor depth keep it bit-exactly.
    Raises:
        ValueError: inconsistent shapes or nothing to fill from (no depth at all).
    """
    cfg = config or CompletionConfig()
    shapes = {n: a.shape[:2] for n, a in (("depth", depth_m), ("rgb", rgb), ("prior", prior_depth)) if a is not None}
    if prediction is not None:
        shapes["prediction"] = prediction.shape
    if fill_mask is not None:
        shapes["fill_mask"] = np.shape(fill_mask)
    if not shapes or "rgb" in shapes and len(shapes) == 1:
        raise ValueError("complete_depth needs sensor depth, a map prior or a prediction")
    if len(set(shapes.values())) != 1:
        raise ValueError(f"complete_depth: sizes differ: {shapes}")
    shape = next(iter(shapes.values()))
    if rgb is not None and (rgb.ndim != 3 or rgb.dtype != np.uint8):
        raise ValueError(f"rgb must be (H, W, 3) uint8, got {rgb.shape} {rgb.dtype}")

    sensor = np.zeros(shape, np.float32) if depth_m is None else np.asarray(depth_m, np.float32)
    known = _valid(sensor)
    holes = ~known if fill_mask is None else (np.asarray(fill_mask, bool) & ~known)
    out = np.where(known, sensor, 0.0).astype(np.float32)
    source = np.where(known, SOURCE_KNOWN, SOURCE_NONE).astype(np.uint8)
    alignment = None

    if prior_depth is not None:
        prior = np.asarray(prior_depth, np.float32)
        blended = blend_residual(sensor, known, prior, cfg.feather_px, cfg.residual_outlier_rel)
        take = holes & (blended > 0)
        out[take] = blended[take]
        source[take] = SOURCE_MAP
    todo = holes & (source == SOURCE_NONE)

    if prediction is not None and todo.any():
        have = source != SOURCE_NONE
        metric, alignment = _align_prediction(prediction, out, have, cfg)
        if metric is not None:
            blended = blend_residual(out, have, metric, cfg.feather_px, cfg.residual_outlier_rel)
            take = todo & (blended > 0)
            out[take] = blended[take]
            source[take] = SOURCE_PREDICTION
            todo &= ~take

    if cfg.guided and todo.any() and (source != SOURCE_NONE).any():
        filled = guided_fill(out, rgb, fill_mask=todo, sigma_color=cfg.sigma_color)
        take = todo & (filled > 0)
        out[take] = filled[take]
        source[take] = SOURCE_GUIDED
    if not (source != SOURCE_NONE).any():
        raise ValueError("complete_depth: no sensor depth, no map hit and no usable prediction: nothing to fill from")
    return CompletionResult(out, source, alignment)


def map_prior_depth(
    tsdf_map,
    camera: Camera,
    T_world_cam: np.ndarray,
    min_observations: int | None = None,
) -> np.ndarray:
    """Render the map's depth at a pose (the map prior).

    Args:
        tsdf_map: a :class:`mapping.tsdf.TSDFMap`.
        camera: intrinsics of the frame.
        T_world_cam: (4, 4) camera-to-world pose of the frame.
        min_observations: surface confidence for the raycast (map default when None).
    Returns:
        (H, W) float32 depth along the optical axis in metres, 0 where no surface is hit.
    """
    d = tsdf_map.raycast(camera, T_world_cam, ("depth",), min_observations=min_observations)["depth"]
    d = np.asarray(d, np.float32)
    return np.where(_valid(d), d, 0.0).astype(np.float32)


def complete_with_map(
    depth_m: np.ndarray | None,
    rgb: np.ndarray | None,
    tsdf_map,
    camera: Camera,
    T_world_cam: np.ndarray,
    *,
    prediction: DepthPrediction | None = None,
    fill_mask: np.ndarray | None = None,
    min_observations: int | None = None,
    config: CompletionConfig | None = None,
) -> CompletionResult:
    """Complete a frame's depth with the map rendered at its pose, then prediction / guided fill.

    A frame without any depth (``depth_m=None``) gets the map's depth where the map
    has surface and the completion for the rest. Args as in :func:`complete_depth`
    and :func:`map_prior_depth`.
    """
    prior = map_prior_depth(tsdf_map, camera, T_world_cam, min_observations)
    return complete_depth(depth_m, rgb, prior_depth=prior, prediction=prediction, fill_mask=fill_mask, config=config)
