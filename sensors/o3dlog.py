"""ICL-NUIM / Redwood style folders with an Open3D ``trajectory.log``.

Layout::

    <seq>/image/*.jpg|png  or  <seq>/color/*   colour, paired with depth by sorted name
    <seq>/depth/*.png                           uint16 millimetres, 0 = invalid
    <seq>/trajectory.log                        Open3D .log: "id id n" line + 4x4 camera-to-world
    <seq>/camera*.json  or  <seq>/../camera*.json
        Open3D PinholeCameraIntrinsic: {"width", "height", "intrinsic_matrix": 9 numbers,
        column-major}; without one the PrimeSense default 525/525/319.5/239.5 is used.

The block id in the log is the frame number. The poses map camera points (OpenCV axes)
to world points: checked on Open3D's ICL-NUIM test frames, where consecutive frames
back-projected with these poses coincide and with their inverses do not.
Conventions: docs/conventions.md.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from sensors.base import IndexedSource
from sensors.camera import Camera
from sensors.frame import Frame, FrameOrigin, check_pose
from sensors.io import SourceError, natural_key, read_json, read_rgbd
from sensors.trajectory_io import read_o3d_log

PRIMESENSE = Camera(525.0, 525.0, 319.5, 239.5, 640, 480)
"""Open3D's default PrimeSense intrinsics (``camera_primesense.json``, Redwood)."""

COLOR_DIRS = ("image", "color")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


def read_o3d_intrinsic(path: Path) -> Camera:
    """Camera from an Open3D PinholeCameraIntrinsic JSON (``intrinsic_matrix`` column-major)."""
    d = read_json(path)
    try:
        K = np.asarray(d["intrinsic_matrix"], dtype=np.float64).reshape(3, 3).T
        cam = Camera.from_K(K, int(d["width"]), int(d["height"]))
    except (KeyError, TypeError, ValueError) as e:
        raise SourceError(
            f"{path}: expected Open3D intrinsics {{'width', 'height', 'intrinsic_matrix': 9 numbers}} ({e!r})"
        ) from e
    if not np.allclose(K[2], [0.0, 0.0, 1.0]) or K[1, 0] != 0.0:
        raise SourceError(f"{path}: intrinsic_matrix is not a pinhole K in column-major order: {K.tolist()}")
    return cam


def find_camera_json(folder: Path) -> Path | None:
    """The single ``camera*.json`` in ``folder`` or else its parent; None if neither has one."""
    for d in (folder, folder.parent):
        found = sorted(d.glob("camera*.json"))
        if len(found) > 1:
            names = ", ".join(p.name for p in found)
            raise SourceError(f"{d}: several camera*.json ({names}); pass camera= to choose one")
        if found:
            return found[0]
    return None


def _list_images(folder: Path, suffixes: tuple[str, ...]) -> list[Path]:
    return sorted((p for p in folder.iterdir() if p.suffix.lower() in suffixes), key=natural_key)


class O3DLogSource(IndexedSource):
    """Frames of an ICL-NUIM / Redwood folder with an Open3D trajectory.

    Args:
        path: the folder holding image/ (or color/), depth/ and trajectory.log.
        camera: a Camera, or a path to an Open3D intrinsic JSON; None = the folder's
            (or its parent's) ``camera*.json``, else PrimeSense defaults with a warning.
        trajectory: the .log file (relative to ``path``); without the file the frames
            have no pose (``has_poses`` False).
        depth_scale: raw depth units per metre (1000 for ICL-NUIM and Redwood).

    Attributes:
        color_paths, depth_paths: paired files, in frame order.
        camera_origin: where the intrinsics came from.
    """

    kind = "o3dlog"

    def __init__(
        self,
        path: Path,
        camera: Camera | str | Path | None = None,
        trajectory: str | Path = "trajectory.log",
        depth_scale: float = 1000.0,
    ) -> None:
        self.path = Path(path)
        self.depth_scale = float(depth_scale)
        color_dir = next((self.path / d for d in COLOR_DIRS if (self.path / d).is_dir()), None)
        if color_dir is None:
            raise SourceError(f"{self.path}: no image/ or color/ folder of colour images")
        depth_dir = self.path / "depth"
        if not depth_dir.is_dir():
            raise SourceError(f"{self.path}: no depth/ folder")
        self.color_paths = _list_images(color_dir, IMAGE_SUFFIXES)
        self.depth_paths = _list_images(depth_dir, (".png",))
        if not self.color_paths:
            raise SourceError(f"{color_dir}: no colour images ({', '.join(IMAGE_SUFFIXES)})")
        if len(self.color_paths) != len(self.depth_paths):
            raise SourceError(
                f"{self.path}: {len(self.color_paths)} colour images in {color_dir.name}/ but "
                f"{len(self.depth_paths)} depth images in depth/"
            )
        self._poses = self._read_poses(self.path / trajectory)

        if isinstance(camera, Camera):
            self.camera, self.camera_origin = camera, "argument"
        else:
            cam_path = Path(camera) if camera is not None else find_camera_json(self.path)
            if cam_path is not None:
                self.camera, self.camera_origin = read_o3d_intrinsic(cam_path), str(cam_path)
            else:
                warnings.warn(
                    f"{self.path}: no camera*.json here or in the parent folder; "
                    "using PrimeSense defaults 525/525/319.5/239.5",
                    stacklevel=2,
                )
                self.camera, self.camera_origin = PRIMESENSE, "default"

    def _read_poses(self, log: Path) -> list[np.ndarray | None]:
        """Pose per frame from the .log (block id = frame number)."""
        n = len(self.color_paths)
        if not log.is_file():
            self.has_poses = False
            return [None] * n
        traj = read_o3d_log(log)
        poses: list[np.ndarray | None] = [None] * n
        for fid, T in zip(traj.timestamps.astype(int), traj.T_world_cam):
            if not 0 <= fid < n:
                raise SourceError(f"{log}: pose for frame {fid} but the folder has {n} frames")
            if poses[fid] is not None:
                raise SourceError(f"{log}: two poses for frame {fid}")
            try:
                poses[fid] = check_pose(T, f"{log}: frame {fid}")
            except ValueError as e:
                raise SourceError(str(e)) from e
        unposed = [i for i, p in enumerate(poses) if p is None]
        if unposed:
            warnings.warn(f"{log}: {len(unposed)} of {n} frames have no pose (T_world_cam=None)", stacklevel=3)
        self.has_poses = len(unposed) < n
        return poses

    @classmethod
    def detect(cls, path: Path) -> bool:
        p = Path(path)
        return (
            (p / "trajectory.log").is_file()
            and (p / "depth").is_dir()
            and any((p / d).is_dir() for d in COLOR_DIRS)
        )

    def __len__(self) -> int:
        return len(self.color_paths)

    def load(self, i: int) -> Frame:
        """Frame i: rgb (H, W, 3) uint8, depth (H, W) float32 metres, T_world_cam from the log."""
        cpath, dpath = self.color_paths[i], self.depth_paths[i]
        rgb, depth = read_rgbd(cpath, dpath, self.depth_scale, self.camera.shape,
                               camera_origin=f"the camera ({self.camera_origin})")
        return Frame(
            rgb=rgb,
            depth=depth,
            camera=self.camera,
            T_world_cam=self._poses[i],
            timestamp=float(i),
            index=i,
            name=str(cpath),
            origin=FrameOrigin(depth_path=str(dpath)),
        )
