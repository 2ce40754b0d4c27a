"""TUM RGB-D benchmark sequences (``rgb.txt``, ``depth.txt``, ``groundtruth.txt``).

Layout (https://cvg.cit.tum.de/data/datasets/rgbd-dataset/file_formats)::

    <seq>/rgb.txt            "timestamp rgb/<timestamp>.png" per line, '#' comments
    <seq>/depth.txt          "timestamp depth/<timestamp>.png"; uint16 PNG, 5000 units per metre
    <seq>/groundtruth.txt    "t tx ty tz qx qy qz qw", camera-to-world, ~100 Hz (optional)

Colour and depth come from different clocks. Each colour image is paired with the
depth image nearest in time within ``max_time_diff_s`` (greedy one-to-one, smallest
time difference first, as TUM's ``associate.py``); colour images without a partner are
dropped. The pose of a frame is the ground truth interpolated at the *colour* time
(linear translation, quaternion slerp). TUM depth is registered to colour by the
driver, so one camera serves both. Conventions: docs/conventions.md.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.spatial.transform import Rotation, Slerp

from sensors.base import IndexedSource
from sensors.camera import Camera
from sensors.frame import Frame, FrameOrigin
from sensors.io import SourceError, read_json, image_size, read_rgbd
from sensors.trajectory_io import Trajectory, read_tum

TUM_DEPTH_SCALE = 5000.0
"""Raw depth units per metre in TUM PNGs."""

TUM_INTRINSICS: dict[str, tuple[float, float, float, float]] = {
    "fr1": (517.3, 516.5, 318.6, 255.3),
    "fr2": (520.9, 521.0, 325.1, 249.7),
    "fr3": (535.4, 539.2, 320.1, 247.6),
    "default": (525.0, 525.0, 319.5, 239.5),
}
"""fx, fy, cx, cy (pixels) of the TUM Kinects; "default" is the ROS default TUM recommends."""


@dataclass(frozen=True)
class TUMFrameEntry:
    """One associated frame: colour and depth file with their times, and the pose.

    Attributes:
        rgb_time, depth_time: seconds on the sensor clock.
        rgb_path, depth_path: absolute file paths (depth_path None without depth).
        T_world_cam: (4, 4) float64 ground truth at ``rgb_time``, or None.
    """

    rgb_time: float
    rgb_path: Path
    depth_time: float | None
    depth_path: Path | None
    T_world_cam: np.ndarray | None


def read_tum_list(path: Path) -> tuple[np.ndarray, list[Path]]:
    """Read ``rgb.txt`` / ``depth.txt``: (N,) float64 timestamps (s) and file paths.

    Paths are relative to the list's folder. Raises SourceError naming the list file
    and line on a malformed line, and naming every missing image file.
    """
    if not path.is_file():
        raise SourceError(f"missing TUM file list: {path}")
    times: list[float] = []
    files: list[Path] = []
    for lineno, line in enumerate(path.read_text().splitlines(), 1):
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        parts = s.split()
        if len(parts) != 2:
            raise SourceError(f"{path}:{lineno}: expected 'timestamp filename', got {s!r}")
        try:
            t = float(parts[0])
        except ValueError:
            raise SourceError(f"{path}:{lineno}: timestamp {parts[0]!r} is not a number") from None
        if not np.isfinite(t):
            raise SourceError(f"{path}:{lineno}: timestamp is not finite")
        times.append(t)
        files.append(path.parent / parts[1])
    if not times:
        raise SourceError(f"{path}: lists no images")
    missing = [f for f in files if not f.is_file()]
    if missing:
        shown = ", ".join(str(f) for f in missing[:5])
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        raise SourceError(f"{path}: {len(missing)} listed image(s) missing: {shown}{more}")
    return np.asarray(times, dtype=np.float64), files


def associate_times(t_a: np.ndarray, t_b: np.ndarray, max_diff_s: float) -> np.ndarray:
    """Pair each time in ``t_a`` with a distinct time in ``t_b`` (TUM ``associate.py``).

    Candidate pairs closer than ``max_diff_s`` are accepted greedily, smallest
    difference first, each index used at most once.

    Args:
        t_a: (N,) seconds; t_b: (M,) seconds.
    Returns:
        (N,) int64 index into ``t_b`` for every ``t_a``, -1 where unpaired.
    """
    order_b = np.argsort(t_b, kind="stable")
    tb_sorted = t_b[order_b]
    lo = np.searchsorted(tb_sorted, t_a - max_diff_s, side="left")
    hi = np.searchsorted(tb_sorted, t_a + max_diff_s, side="right")
    cand: list[tuple[float, int, int]] = []
    for i in range(len(t_a)):
        for k in range(lo[i], hi[i]):
            d = abs(t_a[i] - tb_sorted[k])
            if d < max_diff_s:
                cand.append((d, i, int(order_b[k])))
    cand.sort()
    match = np.full(len(t_a), -1, dtype=np.int64)
    used_b: set[int] = set()
    for _, i, j in cand:
        if match[i] < 0 and j not in used_b:
            match[i] = j
            used_b.add(j)
    return match


def interpolate_poses(traj: Trajectory, times: np.ndarray, max_gap_s: float) -> list[np.ndarray | None]:
    """Camera-to-world poses at ``times`` from a timestamped trajectory.

    Translation is interpolated linearly and rotation by quaternion slerp between the
    two bracketing samples. Times outside the trajectory's range, or whose bracketing
    samples are more than ``max_gap_s`` apart (a tracking dropout), get None.

    Args:
        traj: N >= 1 samples, timestamps strictly increasing (seconds).
        times: (M,) query times in seconds.
    Returns:
        M entries, each a (4, 4) float64 T_world_cam or None.
    """
    t = traj.timestamps
    q = np.asarray(times, dtype=np.float64).reshape(-1)
    out: list[np.ndarray | None] = [None] * len(q)
    if len(t) == 1:
        for m in np.flatnonzero(q == t[0]):
            out[m] = traj.T_world_cam[0].copy()
        return out
    k = np.clip(np.searchsorted(t, q, side="right"), 1, len(t) - 1)
    ok = (q >= t[0]) & (q <= t[-1]) & (t[k] - t[k - 1] <= max_gap_s)
    if not ok.any():
        return out
    qs = q[ok]
    R = Slerp(t, Rotation.from_matrix(traj.T_world_cam[:, :3, :3]))(qs).as_matrix()
    pos = traj.T_world_cam[:, :3, 3]
    xyz = np.stack([np.interp(qs, t, pos[:, c]) for c in range(3)], axis=-1)
    for j, m in enumerate(np.flatnonzero(ok)):
        T = np.eye(4)
        T[:3, :3] = R[j]
        T[:3, 3] = xyz[j]
        out[m] = T
    return out


def _sorted_unique_trajectory(traj: Trajectory, path: Path) -> Trajectory:
    """Sort by time; drop repeated timestamps (first kept) with a warning."""
    order = np.argsort(traj.timestamps, kind="stable")
    t = traj.timestamps[order]
    keep = np.concatenate([[True], np.diff(t) > 0])
    if not keep.all():
        warnings.warn(f"{path}: dropped {int((~keep).sum())} repeated timestamps", stacklevel=3)
    return Trajectory(t[keep], traj.T_world_cam[order][keep])


def tum_camera(
    folder: Path, camera: str | Camera | None, width: int, height: int
) -> tuple[Camera, str]:
    """Intrinsics of a TUM sequence and where they came from.

    Order: the ``camera`` argument (a Camera, or "fr1"/"fr2"/"fr3"/"default"), then
    ``camera.json`` in the folder ({fx, fy, cx, cy[, width, height]}), then
    ``calibration.txt`` (first line "fx fy cx cy [distortion...]"), then the sensor
    named in the folder name ("rgbd_dataset_freiburg2_desk" -> fr2), else the ROS
    default 525/525/319.5/239.5 with a warning.
    """
    if isinstance(camera, Camera):
        return camera, "argument"
    if camera is not None:
        key = str(camera).lower().replace("freiburg", "fr")
        if key not in TUM_INTRINSICS:
            raise SourceError(f"unknown TUM camera {camera!r}; known: {', '.join(TUM_INTRINSICS)}")
        return Camera(*TUM_INTRINSICS[key], width, height), key
    cam_json = folder / "camera.json"
    if cam_json.is_file():
        d = read_json(cam_json)
        try:
            return Camera.from_dict({"width": width, "height": height, **d}), str(cam_json)
        except (KeyError, TypeError, ValueError) as e:
            raise SourceError(f"{cam_json}: expected {{fx, fy, cx, cy[, width, height]}} ({e!r})") from e
    calib = folder / "calibration.txt"
    if calib.is_file():
        for line in calib.read_text().splitlines():
            s = line.strip()
            if not s or s.startswith("#"):
                continue
            try:
                vals = [float(x) for x in s.replace(",", " ").split()]
            except ValueError:
                vals = []
            if len(vals) < 4:
                raise SourceError(f"{calib}: first line must be 'fx fy cx cy [distortion...]', got {s!r}")
            if any(v != 0 for v in vals[4:]):
                warnings.warn(f"{calib}: distortion coefficients ignored (images used as given)", stacklevel=3)
            try:
                return Camera(*vals[:4], width, height), str(calib)
            except ValueError as e:
                raise SourceError(f"{calib}: {e}") from e
        raise SourceError(f"{calib}: no calibration line")
    m = re.search(r"freiburg([123])", folder.resolve().name)
    if m:
        key = f"fr{m.group(1)}"
        return Camera(*TUM_INTRINSICS[key], width, height), f"folder name ({key})"
    warnings.warn(
        f"{folder}: unknown TUM camera (no camera option, camera.json, calibration.txt or 'freiburgN' "
        "in the folder name); using the default 525/525/319.5/239.5",
        stacklevel=3,
    )
    return Camera(*TUM_INTRINSICS["default"], width, height), "default"


class TUMSource(IndexedSource):
    """Frames of a TUM RGB-D sequence (see the module docstring for the layout).

    Args:
        path: the sequence folder (holding ``rgb.txt`` and ``depth.txt``).
        camera: a Camera or "fr1" / "fr2" / "fr3" / "default"; None = from
            ``camera.json``, ``calibration.txt`` or the folder name (see ``tum_camera``).
        max_time_diff_s: largest colour-depth time difference for a pair (TUM: 0.02 s).
        max_pose_gap_s: poses are not interpolated across ground-truth gaps longer than this.
        require_poses: None (default) drops frames outside the ground-truth coverage
            when ``groundtruth.txt`` exists, and keeps all frames pose-less when it
            does not; True additionally requires the file; False keeps every frame,
            unposed ones with ``T_world_cam=None``. Dropping is the default because a
            sequence mixing ground-truth and tracked poses has two world frames.
        require_depth: drop colour images without a depth partner (default); False
            keeps them with ``depth=None``.
        depth_scale: raw depth units per metre.

    Attributes:
        entries: the associated frames, in colour-time order.
        camera_origin: where the intrinsics came from.
    """

    kind = "tum"

    def __init__(
        self,
        path: Path,
        camera: str | Camera | None = None,
        max_time_diff_s: float = 0.02,
        max_pose_gap_s: float = 0.1,
        require_poses: bool | None = None,
        require_depth: bool = True,
        depth_scale: float = TUM_DEPTH_SCALE,
    ) -> None:
        self.path = Path(path)
        if not self.path.is_dir():
            raise SourceError(f"TUM sequence folder not found: {self.path}")
        self.depth_scale = float(depth_scale)
        rgb_t, rgb_files = read_tum_list(self.path / "rgb.txt")
        depth_t, depth_files = read_tum_list(self.path / "depth.txt")
        order = np.argsort(rgb_t, kind="stable")
        rgb_t, rgb_files = rgb_t[order], [rgb_files[i] for i in order]

        match = associate_times(rgb_t, depth_t, max_time_diff_s)
        keep = match >= 0 if require_depth else np.ones(len(rgb_t), bool)
        if require_depth and not keep.all() and keep.any():
            warnings.warn(
                f"{self.path}: dropped {int((~keep).sum())} colour image(s) with no depth image within "
                f"{max_time_diff_s} s",
                stacklevel=2,
            )
        if not keep.any():
            raise SourceError(
                f"{self.path}: no colour image in rgb.txt has a depth image in depth.txt within "
                f"{max_time_diff_s} s (check the timestamps or max_time_diff_s)"
            )

        gt_path = self.path / "groundtruth.txt"
        poses: list[np.ndarray | None] = [None] * len(rgb_t)
        if gt_path.is_file():
            traj = _sorted_unique_trajectory(read_tum(gt_path), gt_path)
            poses = interpolate_poses(traj, rgb_t, max_pose_gap_s)
        elif require_poses:
            raise SourceError(f"missing ground truth (require_poses=True): {gt_path}")
        self.has_poses = gt_path.is_file()
        if self.has_poses and require_poses is not False:
            posed = np.array([p is not None for p in poses])
            dropped = keep & ~posed
            if not (keep & posed).any():
                raise SourceError(f"{gt_path}: no frame lies within the ground-truth time range")
            if dropped.any():
                warnings.warn(
                    f"{self.path}: dropped {int(dropped.sum())} frame(s) without ground truth "
                    f"(colour times outside {gt_path.name} coverage or in a gap > {max_pose_gap_s} s)",
                    stacklevel=2,
                )
            keep &= posed

        self.entries: list[TUMFrameEntry] = [
            TUMFrameEntry(
                rgb_time=float(rgb_t[i]),
                rgb_path=rgb_files[i],
                depth_time=float(depth_t[match[i]]) if match[i] >= 0 else None,
                depth_path=depth_files[match[i]] if match[i] >= 0 else None,
                T_world_cam=poses[i],
            )
            for i in np.flatnonzero(keep)
        ]
        h, w = image_size(self.entries[0].rgb_path)
        self.camera, self.camera_origin = tum_camera(self.path, camera, w, h)

    @classmethod
    def detect(cls, path: Path) -> bool:
        p = Path(path)
        return (p / "rgb.txt").is_file() and (p / "depth.txt").is_file()

    def __len__(self) -> int:
        return len(self.entries)

    def load(self, i: int) -> Frame:
        """Frame i: colour (H, W, 3) uint8, depth (H, W) float32 metres, pose at the colour time."""
        e = self.entries[i]
        rgb, depth = read_rgbd(e.rgb_path, e.depth_path, self.depth_scale, self.camera.shape,
                               camera_origin="the sequence camera")
        return Frame(
            rgb=rgb,
            depth=depth,
            camera=self.camera,
            T_world_cam=e.T_world_cam,
            timestamp=e.rgb_time,
            index=i,
            name=str(e.rgb_path),
            origin=FrameOrigin(depth_path=str(e.depth_path) if e.depth_path else None, depth_time=e.depth_time),
        )
