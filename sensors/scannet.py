"""ScanNet scenes as written by ScanNet's SensReader exporter.

Layout::

    <scene>/color/<N>.jpg                     colour (ScanNet: 1296x968)
    <scene>/depth/<N>.png                     uint16 millimetres, 0 = invalid (640x480)
    <scene>/pose/<N>.txt                      4x4 camera-to-world; all -inf where tracking failed
    <scene>/intrinsic/intrinsic_color.txt     4x4 (K in the top-left 3x3)
    <scene>/intrinsic/intrinsic_depth.txt     4x4
    <scene>/intrinsic/extrinsic_color.txt     4x4, optional (identity in ScanNet)
    <scene>/intrinsic/extrinsic_depth.txt     4x4, optional (identity in ScanNet)

``N`` is an unpadded frame number. Frames whose pose is not finite (ScanNet writes
-inf) are skipped with a warning and never returned. Colour and depth have different
resolutions and intrinsics; ``align`` chooses the common camera (see ``ScanNetSource``).
The pose file is used as the pose of that common camera (ScanNet's extrinsics are
identity, so colour and depth share a centre). Conventions: docs/conventions.md.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from sensors.base import IndexedSource
from sensors.camera import Camera
from sensors.frame import Frame, FrameOrigin, check_pose
from sensors.io import SourceError, read_depth_m, read_depth_raw, read_matrix, read_rgb
from sensors.resize import resize_rgb

SCANNET_DEPTH_SCALE = 1000.0
"""Raw depth units per metre (ScanNet ``m_depthShift``)."""

ALIGN_MODES = ("color_to_depth", "depth_to_color")


def _numbered(folder: Path, suffix: str) -> dict[int, Path]:
    """Files ``<N><suffix>`` in ``folder`` by their integer N."""
    out: dict[int, Path] = {}
    for p in folder.glob(f"*{suffix}"):
        if p.stem.isdigit():
            out[int(p.stem)] = p
    return out


def _compress_ranges(ids: list[int]) -> str:
    """[1, 2, 3, 7] -> '1-3, 7'."""
    parts: list[str] = []
    start = prev = None
    for i in sorted(ids):
        if start is None:
            start = prev = i
        elif i == prev + 1:
            prev = i
        else:
            parts.append(f"{start}-{prev}" if prev != start else f"{start}")
            start = prev = i
    if start is not None:
        parts.append(f"{start}-{prev}" if prev != start else f"{start}")
    return ", ".join(parts)


def read_scannet_pose(path: Path) -> np.ndarray | None:
    """(4, 4) float64 camera-to-world pose, or None for ScanNet's non-finite "no pose" marker.

    Raises SourceError naming the file if it is not 16 numbers or not a rigid transform.
    """
    T = read_matrix(path, (4, 4))
    if not np.all(np.isfinite(T)):
        return None
    try:
        return check_pose(T, str(path))
    except ValueError as e:
        raise SourceError(str(e)) from e


def _intrinsic(path: Path, size_hw: tuple[int, int]) -> Camera:
    M = read_matrix(path, (4, 4))
    try:
        return Camera.from_K(M[:3, :3], size_hw[1], size_hw[0])
    except ValueError as e:
        raise SourceError(f"{path}: bad intrinsics ({e})") from e


def _image_hw(path: Path, depth: bool) -> tuple[int, int]:
    arr = read_depth_raw(path) if depth else read_rgb(path)
    return arr.shape[0], arr.shape[1]


class ScanNetSource(IndexedSource):
    """Frames of an exported ScanNet scene.

    Args:
        path: the scene folder (holding color/, depth/, pose/, intrinsic/).
        align: "color_to_depth" (default): colour is resized to the depth resolution
            and the frame uses the depth intrinsics; this is how ScanNet's exporter and
            2D benchmarks pair the streams, and it is cheap. "depth_to_color": depth is
            re-projected into the full-resolution colour camera
            (``sensors.registration.register_depth_to_color``, z-buffered; 2x2 splat
            when the colour image is finer than the depth image).
        depth_scale: raw depth units per metre.
        T_color_depth: (4, 4) depth-to-colour transform for "depth_to_color"; default
            from ``extrinsic_color.txt`` / ``extrinsic_depth.txt`` (each taken as
            sensor-to-rig, so ``T_color_depth = inv(E_color) @ E_depth``), else identity.

    Attributes:
        frame_ids: ScanNet frame numbers of the returned frames (ascending).
        skipped_ids: frame numbers dropped for a non-finite pose.
        color_camera, depth_camera: the native intrinsics of both streams.
    """

    kind = "scannet"
    has_poses = True

    def __init__(
        self,
        path: Path,
        align: str = "color_to_depth",
        depth_scale: float = SCANNET_DEPTH_SCALE,
        T_color_depth: np.ndarray | None = None,
    ) -> None:
        self.path = Path(path)
        if align not in ALIGN_MODES:
            raise SourceError(f"scannet: align must be one of {ALIGN_MODES}, got {align!r}")
        self.align = align
        self.depth_scale = float(depth_scale)
        for sub in ("color", "depth", "pose", "intrinsic"):
            if not (self.path / sub).is_dir():
                raise SourceError(f"{self.path}: not a ScanNet export (missing folder {sub}/)")
        colors = _numbered(self.path / "color", ".jpg")
        if not colors:
            raise SourceError(f"{self.path / 'color'}: no <N>.jpg colour images")
        self._depths = _numbered(self.path / "depth", ".png")
        poses = _numbered(self.path / "pose", ".txt")
        missing = [str(self.path / "depth" / f"{n}.png") for n in colors if n not in self._depths]
        missing += [str(self.path / "pose" / f"{n}.txt") for n in colors if n not in poses]
        if missing:
            more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
            raise SourceError(f"{self.path}: {len(missing)} file(s) missing: {', '.join(missing[:5])}{more}")

        self._colors = colors
        self._poses: dict[int, np.ndarray] = {}
        self.skipped_ids: list[int] = []
        for n in sorted(colors):
            T = read_scannet_pose(poses[n])
            if T is None:
                self.skipped_ids.append(n)
            else:
                self._poses[n] = T
        if self.skipped_ids:
            warnings.warn(
                f"{self.path}: skipping {len(self.skipped_ids)} frame(s) with an invalid (-inf) pose: "
                f"{_compress_ranges(self.skipped_ids)}",
                stacklevel=2,
            )
        self.frame_ids: list[int] = sorted(self._poses)
        if not self.frame_ids:
            raise SourceError(f"{self.path / 'pose'}: every pose is invalid (-inf)")

        first = self.frame_ids[0]
        intr = self.path / "intrinsic"
        self.color_camera = _intrinsic(intr / "intrinsic_color.txt", _image_hw(colors[first], False))
        self.depth_camera = _intrinsic(intr / "intrinsic_depth.txt", _image_hw(self._depths[first], True))
        self.camera = self.depth_camera if align == "color_to_depth" else self.color_camera
        if T_color_depth is None:
            e_c, e_d = intr / "extrinsic_color.txt", intr / "extrinsic_depth.txt"
            T_color_depth = np.eye(4)
            if e_c.is_file() and e_d.is_file():
                T_color_depth = np.linalg.inv(read_matrix(e_c)) @ read_matrix(e_d)
        try:
            self.T_color_depth = check_pose(T_color_depth, "scannet T_color_depth")
        except ValueError as e:
            raise SourceError(f"{intr}: {e}") from e

    @classmethod
    def detect(cls, path: Path) -> bool:
        p = Path(path)
        return all((p / s).is_dir() for s in ("color", "depth", "pose")) and (
            p / "intrinsic" / "intrinsic_depth.txt"
        ).is_file()

    def __len__(self) -> int:
        return len(self.frame_ids)

    def load(self, i: int) -> Frame:
        """Frame i in the ``align`` camera: rgb (H, W, 3) uint8, depth (H, W) float32 metres."""
        n = self.frame_ids[i]
        cpath, dpath = self._colors[n], self._depths[n]
        rgb = read_rgb(cpath)
        depth = read_depth_m(dpath, self.depth_scale)
        for arr, p, cam in ((rgb, cpath, self.color_camera), (depth, dpath, self.depth_camera)):
            if arr.shape[:2] != cam.shape:
                raise SourceError(
                    f"{p}: image is {arr.shape[1]}x{arr.shape[0]} but frame {self.frame_ids[0]} of this "
                    f"scene is {cam.width}x{cam.height}"
                )
        if self.align == "color_to_depth":
            rgb = resize_rgb(rgb, self.depth_camera.shape)
        else:
            depth = self._register(depth)
        return Frame(
            rgb=rgb,
            depth=depth,
            camera=self.camera,
            T_world_cam=self._poses[n],
            timestamp=float(n),
            index=i,
            name=str(cpath),
            origin=FrameOrigin(frame_number=n, depth_path=str(dpath)),
        )

    def _register(self, depth_m: np.ndarray) -> np.ndarray:
        """(Hd, Wd) depth-camera metres -> (Hc, Wc) colour-camera metres."""
        from sensors.registration import register_depth_to_color

        upsampling = self.color_camera.fx > self.depth_camera.fx
        return register_depth_to_color(
            depth_m, self.depth_camera, self.color_camera, self.T_color_depth, splat=upsampling
        )
