"""Low-level file readers shared by all sources; every error names the file.

Units are converted once, here: ``read_depth_m(path, depth_scale)`` returns metres
as ``raw / depth_scale``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from sensors.frame import check_pose


def natural_key(path: Path | str) -> list:
    """Sort key that orders "2.png" before "10.png" (digit runs compared as numbers)."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", str(path))]


class SourceError(ValueError):
    """Bad or missing input data; the message names the file and the problem."""


def require_file(path: Path | str, what: str = "file") -> Path:
    """Return ``path`` as a Path, or raise SourceError if it is not an existing file."""
    p = Path(path)
    if not p.is_file():
        raise SourceError(f"missing {what}: {p}")
    return p


def read_rgb(path: Path | str) -> np.ndarray:
    """Read a colour image as (H, W, 3) uint8 (grey and RGBA are converted)."""
    from PIL import Image, UnidentifiedImageError

    p = require_file(path, "colour image")
    try:
        with Image.open(p) as im:
            im.load()
            if im.mode != "RGB":
                if im.mode in ("I;16", "I;16B", "I", "F"):
                    raise SourceError(f"{p}: expected a colour image, got a {im.mode} (depth-like) image")
                im = im.convert("RGB")
            return np.asarray(im, dtype=np.uint8).copy()
    except (UnidentifiedImageError, OSError, SyntaxError) as e:
        raise SourceError(f"{p}: cannot decode colour image ({e})") from e


def image_size(path: Path | str) -> tuple[int, int]:
    """(H, W) of an image, read from its header only."""
    from PIL import Image, UnidentifiedImageError

    p = require_file(path, "image")
    try:
        with Image.open(p) as im:
            return im.height, im.width
    except (UnidentifiedImageError, OSError, SyntaxError) as e:
        raise SourceError(f"{p}: cannot decode image ({e})") from e


def read_depth_raw(path: Path | str) -> np.ndarray:
    """Read a single-channel depth image as its raw integer/float values, (H, W)."""
    from PIL import Image, UnidentifiedImageError

    p = require_file(path, "depth image")
    try:
        with Image.open(p) as im:
            im.load()
            arr = np.asarray(im)
    except (UnidentifiedImageError, OSError, SyntaxError) as e:
        raise SourceError(f"{p}: cannot decode depth image ({e})") from e
    if arr.ndim != 2:
        raise SourceError(f"{p}: depth image must be single-channel, got shape {arr.shape}")
    if arr.dtype == np.uint8:
        raise SourceError(f"{p}: depth image is 8-bit; expected 16-bit integer or float depth")
    return arr


def read_depth_m(
    path: Path | str,
    depth_scale: float,
    invalid_values: tuple[float, ...] = (0,),
    max_plausible_m: float = 30.0,
) -> np.ndarray:
    """Read a depth image and convert it to metres.

    Args:
        path: 16-bit PNG (or float TIFF) depth image.
        depth_scale: raw units per metre (1000 for millimetres, 5000 for TUM, 6553.5 Replica).
        invalid_values: raw values meaning "no measurement" (set to 0).
        max_plausible_m: if the median valid depth exceeds this, the scale is wrong.
    Returns:
        (H, W) float32 depth in metres, 0 where invalid.
    """
    raw = read_depth_raw(path)
    invalid = ~np.isfinite(raw) if raw.dtype.kind == "f" else np.zeros(raw.shape, bool)
    for v in invalid_values:
        invalid |= raw == v
    depth_m = (raw.astype(np.float32) / np.float32(depth_scale)).astype(np.float32)
    depth_m[invalid] = 0.0
    check_depth_scale(depth_m, path, max_plausible_m)
    return depth_m


def check_depth_scale(depth_m: np.ndarray, path: Path | str, max_plausible_m: float = 30.0) -> None:
    """Raise SourceError if the valid depth is implausible for the given scale."""
    valid = depth_m[depth_m > 0]
    if valid.size == 0:
        return
    med = float(np.median(valid))
    if med > max_plausible_m:
        raise SourceError(
            f"{path}: median depth {med:.1f} m is implausible; the depth scale is probably wrong "
            f"(raw units per metre too small)"
        )
    if med < 1e-3:
        raise SourceError(
            f"{path}: median depth {med * 1000:.3f} mm is implausible; the depth scale is probably wrong "
            f"(raw units per metre too large)"
        )


def read_matrix(path: Path | str, shape: tuple[int, int] = (4, 4)) -> np.ndarray:
    """Read a whitespace-separated matrix text file as float64 with the given shape."""
    p = require_file(path, "matrix file")
    try:
        m = np.loadtxt(p, dtype=np.float64, ndmin=2)
    except ValueError as e:
        raise SourceError(f"{p}: cannot parse matrix ({e})") from e
    if m.size != shape[0] * shape[1]:
        raise SourceError(f"{p}: expected a {shape[0]}x{shape[1]} matrix, got {m.shape}")
    return m.reshape(shape)


def read_pose(path: Path | str) -> np.ndarray:
    """Read a 4x4 camera-to-world pose text file; raises SourceError if non-finite or not rigid."""
    T = read_matrix(path, (4, 4))
    try:
        return check_pose(T, str(path))
    except ValueError as e:
        raise SourceError(str(e)) from e


def read_yaml(path: Path | str, what: str = "file") -> object:
    """The document in a YAML (or JSON, a subset of YAML) file; None for an empty file.

    Raises:
        FileNotFoundError: ``{what} {path} does not exist``.
        ValueError: the file does not parse (the message names it).
    """
    import yaml

    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{what} {p} does not exist")
    try:
        return yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        raise ValueError(f"{p}: not valid YAML or JSON ({e})") from None


def read_json(path: Path | str) -> dict:
    p = require_file(path, "JSON file")
    try:
        return json.loads(p.read_text())
    except json.JSONDecodeError as e:
        raise SourceError(f"{p}: invalid JSON ({e})") from e


def check_same_size(rgb: np.ndarray, depth: np.ndarray, rgb_path, depth_path) -> None:
    """Raise SourceError if colour and depth images differ in size."""
    if rgb.shape[:2] != depth.shape[:2]:
        raise SourceError(
            f"size mismatch: colour {rgb_path} is {rgb.shape[1]}x{rgb.shape[0]} but depth {depth_path} "
            f"is {depth.shape[1]}x{depth.shape[0]}"
        )


def read_rgbd(
    rgb_path: Path | str,
    depth_path: Path | str | None,
    depth_scale: float,
    expected_hw: tuple[int, int],
    invalid_values: tuple[float, ...] = (0,),
    camera_origin: str = "the camera",
) -> tuple[np.ndarray, np.ndarray | None]:
    """Read a colour image and (optionally) its depth, checking both sizes.

    Args:
        rgb_path, depth_path: image files (``depth_path`` None = no depth).
        depth_scale: raw depth units per metre.
        expected_hw: (H, W) the camera says the images have.
        invalid_values: raw depth values meaning "no measurement".
        camera_origin: where the camera came from, for the error message.
    Returns:
        rgb (H, W, 3) uint8 and depth (H, W) float32 metres (0 = invalid) or None.
    """
    rgb = read_rgb(rgb_path)
    if rgb.shape[:2] != tuple(expected_hw):
        raise SourceError(
            f"{rgb_path}: image is {rgb.shape[1]}x{rgb.shape[0]} but {camera_origin} is "
            f"{expected_hw[1]}x{expected_hw[0]}"
        )
    depth = None
    if depth_path is not None:
        depth = read_depth_m(depth_path, depth_scale, invalid_values)
        check_same_size(rgb, depth, rgb_path, depth_path)
    return rgb, depth
