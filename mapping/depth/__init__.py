"""Depth for frames that lack it: monocular estimators, metric alignment, completion.

- :mod:`mapping.depth.base`: the estimator interface and metric conversion;
- :mod:`mapping.depth.hf`: any transformers depth model (``"hf:<name-or-path>"``);
- :mod:`mapping.depth.depthclip`: zero-shot DepthCLIP on a CLIP encoder (``"depthclip:<encoder>"``);
- :mod:`mapping.depth.canonical`: Metric3D canonical-camera wrapper (metric across focal lengths);
- :mod:`mapping.depth.align`: robust scale/shift alignment to metric anchors;
- :mod:`mapping.depth.completion` / :mod:`~mapping.depth.guided_fill`: hole filling.

Models are built from spec strings through :data:`DEPTH_MODELS`; external
packages add entries through the ``semmap.depth_models`` entry-point group
(an entry names a factory ``f(location: str, device: str, **options) -> DepthEstimator``).
Nothing heavy is imported here.
"""

from __future__ import annotations

from mapping.depth.align import (
    AlignmentError,
    AlignmentResult,
    align_to_anchors,
    anchors_from_points,
    fit_scale_shift,
)
from mapping.depth.base import (
    OUTPUT_KINDS,
    DepthEstimator,
    DepthPrediction,
    MetricDepthError,
    MetricDepthInfo,
)
from mapping.depth.canonical import CanonicalCameraEstimator
from mapping.depth.completion import (
    CompletionConfig,
    CompletionResult,
    complete_depth,
    complete_with_map,
    map_prior_depth,
)
from mapping.depth.depthclip import (
    DepthCLIPConfig,
    DepthCLIPEstimator,
    PatchTextEncoder,
)
from mapping.depth.guided_fill import guided_fill
from mapping.depth.hf import DepthModelLoadError, HFDepthEstimator
from sensors.registry import Registry

DEPTH_MODELS = Registry("depth model", entry_point_group="semmap.depth_models")
DEPTH_MODELS.register(
    "hf", "mapping.depth.hf:load_hf_depth_model", "transformers depth model: hf:<hub-name-or-local-dir>"
)
DEPTH_MODELS.register(
    "depthclip", "mapping.depth.depthclip:load_depthclip", "zero-shot DepthCLIP: depthclip:<encoder spec>"
)


def load_depth_model(
    spec: str,
    device: str = "cpu",
    canonical_focal_px: float | None = None,
    **options,
) -> DepthEstimator:
    """Build a depth estimator from a spec string.

    Args:
        spec: ``"<name>:<location>"``, e.g. ``"hf:/models/depth-anything-v2-metric-indoor-small"``
            or ``"depthclip:clip:/models/clip-vit-base-patch16"``.
        device: torch device.
        canonical_focal_px: if given, wrap the model in a
            :class:`~mapping.depth.canonical.CanonicalCameraEstimator` with this focal
            (for models that are metric at one training focal, e.g. Metric3D's 1000 px).
        **options: passed to the factory (e.g. ``output_kind="metric"`` for hf).
    Raises:
        KeyError: unknown name (the message lists the known ones).
    """
    name, sep, location = spec.partition(":")
    if not sep:
        raise ValueError(f"depth model spec must be '<name>:<location>', got {spec!r}; known names: {DEPTH_MODELS.names()}")
    factory = DEPTH_MODELS.get(name)
    model = factory(location, device=device, **options)
    if canonical_focal_px is not None:
        model = CanonicalCameraEstimator(model, canonical_focal_px=canonical_focal_px)
    return model


__all__ = [
    "DEPTH_MODELS",
    "OUTPUT_KINDS",
    "AlignmentError",
    "AlignmentResult",
    "CanonicalCameraEstimator",
    "CompletionConfig",
    "CompletionResult",
    "DepthCLIPConfig",
    "DepthCLIPEstimator",
    "DepthEstimator",
    "DepthModelLoadError",
    "DepthPrediction",
    "HFDepthEstimator",
    "MetricDepthError",
    "MetricDepthInfo",
    "PatchTextEncoder",
    "align_to_anchors",
    "anchors_from_points",
    "complete_depth",
    "complete_with_map",
    "fit_scale_shift",
    "guided_fill",
    "load_depth_model",
    "map_prior_depth",
]
