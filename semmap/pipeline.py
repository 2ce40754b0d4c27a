"""End-to-end mapping: a frame source in, a map directory out.

The map directory (written atomically, see ``mapping.atomic``) holds:

- ``tsdf.npz`` / ``tsdf.json``: the TSDF volume and its settings (``mapping.TSDFMap.load``);
- ``mesh.ply``: the marching-cubes surface, vertex colours, world frame, metres;
- ``trajectory.tum``: the camera poses that were integrated (TUM format);
- ``map.json``: metadata written last (format version, source, frames, timings).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from mapping.atomic import atomic_directory
from mapping.tsdf import TSDFConfig, TSDFMap
from sensors.base import FrameSource
from sensors.camera import Camera
from sensors.trajectory_io import Trajectory, write_tum

MAP_FORMAT_VERSION = 1


def o3d_device(device: str) -> str:
    """Normalise a user device string ("cpu", "cuda", "cuda:1", "CPU:0") to Open3D's form."""
    d = device.strip().lower()
    if d in ("cpu", "cpu:0"):
        return "CPU:0"
    if d.startswith("cuda"):
        idx = d.partition(":")[2] or "0"
        return f"CUDA:{int(idx)}"
    raise ValueError(f"unknown device {device!r}; use 'cpu' or 'cuda[:N]'")


@dataclass
class MapConfig:
    """How ``semmap map`` turns a source into a map."""

    voxel_size_m: float = 0.02
    """TSDF voxel edge, metres."""
    depth_max_m: float = 4.0
    """Ignore depth beyond this, metres."""
    depth_min_m: float = 0.1
    """Ignore depth below this, metres."""
    trunc_voxels: float = 4.0
    """TSDF truncation in voxels."""
    stride: int = 1
    """Use every stride-th frame."""
    max_frames: int | None = None
    """Stop after this many frames (after striding)."""
    device: str = "cpu"
    """"cpu" or "cuda[:N]" (Open3D and torch)."""
    min_observations: int = 1
    """Frames a voxel needs before it counts as surface in the mesh."""
    progress: bool = True
    """Show a progress bar."""

    def tsdf_config(self) -> TSDFConfig:
        return TSDFConfig(
            voxel_size_m=self.voxel_size_m,
            trunc_voxels=self.trunc_voxels,
            depth_min_m=self.depth_min_m,
            depth_max_m=self.depth_max_m,
            device=o3d_device(self.device),
            min_observations=self.min_observations,
        )


@dataclass
class MapResult:
    """What one mapping run produced (in memory)."""

    tsdf: TSDFMap
    trajectory: Trajectory
    timings_s: dict[str, float] = field(default_factory=dict)
    frames_seen: int = 0
    frames_skipped: list[str] = field(default_factory=list)
    camera: Camera | None = None

    @property
    def frames_integrated(self) -> int:
        return len(self.trajectory)


def build_map(source: FrameSource, config: MapConfig) -> MapResult:
    """Integrate every usable frame of ``source`` into a new TSDF map.

    Frames without depth or without a pose are skipped and listed in
    ``MapResult.frames_skipped`` (tracking for pose-less sources is a separate stage).
    Raises ValueError if no frame could be integrated.
    """
    tsdf = TSDFMap(config.tsdf_config())
    total = source.count(config.stride, config.max_frames)
    stamps: list[float] = []
    poses: list[np.ndarray] = []
    skipped: list[str] = []
    t_io = t_int = 0.0
    seen = 0
    camera: Camera | None = None
    frames = source.frames(config.stride, config.max_frames)
    bar = tqdm(total=total, desc="mapping", unit="frame", disable=not config.progress)
    t_start = time.perf_counter()
    while True:
        t0 = time.perf_counter()
        frame = next(frames, None)
        t1 = time.perf_counter()
        t_io += t1 - t0
        if frame is None:
            break
        seen += 1
        if frame.depth is None or frame.T_world_cam is None:
            skipped.append(f"{frame.name or frame.index}: no {'depth' if frame.depth is None else 'pose'}")
        else:
            tsdf.integrate(frame)
            camera = camera or frame.camera
            stamps.append(frame.timestamp)
            poses.append(frame.T_world_cam)
        t_int += time.perf_counter() - t1
        bar.update(1)
    bar.close()
    if not poses:
        why = f" ({skipped[0]}, ...)" if skipped else ""
        raise ValueError(f"no frame could be integrated: {seen} frames read{why}")
    timings = {"io": t_io, "integrate": t_int, "total": time.perf_counter() - t_start}
    traj = Trajectory(np.asarray(stamps), np.stack(poses))
    return MapResult(tsdf, traj, timings, seen, skipped, camera)


def save_map(result: MapResult, out_dir: Path | str, source_spec: str, config: MapConfig) -> dict[str, Path]:
    """Write the map directory atomically; returns the paths of the files written."""
    import open3d as o3d

    out_dir = Path(out_dir)
    mesh = result.tsdf.extract_mesh()
    if "colors" in mesh.vertex:
        mesh.vertex.colors = mesh.vertex.colors.clip(0.0, 1.0)
    with atomic_directory(out_dir) as tmp:
        result.tsdf.save_into(tmp)
        if not o3d.t.io.write_triangle_mesh(str(tmp / "mesh.ply"), mesh):
            raise OSError(f"could not write {tmp / 'mesh.ply'}")
        write_tum(tmp / "trajectory.tum", result.trajectory)
        meta = {
            "format_version": MAP_FORMAT_VERSION,
            "semmap_version": _version(),
            "source": source_spec,
            "config": asdict(config),
            "camera": result.camera.to_dict() if result.camera else None,
            "frames_seen": result.frames_seen,
            "frames_integrated": result.frames_integrated,
            "frames_skipped": result.frames_skipped,
            "timings_s": result.timings_s,
            "mesh_vertices": int(mesh.vertex.positions.shape[0]),
            "mesh_triangles": int(mesh.triangle.indices.shape[0]),
            "tsdf_blocks": result.tsdf.num_blocks,
            "tsdf_memory_mb": result.tsdf.memory_bytes() / 2**20,
        }
        (tmp / "map.json").write_text(json.dumps(meta, indent=1))
    names = ["map.json", "mesh.ply", "trajectory.tum", "tsdf.npz", "tsdf.json"]
    return {n: out_dir / n for n in names}


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("semmap")
    except PackageNotFoundError:
        return "0+unknown"
