"""eval.depth_metrics: metric definitions against hand-computed values, alignment modes, caps, table."""

from __future__ import annotations

import math

import numpy as np
import pytest

from eval.depth_metrics import (
    DEPTH_CAPS,
    depth_metrics,
    format_depth_table,
    mean_metrics,
    random_blob_mask,
)


def test_perfect_prediction():
    gt = np.linspace(0.5, 5.0, 100).reshape(10, 10)
    m = depth_metrics(gt.copy(), gt)
    assert m.abs_rel == m.sq_rel == m.rmse == m.rmse_log == m.log10 == 0.0
    assert m.silog == pytest.approx(0.0, abs=1e-6)
    assert m.d1 == m.d2 == m.d3 == 1.0 and m.n_pixels == 100 and m.coverage == 1.0


def test_hand_computed_values():
    gt = np.array([[1.0, 2.0], [4.0, 0.0]])  # the 0 is invalid
    pred = np.array([[1.1, 1.0], [4.0, 7.0]])
    m = depth_metrics(pred, gt)
    assert m.n_pixels == 3
    assert m.abs_rel == pytest.approx((0.1 / 1 + 1.0 / 2 + 0) / 3)
    assert m.sq_rel == pytest.approx((0.01 / 1 + 1.0 / 2) / 3)
    assert m.rmse == pytest.approx(math.sqrt((0.01 + 1.0) / 3))
    e = np.log([1.1, 0.5, 1.0])
    assert m.rmse_log == pytest.approx(math.sqrt(np.mean(e**2)))
    assert m.silog == pytest.approx(100 * math.sqrt(np.mean(e**2) - np.mean(e) ** 2))
    assert m.log10 == pytest.approx(np.mean(np.abs(e)) / math.log(10))
    # ratios 1.1, 2.0, 1.0 -> below 1.25: 2 of 3; below 1.5625: 2; below 1.953: 2
    assert (m.d1, m.d2, m.d3) == pytest.approx((2 / 3, 2 / 3, 2 / 3))


def test_silog_is_scale_invariant_and_median_alignment():
    rng = np.random.default_rng(0)
    gt = rng.uniform(1, 5, (20, 20))
    pred = gt * (1 + 0.05 * rng.standard_normal(gt.shape))
    a, b = depth_metrics(pred, gt), depth_metrics(3.0 * pred, gt)
    assert a.silog == pytest.approx(b.silog, rel=1e-9)
    assert b.abs_rel > 1.0
    c = depth_metrics(3.0 * pred, gt, align="median")
    assert c.scale == pytest.approx(np.median(gt) / np.median(3 * pred))
    assert c.abs_rel == pytest.approx(depth_metrics(pred * 3 * c.scale, gt).abs_rel)


def test_lsq_alignment_modes():
    gt = np.linspace(1, 4, 200).reshape(10, 20)
    m = depth_metrics(0.5 * gt - 0.2, gt, align="lsq")
    assert m.scale == pytest.approx(2.0) and m.shift == pytest.approx(0.4)
    assert m.abs_rel == pytest.approx(0.0, abs=1e-9)
    disp = 3.0 / gt + 0.1
    mi = depth_metrics(disp, gt, align="lsq_inverse")
    assert mi.abs_rel == pytest.approx(0.0, abs=1e-9) and mi.scale == pytest.approx(1 / 3)


def test_caps_and_missing_predictions():
    gt = np.array([[0.5, 5.0, 12.0, 90.0]])
    pred = np.array([[0.5, 0.0, 12.0, 90.0]])
    nyu = depth_metrics(pred, gt, dataset="nyu")  # 12 m and 90 m are beyond the 10 m cap
    assert nyu.n_pixels == 2 and nyu.coverage == 0.5
    assert nyu.abs_rel == pytest.approx((0 + (5.0 - 1e-3) / 5.0) / 2)  # missing -> clipped to min depth
    kitti = depth_metrics(pred, gt, dataset="kitti")
    assert kitti.n_pixels == 3
    assert DEPTH_CAPS["nyu"][1] == 10.0 and DEPTH_CAPS["kitti"][1] == 80.0
    capped = depth_metrics(np.array([[20.0]]), np.array([[8.0]]), dataset="nyu")
    assert capped.abs_rel == pytest.approx(2.0 / 8.0)  # prediction clipped to the 10 m cap


def test_mask_and_errors():
    gt = np.ones((4, 4))
    mask = np.zeros((4, 4), bool)
    mask[0] = True
    assert depth_metrics(gt, gt, mask=mask).n_pixels == 4
    with pytest.raises(ValueError, match="does not match"):
        depth_metrics(gt[:2], gt)
    with pytest.raises(ValueError, match="no valid ground-truth"):
        depth_metrics(gt, np.zeros((4, 4)))
    with pytest.raises(ValueError, match="align must be one of"):
        depth_metrics(gt, gt, align="mean")
    with pytest.raises(ValueError, match="unknown dataset"):
        depth_metrics(gt, gt, dataset="mars")


def test_mean_and_table():
    gt = np.linspace(1, 2, 10)[None]
    a, b = depth_metrics(gt * 1.1, gt), depth_metrics(gt, gt)
    mean = mean_metrics([a, b])
    assert mean.abs_rel == pytest.approx(a.abs_rel / 2) and mean.n_pixels == 20
    table = format_depth_table({"scaled": a, "exact": b}, columns=("abs_rel", "d1", "n_pixels"))
    lines = table.splitlines()
    assert len(lines) == 4 and "abs_rel" in lines[0] and "0.1000" in lines[2] and lines[3].rstrip().endswith("10 |")
    with pytest.raises(ValueError, match="unknown columns"):
        format_depth_table({"a": a}, columns=("nope",))


def test_random_blob_mask_fraction_and_determinism():
    valid = np.ones((120, 160), bool)
    valid[:, :20] = False
    m = random_blob_mask(valid, 0.3, seed=3)
    assert not (m & ~valid).any()
    assert m.sum() == pytest.approx(0.3 * valid.sum(), rel=0.01)
    assert np.array_equal(m, random_blob_mask(valid, 0.3, seed=3))
    assert not np.array_equal(m, random_blob_mask(valid, 0.3, seed=4))
    from scipy.ndimage import label

    assert label(m)[1] < 60  # blobs, not salt-and-pepper
