"""Robust scale/shift alignment of relative depth to metric anchors."""

from __future__ import annotations

import numpy as np
import pytest

from mapping.depth import (
    AlignmentError,
    align_to_anchors,
    anchors_from_points,
    fit_scale_shift,
)
from sensors import Camera


def synthetic(space: str, scale: float, shift: float, n: int = 5000, outliers: float = 0.3, noise: float = 0.0, seed=0):
    """Relative predictions p and metric anchors d with d (or 1/d) = scale * p + shift on the inliers."""
    rng = np.random.default_rng(seed)
    d_true = rng.uniform(0.5, 6.0, n)
    y = d_true if space == "depth" else 1.0 / d_true
    p = (y - shift) / scale
    d = d_true * (1.0 + noise * rng.standard_normal(n))
    bad = rng.random(n) < outliers
    d[bad] = rng.uniform(0.3, 10.0, bad.sum())  # wrong anchors (e.g. mismatched map points)
    return p, d, bad


@pytest.mark.parametrize("space, scale, shift", [("depth", 2.5, 0.7), ("inverse_depth", 0.8, 0.05)])
@pytest.mark.parametrize("robust", ["ransac", "irls"])
def test_recovers_scale_shift_with_30pct_outliers(space, scale, shift, robust):
    p, d, bad = synthetic(space, scale, shift, noise=0.005)
    r = fit_scale_shift(p, d, space=space, robust=robust)
    assert abs(r.scale / scale - 1) < 0.01, r
    assert abs(r.shift - shift) < 0.01 * abs(shift), r
    # the consensus is the true inlier set, give or take outliers that happen to agree
    assert r.inliers[~bad].mean() > 0.99
    assert r.inliers[bad].mean() < 0.1
    assert r.residual_rms < 0.01 and r.abs_rel < 0.01


def test_exact_data_exact_fit():
    p, d, _ = synthetic("depth", 1.7, -0.2, outliers=0.0)
    r = fit_scale_shift(p, d, robust="none")
    assert r.scale == pytest.approx(1.7, rel=1e-9) and r.shift == pytest.approx(-0.2, abs=1e-9)
    assert r.residual_rms < 1e-9 and r.num_inliers == r.num_anchors == len(p)


def test_plain_least_squares_is_broken_by_outliers():
    """Reference: without robustness the same data gives a visibly wrong fit."""
    p, d, _ = synthetic("depth", 2.5, 0.7)
    r = fit_scale_shift(p, d, robust="none")
    assert abs(r.scale / 2.5 - 1) > 0.05 or abs(r.shift - 0.7) > 0.05


def test_scale_only():
    p, d, _ = synthetic("depth", 3.0, 0.0)
    r = fit_scale_shift(p, d, with_shift=False)
    assert r.shift == 0.0 and abs(r.scale / 3.0 - 1) < 1e-3


def test_guard_min_anchors():
    p, d, _ = synthetic("depth", 2.0, 0.1, n=10, outliers=0.0)
    with pytest.raises(AlignmentError, match="only 10 valid anchors"):
        fit_scale_shift(p, d, min_anchors=20)


def test_guard_all_invalid_anchors():
    p = np.linspace(1, 2, 100)
    with pytest.raises(AlignmentError, match="only 0 valid anchors"):
        fit_scale_shift(p, np.zeros(100))
    with pytest.raises(AlignmentError, match="only 0 valid anchors"):
        fit_scale_shift(p, np.full(100, np.nan))


def test_guard_scale_bounds_and_wrong_ordering():
    p, d, _ = synthetic("depth", 2.0, 0.1, outliers=0.0)
    with pytest.raises(AlignmentError, match="outside the allowed bounds"):
        fit_scale_shift(p, d, robust="none", scale_bounds=(0.1, 1.5))
    # inverse depth treated as depth: the best fit has a negative scale -> refused
    with pytest.raises(AlignmentError, match="bounds|no scale"):
        fit_scale_shift(1.0 / d, d, space="depth", robust="none")


def test_guard_no_consensus():
    rng = np.random.default_rng(1)
    p, d = rng.uniform(1, 2, 500), rng.uniform(0.5, 8, 500)
    with pytest.raises(AlignmentError):
        fit_scale_shift(p, d, inlier_tol=0.01, min_inlier_fraction=0.5)


def test_align_to_anchors_dense_inverse():
    h, w = 48, 64
    rng = np.random.default_rng(2)
    depth = rng.uniform(1.0, 4.0, (h, w)).astype(np.float32)
    disp = (1.0 / depth - 0.1) / 0.5  # relative inverse depth
    anchors = np.where(rng.random((h, w)) < 0.2, depth, 0).astype(np.float32)
    out, r = align_to_anchors(disp, "relative_inverse", anchors)
    assert r.space == "inverse_depth" and r.num_anchors == int((anchors > 0).sum())
    np.testing.assert_allclose(out, depth, rtol=1e-4)
    with pytest.raises(ValueError, match="shape"):
        align_to_anchors(disp, "relative_inverse", anchors[:10])


def test_to_metric_marks_non_positive_inverse_depth_invalid():
    p, d, _ = synthetic("inverse_depth", 1.0, 0.0, outliers=0.0)
    r = fit_scale_shift(p, d, space="inverse_depth")
    out = r.to_metric(np.array([-1.0, 0.0, 0.5]))
    assert out[0] == 0 and out[1] == 0 and out[2] == pytest.approx(2.0, rel=1e-6)


def test_anchors_from_points_zbuffer():
    cam = Camera(100.0, 100.0, 31.5, 23.5, 64, 48)
    T = np.eye(4)
    T[:3, 3] = [0.0, 0.0, -1.0]  # camera 1 m behind the world origin
    pts = np.array([[0.0, 0.0, 1.0], [0.0, 0.0, 0.5], [0.1, 0.0, 2.0], [0.0, 0.0, -2.0]])
    a = anchors_from_points(pts, cam, T)
    uv, _ = cam.project(np.array([[0.0, 0.0, 2.0]]))
    u, v = np.round(uv[0]).astype(int)
    assert a[v, u] == pytest.approx(1.5)  # nearer of the two points on the axis
    uv2, _ = cam.project(np.array([[0.1, 0.0, 3.0]]))
    u2, v2 = np.round(uv2[0]).astype(int)
    assert a[v2, u2] == pytest.approx(3.0)
    assert (a > 0).sum() == 2  # the point behind the camera is dropped
