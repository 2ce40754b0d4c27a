"""Canonical camera (Metric3D): exact metric recovery under a focal change."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mapping.depth import CanonicalCameraEstimator, DepthEstimator
from sensors import Camera

F_CANONICAL = 1000.0
# intensity code -> physical side length of a square object (m)
CATALOGUE = {255: 0.10, 200: 0.05}


class ApparentSizeEstimator(DepthEstimator):
    """A 'network' trained at focal F_CANONICAL: depth from the apparent size of known objects.

    An object of side S covering a pixels (square pixels assumed) is at Z = f_c * S / sqrt(a).
    Pixels of each object get its depth; the rest 0.
    """

    name = "apparent-size"
    output_kind = "metric"

    def _predict(self, rgb: np.ndarray, camera: Camera) -> np.ndarray:
        out = np.zeros(camera.shape, np.float32)
        for code, side_m in CATALOGUE.items():
            obj = rgb[..., 0] == code
            if obj.any():
                out[obj] = F_CANONICAL * side_m / math.sqrt(obj.sum())
        return out


def scene(fx: float, fy: float) -> tuple[np.ndarray, np.ndarray, Camera]:
    """Two fronto-parallel squares (0.10 m at 2.0 m, 0.05 m at 1.25 m) seen by a 640x480 camera."""
    cam = Camera(fx, fy, 319.5, 239.5, 640, 480)
    rgb = np.zeros((480, 640, 3), np.uint8)
    gt = np.zeros((480, 640), np.float32)
    for (u0, v0), code, z in (((100, 100), 255, 2.0), ((400, 300), 200, 1.25)):
        w = round(fx * CATALOGUE[code] / z)
        h = round(fy * CATALOGUE[code] / z)
        rgb[v0 : v0 + h, u0 : u0 + w] = code
        gt[v0 : v0 + h, u0 : u0 + w] = z
    return rgb, gt, cam


def interior(gt: np.ndarray, margin: int = 3) -> np.ndarray:
    from scipy.ndimage import binary_erosion

    return binary_erosion(gt > 0, iterations=margin)


def test_naive_model_is_wrong_by_focal_ratio():
    rgb, gt, cam = scene(2000.0, 2000.0)
    pred = ApparentSizeEstimator().predict(rgb, cam).values
    m = gt > 0
    np.testing.assert_allclose(pred[m], gt[m] * F_CANONICAL / 2000.0, rtol=1e-6)


@pytest.mark.parametrize(
    "mode, fx, fy",
    [
        ("resize", 2000.0, 2000.0),  # image shrunk by 2 (area averaging keeps object areas exact)
        ("resize", 2000.0, 1000.0),  # anisotropic pixels: x shrunk by 2, y kept
        ("rescale", 2000.0, 2000.0),
        ("rescale", 2000.0, 1000.0),
        ("rescale", 500.0, 500.0),  # focal below canonical
    ],
)
def test_canonical_recovers_depth_exactly(mode, fx, fy):
    """Resize mode runs the model at the canonical focal; rescale multiplies by f / f_c."""
    rgb, gt, cam = scene(fx, fy)
    est = CanonicalCameraEstimator(ApparentSizeEstimator(), canonical_focal_px=F_CANONICAL, mode=mode)
    depth = est.predict(rgb, cam).values
    m = interior(gt)
    assert m.sum() > 300
    np.testing.assert_allclose(depth[m], gt[m], rtol=1e-5, err_msg=f"mode={mode} fx={fx} fy={fy}")


def test_resize_mode_input_camera_is_canonical():
    est = CanonicalCameraEstimator(ApparentSizeEstimator(), canonical_focal_px=F_CANONICAL)
    cam_in = est.input_camera(Camera(2000.0, 1000.0, 319.5, 239.5, 640, 480))
    assert (cam_in.width, cam_in.height) == (320, 480)
    assert cam_in.fx == pytest.approx(F_CANONICAL) and cam_in.fy == pytest.approx(F_CANONICAL)
    assert est.decanonical_factor(cam_in) == pytest.approx(1.0)


def test_general_transform_with_capped_input_size():
    """An extra downscale (max_side_px) is compensated by Z = Z_c * f' / f_c."""
    rgb, gt, cam = scene(2000.0, 2000.0)
    est = CanonicalCameraEstimator(ApparentSizeEstimator(), F_CANONICAL, mode="resize", max_side_px=160)
    cam_in = est.input_camera(cam)
    assert (cam_in.width, cam_in.height) == (160, 120)
    assert est.decanonical_factor(cam_in) == pytest.approx(0.5)
    depth = est.predict(rgb, cam).values
    m = interior(gt, margin=6)
    np.testing.assert_allclose(depth[m], gt[m], rtol=1e-5)


def test_non_integer_resize_is_close():
    """7-Scenes-like focal (585 px): bilinear upsampling by 1.71 keeps the apparent area within ~1 %."""
    cam = Camera(585.0, 585.0, 319.5, 239.5, 640, 480)
    rgb = np.zeros((480, 640, 3), np.uint8)
    z = 0.5
    side = round(585.0 * CATALOGUE[255] / z)  # 117 px
    rgb[150 : 150 + side, 200 : 200 + side] = 255
    gt_z = 585.0 * CATALOGUE[255] / side  # depth consistent with the rounded square
    est = CanonicalCameraEstimator(ApparentSizeEstimator(), F_CANONICAL)
    depth = est.predict(rgb, cam).values
    inner = depth[160 : 140 + side, 210 : 190 + side]
    assert abs(np.median(inner) / gt_z - 1) < 0.01


def test_rejects_relative_inner_model():
    class Rel(ApparentSizeEstimator):
        output_kind = "relative"

    with pytest.raises(ValueError, match="metric at the canonical focal"):
        CanonicalCameraEstimator(Rel())
