"""Mini-datasets in the real on-disk layouts, rendered from a generated room, for reader tests.

Every writer renders RGB-D frames of :func:`sensors.scenes.make_room` (seed 0, 5 x 4 x 2.6 m,
closed, so every ray hits) with :class:`sensors.synthetic.MeshRenderer` and writes them the way
the real dataset stores them (file names, raw depth units, pose files, intrinsics files), so
that a reader test can run on generated data when ``../shared/data`` is absent, as
nerfstudio's dataparser tests do. The writers mirror the real folders in ``../shared/data``
closely enough (frame counts, cameras, depth scales, depth ranges, camera motion between
frames) that the same assertions hold on both; see each writer for what it matches.

Poses are camera-to-world, OpenCV axes (docs/conventions.md); depth is z-depth.
Nothing here is cached across calls, and no Open3D object outlives a writer.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from sensors.camera import Camera

KINECT = Camera(585.0, 585.0, 320.0, 240.0, 640, 480)
"""7-Scenes / 3DMatch depth camera."""

PRIMESENSE = Camera(525.0, 525.0, 319.5, 239.5, 640, 480)
"""Open3D's ICL-NUIM / PrimeSense camera (``camera_primesense.json``)."""

REPLICA = Camera(600.0, 600.0, 599.5, 339.5, 1200, 680)
"""Replica (NICE-SLAM) camera of ``cam_params.json``."""

REPLICA_DEPTH_SCALE = 6553.5
"""Replica raw depth units per metre."""

SEVENSCENES_NUMBERS = (0, 1, 2, 3, 4, 5, 55, *range(10, 120, 10))
"""Frame numbers the generated 7-Scenes folder holds (what the tests built on it read)."""

ROOM_CENTRE = np.array([2.5, 2.0, 0.8])
"""Point at table height in the middle of the generated room (world, metres)."""


def _room():
    from sensors.scenes import make_room

    return make_room(seed=0)


def _renderer():
    from sensors.synthetic import MeshRenderer

    return MeshRenderer(_room().mesh)


def walk_pose(number: int) -> np.ndarray:
    """(4, 4) T_world_cam of frame ``number`` of the generated 7-Scenes-like walk: the eye moves
    1 cm per frame along +x at 1.4 m height (30 Hz, 0.3 m/s) and looks at :data:`ROOM_CENTRE`,
    1 to 1.6 m away (median depth about 1.8 m, as in redkitchen)."""
    from sensors.scenes import look_at_pose

    eye = np.array([1.4 + 0.01 * number, 1.0 + 0.002 * number, 1.4])
    return look_at_pose(eye, ROOM_CENTRE)


def render(renderer, camera: Camera, T_world_cam: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(H, W, 3) uint8 colour and (H, W) float32 z-depth in metres (0 = no hit) of one view."""
    view = renderer.render(camera, T_world_cam)
    return view.rgb, view.depth_m


def _save_depth(path: Path, depth_m: np.ndarray, units_per_m: float) -> None:
    raw = np.clip(np.rint(depth_m.astype(np.float64) * units_per_m), 0, 65535).astype(np.uint16)
    Image.fromarray(raw).save(path)


def _save_pose(path: Path, T: np.ndarray) -> None:
    np.savetxt(path, T, fmt="%.12f")


def write_7scenes(root: Path, numbers: tuple[int, ...] = SEVENSCENES_NUMBERS, color_ext: str = "jpg") -> Path:
    """A 7-Scenes scene folder: ``frame-NNNNNN.color.<ext>`` (rendered with the colour camera that
    :data:`sensors.sevenscenes.SEVENSCENES_COLOR_TO_DEPTH` implies), ``.depth.png`` (uint16 mm,
    rendered with the Kinect depth camera at the same pose: unregistered, as in 7-Scenes),
    ``.pose.txt`` and ``camera-intrinsics.txt`` (the depth K). Returns ``root``."""
    from sensors.sevenscenes import SEVENSCENES_COLOR_TO_DEPTH

    root.mkdir(parents=True, exist_ok=True)
    color_cam = SEVENSCENES_COLOR_TO_DEPTH.color_camera(KINECT, 640, 480)
    r = _renderer()
    for n in numbers:
        T = walk_pose(n)
        rgb, _ = render(r, color_cam, T)
        _, depth = render(r, KINECT, T)
        stem = root / f"frame-{n:06d}"
        Image.fromarray(rgb).save(f"{stem}.color.{color_ext}", **({"quality": 95} if color_ext == "jpg" else {}))
        _save_depth(Path(f"{stem}.depth.png"), depth, 1000.0)
        _save_pose(Path(f"{stem}.pose.txt"), T)
    np.savetxt(root / "camera-intrinsics.txt", KINECT.K, fmt="%.18e")
    return root


MATCH3D = Camera(570.342205, 570.342205, 320.0, 240.0, 640, 480)
"""3DMatch's registered Kinect camera (``camera-intrinsics.txt`` of seq01)."""


def write_3dmatch(root: Path, numbers: tuple[int, ...] = (0, 1, 2, 116, 422)) -> Path:
    """A 3DMatch scene folder: ``camera-intrinsics.txt`` and ``seq-01/frame-NNNNNN.{color.png,
    depth.png,pose.txt}``, colour and depth rendered with one camera (registered, as 3DMatch),
    the frame numbers of the shared seq01. Returns ``root``."""
    seq = root / "seq-01"
    seq.mkdir(parents=True, exist_ok=True)
    r = _renderer()
    for n in numbers:
        T = walk_pose(n // 5)
        rgb, depth = render(r, MATCH3D, T)
        stem = seq / f"frame-{n:06d}"
        Image.fromarray(rgb).save(f"{stem}.color.png", compress_level=1)
        _save_depth(Path(f"{stem}.depth.png"), depth, 1000.0)
        _save_pose(Path(f"{stem}.pose.txt"), T)
    np.savetxt(root / "camera-intrinsics.txt", MATCH3D.K, fmt="%.18e")
    return root


def replica_pose(number: int) -> np.ndarray:
    """Frame ``number`` of the generated Replica walk: 2.2 cm steps, as office0's first frames."""
    from sensors.scenes import look_at_pose

    eye = np.array([1.0 + 0.02 * number, 0.8 + 0.009 * number, 1.4])
    return look_at_pose(eye, ROOM_CENTRE + [0.5, 0.5, 0.0])


def write_replica(parent: Path, numbers: tuple[int, ...] = (0, 1, 2, 3), scene: str = "office0") -> Path:
    """A Replica (NICE-SLAM) root: ``cam_params.json`` (1200 x 680, scale 6553.5),
    ``<scene>/results/frameNNNNNN.jpg`` + ``depthNNNNNN.png``, ``<scene>/traj.txt`` (one
    row-major 4x4 per line, one per frame number up to the largest) and the room mesh as
    ``<scene>_mesh.ply``. Returns ``parent``."""
    import open3d as o3d

    results = parent / scene / "results"
    results.mkdir(parents=True, exist_ok=True)
    r = _renderer()
    for n in numbers:
        rgb, depth = render(r, REPLICA, replica_pose(n))
        Image.fromarray(rgb).save(results / f"frame{n:06d}.jpg", quality=95)
        _save_depth(results / f"depth{n:06d}.png", depth, REPLICA_DEPTH_SCALE)
    poses = np.stack([replica_pose(n) for n in range(max(numbers) + 1)])
    np.savetxt(parent / scene / "traj.txt", poses.reshape(-1, 16), fmt="%.12g")
    cam = {"w": REPLICA.width, "h": REPLICA.height, "fx": REPLICA.fx, "fy": REPLICA.fy,
           "cx": REPLICA.cx, "cy": REPLICA.cy, "scale": REPLICA_DEPTH_SCALE}
    (parent / "cam_params.json").write_text(json.dumps({"camera": cam}, indent=4))
    o3d.io.write_triangle_mesh(str(parent / f"{scene}_mesh.ply"), _room().mesh)
    return parent


def o3dlog_pose(number: int) -> np.ndarray:
    """Frame ``number`` of the generated ICL-NUIM-like walk: 2.45 cm sideways steps in front of
    the far wall (y = 4 m), about 1.9 m from it, turning 1 degree per frame."""
    from sensors.scenes import look_at_pose

    eye = np.array([2.0 + 0.0245 * number, 2.1, 1.6])
    return look_at_pose(eye, np.array([2.2 + 0.06 * number, 4.0, 1.5]))


def write_o3dlog(parent: Path, n: int = 5) -> Path:
    """An Open3D test-data layout: ``parent/RGBD/{color/NNNNN.jpg, depth/NNNNN.png (uint16 mm),
    trajectory.log}`` and ``parent/camera_primesense.json`` one level up. Returns the RGBD folder."""
    from sensors.trajectory_io import Trajectory, write_o3d_log

    seq = parent / "RGBD"
    (seq / "color").mkdir(parents=True, exist_ok=True)
    (seq / "depth").mkdir(exist_ok=True)
    r = _renderer()
    poses = np.stack([o3dlog_pose(i) for i in range(n)])
    for i, T in enumerate(poses):
        rgb, depth = render(r, PRIMESENSE, T)
        Image.fromarray(rgb).save(seq / "color" / f"{i:05d}.jpg", quality=95)
        _save_depth(seq / "depth" / f"{i:05d}.png", depth, 1000.0)
    write_o3d_log(seq / "trajectory.log", Trajectory(np.arange(n, dtype=np.float64), poses))
    K = PRIMESENSE.K
    (parent / "camera_primesense.json").write_text(json.dumps(
        {"width": PRIMESENSE.width, "height": PRIMESENSE.height, "intrinsic_matrix": K.T.reshape(-1).tolist()},
        indent=1,
    ))
    return seq


MONODEPTH_CAMERAS = {
    "nyu_demo": (Camera(259.43, 259.73, 162.79, 126.87, 320, 240), 1000.0),
    "kitti_demo": (Camera(353.52, 353.52, 302.04, 90.25, 608, 176), 256.0),
}
"""Metric3D demo folders -> (camera, raw depth units per metre): NYU's and KITTI's cameras at half
resolution (the reader takes any size), NYU millimetres, KITTI 1/256 m."""


def write_monodepth(root: Path, n: int = 3, kitti_valid_fraction: float = 0.2) -> Path:
    """The Metric3D demo layout under ``root``: ``nyu_demo/`` and ``kitti_demo/``, each with
    ``rgb/``, ``depth/`` (uint16, 0 = invalid) and ``test_annotations.json`` whose paths are
    Metric3D-repository-relative (``data/<folder>/rgb/...``), as shipped. KITTI depth keeps a
    random ``kitti_valid_fraction`` of the pixels (LiDAR ground truth is sparse). Returns ``root``."""
    from sensors.scenes import look_at_pose

    r = _renderer()
    rng = np.random.default_rng(0)
    for folder, (cam, scale) in MONODEPTH_CAMERAS.items():
        (root / folder / "rgb").mkdir(parents=True, exist_ok=True)
        (root / folder / "depth").mkdir(exist_ok=True)
        files = []
        for i in range(n):
            T = look_at_pose(np.array([0.6 + 0.5 * i, 0.5, 1.3]), ROOM_CENTRE + [0.3 * i, 0.8, 0.0])
            rgb, depth = render(r, cam, T)
            if folder.startswith("kitti"):
                depth = np.where(rng.random(depth.shape) < kitti_valid_fraction, depth, 0.0)
            rgb_name, depth_name = f"rgb_{i:05d}.jpg", f"sync_depth_{i:05d}.png"
            Image.fromarray(rgb).save(root / folder / "rgb" / rgb_name, quality=95)
            _save_depth(root / folder / "depth" / depth_name, depth, scale)
            files.append({"cam_in": [cam.fx, cam.fy, cam.cx, cam.cy], "rgb": f"data/{folder}/rgb/{rgb_name}",
                          "depth": f"data/{folder}/depth/{depth_name}", "depth_scale": scale})
        (root / folder / "test_annotations.json").write_text(json.dumps({"files": files}, indent=1))
    return root


WRITERS = {
    "monodepth-nyu-kitti": write_monodepth,
    "7scenes-redkitchen": write_7scenes,
    "3dmatch-seq01": write_3dmatch,
    "replica-office0": write_replica,
    "open3d-rgbd": write_o3dlog,
}
"""Name of the real folder in ``../shared/data`` -> the writer of its generated stand-in."""


class GeneratedData:
    """Generated stand-ins for the folders of ``../shared/data``, each written on first use.

    Args:
        root: an empty folder (a session tmp dir) to write them under.
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def path(self, name: str, *parts: str) -> Path:
        """Path inside the generated stand-in for real folder ``name`` (see :data:`WRITERS`)."""
        if name not in WRITERS:
            raise KeyError(f"no generated stand-in for {name!r}; known: {', '.join(WRITERS)}")
        base = self.root / name
        if not base.exists():
            WRITERS[name](base)
        return base.joinpath(*parts)
