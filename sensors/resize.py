"""Image and map resizing: one module, one convention.

Every function takes the target size as ``size_hw = (height, width)`` in pixels, the order
of ``ndarray.shape`` and :attr:`sensors.Camera.shape`, and maps pixel centres as
``u' = (u + 0.5) * s - 0.5`` (the convention of :meth:`sensors.Camera.scaled`).

- :func:`resize_rgb`: (H, W, 3) uint8 colour, PIL ("bilinear": antialiased when shrinking;
  "area": box average, for downscaling by integer-ish factors);
- :func:`resize_map`: (H, W) float maps (depth, disparity, confidence), torch
  ``interpolate`` without antialiasing (``align_corners=False``), "bilinear" or "nearest";
- :func:`resize_nearest`: any (H, W, ...) array (labels, depth that must not blend across
  edges) sampled at the target pixel centres.
"""

from __future__ import annotations

import numpy as np

RGB_MODES = ("bilinear", "area")
"""``resize_rgb`` modes: PIL ``BILINEAR`` (antialiased) and ``BOX`` (area average)."""


def _size_hw(size_hw: tuple[int, int], what: str) -> tuple[int, int]:
    h, w = (int(size_hw[0]), int(size_hw[1]))
    if h < 1 or w < 1:
        raise ValueError(f"{what}: target size (height, width) must be positive, got {tuple(size_hw)}")
    return h, w


def resize_rgb(rgb: np.ndarray, size_hw: tuple[int, int], mode: str = "bilinear") -> np.ndarray:
    """(H, W, 3) uint8 -> (h, w, 3) uint8 with PIL; returns ``rgb`` itself when already that size.

    Args:
        rgb: (H, W, 3) uint8 colour image.
        size_hw: target (height, width), pixels.
        mode: "bilinear" (antialiased bilinear: area-weighted when shrinking) or "area"
            (box filter: each target pixel the mean of the source pixels it covers).
    """
    from PIL import Image

    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"resize_rgb expects (H, W, 3), got {rgb.shape}")
    if mode not in RGB_MODES:
        raise ValueError(f"resize_rgb: unknown mode {mode!r}; known: {', '.join(RGB_MODES)}")
    h, w = _size_hw(size_hw, "resize_rgb")
    if rgb.shape[:2] == (h, w):
        return rgb
    resample = Image.Resampling.BILINEAR if mode == "bilinear" else Image.Resampling.BOX
    im = Image.fromarray(np.ascontiguousarray(rgb)).resize((w, h), resample)
    return np.asarray(im, dtype=np.uint8).copy()


def resize_map(values: np.ndarray, size_hw: tuple[int, int], mode: str = "bilinear") -> np.ndarray:
    """Resize a single-channel float map (depth, inverse depth, confidence).

    Args:
        values: (h, w) float array, in whatever space it is defined (resize it in the
            space where it is smooth: a disparity map as disparity, a depth map as depth).
        size_hw: target (H, W).
        mode: "bilinear" or "nearest".
    Returns:
        (H, W) float32 (a copy, also when the size is unchanged).
    """
    import torch
    import torch.nn.functional as F

    values = np.asarray(values, dtype=np.float32)
    if values.ndim != 2:
        raise ValueError(f"resize_map expects an (h, w) map, got shape {values.shape}")
    size_hw = _size_hw(size_hw, "resize_map")
    if values.shape == size_hw:
        return values.copy()
    t = torch.from_numpy(np.ascontiguousarray(values))[None, None]
    kwargs = {"align_corners": False} if mode == "bilinear" else {}
    out = F.interpolate(t, size=size_hw, mode=mode, **kwargs)
    return out[0, 0].numpy().astype(np.float32)


def resize_nearest(image: np.ndarray, size_hw: tuple[int, int]) -> np.ndarray:
    """(H, W, ...) array sampled at the pixel centres of an (h, w) grid covering it.

    Target pixel (v, u) takes the source pixel that contains its centre,
    ``floor((u + 0.5) * W / w)`` (and likewise for rows); values are never blended.
    """
    H, W = image.shape[:2]
    h, w = _size_hw(size_hw, "resize_nearest")
    rows = np.clip(((np.arange(h) + 0.5) * H / h).astype(np.int64), 0, H - 1)
    cols = np.clip(((np.arange(w) + 0.5) * W / w).astype(np.int64), 0, W - 1)
    return image[rows][:, cols]
