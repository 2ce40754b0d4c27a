"""Keyframes: what the tracker keeps of selected frames for recovery and loop closure.

Each keyframe holds its reduced RGB-D image (frame-to-frame fallback and
relocalisation at the tracking resolution; loop verification and pose-graph
information at the loop-closure resolution, a second image when the two differ), a global thumbnail
descriptor (loop and relocalisation candidates), and optionally the original
``Frame`` (re-integration after a loop closure).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mapping.keyframes import moved_enough
from mapping.tracking.config import TrackerConfig
from mapping.tracking.images import AlignImage, downsample_rgb, prepare_frame_image
from sensors.frame import Frame

DESCRIPTOR_GRID = (12, 16)
"""(rows, cols) of the depth and grey thumbnails that form the keyframe descriptor."""


def _block_means(values: np.ndarray, valid: np.ndarray, grid: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Mean of ``values`` over ``valid`` pixels in each cell of a ``grid``; returns (means, cell has data)."""
    rows = np.array_split(np.arange(values.shape[0]), grid[0])
    cols = np.array_split(np.arange(values.shape[1]), grid[1])
    means = np.zeros(grid, np.float64)
    has = np.zeros(grid, bool)
    for i, r in enumerate(rows):
        for j, c in enumerate(cols):
            v = valid[r[0] : r[-1] + 1, c[0] : c[-1] + 1]
            if v.any():
                means[i, j] = values[r[0] : r[-1] + 1, c[0] : c[-1] + 1][v].mean()
                has[i, j] = True
    return means, has


def _unit(x: np.ndarray) -> np.ndarray:
    x = x - x.mean()
    n = np.linalg.norm(x)
    return x / n if n > 1e-12 else np.zeros_like(x)


def thumbnail_descriptor(depth_m: np.ndarray, rgb: np.ndarray, grid: tuple[int, int] = DESCRIPTOR_GRID) -> np.ndarray:
    """Global descriptor of a view: zero-mean, unit-norm depth and grey thumbnails, concatenated.

    Depth cells without valid pixels take the mean valid depth so holes do not dominate.
    Args:
        depth_m: (h, w) depth in metres, 0 = invalid.
        rgb: (H, W, 3) colour of the same view (uint8, or float in [0, 1]; any resolution).
    Returns:
        (2 * rows * cols,) float32 with unit norm (zeros for an empty image); similarity
        of two views is the dot product (cosine similarity, in [-1, 1]).
    """
    valid = depth_m > 0
    depth, has = _block_means(depth_m, valid, grid)
    if has.any():
        depth[~has] = depth[has].mean()
    grey_img = np.asarray(rgb, dtype=np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    grey, _ = _block_means(grey_img, np.ones(grey_img.shape, bool), grid)
    d = np.concatenate([_unit(depth.ravel()), _unit(grey.ravel())]) / np.sqrt(2.0)
    return d.astype(np.float32)


@dataclass
class Keyframe:
    """A selected tracked frame.

    Attributes:
        frame_index: ``Frame.index`` of the frame.
        seq: position of the frame in the tracked sequence (0-based count of ``track`` calls).
        T_world_cam: (4, 4) float64 pose; tracked, then replaced by ``finalize`` after a loop closure.
        image: reduced depth image at the tracking resolution (frame-to-frame fallback, relocalisation;
            with colour for the "hybrid" loss).
        descriptor: (D,) float32 unit-norm thumbnail descriptor.
        frame: the original frame when ``TrackerConfig.keep_keyframe_frames``, else None.
        loop_image: the image loops are verified on (``LoopClosureConfig.downsample``); ``image``
            itself when the two factors agree.
    """

    frame_index: int
    seq: int
    T_world_cam: np.ndarray
    image: AlignImage
    descriptor: np.ndarray
    frame: Frame | None = None
    loop_image: AlignImage | None = None

    def __post_init__(self) -> None:
        if self.loop_image is None:
            self.loop_image = self.image


def make_keyframe(frame: Frame, seq: int, T_world_cam: np.ndarray, image: AlignImage, config: TrackerConfig) -> Keyframe:
    """Build a keyframe from a tracked frame and its reduced image.

    The reduced colour is kept only for the "hybrid" loss (about 0.9 MB per 320x240
    keyframe); the descriptor is computed from the frame's colour either way.
    """
    factor = config.factor_for(frame.camera.width)
    if config.uses_color and image.color is None:
        image = AlignImage(image.depth_m, image.camera, downsample_rgb(frame.rgb, factor))
    elif not config.uses_color and image.color is not None:
        image = AlignImage(image.depth_m, image.camera)
    loop_image = image
    loop_factor = config.loop_factor_for(frame.camera.width)
    if config.loop.enabled and loop_factor != factor:
        loop_image = prepare_frame_image(frame.rgb, frame.depth, frame.camera, loop_factor,
                                         config.depth_min_m, config.depth_max_m, with_color=config.uses_color)
    return Keyframe(
        frame_index=int(frame.index),
        seq=seq,
        T_world_cam=np.array(T_world_cam, dtype=np.float64),
        image=image,
        descriptor=thumbnail_descriptor(image.depth_m, frame.rgb),
        frame=frame if config.keep_keyframe_frames else None,
        loop_image=loop_image,
    )


def needs_keyframe(last: Keyframe | None, seq: int, T_world_cam: np.ndarray, config: TrackerConfig) -> bool:
    """True when a tracked frame should become a keyframe (first, every N frames, or moved enough)."""
    if last is None or seq - last.seq >= config.keyframe_every:
        return True
    return moved_enough(last.T_world_cam, T_world_cam, config.keyframe_translation_m, config.keyframe_rotation_deg)
