"""Depth estimators: the common interface, the prediction container, metric conversion.

A :class:`DepthEstimator` turns one colour image and its camera into a
:class:`DepthPrediction` of a declared *output kind*:

- ``"metric"``: depth in metres along the optical axis (z);
- ``"relative"``: depth up to an unknown scale and shift;
- ``"relative_inverse"``: inverse depth (disparity) up to an unknown scale and shift
  (MiDaS, DPT, relative Depth Anything).

:meth:`DepthEstimator.estimate_metric` is the one place where relative outputs
become metres: it aligns them to metric anchors (sensor depth pixels, a map
raycast, projected map points; see :mod:`mapping.depth.align`) and refuses to
guess when there are none.
"""

from __future__ import annotations

import warnings
from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np

from mapping.depth.align import AlignmentError, AlignmentResult, align_to_anchors
from sensors.camera import Camera

OUTPUT_KINDS = ("metric", "relative", "relative_inverse")


class MetricDepthError(ValueError):
    """Metric depth was requested from a relative model without usable anchors."""


@dataclass
class DepthPrediction:
    """A dense prediction at the frame's resolution.

    Attributes:
        values: (H, W) float32, in the space given by ``kind`` (metres for "metric").
        kind: "metric", "relative" or "relative_inverse".
        model: name of the estimator that produced it.
    """

    values: np.ndarray
    kind: str
    model: str = ""

    def __post_init__(self) -> None:
        if self.kind not in OUTPUT_KINDS:
            raise ValueError(f"prediction kind must be one of {OUTPUT_KINDS}, got {self.kind!r}")
        v = np.asarray(self.values)
        if v.ndim != 2:
            raise ValueError(f"{self.model or 'prediction'}: values must be (H, W), got shape {v.shape}")
        self.values = v.astype(np.float32, copy=False)

    @property
    def shape(self) -> tuple[int, int]:
        return self.values.shape  # type: ignore[return-value]


@dataclass
class MetricDepthInfo:
    """How a metric depth map was obtained.

    Attributes:
        model: estimator name.
        kind: the estimator's raw output kind.
        alignment: the scale/shift fit to the anchors, or None when the output was used as is.
        valid_fraction: fraction of pixels with a positive finite metric depth.
    """

    model: str
    kind: str
    alignment: AlignmentResult | None
    valid_fraction: float


def check_image_camera(rgb: np.ndarray, camera: Camera, where: str = "depth estimator") -> None:
    """Raise ValueError unless ``rgb`` is an (H, W, 3) uint8 image of ``camera``'s size."""
    if not isinstance(rgb, np.ndarray) or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"{where}: rgb must be an (H, W, 3) array, got {getattr(rgb, 'shape', type(rgb))}")
    if rgb.dtype != np.uint8:
        raise ValueError(f"{where}: rgb must be uint8, got {rgb.dtype}")
    if rgb.shape[:2] != camera.shape:
        raise ValueError(
            f"{where}: image is {rgb.shape[1]}x{rgb.shape[0]} but the camera is {camera.width}x{camera.height}; "
            f"resize the camera with Camera.resized()/scaled() to match the image"
        )


class DepthEstimator(ABC):
    """A monocular depth model.

    Subclasses set ``name`` and ``output_kind`` and implement :meth:`_predict`; the
    public :meth:`predict` validates inputs and outputs around it.
    """

    name: str = "depth"
    output_kind: str = "metric"

    @abstractmethod
    def _predict(self, rgb: np.ndarray, camera: Camera) -> np.ndarray:
        """(H, W) float32 prediction of ``output_kind`` for a validated image."""

    def predict(self, rgb: np.ndarray, camera: Camera) -> DepthPrediction:
        """Predict depth for one image.

        Args:
            rgb: (H, W, 3) uint8 colour image.
            camera: its intrinsics (same size as ``rgb``).
        Returns:
            A :class:`DepthPrediction` of shape (H, W) and kind ``output_kind``.
        """
        check_image_camera(rgb, camera, self.name)
        values = np.asarray(self._predict(rgb, camera), dtype=np.float32)
        if values.shape != camera.shape:
            raise RuntimeError(f"{self.name}: produced shape {values.shape}, expected {camera.shape}")
        return DepthPrediction(values, self.output_kind, self.name)

    def estimate_metric(
        self,
        rgb: np.ndarray,
        camera: Camera,
        anchors: np.ndarray | None = None,
        *,
        align_metric: bool = False,
        **align_options,
    ) -> tuple[np.ndarray, MetricDepthInfo]:
        """Metric depth for one image, aligning relative outputs to anchors.

        Args:
            rgb: (H, W, 3) uint8 colour image.
            camera: its intrinsics.
            anchors: (H, W) float32 metric depth at anchor pixels (sensor depth,
                map raycast, :func:`~mapping.depth.align.anchors_from_points`), 0 elsewhere.
            align_metric: also fit scale and shift for a metric model (when anchors exist).
            **align_options: passed to :func:`~mapping.depth.align.fit_scale_shift`.
        Returns:
            depth_m: (H, W) float32 metres, 0 = invalid; and a :class:`MetricDepthInfo`.
        Raises:
            MetricDepthError: a relative model without anchors, or anchors that cannot
                be fitted (too few, all invalid, inconsistent).
        """
        pred = self.predict(rgb, camera)
        if anchors is not None:
            anchors = np.asarray(anchors, dtype=np.float32)
            if anchors.shape != camera.shape:
                raise ValueError(f"{self.name}: anchors shape {anchors.shape} does not match camera {camera.shape}")
        if pred.kind == "metric" and not (align_metric and anchors is not None):
            depth = np.where(np.isfinite(pred.values) & (pred.values > 0), pred.values, 0.0).astype(np.float32)
            return depth, MetricDepthInfo(self.name, pred.kind, None, float((depth > 0).mean()))
        if anchors is None:
            raise MetricDepthError(
                f"{self.name} outputs {pred.kind.replace('_', ' ')} depth, which has no metric scale: pass anchors "
                f"(sensor depth pixels or projected map points) to align it, or use a metric model "
                f"(e.g. Depth Anything V2 metric, ZoeDepth, or wrap a model in CanonicalCameraEstimator)"
            )
        try:
            depth, result = align_to_anchors(pred.values, pred.kind, anchors, **align_options)
        except AlignmentError as e:
            raise MetricDepthError(f"{self.name}: cannot align {pred.kind} prediction to anchors: {e}") from e
        if result.inlier_fraction < 0.5:
            warnings.warn(
                f"{self.name}: only {100 * result.inlier_fraction:.0f} % of {result.num_anchors} anchors agree with "
                f"the aligned prediction; check the anchors (pose, registration) and the model's output kind",
                stacklevel=2,
            )
        return depth, MetricDepthInfo(self.name, pred.kind, result, float((depth > 0).mean()))
