r"""Canonical camera space (Metric3D, Yin et al. ICCV 2023): metric depth across focal lengths.

Why: a pinhole camera with focal ``f`` (pixels) images an object of metric size
``S`` at depth ``Z`` with apparent size ``a = f S / Z`` pixels. A network trained on
images from one focal ``f_c`` (the *canonical* focal) learns ``Z = f_c S / a``;
given an image taken with another focal it answers

.. math::  Z_c = f_c S / a = (f_c / f) \, Z,

wrong by the factor ``f_c / f``. Two equivalent remedies:

1. **Resize the image** by ``s = f_c / f``: its focal becomes ``f s = f_c`` and the
   apparent size ``s a = f_c S / Z``, so the network sees a canonical image and
   predicts ``Z`` directly. Depth does not change under image resizing, so the
   prediction is resized back to the frame with unchanged values.
2. **Rescale the prediction** (no resize, ``s = 1``): ``Z = Z_c \, f / f_c``.

In general, for any input resize ``s`` (e.g. to fit the network's input size) the
de-canonical transform is

.. math::  Z = Z_c \, \frac{f s}{f_c},

which gives remedy 1 for ``s = f_c / f`` (factor 1) and remedy 2 for ``s = 1``.
Because image sizes are integers, the effective scale is ``s_x = W'/W``,
``s_y = H'/H`` and the effective focal ``f' = sqrt(fx s_x * fy s_y)`` (geometric mean;
the resize makes each axis' focal canonical separately, so anisotropic pixels
become square). The transform is then exactly ``Z = Z_c f' / f_c``.

Any estimator whose output is metric *at a canonical focal* can be wrapped; the
wrapper's output is metric for every camera.
"""

from __future__ import annotations

import math

import numpy as np

from mapping.depth.base import DepthEstimator
from sensors.resize import resize_map, resize_rgb
from sensors.camera import Camera

CANONICAL_MODES = ("resize", "rescale")


class CanonicalCameraEstimator(DepthEstimator):
    """Wrap a model trained at a canonical focal so that it is metric for any camera.

    Args:
        inner: an estimator whose output is metric for images with focal ``canonical_focal_px``.
        canonical_focal_px: the focal length (pixels) the inner model was trained at
            (Metric3D: 1000).
        mode: "resize" (resize the image so its focal is canonical; default) or
            "rescale" (keep the image, multiply the prediction by ``f / f_c``).
        max_side_px: in "resize" mode, cap the longer side of the resized image;
            the extra downscale is compensated exactly by the general transform.
    """

    output_kind = "metric"

    def __init__(
        self,
        inner: DepthEstimator,
        canonical_focal_px: float = 1000.0,
        mode: str = "resize",
        max_side_px: int | None = 2048,
    ) -> None:
        if inner.output_kind != "metric":
            raise ValueError(
                f"canonical camera needs a model that is metric at the canonical focal; {inner.name} outputs "
                f"{inner.output_kind} depth"
            )
        if not canonical_focal_px > 0:
            raise ValueError(f"canonical_focal_px must be positive, got {canonical_focal_px}")
        if mode not in CANONICAL_MODES:
            raise ValueError(f"mode must be one of {CANONICAL_MODES}, got {mode!r}")
        self.inner = inner
        self.canonical_focal_px = float(canonical_focal_px)
        self.mode = mode
        self.max_side_px = max_side_px
        self.name = f"canonical({inner.name}, f_c={self.canonical_focal_px:g})"

    def input_camera(self, camera: Camera) -> Camera:
        """The camera of the image handed to the inner model (size rounded to whole pixels)."""
        if self.mode == "rescale":
            return camera
        sx = self.canonical_focal_px / camera.fx
        sy = self.canonical_focal_px / camera.fy
        if self.max_side_px is not None:
            longest = max(camera.width * sx, camera.height * sy)
            if longest > self.max_side_px:
                k = self.max_side_px / longest
                sx, sy = sx * k, sy * k
        w = max(1, round(camera.width * sx))
        h = max(1, round(camera.height * sy))
        return camera.resized(w, h)

    def decanonical_factor(self, input_camera: Camera) -> float:
        """``f' / f_c``: multiply the inner model's prediction by this to get metres."""
        return math.sqrt(input_camera.fx * input_camera.fy) / self.canonical_focal_px

    def _predict(self, rgb: np.ndarray, camera: Camera) -> np.ndarray:
        cam_in = self.input_camera(camera)
        shrinking = cam_in.height <= camera.height and cam_in.width <= camera.width
        image = resize_rgb(rgb, cam_in.shape, mode="area" if shrinking else "bilinear")
        z_c = self.inner.predict(image, cam_in).values
        z = z_c.astype(np.float64) * self.decanonical_factor(cam_in)
        return resize_map(z.astype(np.float32), camera.shape)
