"""Stored keyframe views of a map: downscaled colour + depth images with their cameras and poses.

``semmap map`` keeps them (stage ``views``, on by default with ``--encoder`` or with
``--save-views``) in ``<map>/views/``:

- ``views.json``: ``{"format_version": 1, "depth_scale": 1000.0, "views": [{"index",
  "frame_index", "timestamp", "rgb", "depth", "camera", "T_world_cam"}, ...]}`` where
  ``rgb`` / ``depth`` are file names in the folder, ``camera`` is
  :meth:`sensors.Camera.to_dict` of the stored (downscaled) images and ``T_world_cam``
  the 4x4 camera-to-world pose (row-major lists; OpenCV axes, metres);
- ``view_NNNN.jpg``: RGB, 8 bit; ``view_NNNN.depth.png``: uint16, ``depth_m * depth_scale``
  (millimetres), 0 = invalid, registered to the colour image (same camera).

The scene graph uses them to embed each object from its best views.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mapping.mapformat import NUMBER, MapFormatError, check_fields, check_format_version, check_list_of, read_json_file
from sensors.camera import Camera
from sensors.frame import check_pose
from sensors.resize import resize_nearest, resize_rgb

VIEWS_DIR = "views"
VIEWS_FILE = "views.json"
VIEWS_FORMAT_VERSION = 1
DEPTH_SCALE = 1000.0
"""Stored depth units per metre (millimetres)."""


def downscale_frame(rgb: np.ndarray, depth_m: np.ndarray, camera: Camera, width: int) -> tuple[np.ndarray, np.ndarray, Camera]:
    """Shrink a registered RGB-D pair to ``width`` pixels wide (aspect kept; never enlarged).

    Colour is resampled with PIL's antialiased bilinear filter; depth takes the source
    pixel containing each target pixel centre (no blending across depth edges); both via
    :mod:`sensors.resize`.

    Args:
        rgb: (H, W, 3) uint8; depth_m: (H, W) float32 metres (0 = invalid); camera: their intrinsics.
        width: target width in pixels.
    Returns:
        rgb (h, w, 3) uint8, depth (h, w) float32 metres, and the camera of the small images.
    """
    H, W = camera.shape
    if width >= W:
        return rgb, depth_m.astype(np.float32, copy=False), camera
    w = int(width)
    h = max(1, round(H * w / W))
    rgb_s = resize_rgb(rgb, (h, w))
    depth_s = resize_nearest(np.asarray(depth_m, np.float32), (h, w))
    return rgb_s, depth_s, camera.resized(w, h)


def encode_view(rgb: np.ndarray, depth_m: np.ndarray, jpeg_quality: int = 90) -> tuple[bytes, bytes]:
    """JPEG bytes of (h, w, 3) uint8 ``rgb`` and 16-bit PNG bytes of (h, w) ``depth_m`` in mm."""
    from PIL import Image

    b_rgb, b_depth = io.BytesIO(), io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgb)).save(b_rgb, format="JPEG", quality=int(jpeg_quality))
    d = np.nan_to_num(np.asarray(depth_m, np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    mm = np.clip(np.round(d * DEPTH_SCALE), 0, 65535).astype(np.uint16)
    Image.fromarray(mm).save(b_depth, format="PNG")
    return b_rgb.getvalue(), b_depth.getvalue()


@dataclass
class View:
    """One stored view.

    Attributes:
        index: position in the view set.
        camera: intrinsics of the stored images.
        T_world_cam: (4, 4) float64 camera-to-world pose.
        rgb_path, depth_path: the image files.
        frame_index, timestamp: the source frame it came from.
    """

    index: int
    camera: Camera
    T_world_cam: np.ndarray
    rgb_path: Path
    depth_path: Path
    frame_index: int = -1
    timestamp: float = 0.0
    _rgb: np.ndarray | None = field(default=None, repr=False)
    _depth: np.ndarray | None = field(default=None, repr=False)

    @property
    def rgb(self) -> np.ndarray:
        """(h, w, 3) uint8, read on first use."""
        if self._rgb is None:
            from sensors.io import read_rgb

            self._rgb = read_rgb(self.rgb_path)
            if self._rgb.shape[:2] != self.camera.shape:
                raise ValueError(f"{self.rgb_path}: size {self._rgb.shape[:2]} != camera {self.camera.shape}")
        return self._rgb

    @property
    def depth_m(self) -> np.ndarray:
        """(h, w) float32 metres (0 = invalid), read on first use."""
        if self._depth is None:
            from sensors.io import read_depth_raw

            raw = read_depth_raw(self.depth_path)
            if raw.shape != self.camera.shape:
                raise ValueError(f"{self.depth_path}: size {raw.shape} != camera {self.camera.shape}")
            self._depth = (raw.astype(np.float32) / DEPTH_SCALE).astype(np.float32)
        return self._depth


@dataclass
class EncodedView:
    """A view held in memory before it is written (the write side of :class:`View`).

    Attributes:
        rgb_jpeg: JPEG bytes of the (h, w, 3) colour image (:func:`encode_view`).
        depth_png: 16-bit PNG bytes of the (h, w) depth, millimetres (:func:`encode_view`).
        camera: intrinsics of the stored (downscaled) images.
        T_world_cam: (4, 4) float64 camera-to-world pose (replaced after a loop closure).
        frame_index, timestamp: the source frame it came from (``Frame.index``, seconds).
    """

    rgb_jpeg: bytes
    depth_png: bytes
    camera: Camera
    T_world_cam: np.ndarray
    frame_index: int
    timestamp: float

    @property
    def nbytes(self) -> int:
        """Encoded size of both images, bytes."""
        return len(self.rgb_jpeg) + len(self.depth_png)


def write_views(directory: Path, views: list[EncodedView]) -> list[str]:
    """Write encoded views into ``directory/views/``; returns the written paths relative to ``directory``.

    Args:
        directory: the (temporary) map directory.
        views: the views, in order (their position becomes ``View.index``).
    """
    out = Path(directory) / VIEWS_DIR
    out.mkdir(parents=True, exist_ok=True)
    entries, names = [], []
    for i, v in enumerate(views):
        rgb_name, depth_name = f"view_{i:04d}.jpg", f"view_{i:04d}.depth.png"
        (out / rgb_name).write_bytes(v.rgb_jpeg)
        (out / depth_name).write_bytes(v.depth_png)
        names += [f"{VIEWS_DIR}/{rgb_name}", f"{VIEWS_DIR}/{depth_name}"]
        entries.append(
            {
                "index": i,
                "frame_index": int(v.frame_index),
                "timestamp": float(v.timestamp),
                "rgb": rgb_name,
                "depth": depth_name,
                "camera": v.camera.to_dict(),
                "T_world_cam": np.asarray(v.T_world_cam, dtype=np.float64).tolist(),
            }
        )
    meta = {"format_version": VIEWS_FORMAT_VERSION, "depth_scale": DEPTH_SCALE, "views": entries}
    (out / VIEWS_FILE).write_text(json.dumps(meta, indent=1))
    return [f"{VIEWS_DIR}/{VIEWS_FILE}", *names]


VIEW_FIELDS = {"index": int, "rgb": str, "depth": str, "camera": dict, "T_world_cam": list}
"""The fields of each entry of ``views.json``."""


def load_views(map_dir: Path | str) -> list[View]:
    """The views stored in a map directory ([] when it has none).

    Raises:
        MapFormatError: ``views.json`` exists but does not parse, is of another format
            version, has an entry with missing or mistyped fields, an invalid pose or camera,
            or names a missing image (the message names the file).
    """
    folder = Path(map_dir) / VIEWS_DIR
    path = folder / VIEWS_FILE
    if not path.is_file():
        return []
    meta = read_json_file(path)
    check_format_version(meta, path, VIEWS_FORMAT_VERSION, "views")
    check_fields(meta, path, {"depth_scale": NUMBER, "views": list})
    if float(meta["depth_scale"]) != DEPTH_SCALE:
        raise MapFormatError(path, f"depth_scale {meta['depth_scale']} (expected {DEPTH_SCALE})")
    check_list_of(meta["views"], path, "views", dict)
    views = []
    for i, e in enumerate(meta["views"]):
        check_fields(e, path, VIEW_FIELDS, f"views[{i}].")
        try:
            rgb_p, depth_p = folder / Path(e["rgb"]).name, folder / Path(e["depth"]).name
            T = check_pose(np.asarray(e["T_world_cam"], dtype=np.float64), f"{path}: view {e['index']}")
            cam = Camera.from_dict(e["camera"])
        except (KeyError, TypeError, ValueError) as err:
            raise MapFormatError(path, f"malformed view entry {i} ({err})") from None
        for p in (rgb_p, depth_p):
            if not p.is_file():
                raise MapFormatError(path, f"view {e['index']} names {p.name}, which is missing")
        views.append(
            View(len(views), cam, T, rgb_p, depth_p, int(e.get("frame_index", -1)), float(e.get("timestamp", 0.0)))
        )
    return views


def check_view_images(views: list[View]) -> None:
    """Decode every view's images once and check their sizes (MapFormatError naming the image)."""
    from sensors.io import SourceError

    for v in views:
        for path, read in ((v.rgb_path, lambda v=v: v.rgb), (v.depth_path, lambda v=v: v.depth_m)):
            try:
                read()
            except (SourceError, ValueError, OSError) as e:
                raise MapFormatError(path, str(e).removeprefix(f"{path}: ")) from None
