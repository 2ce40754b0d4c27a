"""A generic RGB-D folder described by a ``semmap.json`` / ``semmap.yaml`` manifest.

Two manifest forms (paths relative to the manifest's folder)::

    # listed frames
    {"camera": {"fx": 525, "fy": 525, "cx": 319.5, "cy": 239.5, "width": 640, "height": 480},
     "depth_scale": 1000, "depth_invalid": [0],
     "frames": [{"rgb": "rgb/000000.png", "depth": "depth/000000.png",
                 "T_world_cam": [[...4 rows...]], "timestamp": 0.0, "depth_source": "sensor"}]}

    # patterns
    {"camera": {...}, "rgb": "rgb/*.png", "depth": "depth/*.png", "trajectory": "traj.tum"}

``camera`` needs fx, fy, cx, cy (pixels, pixel-centre convention); width/height default
to the first colour image's size. ``depth_scale`` is raw units per metre (default 1000),
``depth_invalid`` the raw values meaning "no depth" (default [0]). In a frame, only
``rgb`` is required. Patterns are globs sorted in natural order ("2.png" before
"10.png"); ``trajectory`` is any file ``sensors.trajectory_io.read_trajectory`` reads
(camera-to-world, one pose per colour image, its timestamps become the frame times).
Unknown keys are errors, so a misspelt key cannot be silently ignored.

``write_folder_sequence`` writes frames in this layout (atomically) and ``FolderSource``
reads them back: colour exactly, depth to 1/depth_scale, poses exactly.
Conventions: docs/conventions.md.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np

from sensors.atomic import atomic_directory
from sensors.base import IndexedSource
from sensors.camera import Camera
from sensors.frame import DEPTH_SOURCES_FIXED, Frame, check_pose
from sensors.io import SourceError, natural_key, image_size, read_rgbd
from sensors.trajectory_io import read_trajectory

MANIFEST_NAMES = ("semmap.json", "semmap.yaml", "semmap.yml")
MANIFEST_VERSION = 1
_TOP_KEYS = {
    "version", "camera", "depth_scale", "depth_invalid", "frames", "rgb", "depth", "trajectory", "trajectory_format"
}
_FRAME_KEYS = {"rgb", "depth", "T_world_cam", "timestamp", "depth_source"}
_CAMERA_KEYS = {"fx", "fy", "cx", "cy", "width", "height"}


@dataclass(frozen=True)
class FolderFrameEntry:
    """One frame of the manifest, paths resolved.

    Attributes:
        rgb_path: colour image; depth_path: depth image or None.
        T_world_cam: (4, 4) float64 camera-to-world or None.
        timestamp: seconds (or the frame index when the manifest gives none).
        depth_source: Frame.depth_source of the stored depth.
    """

    rgb_path: Path
    depth_path: Path | None
    T_world_cam: np.ndarray | None
    timestamp: float
    depth_source: str = "sensor"


def find_manifest(path: Path) -> Path | None:
    """The manifest file: ``path`` itself if it is one, else the first of MANIFEST_NAMES in it."""
    p = Path(path)
    if p.is_file():
        return p if p.name in MANIFEST_NAMES else None
    return next((p / n for n in MANIFEST_NAMES if (p / n).is_file()), None)


def read_manifest(path: Path) -> dict:
    """Parse a JSON or YAML manifest into a dict; SourceError names the file on bad syntax."""
    text = path.read_text()
    if path.suffix == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise SourceError(f"{path}: invalid JSON ({e})") from e
    else:
        import yaml

        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise SourceError(f"{path}: invalid YAML ({e})") from e
    if not isinstance(data, dict):
        raise SourceError(f"{path}: the manifest must be a mapping, got {type(data).__name__}")
    return data


def _number(value, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value):
        raise SourceError(f"{where} must be a finite number, got {value!r}")
    return float(value)


def _unknown_keys(d: dict, allowed: set[str], where: str) -> None:
    extra = sorted(set(d) - allowed)
    if extra:
        raise SourceError(f"{where}: unknown key(s) {extra}; allowed: {sorted(allowed)}")


def _pose(value, where: str) -> np.ndarray:
    try:
        T = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise SourceError(f"{where}: T_world_cam must be a 4x4 list of numbers ({e})") from e
    try:
        return check_pose(T, where)
    except ValueError as e:
        raise SourceError(str(e)) from e


class FolderSource(IndexedSource):
    """Frames of a folder described by a ``semmap.json`` / ``semmap.yaml`` manifest.

    Args:
        path: the folder holding the manifest, or the manifest file itself.

    Attributes:
        manifest: the manifest file.
        entries: one FolderFrameEntry per frame.
        depth_scale: raw depth units per metre; depth_invalid: raw "no depth" values.
    """

    kind = "folder"

    def __init__(self, path: Path) -> None:
        manifest = find_manifest(Path(path))
        if manifest is None:
            raise SourceError(f"{path}: no manifest ({' / '.join(MANIFEST_NAMES)})")
        self.manifest = manifest
        self.root = manifest.parent
        m = read_manifest(manifest)
        _unknown_keys(m, _TOP_KEYS, str(manifest))
        if "version" in m and m["version"] != MANIFEST_VERSION:
            raise SourceError(f"{manifest}: manifest version {m['version']!r}; this reader knows {MANIFEST_VERSION}")
        if ("frames" in m) == ("rgb" in m):
            raise SourceError(
                f"{manifest}: give either 'frames' (a list) or 'rgb' (a glob pattern), not both or neither"
            )

        self.depth_scale = _number(m.get("depth_scale", 1000.0), f"{manifest}: depth_scale")
        if self.depth_scale <= 0:
            raise SourceError(f"{manifest}: depth_scale must be positive, got {self.depth_scale}")
        invalid = m.get("depth_invalid", [0])
        if not isinstance(invalid, list):
            raise SourceError(f"{manifest}: depth_invalid must be a list of raw values, got {invalid!r}")
        self.depth_invalid = tuple(_number(v, f"{manifest}: depth_invalid") for v in invalid)

        self.entries = self._listed(m) if "frames" in m else self._patterns(m)
        if not self.entries:
            raise SourceError(f"{manifest}: no frames")
        files = [p for e in self.entries for p in (e.rgb_path, e.depth_path) if p is not None]
        missing = [str(p) for p in files if not p.is_file()]
        if missing:
            more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
            raise SourceError(f"{manifest}: {len(missing)} listed file(s) missing: {', '.join(missing[:5])}{more}")
        self.has_poses = all(e.T_world_cam is not None for e in self.entries)
        self.camera = self._camera(m)

    def _camera(self, m: dict) -> Camera:
        where = f"{self.manifest}: camera"
        c = m.get("camera")
        if not isinstance(c, dict):
            raise SourceError(f"{where}: required mapping {{fx, fy, cx, cy[, width, height]}}, got {c!r}")
        _unknown_keys(c, _CAMERA_KEYS, where)
        lacking = [k for k in ("fx", "fy", "cx", "cy") if k not in c]
        if lacking:
            raise SourceError(f"{where}: missing key(s) {lacking}")
        vals = {k: _number(c[k], f"{where}.{k}") for k in c}
        if "width" not in vals or "height" not in vals:
            h, w = image_size(self.entries[0].rgb_path)
            vals.setdefault("width", w)
            vals.setdefault("height", h)
        try:
            return Camera.from_dict(vals)
        except ValueError as e:
            raise SourceError(f"{where}: {e}") from e

    def _listed(self, m: dict) -> list[FolderFrameEntry]:
        frames = m["frames"]
        if not isinstance(frames, list):
            raise SourceError(f"{self.manifest}: 'frames' must be a list, got {type(frames).__name__}")
        out = []
        for k, f in enumerate(frames):
            where = f"{self.manifest}: frames[{k}]"
            if not isinstance(f, dict):
                raise SourceError(f"{where}: must be a mapping with at least 'rgb', got {f!r}")
            _unknown_keys(f, _FRAME_KEYS, where)
            if not isinstance(f.get("rgb"), str):
                raise SourceError(f"{where}: missing 'rgb' (a path relative to the manifest)")
            depth = f.get("depth")
            if depth is not None and not isinstance(depth, str):
                raise SourceError(f"{where}: 'depth' must be a path, got {depth!r}")
            source = f.get("depth_source", "sensor")
            if not (source in DEPTH_SOURCES_FIXED or str(source).startswith("mono:")):
                raise SourceError(f"{where}: unknown depth_source {source!r}")
            out.append(
                FolderFrameEntry(
                    rgb_path=self.root / f["rgb"],
                    depth_path=self.root / depth if depth is not None else None,
                    T_world_cam=_pose(f["T_world_cam"], where) if f.get("T_world_cam") is not None else None,
                    timestamp=_number(f.get("timestamp", k), f"{where}: timestamp"),
                    depth_source=source,
                )
            )
        return out

    def _glob(self, m: dict, key: str) -> list[Path]:
        pattern = m[key]
        if not isinstance(pattern, str):
            raise SourceError(f"{self.manifest}: '{key}' must be a glob pattern string, got {pattern!r}")
        found = sorted((p for p in self.root.glob(pattern) if p.is_file()), key=natural_key)
        if not found:
            raise SourceError(f"{self.manifest}: pattern {key}={pattern!r} matches no file in {self.root}")
        return found

    def _patterns(self, m: dict) -> list[FolderFrameEntry]:
        rgb = self._glob(m, "rgb")
        n = len(rgb)
        depth: list[Path | None] = [None] * n
        if m.get("depth") is not None:
            depth = self._glob(m, "depth")
            if len(depth) != n:
                raise SourceError(
                    f"{self.manifest}: rgb={m['rgb']!r} matches {n} files but depth={m['depth']!r} matches {len(depth)}"
                )
        poses: list[np.ndarray | None] = [None] * n
        times = np.arange(n, dtype=np.float64)
        if m.get("trajectory") is not None:
            traj_path = self.root / str(m["trajectory"])
            if not traj_path.is_file():
                raise SourceError(f"{self.manifest}: trajectory file missing: {traj_path}")
            try:
                traj = read_trajectory(traj_path, m.get("trajectory_format"))
            except SourceError:
                raise
            except ValueError as e:  # an unknown trajectory_format
                raise SourceError(f"{self.manifest}: {e}") from e
            if len(traj) != n:
                raise SourceError(
                    f"{self.manifest}: rgb={m['rgb']!r} matches {n} files but trajectory {traj_path} "
                    f"has {len(traj)} poses"
                )
            for k, T in enumerate(traj.T_world_cam):
                poses[k] = _pose(T, f"{traj_path}: pose {k}")
            times = traj.timestamps
        elif "trajectory_format" in m:
            raise SourceError(f"{self.manifest}: 'trajectory_format' given without 'trajectory'")
        return [FolderFrameEntry(rgb[k], depth[k], poses[k], float(times[k])) for k in range(n)]

    @classmethod
    def detect(cls, path: Path) -> bool:
        return find_manifest(Path(path)) is not None

    def __len__(self) -> int:
        return len(self.entries)

    def load(self, i: int) -> Frame:
        """Frame i: rgb (H, W, 3) uint8, depth (H, W) float32 metres or None, pose or None."""
        e = self.entries[i]
        rgb, depth = read_rgbd(
            e.rgb_path, e.depth_path, self.depth_scale, self.camera.shape, tuple(self.depth_invalid),
            f"the manifest camera ({self.manifest})",
        )
        return Frame(
            rgb=rgb,
            depth=depth,
            camera=self.camera,
            T_world_cam=e.T_world_cam,
            timestamp=e.timestamp,
            index=i,
            depth_source=e.depth_source if depth is not None else "sensor",
            name=str(e.rgb_path),
        )


def encode_depth(depth_m: np.ndarray, depth_scale: float, where: str) -> np.ndarray:
    """(H, W) float metres -> (H, W) uint16 raw = round(depth_m * depth_scale), 0 = invalid.

    Non-finite and non-positive depths become 0. Raises ValueError naming ``where`` if a
    depth does not fit in 16 bits at this scale (65535 / depth_scale metres).
    """
    d = np.asarray(depth_m, dtype=np.float64)
    valid = np.isfinite(d) & (d > 0)
    raw = np.zeros(d.shape, dtype=np.float64)
    raw[valid] = np.round(d[valid] * depth_scale)
    if raw.max(initial=0) > 65535:
        raise ValueError(
            f"{where}: depth {d[valid].max():.2f} m does not fit a uint16 PNG at depth_scale {depth_scale} "
            f"(max {65535 / depth_scale:.2f} m); use a smaller depth_scale"
        )
    return raw.astype(np.uint16)


def write_folder_sequence(frames: Iterable[Frame], out_dir: Path, depth_scale: float = 1000.0) -> Path:
    """Write frames as a folder that ``FolderSource`` reads back.

    Layout: ``rgb/NNNNNN.png`` (8-bit RGB), ``depth/NNNNNN.png`` (uint16, raw =
    round(depth_m * depth_scale), 0 = invalid), and ``semmap.json`` with the camera,
    depth scale and per frame the files, ``T_world_cam`` (exact float64), timestamp and
    depth_source. Frames without depth or pose are written without them. Depths below
    0.5 / depth_scale metres round to 0 and so read back as invalid.

    The folder appears complete or not at all: it is written to a temporary folder
    beside ``out_dir`` and renamed into place. An existing ``out_dir`` is replaced only
    if it is empty or holds a manifest (a previous sequence); otherwise FileExistsError.

    Args:
        frames: Frames sharing one camera (streamed; not held in memory).
        out_dir: the folder to create.
        depth_scale: raw depth units per metre (1000: millimetres, up to 65.5 m).
    Returns:
        ``out_dir``.
    """
    out_dir = Path(out_dir)
    if not depth_scale > 0:
        raise ValueError(f"depth_scale must be positive, got {depth_scale}")
    if out_dir.exists() and (not out_dir.is_dir() or (any(out_dir.iterdir()) and find_manifest(out_dir) is None)):
        raise FileExistsError(f"{out_dir} exists and is not a semmap folder sequence; not overwriting it")
    from PIL import Image

    with atomic_directory(out_dir) as tmp:
        (tmp / "rgb").mkdir()
        (tmp / "depth").mkdir()
        camera: Camera | None = None
        entries: list[dict] = []
        for k, f in enumerate(frames):
            where = f.name or f"frame {k}"
            if camera is None:
                camera = f.camera
            elif f.camera != camera:
                raise ValueError(f"{where}: camera {f.camera} differs from the first frame's {camera}")
            entry: dict = {"rgb": f"rgb/{k:06d}.png"}
            Image.fromarray(f.rgb).save(tmp / entry["rgb"], compress_level=1)
            if f.depth is not None:
                entry["depth"] = f"depth/{k:06d}.png"
                Image.fromarray(encode_depth(f.depth, depth_scale, where)).save(tmp / entry["depth"], compress_level=1)
                entry["depth_source"] = f.depth_source
            if f.T_world_cam is not None:
                entry["T_world_cam"] = np.asarray(f.T_world_cam, dtype=np.float64).tolist()
            entry["timestamp"] = float(f.timestamp)
            entries.append(entry)
        if camera is None:
            raise ValueError("write_folder_sequence: no frames to write")
        manifest = {
            "version": MANIFEST_VERSION,
            "camera": camera.to_dict(),
            "depth_scale": float(depth_scale),
            "depth_invalid": [0],
            "frames": entries,
        }
        (tmp / "semmap.json").write_text(json.dumps(manifest, indent=1))
    return out_dir
