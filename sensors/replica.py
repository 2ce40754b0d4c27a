"""Replica scenes in the NICE-SLAM layout.

Layout::

    <scene>/results/frameNNNNNN.jpg    colour, 8-bit RGB
    <scene>/results/depthNNNNNN.png    uint16, ``scale`` units per metre (6553.5), 0 = invalid
    <scene>/traj.txt                   one row-major 4x4 camera-to-world pose per line;
                                       line n is the pose of frame number n
    cam_params.json                    {"camera": {"w", "h", "fx", "fy", "cx", "cy", "scale"}},
                                       in <scene> or its parent

Depth is z-depth along the optical axis and poses use OpenCV axes, as stored (NICE-SLAM
flips the y and z axes only for its own OpenGL-style renderer); tests/sensors/test_replica.py
checks both against the ground-truth mesh. Replica has no clock, so ``Frame.timestamp`` is
the frame number. ``traj.txt`` may hold more poses than there are rendered frames (the
shared office0 has 2000 poses and 4 frames): frame number n always uses line n.
See docs/conventions.md for units and axes.
"""

from __future__ import annotations

import re
from pathlib import Path

from sensors.base import IndexedSource
from sensors.camera import Camera
from sensors.frame import Frame, FrameOrigin, check_pose
from sensors.io import SourceError, check_same_size, read_depth_m, read_json, read_rgb
from sensors.trajectory_io import read_matrix_lines

CAM_PARAMS_FILE = "cam_params.json"
TRAJECTORY_FILE = "traj.txt"
RESULTS_DIR = "results"

_FILE_RE = re.compile(r"^(frame|depth)(\d+)\.(jpg|png)$")


def _is_scene(folder: Path) -> bool:
    return (folder / RESULTS_DIR).is_dir() and (folder / TRAJECTORY_FILE).is_file()


def find_scene(path: Path) -> Path | None:
    """The scene folder for ``path``: ``path`` itself if it holds ``results/`` and ``traj.txt``,
    or its only such subfolder when ``path`` also holds ``cam_params.json``; else None."""
    path = Path(path)
    if not path.is_dir():
        return None
    if _is_scene(path):
        return path
    if (path / CAM_PARAMS_FILE).is_file():
        scenes = [d for d in path.iterdir() if d.is_dir() and _is_scene(d)]
        if len(scenes) == 1:
            return scenes[0]
    return None


def read_cam_params(path: Path) -> tuple[Camera, float]:
    """Camera and depth scale (raw units per metre) from a ``cam_params.json``."""
    params = read_json(path)
    cam = params.get("camera") if isinstance(params, dict) else None
    if not isinstance(cam, dict):
        raise SourceError(f"{path}: expected a top-level 'camera' object")
    missing = [k for k in ("w", "h", "fx", "fy", "cx", "cy") if k not in cam]
    if missing:
        raise SourceError(f"{path}: 'camera' lacks {', '.join(missing)}")
    try:
        camera = Camera(
            float(cam["fx"]), float(cam["fy"]), float(cam["cx"]), float(cam["cy"]), int(cam["w"]), int(cam["h"])
        )
        scale = float(cam.get("scale", 6553.5))
    except (TypeError, ValueError) as e:
        raise SourceError(f"{path}: bad camera parameters ({e})") from e
    if not scale > 0:
        raise SourceError(f"{path}: depth scale must be positive, got {scale}")
    return camera, scale


class ReplicaSource(IndexedSource):
    """Rendered Replica RGB-D frames with ground-truth poses (NICE-SLAM layout).

    ``Frame.name`` is the colour file, ``index`` the position in the source,
    ``timestamp`` the frame number, ``origin.frame_number`` the number in the file names.
    """

    kind = "replica"
    has_poses = True

    def __init__(self, path: Path, depth_scale: float | None = None) -> None:
        """Index the rendered frames of a scene.

        Args:
            path: the scene folder (``results/``, ``traj.txt``) or a parent holding exactly one
                scene folder and ``cam_params.json``.
            depth_scale: raw depth units per metre; None takes ``scale`` from ``cam_params.json``.
        Raises:
            SourceError: not this layout, no ``cam_params.json``, a bad trajectory, or a frame
                number beyond the trajectory's last line.
        """
        self.path = Path(path)
        scene = find_scene(self.path)
        if scene is None:
            raise SourceError(
                f"{self.path}: not a Replica (NICE-SLAM) folder: expected results/ and traj.txt in it, or a "
                f"single such scene folder beside {CAM_PARAMS_FILE}"
            )
        self.scene = scene
        params_file = next(
            (d / CAM_PARAMS_FILE for d in (scene, scene.parent) if (d / CAM_PARAMS_FILE).is_file()), None
        )
        if params_file is None:
            raise SourceError(f"missing camera parameters: {scene / CAM_PARAMS_FILE} (nor in {scene.parent})")
        self.camera, file_scale = read_cam_params(params_file)
        self.depth_scale = float(file_scale if depth_scale is None else depth_scale)
        if not self.depth_scale > 0:
            raise SourceError(f"{self.path}: depth_scale must be positive, got {depth_scale}")

        self.trajectory_file = scene / TRAJECTORY_FILE
        self._T_world_cam = read_matrix_lines(self.trajectory_file).T_world_cam

        numbers: set[int] = set()
        for entry in (scene / RESULTS_DIR).iterdir():
            m = _FILE_RE.match(entry.name)
            if m and (m.group(1), m.group(3)) in (("frame", "jpg"), ("depth", "png")):
                numbers.add(int(m.group(2)))
        if not numbers:
            raise SourceError(f"{scene / RESULTS_DIR}: no frameNNNNNN.jpg / depthNNNNNN.png files")
        self._numbers = sorted(numbers)
        if self._numbers[-1] >= len(self._T_world_cam):
            raise SourceError(
                f"{self.trajectory_file}: has {len(self._T_world_cam)} poses but frame number "
                f"{self._numbers[-1]} needs line {self._numbers[-1] + 1}"
            )

    def __len__(self) -> int:
        return len(self._numbers)

    def color_file(self, i: int) -> Path:
        return self.scene / RESULTS_DIR / f"frame{self._numbers[i]:06d}.jpg"

    def depth_file(self, i: int) -> Path:
        return self.scene / RESULTS_DIR / f"depth{self._numbers[i]:06d}.png"

    def load(self, i: int) -> Frame:
        """Frame ``i``: colour, metric z-depth and the pose on ``traj.txt`` line (frame number + 1).

        Raises:
            SourceError naming the file: missing or undecodable image, implausible depth for
            ``depth_scale``, a size other than ``cam_params.json``'s, a non-rigid pose.
        """
        n = self._numbers[i]
        color_path, depth_path = self.color_file(i), self.depth_file(i)
        rgb = read_rgb(color_path)
        depth_m = read_depth_m(depth_path, self.depth_scale)
        check_same_size(rgb, depth_m, color_path, depth_path)
        if depth_m.shape != self.camera.shape:
            raise SourceError(
                f"{depth_path}: image is {depth_m.shape[1]}x{depth_m.shape[0]} but the camera parameters say "
                f"{self.camera.width}x{self.camera.height}"
            )
        try:
            T_world_cam = check_pose(self._T_world_cam[n], f"{self.trajectory_file}:{n + 1}")
        except ValueError as e:
            raise SourceError(str(e)) from e
        return Frame(
            rgb=rgb,
            depth=depth_m,
            camera=self.camera,
            T_world_cam=T_world_cam,
            timestamp=float(n),
            index=i,
            depth_source="sensor",
            name=str(color_path),
            origin=FrameOrigin(frame_number=n),
        )

    @classmethod
    def detect(cls, path: Path) -> bool:
        """True for a scene folder (``results/`` + ``traj.txt``) or a parent holding one plus
        ``cam_params.json``."""
        return find_scene(Path(path)) is not None
