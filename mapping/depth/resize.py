"""Image and depth resizing for depth models (torch ``interpolate``; pixel-centre aligned).

All resizes use ``align_corners=False``, which maps pixel centres as
``u' = (u + 0.5) * s - 0.5``, the convention of :meth:`sensors.Camera.scaled`.
"""

from __future__ import annotations

import numpy as np


def resize_map(values: np.ndarray, size_hw: tuple[int, int], mode: str = "bilinear") -> np.ndarray:
    """Resize a single-channel map (depth, inverse depth, confidence).

    Args:
        values: (h, w) float array, in whatever space it is defined (resize it in the
            space where it is smooth: a disparity map as disparity, a depth map as depth).
        size_hw: target (H, W).
        mode: "bilinear" or "nearest".
    Returns:
        (H, W) float32.
    """
    import torch
    import torch.nn.functional as F

    values = np.asarray(values, dtype=np.float32)
    if values.ndim != 2:
        raise ValueError(f"resize_map expects an (h, w) map, got shape {values.shape}")
    if values.shape == tuple(size_hw):
        return values.copy()
    t = torch.from_numpy(np.ascontiguousarray(values))[None, None]
    kwargs = {"align_corners": False} if mode == "bilinear" else {}
    out = F.interpolate(t, size=tuple(int(s) for s in size_hw), mode=mode, **kwargs)
    return out[0, 0].numpy().astype(np.float32)


def resize_rgb(rgb: np.ndarray, size_hw: tuple[int, int]) -> np.ndarray:
    """Resize an (H, W, 3) uint8 image to ``size_hw``; area averaging when shrinking, bilinear when growing.

    Area averaging is the anti-aliased choice for downscaling (it preserves the
    image integral); per axis, the mode follows the larger of the two factors.
    Returns (H', W', 3) uint8 (rounded).
    """
    import torch
    import torch.nn.functional as F

    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"resize_rgb expects (H, W, 3), got {rgb.shape}")
    size_hw = (int(size_hw[0]), int(size_hw[1]))
    if rgb.shape[:2] == size_hw:
        return rgb.copy()
    t = torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1)[None].float()
    shrinking = size_hw[0] <= rgb.shape[0] and size_hw[1] <= rgb.shape[1]
    if shrinking:
        out = F.interpolate(t, size=size_hw, mode="area")
    else:
        out = F.interpolate(t, size=size_hw, mode="bilinear", align_corners=False)
    return out[0].permute(1, 2, 0).round().clamp(0, 255).to(torch.uint8).numpy()
