"""Trajectory files: TUM (``t tx ty tz qx qy qz qw``), 4x4-per-line, Open3D ``.log``.

All poses are ``T_world_cam`` (camera-to-world), (N, 4, 4) float64, metres.
Quaternions are stored x, y, z, w in TUM files (the TUM convention).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.spatial.transform import Rotation

from sensors.io import SourceError, require_file


@dataclass
class Trajectory:
    """Timestamped camera-to-world poses.

    Attributes:
        timestamps: (N,) float64 seconds (or frame indices).
        T_world_cam: (N, 4, 4) float64.
    """

    timestamps: np.ndarray
    T_world_cam: np.ndarray

    def __post_init__(self) -> None:
        self.timestamps = np.asarray(self.timestamps, dtype=np.float64).reshape(-1)
        self.T_world_cam = np.asarray(self.T_world_cam, dtype=np.float64).reshape(-1, 4, 4)
        if len(self.timestamps) != len(self.T_world_cam):
            raise ValueError(f"{len(self.timestamps)} timestamps but {len(self.T_world_cam)} poses")

    def __len__(self) -> int:
        return len(self.timestamps)

    @property
    def positions_xyz(self) -> np.ndarray:
        """(N, 3) camera centres in the world frame."""
        return self.T_world_cam[:, :3, 3]


def poses_to_tum_rows(timestamps: np.ndarray, T_world_cam: np.ndarray) -> np.ndarray:
    """(N, 8) rows ``t tx ty tz qx qy qz qw``."""
    q = Rotation.from_matrix(T_world_cam[:, :3, :3]).as_quat()  # x, y, z, w
    return np.column_stack([timestamps, T_world_cam[:, :3, 3], q])


def tum_rows_to_poses(rows: np.ndarray) -> np.ndarray:
    """(N, 8) TUM rows -> (N, 4, 4) poses."""
    T = np.tile(np.eye(4), (len(rows), 1, 1))
    T[:, :3, :3] = Rotation.from_quat(rows[:, 4:8]).as_matrix()
    T[:, :3, 3] = rows[:, 1:4]
    return T


def _load_numeric_rows(path: Path, ncols: int, what: str) -> np.ndarray:
    p = require_file(path, what)
    rows = []
    for lineno, line in enumerate(p.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.replace(",", " ").split()
        if len(parts) != ncols:
            raise SourceError(f"{p}:{lineno}: expected {ncols} numbers, got {len(parts)}")
        try:
            vals = [float(x) for x in parts]
        except ValueError as e:
            raise SourceError(f"{p}:{lineno}: not a number ({e})") from e
        if not np.all(np.isfinite(vals)):
            raise SourceError(f"{p}:{lineno}: non-finite value in pose")
        rows.append(vals)
    if not rows:
        raise SourceError(f"{p}: no poses in {what}")
    return np.asarray(rows, dtype=np.float64)


def read_tum(path: Path | str) -> Trajectory:
    """Read a TUM trajectory (comments '#' allowed)."""
    rows = _load_numeric_rows(Path(path), 8, "TUM trajectory")
    return Trajectory(rows[:, 0], tum_rows_to_poses(rows))


def write_tum(path: Path | str, traj: Trajectory) -> Path:
    """Write a TUM trajectory file."""
    path = Path(path)
    rows = poses_to_tum_rows(traj.timestamps, traj.T_world_cam)
    np.savetxt(path, rows, fmt="%.9f", header="timestamp tx ty tz qx qy qz qw", comments="# ")
    return path


def read_matrix_lines(path: Path | str) -> Trajectory:
    """Read one row-major 4x4 pose per line (16 numbers, e.g. Replica ``traj.txt``); timestamps = index."""
    rows = _load_numeric_rows(Path(path), 16, "4x4-per-line trajectory")
    return Trajectory(np.arange(len(rows), dtype=np.float64), rows.reshape(-1, 4, 4))


def write_matrix_lines(path: Path | str, traj: Trajectory) -> Path:
    path = Path(path)
    np.savetxt(path, traj.T_world_cam.reshape(-1, 16), fmt="%.9g")
    return path


def read_o3d_log(path: Path | str) -> Trajectory:
    """Read an Open3D / Redwood ``.log`` trajectory (``i j n`` line then 4 matrix lines)."""
    p = require_file(path, "trajectory .log")
    lines = [ln for ln in p.read_text().splitlines() if ln.strip()]
    if len(lines) % 5 != 0:
        raise SourceError(f"{p}: expected blocks of 5 lines (header + 4x4), got {len(lines)} lines")
    ids, poses = [], []
    for b in range(0, len(lines), 5):
        try:
            ids.append(int(lines[b].split()[0]))
            T = np.array([[float(x) for x in lines[b + r].split()] for r in range(1, 5)])
        except (ValueError, IndexError) as e:
            raise SourceError(f"{p}:{b + 1}: cannot parse pose block ({e})") from e
        if T.shape != (4, 4) or not np.all(np.isfinite(T)):
            raise SourceError(f"{p}:{b + 1}: pose block is not a finite 4x4 matrix")
        poses.append(T)
    return Trajectory(np.asarray(ids, dtype=np.float64), np.stack(poses))


def write_o3d_log(path: Path | str, traj: Trajectory) -> Path:
    path = Path(path)
    n = len(traj)
    with open(path, "w") as f:
        for i, T in enumerate(traj.T_world_cam):
            f.write(f"{i} {i} {n}\n")
            for r in range(4):
                f.write(" ".join(f"{x:.9g}" for x in T[r]) + "\n")
    return path


TRAJECTORY_FORMATS = {"tum": (read_tum, write_tum), "lines": (read_matrix_lines, write_matrix_lines), "log": (read_o3d_log, write_o3d_log)}


def detect_trajectory_format(path: Path | str) -> str:
    """"log" for .log files, "tum" if data lines have 8 numbers, "lines" if 16."""
    p = require_file(path, "trajectory file")
    if p.suffix == ".log":
        return "log"
    for line in p.read_text().splitlines():
        s = line.strip()
        if s and not s.startswith("#"):
            n = len(s.replace(",", " ").split())
            if n == 8:
                return "tum"
            if n == 16:
                return "lines"
            raise SourceError(f"{p}: cannot tell the trajectory format ({n} numbers per line; TUM has 8, 4x4 has 16)")
    raise SourceError(f"{p}: empty trajectory file")


def read_trajectory(path: Path | str, fmt: str | None = None) -> Trajectory:
    """Read a trajectory in any supported format (auto-detected when ``fmt`` is None)."""
    fmt = fmt or detect_trajectory_format(path)
    if fmt not in TRAJECTORY_FORMATS:
        raise ValueError(f"unknown trajectory format {fmt!r}; known: {', '.join(TRAJECTORY_FORMATS)}")
    return TRAJECTORY_FORMATS[fmt][0](path)


def write_trajectory(path: Path | str, traj: Trajectory, fmt: str = "tum") -> Path:
    if fmt not in TRAJECTORY_FORMATS:
        raise ValueError(f"unknown trajectory format {fmt!r}; known: {', '.join(TRAJECTORY_FORMATS)}")
    return TRAJECTORY_FORMATS[fmt][1](path, traj)
