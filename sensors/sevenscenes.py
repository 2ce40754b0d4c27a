"""Microsoft 7-Scenes and 3DMatch RGB-D sequences (``frame-NNNNNN.*`` folders).

Layout (either directly in the folder given, or in ``seq-XX/`` subfolders of it)::

    camera-intrinsics.txt          3x3 K of the depth camera (in the folder or its parent)
    frame-000000.color.jpg|png     colour, 8-bit RGB
    frame-000000.depth.png         uint16 millimetres; 0 and 65535 = no measurement
    frame-000000.pose.txt          4x4 camera-to-world (metres, OpenCV axes)

Frames are sorted by sequence, then frame number; ``Frame.timestamp`` is
``frame number / 30`` (30 Hz Kinect; it restarts in each ``seq-XX``), ``Frame.index``
is the position in the source and ``Frame.name`` the colour file. A frame whose
colour, depth or pose file is missing is kept in the listing and raises a
:class:`SourceError` naming the missing file when it is loaded (a gap is an error in
the data, not something to skip silently).

7-Scenes colour and depth are **not** registered: :class:`SevenScenesSource` re-renders
depth into the colour camera (see :data:`SEVENSCENES_COLOR_TO_DEPTH`). 3DMatch frames
are already registered (measured, see :class:`ThreeDMatchSource`).
See docs/conventions.md for units and axes.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sensors.base import IndexedSource
from sensors.camera import Camera
from sensors.frame import Frame, FrameOrigin
from sensors.io import SourceError, check_same_size, read_depth_m, read_matrix, read_pose, read_rgb
from sensors.registration import register_depth_to_color

FRAME_RATE_HZ = 30.0
"""7-Scenes / 3DMatch Kinect frame rate; ``timestamp = frame number / FRAME_RATE_HZ``."""

INVALID_DEPTH_RAW = (0, 65535)
"""Raw depth values meaning "no measurement"."""

INTRINSICS_FILE = "camera-intrinsics.txt"

KINECT_DEPTH_K = np.array([[585.0, 0.0, 320.0], [0.0, 585.0, 240.0], [0.0, 0.0, 1.0]])
"""Published 7-Scenes depth intrinsics (used when a 7-Scenes folder has no intrinsics file)."""

_FRAME_RE = re.compile(r"^frame-(\d+)\.(color\.jpg|color\.png|depth\.png|pose\.txt)$")
_SEQ_RE = re.compile(r"^seq-\d+$")


@dataclass(frozen=True)
class ColorToDepthPixelMap:
    """Where a colour pixel is seen in the depth image, for cameras with identity extrinsic.

    Colour pixel (u, v) lands at depth pixel
    ``(cx_d + scale (u - cx_d) + dx_px, cy_d + scale (v - cy_d) + dy_px)``.
    With an identity rotation/translation between the two cameras, a point at
    normalised image coordinate x = X/Z projects to ``u = fx_c x + cx_c`` and
    ``u_d = fx_d x + cx_d``, so ``u_d = (fx_d / fx_c)(u - cx_c) + cx_d``. Matching the
    two expressions gives the colour pinhole camera of :meth:`color_camera`.

    Attributes:
        scale: depth pixels per colour pixel (= fx_d / fx_c), unitless.
        dx_px, dy_px: shift in depth pixels, added after scaling about the depth centre.
    """

    scale: float
    dx_px: float
    dy_px: float

    def color_camera(self, depth_cam: Camera, width: int, height: int) -> Camera:
        """Colour intrinsics implied by this map: ``f_c = f_d / scale``, ``c_c = c_d - d / scale``."""
        return Camera(
            fx=depth_cam.fx / self.scale,
            fy=depth_cam.fy / self.scale,
            cx=depth_cam.cx - self.dx_px / self.scale,
            cy=depth_cam.cy - self.dy_px / self.scale,
            width=width,
            height=height,
        )


SEVENSCENES_COLOR_TO_DEPTH = ColorToDepthPixelMap(scale=1.1, dx_px=7.0, dy_px=2.0)
"""7-Scenes Kinect v1 colour -> depth pixel map, measured on ``7scenes-redkitchen``.

Derivation: a grid search over scale in [1.0, 1.15] and shifts in [-5, 15] px on six
redkitchen frames (0, 100, 250, 400, 600, 800), scoring the mean distance from depth
discontinuities of the registered depth to Sobel edges of the grey colour image; the
optimum is scale 1.1, shift (7, 2) px (4.47 px, against 7.16 px unregistered; the next
best grid points are 0.01 px to 0.06 px worse). With the published depth intrinsics
fx = fy = 585, cx = 320, cy = 240 this is the colour camera
fx_c = fy_c = 585 / 1.1 = 531.818, cx_c = 320 - 7 / 1.1 = 313.636,
cy_c = 240 - 2 / 1.1 = 238.182, with identity extrinsic (so the dataset pose is also the
colour camera's pose). tests/sensors/test_sevenscenes.py re-measures the improvement.
"""


def _scan_frames(folder: Path) -> dict[int, dict[str, Path]]:
    """Frame number -> {"color"|"depth"|"pose": path} for the ``frame-*`` files in ``folder``."""
    frames: dict[int, dict[str, Path]] = {}
    for entry in folder.iterdir():
        m = _FRAME_RE.match(entry.name)
        if m is None:
            continue
        kind = m.group(2).split(".")[0]
        files = frames.setdefault(int(m.group(1)), {})
        if kind in files and kind == "color":
            raise SourceError(f"{folder}: frame {m.group(1)} has both .color.jpg and .color.png")
        files[kind] = entry
    return frames


def _has_frames(folder: Path) -> bool:
    return folder.is_dir() and any(_FRAME_RE.match(e.name) for e in folder.iterdir())


def find_sequence_dirs(path: Path) -> list[Path]:
    """The folders holding ``frame-*`` files: ``[path]`` itself, or its ``seq-XX`` subfolders (sorted).

    Returns an empty list when ``path`` has neither layout.
    """
    path = Path(path)
    if not path.is_dir():
        return []
    if _has_frames(path):
        return [path]
    return sorted(d for d in path.iterdir() if _SEQ_RE.match(d.name) and _has_frames(d))


def find_intrinsics_file(path: Path) -> Path | None:
    """``camera-intrinsics.txt`` in ``path`` or its parent (a ``seq-XX`` folder's scene), or None."""
    for folder in (Path(path), Path(path).parent):
        candidate = folder / INTRINSICS_FILE
        if candidate.is_file():
            return candidate
    return None


def _is_kinect_7scenes(K: np.ndarray) -> bool:
    return bool(np.allclose(K, KINECT_DEPTH_K, atol=0.5))


class SevenScenesSource(IndexedSource):
    """7-Scenes RGB-D frames, with depth registered into the colour camera.

    ``Frame.camera`` is the colour camera and ``Frame.depth`` the depth re-rendered in it
    (:func:`~sensors.registration.register_depth_to_color`, identity extrinsic, colour
    intrinsics from :data:`SEVENSCENES_COLOR_TO_DEPTH`); colour pixels outside the depth
    camera's view (u < 23, u > 603, v < 21, v > 457 px; the Kinect's own invalid right-hand
    columns widen the right band to ~43 px) have depth 0. ``T_world_cam`` is the dataset pose
    unchanged. With ``register_color=False`` frames use the depth intrinsics for both images,
    as the data is stored (colour then misaligned by 7 px at the centre and up to ~40 px at
    the image borders).
    """

    kind = "7scenes"
    has_poses = True
    #: colour -> depth pixel map to undo, or None when colour is already registered
    color_to_depth: ColorToDepthPixelMap | None = SEVENSCENES_COLOR_TO_DEPTH
    #: whether a folder without camera-intrinsics.txt falls back to KINECT_DEPTH_K
    default_intrinsics: bool = True

    def __init__(self, path: Path, register_color: bool = True, depth_scale: float = 1000.0) -> None:
        """Index the frames of a sequence folder.

        Args:
            path: a folder of ``frame-*`` files, or a scene folder with ``seq-XX`` subfolders.
            register_color: re-render depth into the colour camera (see class doc).
            depth_scale: raw depth units per metre (1000: millimetres).
        Raises:
            SourceError: no frames found, or a bad ``camera-intrinsics.txt``.
        """
        self.path = Path(path)
        self.register_color = bool(register_color)
        self.depth_scale = float(depth_scale)
        if not self.depth_scale > 0:
            raise SourceError(f"{self.path}: depth_scale must be positive, got {depth_scale}")
        seq_dirs = find_sequence_dirs(self.path)
        if not seq_dirs:
            raise SourceError(
                f"{self.path}: not a {self.kind} folder (no frame-NNNNNN.color.jpg|png / .depth.png / "
                f".pose.txt files, directly or in seq-XX subfolders)"
            )
        # (sequence dir, frame number, {kind: path}) in sequence then frame-number order.
        self._entries: list[tuple[Path, int, dict[str, Path]]] = []
        for seq in seq_dirs:
            frames = _scan_frames(seq)
            self._entries.extend((seq, n, frames[n]) for n in sorted(frames))
        self._color_ext = self._majority_color_ext()

        self.depth_camera = self._read_depth_camera()
        self.camera = self._output_camera()

    # -- construction helpers -------------------------------------------------------

    def _majority_color_ext(self) -> str:
        exts = [files["color"].name.rsplit(".", 1)[-1] for _, _, files in self._entries if "color" in files]
        if not exts:
            return "png"
        return max(set(exts), key=exts.count)

    def _read_depth_camera(self) -> Camera:
        k_file = find_intrinsics_file(self.path)
        if k_file is None:
            if not self.default_intrinsics:
                raise SourceError(f"missing intrinsics: {self.path / INTRINSICS_FILE} (nor in {self.path.parent})")
            K = KINECT_DEPTH_K
        else:
            K = read_matrix(k_file, (3, 3))
            if not np.all(np.isfinite(K)) or K[0, 0] <= 0 or K[1, 1] <= 0 or not np.allclose(K[2], [0, 0, 1]):
                raise SourceError(f"{k_file}: not a valid 3x3 pinhole intrinsic matrix: {K.tolist()}")
        width, height = self._first_depth_size()
        if self.color_to_depth is not None and self.register_color and not _is_kinect_7scenes(K):
            warnings.warn(
                f"{k_file}: intrinsics {K[0, 0]:.2f}/{K[0, 2]:.1f}/{K[1, 2]:.1f} are not the 7-Scenes Kinect "
                f"ones (585/320/240); the colour registration was measured for 7-Scenes. If colour is already "
                f"registered (3DMatch), open it as '3dmatch:' or pass register_color=False.",
                stacklevel=3,
            )
        return Camera.from_K(K, width, height)

    def _first_depth_size(self) -> tuple[int, int]:
        """(width, height) of the first depth image (read from its header only)."""
        from PIL import Image, UnidentifiedImageError

        for _, _, files in self._entries:
            if "depth" in files:
                p = files["depth"]
                try:
                    with Image.open(p) as im:
                        return im.size
                except (UnidentifiedImageError, OSError) as e:
                    raise SourceError(f"{p}: cannot decode depth image ({e})") from e
        raise SourceError(f"{self.path}: no frame-NNNNNN.depth.png files")

    def _output_camera(self) -> Camera:
        if self.register_color and self.color_to_depth is not None:
            return self.color_to_depth.color_camera(
                self.depth_camera, self.depth_camera.width, self.depth_camera.height
            )
        return self.depth_camera

    # -- access ---------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._entries)

    def frame_file(self, i: int, kind: str) -> Path:
        """Path of frame ``i``'s ``"color"``, ``"depth"`` or ``"pose"`` file (may not exist)."""
        seq, n, files = self._entries[i]
        if kind in files:
            return files[kind]
        suffix = {"color": f"color.{self._color_ext}", "depth": "depth.png", "pose": "pose.txt"}[kind]
        return seq / f"frame-{n:06d}.{suffix}"

    def load(self, i: int) -> Frame:
        """Frame ``i``: colour, metric depth (registered to colour) and pose.

        Raises:
            SourceError naming the file: missing or undecodable colour/depth/pose, implausible
            depth for ``depth_scale``, colour/depth size mismatch, non-rigid or non-finite pose.
        """
        seq, n, _ = self._entries[i]
        color_path = self.frame_file(i, "color")
        depth_path = self.frame_file(i, "depth")
        pose_path = self.frame_file(i, "pose")
        rgb = read_rgb(color_path)
        depth_m = read_depth_m(depth_path, self.depth_scale, INVALID_DEPTH_RAW)
        check_same_size(rgb, depth_m, color_path, depth_path)
        if depth_m.shape != self.depth_camera.shape:
            raise SourceError(
                f"{depth_path}: depth is {depth_m.shape[1]}x{depth_m.shape[0]} but the sequence's first depth "
                f"image is {self.depth_camera.width}x{self.depth_camera.height}"
            )
        T_world_cam = read_pose(pose_path)
        if self.camera is not self.depth_camera:
            depth_m = register_depth_to_color(depth_m, self.depth_camera, self.camera, np.eye(4))
        return Frame(
            rgb=rgb,
            depth=depth_m,
            camera=self.camera,
            T_world_cam=T_world_cam,
            timestamp=n / FRAME_RATE_HZ,
            index=i,
            depth_source="sensor",
            name=str(color_path),
            origin=FrameOrigin(sequence=seq.name, frame_number=n),
        )

    # -- detection ------------------------------------------------------------------

    @classmethod
    def detect(cls, path: Path) -> bool:
        """True for a ``frame-*`` folder (or ``seq-XX`` parent) whose intrinsics are the 7-Scenes
        Kinect ones (585/320/240) or absent (the original 7-Scenes download has no K file)."""
        if not find_sequence_dirs(Path(path)):
            return False
        k_file = find_intrinsics_file(Path(path))
        if k_file is None:
            return True
        try:
            return _is_kinect_7scenes(read_matrix(k_file, (3, 3)))
        except SourceError:
            return False


class ThreeDMatchSource(SevenScenesSource):
    """3DMatch RGB-D sequences: the 7-Scenes layout with colour already registered to depth.

    Measured on ``3dmatch-seq01`` (frames 0, 1, 2, 116, 422) with the edge score of
    :data:`SEVENSCENES_COLOR_TO_DEPTH`: depth edges lie 3.01 px from colour edges as
    stored, the best of a grid over scale 0.95-1.1 and shifts of +-6 px is 2.95 px at
    scale 1, shift (0, 2) (within noise of identity), and applying the 7-Scenes correction
    makes it 6.29 px. So no correction is applied: ``Frame.camera`` is the
    ``camera-intrinsics.txt`` camera for both images, and ``register_color`` has no effect.
    ``camera-intrinsics.txt`` is required (in the folder or its parent).
    """

    kind = "3dmatch"
    color_to_depth = None
    default_intrinsics = False

    @classmethod
    def detect(cls, path: Path) -> bool:
        """True for a ``frame-*`` folder (or ``seq-XX`` parent) with a ``camera-intrinsics.txt``.

        Auto-detection tries "7scenes" first, which claims folders with the 7-Scenes Kinect
        intrinsics; this one takes the rest.
        """
        return bool(find_sequence_dirs(Path(path))) and find_intrinsics_file(Path(path)) is not None
