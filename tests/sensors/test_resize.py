"""sensors.resize: one (height, width) convention, known answers per mode."""

from __future__ import annotations

import numpy as np
import pytest

from sensors.resize import resize_map, resize_nearest, resize_rgb


def _ramp(h: int, w: int) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)


def test_size_is_height_width_for_every_function():
    rgb = _ramp(12, 20)
    assert resize_rgb(rgb, (6, 10)).shape == (6, 10, 3)
    assert resize_rgb(rgb, (6, 10), mode="area").shape == (6, 10, 3)
    assert resize_map(rgb[..., 0].astype(np.float32), (3, 5)).shape == (3, 5)
    assert resize_nearest(rgb, (4, 5)).shape == (4, 5, 3)


def test_area_is_the_block_mean_for_integer_factors():
    rgb = _ramp(8, 12)
    out = resize_rgb(rgb, (4, 6), mode="area").astype(np.float64)
    ref = rgb.reshape(4, 2, 6, 2, 3).astype(np.float64).mean(axis=(1, 3))
    assert np.abs(out - ref).max() <= 1.0  # PIL fixed-point rounding only


def test_nearest_takes_the_pixel_containing_each_centre():
    img = np.arange(6 * 9).reshape(6, 9)
    out = resize_nearest(img, (2, 3))  # factor 3: centres fall in source pixels 1, 4, 7
    np.testing.assert_array_equal(out, img[[1, 4]][:, [1, 4, 7]])


def test_same_size_and_constant_maps():
    rgb = _ramp(5, 7)
    assert resize_rgb(rgb, (5, 7)) is rgb
    const = np.full((9, 13), 2.5, np.float32)
    np.testing.assert_allclose(resize_map(const, (4, 6)), 2.5, atol=1e-6)
    np.testing.assert_allclose(resize_map(const, (20, 30), mode="nearest"), 2.5)


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="mode"):
        resize_rgb(_ramp(4, 4), (2, 2), mode="cubic")
    with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
        resize_rgb(np.zeros((4, 4), np.uint8), (2, 2))
    with pytest.raises(ValueError, match="positive"):
        resize_nearest(np.zeros((4, 4)), (0, 2))
