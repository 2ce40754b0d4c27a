"""Monocular-depth evaluation folders in the Metric3D demo layout (NYU Depth v2, KITTI samples).

Layout::

    test_annotations.json   {"files": [{"rgb": ".../rgb/rgb_00000.jpg",
                                        "depth": ".../depth/sync_depth_00000.png",
                                        "depth_scale": 1000.0,
                                        "cam_in": [fx, fy, cx, cy]}, ...]}
    rgb/...                 colour images (8-bit)
    depth/...               uint16 depth, ``depth_m = raw / depth_scale`` (NYU 1000, KITTI 256); 0 = invalid

Paths in the annotation file are relative to the Metric3D repository (``data/nyu_demo/rgb/...``);
they are resolved below this folder by their part after the folder's own name, else by
the last two components (``rgb/<file>``). Frames have no pose (``T_world_cam = None``);
each carries its own camera from ``cam_in`` (a source-wide ``camera`` only when all
agree). ``Frame.name`` is the colour file, ``Frame.origin.dataset`` the dataset key of
``eval.depth_metrics.DEPTH_CAPS`` ("nyu" or "kitti", from the folder name or, failing that, the
depth scale: 256 -> "kitti", else "nyu"). KITTI ground truth is sparse (~20 % valid).
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath

from sensors.base import IndexedSource
from sensors.camera import Camera
from sensors.frame import Frame, FrameOrigin
from sensors.io import SourceError, check_same_size, image_size, read_depth_m, read_json, read_rgb

ANNOTATIONS_FILE = "test_annotations.json"

MAX_PLAUSIBLE_DEPTH_M = 200.0
"""Median valid depth above this means a wrong depth scale (KITTI reaches ~80 m)."""


def _dataset_key(folder: Path, depth_scale: float) -> str:
    name = folder.name.lower()
    for key in ("kitti", "nyu"):
        if key in name:
            return key
    return "kitti" if depth_scale == 256.0 else "nyu"


class MonoDepthSource(IndexedSource):
    """Images with metric ground-truth depth and per-image intrinsics (no poses)."""

    kind = "monodepth"
    has_poses = False

    def __init__(self, path: Path) -> None:
        """Read ``test_annotations.json`` in ``path``.

        Raises:
            SourceError: missing or malformed annotation file (the message names it and the entry).
        """
        self.path = Path(path)
        ann_path = self.path / ANNOTATIONS_FILE
        if not ann_path.is_file():
            raise SourceError(f"{self.path}: not a monodepth folder (no {ANNOTATIONS_FILE})")
        ann = read_json(ann_path)
        files = ann.get("files") if isinstance(ann, dict) else None
        if not isinstance(files, list) or not files:
            raise SourceError(f"{ann_path}: expected {{'files': [...]}} with at least one entry")
        # (colour path, depth path, depth scale, (fx, fy, cx, cy))
        self._items: list[tuple[Path, Path, float, tuple[float, float, float, float]]] = []
        for k, item in enumerate(files):
            try:
                rgb, depth = self._resolve(item["rgb"]), self._resolve(item["depth"])
                scale = float(item["depth_scale"])
                fx, fy, cx, cy = (float(v) for v in item["cam_in"][:4])
            except (KeyError, TypeError, ValueError) as e:
                raise SourceError(
                    f"{ann_path}: entry {k} needs 'rgb', 'depth', 'depth_scale' and 'cam_in' [fx, fy, cx, cy] ({e})"
                ) from e
            if not scale > 0 or not (fx > 0 and fy > 0):
                raise SourceError(f"{ann_path}: entry {k}: depth_scale and focal lengths must be positive")
            self._items.append((rgb, depth, scale, (fx, fy, cx, cy)))
        self.dataset = _dataset_key(self.path, self._items[0][2])
        intrinsics = {it[3] for it in self._items}
        self.camera = None
        if len(intrinsics) == 1:
            h, w = image_size(self._items[0][0])
            self.camera = Camera(*self._items[0][3], w, h)

    def _resolve(self, rel: str) -> Path:
        parts = PurePosixPath(str(rel)).parts
        if self.path.name in parts:
            candidate = self.path.joinpath(*parts[parts.index(self.path.name) + 1 :])
            if candidate.exists():
                return candidate
        candidate = self.path.joinpath(*parts[-2:])
        return candidate if candidate.exists() else self.path / rel

    def __len__(self) -> int:
        return len(self._items)

    def load(self, i: int) -> Frame:
        """Image ``i`` with its metric depth and camera (no pose)."""
        rgb_path, depth_path, scale, (fx, fy, cx, cy) = self._items[i]
        rgb = read_rgb(rgb_path)
        depth_m = read_depth_m(depth_path, scale, (0,), max_plausible_m=MAX_PLAUSIBLE_DEPTH_M)
        check_same_size(rgb, depth_m, rgb_path, depth_path)
        camera = Camera(fx, fy, cx, cy, rgb.shape[1], rgb.shape[0])
        return Frame(
            rgb=rgb,
            depth=depth_m,
            camera=camera,
            T_world_cam=None,
            timestamp=float(i),
            index=i,
            depth_source="sensor",
            name=str(rgb_path),
            origin=FrameOrigin(dataset=self.dataset),
        )

    @classmethod
    def detect(cls, path: Path) -> bool:
        """True for a folder holding ``test_annotations.json``."""
        return (Path(path) / ANNOTATIONS_FILE).is_file()
