"""End-to-end mapping: a frame source in, a map directory out.

The map directory (written atomically, see ``mapping.atomic``) holds:

- ``tsdf.npz`` / ``tsdf.json``: the TSDF volume and its settings (``mapping.TSDFMap.load``);
- ``mesh.ply``: the marching-cubes surface, vertex colours, world frame, metres;
- ``trajectory.tum``: the camera poses that were integrated (TUM format);
- ``map.json``: metadata written last (format version, source, frames, timings).

Pose corrections (e.g. a loop closure found after the last frame): a stage that may correct
poses says so (:meth:`Stage.corrects_poses`, asked once with the source); the loop then keeps every integrated frame as
it was integrated (``mapping.reintegration.FrameStore``: depth after the depth stage, its
weights and source tag, colour, pose). When that stage's ``finish`` returns corrected poses,
the map is re-integrated from those frames at the corrected poses
(``mapping.reintegration.reintegrate``), the trajectory is replaced, and every stage's
:meth:`Stage.on_poses_corrected` receives the final pose of each integrated frame, so that
features, views and anything else a stage keeps move with the geometry. ``build_map``
returns only after all of it: a caller that publishes its result (the live service) sees
one consistent map.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict, dataclass, field
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from tqdm import tqdm

from mapping.atomic import atomic_directory
from mapping.reintegration import FrameStore, RetentionConfig, reintegrate
from mapping.tsdf import TSDFConfig, TSDFMap
from sensors.base import FrameSource
from sensors.camera import Camera
from sensors.frame import Frame
from sensors.trajectory_io import Trajectory, write_tum

if TYPE_CHECKING:
    from mapping.fusion import FusionConfig
    from mapping.tracking import TrackerConfig

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
    retention: RetentionConfig = field(default_factory=RetentionConfig)
    """How integrated frames are kept for re-integration when a stage may correct poses."""

    # The depth range and device are set here once; every consumer's config is built from them.
    def tsdf_config(self) -> TSDFConfig:
        return TSDFConfig(
            voxel_size_m=self.voxel_size_m,
            trunc_voxels=self.trunc_voxels,
            depth_min_m=self.depth_min_m,
            depth_max_m=self.depth_max_m,
            device=o3d_device(self.device),
            min_observations=self.min_observations,
        )

    def fusion_config(self, **overrides: Any) -> FusionConfig:
        """``mapping.fusion.FusionConfig`` with this depth range (``overrides``: its other fields)."""
        from mapping.fusion import FusionConfig

        return FusionConfig(depth_min_m=self.depth_min_m, depth_max_m=self.depth_max_m, **overrides)

    def tracker_config(self, **overrides: Any) -> TrackerConfig:
        """``mapping.tracking.TrackerConfig`` with this depth range and device (``overrides``: its other fields)."""
        from mapping.tracking import TrackerConfig

        return TrackerConfig(
            depth_min_m=self.depth_min_m, depth_max_m=self.depth_max_m, device=o3d_device(self.device), **overrides
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
    stopped_early: str | None = None
    """Why the run ended before the source did (Ctrl-C, a stage's StopMapping), or None."""
    frame_indices: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    """(N,) int64 ``Frame.index`` of each trajectory row (the integrated frames, in order)."""
    pose_corrections: list[dict] = field(default_factory=list)
    """One entry per applied pose correction: the stage, frames moved, largest move, re-integrated frames."""
    retention: dict | None = None
    """``FrameStore.describe()`` of the frames kept for re-integration, or None when none were kept."""

    @property
    def frames_integrated(self) -> int:
        return len(self.trajectory)

    def poses_by_index(self) -> dict[int, np.ndarray]:
        """``Frame.index`` -> (4, 4) ``T_world_cam`` of every integrated frame."""
        return {int(i): T for i, T in zip(self.frame_indices, self.trajectory.T_world_cam)}


class SkipFrame(Exception):
    """Raised by a stage to leave a frame out of the map; the message says why."""


class StopMapping(Exception):
    """Raised by a stage to end the run early (e.g. tracking lost for good); the message says why.

    The frames integrated so far are kept: the run finishes and can be saved as usual.
    """


class Stage:
    """One step of the mapping loop (depth filling, tracking, semantic fusion, ...).

    The loop calls, per frame, every stage's ``before_integrate`` in order (each may
    return a changed frame, e.g. with filled depth or an estimated pose, or raise
    :class:`SkipFrame`), integrates the frame into the TSDF, then every stage's
    ``after_integrate``. After the last frame it calls every stage's ``finish`` in order;
    a stage whose :meth:`corrects_poses` was true may return corrected poses from it, and the
    pipeline then re-integrates the map and calls every stage's ``on_poses_corrected``
    (see the module docstring). When the map is saved: ``save_into`` (files beside the
    TSDF) and ``metadata`` (into map.json). Before the first frame, ``begin`` tells each
    stage whether poses may be corrected later (so it keeps what re-posing needs).
    Time spent in each stage is reported under its ``name``.
    """

    name: str = "stage"

    def corrects_poses(self, source: FrameSource) -> bool:
        """True when ``finish`` may return corrected poses for frames of ``source`` (the loop then keeps
        the integrated frames, see ``mapping.reintegration``); asked once, before the first frame."""
        return False

    def begin(self, poses_may_change: bool) -> None:
        """Called once before the first frame; ``poses_may_change``: some stage may correct poses after the last."""

    def before_integrate(self, frame: Frame, tsdf: TSDFMap) -> Frame:
        return frame

    def after_integrate(self, frame: Frame, tsdf: TSDFMap) -> None:
        pass

    def finish(self, result: MapResult) -> dict[int, np.ndarray] | None:
        """After the last frame. May return corrected poses (``Frame.index`` -> (4, 4) ``T_world_cam``,
        only when :meth:`corrects_poses` was true); frames left out keep their pose."""
        return None

    def on_poses_corrected(self, corrected: dict[int, np.ndarray], result: MapResult) -> None:
        """After a pose correction: ``corrected`` holds the final ``T_world_cam`` of every integrated
        frame (by ``Frame.index``); ``result.tsdf`` / ``result.trajectory`` are already the corrected ones."""

    def save_into(self, directory: Path) -> list[str]:
        """Write this stage's outputs into the (temporary) map directory; return file names."""
        return []

    def metadata(self) -> dict:
        return {}


@dataclass
class _LoopState:
    """What the per-frame loop accumulates."""

    tsdf: TSDFMap
    timings: dict[str, float]
    stamps: list[float] = field(default_factory=list)
    poses: list[np.ndarray] = field(default_factory=list)
    indices: list[int] = field(default_factory=list)
    store: FrameStore | None = None
    """The integrated frames, kept when a stage may correct poses."""
    skipped: list[str] = field(default_factory=list)
    seen: int = 0
    camera: Camera | None = None


def build_map(source: FrameSource, config: MapConfig, stages: Sequence[Stage] = ()) -> MapResult:
    """Integrate every usable frame of ``source`` into a new TSDF map.

    Frames without depth or without a pose after all stages ran, and frames a stage
    skipped, are listed in ``MapResult.frames_skipped``. Ctrl-C or a stage's
    :class:`StopMapping` ends the loop early; what was integrated is kept
    (``MapResult.stopped_early`` says why). Raises ValueError if no frame could be integrated.
    """
    poses_may_change = any(st.corrects_poses(source) for st in stages)
    state = _LoopState(TSDFMap(config.tsdf_config()), {"io": 0.0, "integrate": 0.0, **{st.name: 0.0 for st in stages}})
    if poses_may_change:
        state.store = FrameStore(config.retention)
        state.timings["retain"] = 0.0
    for st in stages:
        st.begin(poses_may_change)
    frames = source.frames(config.stride, config.max_frames)
    bar = tqdm(total=source.count(config.stride, config.max_frames), desc="mapping", unit="frame",
               disable=not config.progress)
    t_start = time.perf_counter()
    stopped: str | None = None
    try:
        _run_loop(frames, stages, state, bar)
    except StopMapping as e:
        stopped = str(e)
    except KeyboardInterrupt:
        stopped = "interrupted (Ctrl-C)"
    finally:
        bar.close()
    if stopped:
        print(f"mapping stopped early after {state.seen} frames: {stopped}", file=sys.stderr)
    if not state.poses:
        why = f" ({state.skipped[0]}, ...)" if state.skipped else ""
        raise ValueError(f"no frame could be integrated: {state.seen} frames read{why}")
    traj = Trajectory(np.asarray(state.stamps), np.stack(state.poses))
    timings = state.timings
    result = MapResult(state.tsdf, traj, timings, state.seen, state.skipped, state.camera, stopped,
                       frame_indices=np.asarray(state.indices, np.int64),
                       retention=state.store.describe() if state.store is not None else None)
    for st in stages:
        t0 = time.perf_counter()
        corrected = st.finish(result)
        timings[st.name] += time.perf_counter() - t0
        if corrected:
            _apply_pose_correction(st, corrected, result, stages, state.store, config)
    timings["total"] = time.perf_counter() - t_start
    return result


def _apply_pose_correction(
    by: Stage,
    corrected: dict[int, np.ndarray],
    result: MapResult,
    stages: Sequence[Stage],
    store: FrameStore | None,
    config: MapConfig,
) -> None:
    """Re-integrate the kept frames at the corrected poses, replace the trajectory, tell every stage."""
    if store is None:
        raise ValueError(f"stage {by.name!r} returned corrected poses but does not declare corrects_poses")
    before = result.poses_by_index()
    poses = np.stack([np.asarray(corrected.get(int(i), T), np.float64) for i, T in before.items()])
    t0 = time.perf_counter()
    result.tsdf = reintegrate(store, corrected, result.tsdf.config, progress=config.progress)
    result.timings_s["reintegrate"] = result.timings_s.get("reintegrate", 0.0) + time.perf_counter() - t0
    result.trajectory = Trajectory(result.trajectory.timestamps, poses)
    final = result.poses_by_index()
    moved = [float(np.linalg.norm(final[i][:3, 3] - T[:3, 3])) for i, T in before.items()]
    result.pose_corrections.append({
        "stage": by.name,
        "frames_moved": int(sum(m > 1e-9 for m in moved)),
        "max_translation_m": max(moved),
        "reintegrated_frames": len(store),
        "reintegrate_seconds": time.perf_counter() - t0,
    })
    for st in stages:
        t1 = time.perf_counter()
        st.on_poses_corrected(final, result)
        result.timings_s[st.name] += time.perf_counter() - t1


def _run_loop(frames: Iterator[Frame], stages: Sequence[Stage], state: _LoopState, bar: tqdm) -> None:
    """The per-frame loop of :func:`build_map`: stages, integration, bookkeeping in ``state``."""
    timings = state.timings
    while True:
        t0 = time.perf_counter()
        frame = next(frames, None)
        timings["io"] += time.perf_counter() - t0
        if frame is None:
            return
        state.seen += 1
        bar.update(1)
        try:
            for st in stages:
                t0 = time.perf_counter()
                try:
                    frame = st.before_integrate(frame, state.tsdf)
                finally:
                    timings[st.name] += time.perf_counter() - t0
        except SkipFrame as e:
            state.skipped.append(f"{frame.name or frame.index}: {e}")
            continue
        if frame.depth is None or frame.T_world_cam is None:
            state.skipped.append(f"{frame.name or frame.index}: no {'depth' if frame.depth is None else 'pose'}")
            continue
        t0 = time.perf_counter()
        state.tsdf.integrate(frame, weight=frame.tsdf_weight)
        timings["integrate"] += time.perf_counter() - t0
        state.camera = state.camera or frame.camera
        state.stamps.append(frame.timestamp)
        state.poses.append(frame.T_world_cam)
        state.indices.append(int(frame.index))
        if state.store is not None:
            t0 = time.perf_counter()
            state.store.add(frame, frame.tsdf_weight)
            timings["retain"] += time.perf_counter() - t0
        for st in stages:
            t0 = time.perf_counter()
            st.after_integrate(frame, state.tsdf)
            timings[st.name] += time.perf_counter() - t0


def save_map(
    result: MapResult,
    out_dir: Path | str,
    source_spec: str,
    config: MapConfig,
    stages: Sequence[Stage] = (),
    extra_metadata: dict | None = None,
) -> dict[str, Path]:
    """Write the map directory atomically (map.json last); returns the paths of the files written.

    ``extra_metadata`` (JSON-serialisable) is merged into map.json's top level, e.g. the
    settings hash that ``semmap batch --resume`` compares.
    """
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
        names = ["mesh.ply", "trajectory.tum", "tsdf.npz", "tsdf.json"]
        for st in stages:
            names += st.save_into(tmp)
        meta = {
            "format_version": MAP_FORMAT_VERSION,
            "semmap_version": _version(),
            "source": source_spec,
            "config": asdict(config),
            "camera": result.camera.to_dict() if result.camera else None,
            "frames_seen": result.frames_seen,
            "frames_integrated": result.frames_integrated,
            "frames_skipped": result.frames_skipped,
            "stopped_early": result.stopped_early,
            "pose_corrections": result.pose_corrections,
            "retention": result.retention,
            "timings_s": result.timings_s,
            "mesh_vertices": int(mesh.vertex.positions.shape[0]),
            "mesh_triangles": int(mesh.triangle.indices.shape[0]),
            "tsdf_blocks": result.tsdf.num_blocks,
            "tsdf_memory_mb": result.tsdf.memory_bytes() / 2**20,
            "stages": {st.name: st.metadata() for st in stages},
            **(extra_metadata or {}),
        }
        (tmp / "map.json").write_text(json.dumps(meta, indent=1))
    return {n: out_dir / n for n in ["map.json", *names]}


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("semmap")
    except PackageNotFoundError:
        return "0+unknown"
