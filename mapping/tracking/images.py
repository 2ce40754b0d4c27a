"""Reduced-resolution RGB-D images for alignment, and their Open3D tensor form.

Downsampling is by an integer factor f with block averaging, so the reduced camera is
``camera.scaled(1 / f)`` exactly (pixel-centre convention, docs/conventions.md). Depth
blocks that straddle a depth discontinuity are set invalid rather than averaged,
which would create surfaces that do not exist.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sensors.camera import Camera

DEPTH_BLOCK_MAX_STEP_M = 0.05
"""A depth block whose valid values span more than this (metres) is set invalid when downsampled."""


def crop_to_multiple(image: np.ndarray, factor: int) -> np.ndarray:
    """Crop the bottom rows / right columns so height and width are multiples of ``factor``.

    Cropping at the bottom-right keeps the principal point, so the camera only changes size.
    """
    h, w = image.shape[:2]
    return image[: h - h % factor, : w - w % factor]


def reduced_camera(camera: Camera, factor: int) -> Camera:
    """Camera of an image cropped to a multiple of ``factor`` and block-averaged by it."""
    if factor == 1:
        return camera
    cropped = Camera(camera.fx, camera.fy, camera.cx, camera.cy,
                     camera.width - camera.width % factor, camera.height - camera.height % factor)
    return cropped.scaled(1.0 / factor)


def _block_reduce(image: np.ndarray, factor: int, op: np.ufunc, dtype=None) -> np.ndarray:
    """``op`` (a binary ufunc: add, maximum, minimum) over each f x f block of an image cropped to a
    multiple of f: (H // f, W // f, ...), accumulated over the f^2 strided sub-grids in place."""
    image = crop_to_multiple(image, factor)
    out = np.array(image[0::factor, 0::factor], dtype=dtype or image.dtype)
    for i in range(factor):
        for j in range(factor):
            if i or j:
                op(out, image[i::factor, j::factor], out=out)
    return out


def downsample_depth(depth_m: np.ndarray, factor: int, max_step_m: float = DEPTH_BLOCK_MAX_STEP_M) -> np.ndarray:
    """Block-average a depth image, ignoring invalid pixels and dropping discontinuous blocks.

    Args:
        depth_m: (H, W) depth in metres, 0 or non-finite = invalid.
        factor: integer block size f.
        max_step_m: blocks whose valid depths span more than this become invalid.
    Returns:
        (H // f, W // f) float32 depth in metres, 0 = invalid.
    """
    d = np.asarray(depth_m, dtype=np.float32)
    d = np.where((d > 0) & (d < np.inf), d, np.float32(0.0))  # NaN compares False: invalid
    if factor == 1:
        return d
    count = _block_reduce(d > 0, factor, np.add, np.int32)
    mean = _block_reduce(d, factor, np.add) / np.maximum(count, 1)
    hi = _block_reduce(d, factor, np.maximum)
    lo = _block_reduce(np.where(d > 0, d, np.float32(np.inf)), factor, np.minimum)
    keep = (count > 0) & (hi - lo <= max_step_m)
    return np.where(keep, mean, 0.0).astype(np.float32)


def downsample_rgb(rgb: np.ndarray, factor: int) -> np.ndarray:
    """(H, W, 3) uint8 -> (H // f, W // f, 3) float32 in [0, 1], block-averaged."""
    if factor == 1:
        return np.asarray(rgb, dtype=np.float32) / 255.0
    total = _block_reduce(np.asarray(rgb), factor, np.add, np.float32)
    return total * np.float32(1.0 / (255.0 * factor * factor))


def clip_depth(depth_m: np.ndarray, depth_min_m: float, depth_max_m: float) -> np.ndarray:
    """Depth with values outside [depth_min_m, depth_max_m] (and non-finite) set to 0."""
    d = np.asarray(depth_m, dtype=np.float32)
    return np.where((d >= depth_min_m) & (d <= depth_max_m), d, np.float32(0.0))  # NaN compares False


def valid_fraction(depth_m: np.ndarray) -> float:
    """Fraction of pixels with depth > 0."""
    return float(np.count_nonzero(depth_m > 0)) / max(depth_m.size, 1)


@dataclass
class AlignImage:
    """One reduced RGB-D image ready for Open3D odometry.

    Attributes:
        depth_m: (h, w) float32 metres along the optical axis, 0 = invalid.
        camera: intrinsics of the reduced image.
        color: (h, w, 3) float32 RGB in [0, 1], or None when only geometry is aligned.
    """

    depth_m: np.ndarray
    camera: Camera
    color: np.ndarray | None = None

    @property
    def valid_fraction(self) -> float:
        return valid_fraction(self.depth_m)

    def o3d_rgbd(self, device: str = "CPU:0"):
        """``open3d.t.geometry.RGBDImage`` on Open3D ``device`` (colour (h, w, 3) float32, zeros if absent;
        depth (h, w, 1) metres)."""
        import open3d as o3d

        o3c = o3d.core
        dev = o3c.Device(device)
        rgb = self.color if self.color is not None else np.zeros(self.depth_m.shape + (3,), np.float32)
        color = o3d.t.geometry.Image(o3c.Tensor(np.ascontiguousarray(rgb, dtype=np.float32), device=dev))
        depth = o3d.t.geometry.Image(o3c.Tensor(np.ascontiguousarray(self.depth_m[..., None], dtype=np.float32), device=dev))
        return o3d.t.geometry.RGBDImage(color, depth)


def prepare_frame_image(
    rgb: np.ndarray,
    depth_m: np.ndarray,
    camera: Camera,
    factor: int,
    depth_min_m: float,
    depth_max_m: float,
    with_color: bool = True,
) -> AlignImage:
    """Reduce a frame's (H, W) metric depth (and (H, W, 3) uint8 colour if ``with_color``) by ``factor``."""
    depth = downsample_depth(clip_depth(depth_m, depth_min_m, depth_max_m), factor)
    color = downsample_rgb(rgb, factor) if with_color else None
    return AlignImage(depth, reduced_camera(camera, factor), color)
