"""Live mapping behind the service: ``semmap serve --live SOURCE --out DIR``.

A :class:`LiveMapper` runs ``semmap.pipeline.build_map`` in a background thread with the
stages of ``semmap map`` plus a :class:`PublishStage`, which, every ``interval_s``:

1. in the mapping thread, between two frames (nothing changes meanwhile): extracts the
   TSDF mesh and copies the feature grid and the poses so far (a *capture*);
2. hands the capture to a publisher thread, which builds a ``SemanticMap`` from the copy
   (sharing the mapper's encoder), embeds the negatives and matches the voxels to the
   reference names, and publishes it as one :class:`MapSnapshot`.

So a query reads either the previous snapshot or the new one, never a grid being fused
into. Only the newest capture waits for the publisher (an older unpublished one is
replaced), so a slow publisher never queues. After the last frame the stages' ``finish``
runs (a loop closure may replace the TSDF and the poses) and the final map is published
as one snapshot, then saved with ``semmap.pipeline.save_map`` exactly as ``semmap map``
writes it (plus a ``live`` entry in map.json: frames dropped, publish count and time, and
the source indices of the integrated frames).

The mapper stops early, keeping and saving what it integrated, when :meth:`LiveMapper.stop`
is called (``semmap serve`` calls it on Ctrl-C).
"""

from __future__ import annotations

import contextlib
import copy
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from mapping.tsdf import TSDFMap
from semmap.pipeline import MapConfig, MapResult, Stage, StopMapping, build_map, save_map
from semmap.serve.maps import EncoderCache, MapSnapshot, MapStore, tsdf_mesh_arrays
from sensors.base import FrameSource
from sensors.camera import Camera
from sensors.frame import Frame
from sensors.trajectory_io import Trajectory


@dataclass
class Capture:
    """What a snapshot needs, copied in the mapping thread (no reference into live state).

    Attributes:
        mesh: (vertices (V, 3) float32, triangles (F, 3) int32, colours (V, 3) float32).
        T_world_cam: (N, 4, 4) float64 poses so far.
        camera: the frames' intrinsics.
        frames: frames integrated.
        grid: a copy of the feature grid (None without a semantic stage or before any feature).
        encoder_name: the semantic encoder's name, or None.
        features_meta: the semantic stage's metadata at capture time.
        final: True for the post-``finish`` map.
    """

    mesh: tuple[np.ndarray, np.ndarray, np.ndarray]
    T_world_cam: np.ndarray
    camera: Camera | None
    frames: int
    grid: Any = None
    encoder_name: str | None = None
    features_meta: dict = field(default_factory=dict)
    final: bool = False


def copy_grid(grid: Any) -> Any:
    """An independent copy of a ``FeatureGrid`` (its arrays copied; later fusion does not touch it)."""
    if hasattr(type(grid), "from_arrays"):  # a grid with an Open3D hash index cannot be deep-copied
        return type(grid).from_arrays(grid.voxel_size_m, grid.keys.copy(), grid.embeddings.copy(),
                                      grid.weights.copy(), grid.counts.copy())
    return copy.deepcopy(grid)


class PublishStage(Stage):
    """The last stage of a live run: captures the map every ``interval_s`` and on finish.

    Args:
        mapper: the owning :class:`LiveMapper` (receives the captures, says when to stop).
        stages: the run's other stages (the semantic stage's grid is copied from them).
        interval_s: seconds between captures.
    """

    name = "publish"

    def __init__(self, mapper: LiveMapper, stages: Sequence[Stage], interval_s: float) -> None:
        self.mapper = mapper
        self.semantic = next((s for s in stages if s.name == "semantic"), None)
        self.interval_s = interval_s
        self.stamps: list[float] = []
        self.indices: list[int] = []
        self.poses: list[np.ndarray] = []
        self.camera: Camera | None = None
        self.last = time.perf_counter()
        self.captures = 0
        self.capture_s = 0.0

    def before_integrate(self, frame: Frame, tsdf: TSDFMap) -> Frame:
        if self.mapper.stop_requested.is_set():
            raise StopMapping("stopped by the service (Ctrl-C)")
        return frame

    def after_integrate(self, frame: Frame, tsdf: TSDFMap) -> None:
        self.stamps.append(frame.timestamp)
        self.indices.append(int(frame.index))
        self.poses.append(np.array(frame.T_world_cam, np.float64))
        self.camera = self.camera or frame.camera
        if self.mapper.graph_request.is_set():
            self.mapper.write_working_copy(self._result(tsdf))
        if time.perf_counter() - self.last >= self.interval_s:
            self.mapper.submit(self.capture(tsdf, np.stack(self.poses), len(self.poses)))
            self.last = time.perf_counter()

    def finish(self, result: MapResult) -> None:
        self.mapper.submit(
            self.capture(result.tsdf, result.trajectory.T_world_cam, result.frames_integrated, final=True)
        )

    def _result(self, tsdf: TSDFMap) -> MapResult:
        traj = Trajectory(np.asarray(self.stamps), np.stack(self.poses))
        return MapResult(tsdf, traj, {}, len(self.poses), [], self.camera)

    def capture(self, tsdf: TSDFMap, T_world_cam: np.ndarray, frames: int, final: bool = False) -> Capture:
        t0 = time.perf_counter()
        grid, name, meta = None, None, {}
        if self.semantic is not None:
            name = self.semantic.encoder.name
            if len(self.semantic.grid):
                grid, meta = copy_grid(self.semantic.grid), self.semantic.metadata()
        cap = Capture(tsdf_mesh_arrays(tsdf), np.array(T_world_cam, np.float64), self.camera, int(frames),
                      grid, name, meta, final)
        self.captures += 1
        self.capture_s += time.perf_counter() - t0
        return cap


class LiveMapper:
    """Maps a source in a background thread and publishes its growing map into ``store``.

    Args:
        store: where the snapshots go (under ``name``).
        name: the map's name in the API.
        source: the frame source (opened; closed when the run ends).
        source_spec: the source as given (recorded in map.json).
        config: the mapping settings of ``semmap map``.
        stages: the stages of ``semmap map`` (``semmap.stages.build_stages``).
        out_dir: where the finished map is saved (atomically).
        encoders: the service's encoders (the semantic stage's encoder is shared into it).
        interval_s: seconds between published snapshots.
        dropped: returns the frames dropped so far (e.g. ``LatestFrameSource.stats``), or None.
    """

    def __init__(
        self,
        store: MapStore,
        name: str,
        source: FrameSource,
        source_spec: str,
        config: MapConfig,
        stages: Sequence[Stage],
        out_dir: Path,
        encoders: EncoderCache,
        interval_s: float = 3.0,
        dropped: Any = None,
    ) -> None:
        if not interval_s > 0:
            raise ValueError(f"publish interval must be positive, got {interval_s}")
        self.store, self.name = store, name
        self.source, self.source_spec = source, source_spec
        self.config, self.stages = config, list(stages)
        self.out_dir = Path(out_dir)
        self.encoders = encoders
        self.dropped = dropped or (lambda: 0)
        self.publisher = PublishStage(self, self.stages, interval_s)
        self.stop_requested = threading.Event()
        self.graph_request = threading.Event()
        self.finished = threading.Event()
        self.result: MapResult | None = None
        self.paths: dict[str, Path] = {}
        self.error: str | None = None
        self.published = 0
        self.publish_s = 0.0
        self._slot: Capture | None = None
        self._busy = False
        self._cond = threading.Condition()
        self._copy: Path | None = None
        self._copy_ready = threading.Event()
        self._copy_lock = threading.Lock()
        sem = self.publisher.semantic
        if sem is not None:
            encoders.add(sem.encoder)
        store.publish(
            MapSnapshot(name, 0, None, None, np.zeros((0, 3)), np.zeros((0, 3)), np.zeros((0, 3)), np.zeros((0, 4, 4)),
                        source.camera, 0, live=True, encoder_name=sem.encoder.name if sem is not None else None,
                        directory=None, mapping="starting")
        )
        self._threads = [
            threading.Thread(target=self._map, name="live-mapper", daemon=True),
            threading.Thread(target=self._publish_loop, name="live-publisher", daemon=True),
        ]

    # ------------------------------------------------------------------ control
    def start(self) -> LiveMapper:
        for t in self._threads:
            t.start()
        return self

    def stop(self) -> None:
        """End mapping at the next frame (what was integrated is kept, finished and saved)."""
        self.stop_requested.set()

    def join(self, timeout: float | None = None) -> bool:
        """Wait for mapping, publishing and saving to end; True when they did."""
        return self.finished.wait(timeout)

    # ------------------------------------------------------------------ mapping thread
    def _map(self) -> None:
        try:
            self._set_state("running")
            try:
                result = build_map(self.source, self.config, [*self.stages, self.publisher])
            finally:
                self.source.close()
            self._flush()
            self._set_state("saving")
            self.result = result
            timings = dict(result.timings_s)
            publish_stage_s = timings.pop("publish", 0.0)
            live = {
                "frames_dropped": int(self.dropped()),
                "snapshots_published": self.published,
                "capture_s": round(self.publisher.capture_s, 3),
                "publish_stage_s": round(publish_stage_s, 3),
                "publish_s": round(self.publish_s, 3),
                "frame_indices": list(self.publisher.indices),
            }
            self.paths = save_map(replace(result, timings_s=timings), self.out_dir, self.source_spec, self.config,
                                  self.stages, extra_metadata={"live": live})
            self.store.update(self.name, lambda s: replace(s, directory=self.out_dir, mapping="saved",
                                                            frames_dropped=int(self.dropped())))
            print(f"live map {self.name!r}: {result.frames_integrated} frames integrated, saved to {self.out_dir}/")
        except Exception as e:
            self.error = f"{type(e).__name__}: {e}"
            self._set_state(f"failed: {self.error}")
        finally:
            with self._cond:
                self._slot = None
                self._cond.notify_all()
            self.finished.set()
            self._copy_ready.set()

    def _set_state(self, state: str) -> None:
        self.store.update(self.name, lambda s: replace(s, mapping=state, frames_dropped=int(self.dropped())))

    def submit(self, capture: Capture) -> None:
        """Hand a capture to the publisher (replacing one it has not taken yet)."""
        with self._cond:
            self._slot = capture
            self._cond.notify_all()

    def _flush(self, timeout: float = 120.0) -> None:
        """Wait until the publisher took and published the last capture."""
        with self._cond:
            self._cond.wait_for(lambda: self._slot is None, timeout)
            self._cond.wait_for(lambda: not self._busy, timeout)

    # ------------------------------------------------------------------ publisher thread
    def _publish_loop(self) -> None:
        while True:
            with self._cond:
                while self._slot is None and not self.finished.is_set():
                    self._cond.wait(0.2)
                if self._slot is None:
                    return
                cap, self._slot = self._slot, None
                self._busy = True
            try:
                self._publish(cap)
            except Exception as e:  # keep serving the previous snapshot
                print(f"semmap serve: publishing a snapshot of {self.name} failed: {type(e).__name__}: {e}")
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()

    def _publish(self, cap: Capture) -> None:
        from mapping.semantic_map import SemanticMap

        t0 = time.perf_counter()
        semantic = None
        if cap.grid is not None:
            semantic = SemanticMap(cap.grid, cap.encoder_name, cap.features_meta,
                                   encoder=self.encoders.get(cap.encoder_name))
            semantic.prepare()
        v, f, c = cap.mesh
        dropped = int(self.dropped())
        self.store.update(
            self.name,
            lambda s: replace(s, semantic=semantic if semantic is not None else s.semantic, mesh_vertices=v,
                              mesh_triangles=f, mesh_colors=c, T_world_cam=cap.T_world_cam,
                              camera=cap.camera or s.camera, frames=cap.frames, frames_dropped=dropped,
                              mapping="finishing" if cap.final else s.mapping),
        )
        self.published += 1
        self.publish_s += time.perf_counter() - t0

    # ------------------------------------------------------------------ scene graph
    def write_working_copy(self, result: MapResult) -> None:
        """(mapping thread) Save the map so far into a temporary directory for a graph build."""
        tmp = Path(tempfile.mkdtemp(prefix=f"semmap-live-{self.name}-"))
        try:
            save_map(result, tmp / "map", self.source_spec, self.config, self.stages)
            self._copy = tmp / "map"
        except Exception as e:
            shutil.rmtree(tmp, ignore_errors=True)
            print(f"semmap serve: could not copy the live map for a scene graph: {e}")
            self._copy = None
        self.graph_request.clear()
        self._copy_ready.set()

    @contextlib.contextmanager
    def map_directory(self, timeout_s: float = 600.0) -> Iterator[Path]:
        """A finished map directory of the map so far (for ``GraphBuilder``): the saved map
        once mapping ended, else a temporary copy written by the mapping thread (removed after)."""
        with self._copy_lock:
            if not self.finished.is_set():
                self._copy_ready.clear()
                self.graph_request.set()
                self._copy_ready.wait(timeout_s)
            copy_dir, self._copy = self._copy, None
            if copy_dir is None:
                self.finished.wait(timeout_s)
                if self.error or not self.paths:
                    raise ValueError(f"live map {self.name!r} has no saved map to build a scene graph from"
                                     + (f" (mapping failed: {self.error})" if self.error else ""))
                yield self.out_dir
                return
        try:
            yield copy_dir
        finally:
            shutil.rmtree(copy_dir.parent, ignore_errors=True)
