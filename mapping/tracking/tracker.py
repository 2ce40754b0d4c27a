"""Frame-to-model RGB-D tracking with failure detection, recovery and loop closure.

Per frame (``Tracker.track``), in order until one alignment passes the failure tests:

1. frame-to-model: raycast the TSDF at the predicted pose (constant velocity when the
   last two frames were tracked, else the last good pose) and align the frame to it;
2. the same from the last good pose without velocity (when 1 used a velocity);
3. frame-to-frame against the last keyframe ("frame_to_frame");
4. relocalisation: the keyframes with the most similar thumbnails, each confirmed by a
   frame-to-model alignment at the relocalised pose ("recovered").

A frame whose alignments all fail is "lost"; one without usable depth is "skipped";
neither gets a pose, and the caller must not integrate it. After
``max_frames_lost`` consecutive such frames ``TrackingLost`` is raised.

``Tracker.finalize`` then closes loops between keyframes (verified by dense alignment), optimises
the keyframe pose graph, moves every frame with its keyframe and re-integrates a
fresh map. Poses are ``T_world_cam`` (camera-to-world, metres, OpenCV axes).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

import numpy as np

from mapping.tracking.config import TrackerConfig
from mapping.tracking.failure import check_alignment, check_depth, pose_difference
from mapping.tracking.images import AlignImage, prepare_frame_image, reduced_camera
from mapping.tracking.keyframes import (
    Keyframe,
    make_keyframe,
    needs_keyframe,
    thumbnail_descriptor,
)
from mapping.tracking.loop_closure import (
    LoopEdge,
    build_pose_graph,
    correct_poses,
    loop_candidates,
    loop_disagreement_m,
    optimise_pose_graph,
    verify_loop,
)
from mapping.tracking.model import (
    build_mesh_renderer,
    frustum_blocks,
    local_surface_blocks,
    render_mesh_model,
    render_model,
)
from mapping.tracking.odometry import Alignment, align, orthonormalize, se3_exp, se3_log
from mapping.tracking.profile import StageTimes
from mapping.tracking.results import (
    LoopClosureResult,
    TrackingLost,
    TrackingSummary,
    TrackResult,
)
from mapping.tsdf import TSDFConfig, TSDFMap
from sensors.camera import Camera
from sensors.frame import Frame
from sensors.trajectory_io import Trajectory


class _Attempt:
    """An accepted alignment: pose, status and scores."""

    def __init__(self, T_world_cam: np.ndarray, status: str, alignment: Alignment, reason: str = "") -> None:
        self.T_world_cam = T_world_cam
        self.status = status
        self.alignment = alignment
        self.reason = reason


class Tracker:
    """Estimates ``T_world_cam`` of each RGB-D frame against a TSDF map the caller integrates.

    Usage::

        tracker = Tracker(TrackerConfig(), camera)
        for frame in source:
            result = tracker.track(frame, tsdf_map)
            if result.ok:
                tsdf_map.integrate(frame.with_(T_world_cam=result.T_world_cam))
        corrected = tracker.finalize(lambda: TSDFMap(tsdf_config))
        trajectory = tracker.trajectory()
    """

    def __init__(self, config: TrackerConfig | None, camera: Camera) -> None:
        self.config = config or TrackerConfig()
        self.camera = camera
        self.factor = self.config.factor_for(camera.width)
        """The reduction frames are tracked at (``TrackerConfig.factor_for`` this camera)."""
        self.track_camera = reduced_camera(camera, self.factor)
        self.results: list[TrackResult] = []
        self.keyframes: list[Keyframe] = []
        self.loops: list[LoopEdge] = []
        self.loop_disagreement_m = 0.0
        self._poses: dict[int, np.ndarray] = {}  # seq -> T_world_cam of tracked frames
        self._timestamps: dict[int, float] = {}
        self._anchor: dict[int, int] = {}  # seq -> keyframe position
        self._seq_of_index: dict[int, int] = {}
        self._last_ok_seq: int | None = None
        self._T_last: np.ndarray | None = None
        self._T_prev: np.ndarray | None = None  # pose of the frame before the last, if it was tracked
        self._index_last: int | None = None  # Frame.index of the last tracked frame
        self._index_prev: int | None = None  # Frame.index of the frame before it (when _T_prev is set)
        self._last_image: AlignImage | None = None
        self._blocks_cache: tuple[int, object] | None = None
        self._mesh_cache: tuple[int, np.ndarray, object] | None = None  # (seq, pose, renderer) of the last build
        self._own_model: TSDFMap | None = None
        self._model_chosen = False
        self.times = StageTimes()
        """Wall time per tracking stage (``StageTimes``), summed over all ``track`` calls."""

    # ------------------------------------------------------------------ per frame
    def track(self, frame: Frame, tsdf_map: TSDFMap | None = None) -> TrackResult:
        """Estimate the pose of ``frame`` against the map of the frames tracked so far.

        Args:
            frame: RGB-D frame; depth (H, W) float32 metres, camera equal to the tracker's.
            tsdf_map: the map the caller integrates tracked frames into (only read here). It is
                tracked against unless it is None or coarser than ``config.model_voxel_m``, in
                which case the tracker's own model is used (decided on the first call).
        Returns:
            TrackResult; integrate the frame only when ``ok``.
        Raises:
            TrackingLost: after ``max_frames_lost`` consecutive untracked frames.
            ValueError: if the frame's camera differs from the tracker's.
        """
        t0 = time.perf_counter()
        cfg = self.config
        seq = len(self.results)
        if frame.camera != self.camera:
            raise ValueError(
                f"{frame.name or f'frame {frame.index}'}: camera {frame.camera} differs from the tracker's {self.camera}"
            )
        tsdf_map = self._tracking_model(tsdf_map)
        if frame.depth is None:
            return self._untracked(frame, seq, "skipped", "frame has no depth (tracking needs RGB-D)", t0)
        with self.times.section("prepare"):
            image = prepare_frame_image(
                frame.rgb, frame.depth, frame.camera, self.factor, cfg.depth_min_m, cfg.depth_max_m,
                with_color=cfg.uses_color,
            )
        reason = check_depth(image.valid_fraction, cfg)
        if reason:
            return self._untracked(frame, seq, "skipped", reason, t0)
        if self._last_ok_seq is None:
            given = frame.T_world_cam is not None and cfg.anchor_to_given_pose
            T0 = np.array(frame.T_world_cam) if given else np.eye(4)
            first = Alignment(np.eye(4), 1.0, 0.0, True)
            return self._tracked(frame, seq, image, _Attempt(T0, "ok", first), t0)

        missed = seq - self._last_ok_seq - 1
        attempt, failures = self._align_frame(frame, image, tsdf_map, missed)
        if attempt is None:
            return self._untracked(frame, seq, "lost", "; ".join(failures), t0)
        return self._tracked(frame, seq, image, attempt, t0)

    def _align_frame(
        self, frame: Frame, image: AlignImage, tsdf_map: TSDFMap, missed: int
    ) -> tuple[_Attempt | None, list[str]]:
        """Try the alignments in order; returns the first accepted one and the failure reasons."""
        cfg = self.config
        T_last = self._T_last
        T_velocity = self._velocity_prediction(int(frame.index)) if missed == 0 else None
        use_velocity = T_velocity is not None
        T_pred = T_velocity if use_velocity else T_last
        # source frames never handed to track (a live source kept only the newest): the camera moved
        # for that many frame intervals more, so the jump allowed from the prediction grows with them
        dropped = max(int(frame.index) - self._index_last - 1 - missed, 0)
        missed_for_jump = missed + dropped
        status = "ok" if missed == 0 else "recovered"
        failures: list[str] = []
        blocks = self._model_blocks(tsdf_map) if cfg.model_render == "raycast" else None

        predictions = [("model", T_pred)] + ([("model without velocity", T_last)] if use_velocity else [])
        for label, T_start in predictions:
            attempt, reason = self._try_model(image, tsdf_map, blocks, T_start, missed_for_jump, status)
            if attempt is not None:
                if label != "model":
                    attempt.reason = f"constant-velocity prediction failed ({failures[-1]})"
                elif missed:
                    attempt.reason = f"relocalised against the map after {missed} untracked frames"
                return attempt, failures
            failures.append(f"{label}: {reason}")

        kf = self.keyframes[-1]
        with self.times.section("fallback:frame_to_frame"):
            a = align(image, kf.image, np.linalg.inv(kf.T_world_cam) @ T_pred, cfg, self._method_for(with_color=True))
        T = kf.T_world_cam @ a.T_target_source
        reason = check_alignment(a, T_pred, T, cfg, missed_for_jump)
        if reason is None:
            return _Attempt(T, "frame_to_frame", a, f"frame-to-model failed ({failures[0]})"), failures
        failures.append(f"frame-to-frame (keyframe {kf.frame_index}): {reason}")

        with self.times.section("fallback:relocalise"):
            attempt = self._relocalise(frame, image, tsdf_map, exclude=len(self.keyframes) - 1)
        if attempt is not None:
            attempt.reason = f"relocalised on a keyframe after: {failures[0]}"
            return attempt, failures
        failures.append("relocalisation: no keyframe matched")
        return None, failures

    def _velocity_prediction(self, index: int) -> np.ndarray | None:
        """Constant-velocity pose at ``Frame.index`` ``index``, or None when there is no velocity to use.

        The last inter-frame motion is divided by the index gap of the last two tracked frames and
        repeated for the gap to ``index`` (twists scaled linearly), so the prior stays valid when a
        live source skipped frames. None when ``constant_velocity`` is off, the last two tracked calls
        were not consecutive, or the gap exceeds ``velocity_max_gap_frames``.
        """
        cfg = self.config
        if not cfg.constant_velocity or self._T_prev is None:
            return None
        step_prev = self._index_last - self._index_prev
        step = index - self._index_last
        if step_prev < 1 or step < 1:  # indices not increasing: one call = one step
            step_prev = step = 1
        if step > cfg.velocity_max_gap_frames:
            return None
        motion = np.linalg.inv(self._T_prev) @ self._T_last
        if step != step_prev:
            motion = se3_exp(se3_log(motion) * (step / step_prev))
        return self._T_last @ motion

    def _tracking_model(self, tsdf_map: TSDFMap | None) -> TSDFMap:
        """The map to track against: the caller's, or the tracker's own finer one (chosen once)."""
        cfg = self.config
        if not self._model_chosen:
            if tsdf_map is None and cfg.model_voxel_m is None:
                raise ValueError("track needs a tsdf_map when TrackerConfig.model_voxel_m is None")
            self._model_chosen = True
            own = cfg.model_voxel_m is not None and (
                tsdf_map is None or tsdf_map.config.voxel_size_m > 1.01 * cfg.model_voxel_m
            )
            if own:
                self._own_model = TSDFMap(
                    TSDFConfig(
                        voxel_size_m=cfg.model_voxel_m,
                        depth_min_m=cfg.depth_min_m,
                        depth_max_m=cfg.depth_max_m,
                        integrate_color=cfg.uses_color,
                        initial_block_count=4000,
                        device=cfg.device,
                    )
                )
        if self._own_model is not None:
            return self._own_model
        if tsdf_map is None:
            raise ValueError("track was given no tsdf_map but the tracker has no model of its own")
        return tsdf_map

    @property
    def own_model(self) -> TSDFMap | None:
        """The tracker's own tracking TSDF (see ``TrackerConfig.model_voxel_m``), or None."""
        return self._own_model

    def _method_for(self, with_color: bool) -> str:
        """The configured loss, or point-to-plane when the target has no colour."""
        return self.config.method if with_color else "point_to_plane"

    def _try_model(
        self, image: AlignImage, tsdf_map: TSDFMap, blocks, T_world_pred: np.ndarray, missed: int, status: str,
        renderer=None,
    ) -> tuple[_Attempt | None, str]:
        """Align the frame to the model rendered at ``T_world_pred``; (attempt, "") or (None, reason).

        ``blocks`` bound the ray cast ("raycast"); ``renderer`` replaces the cached model mesh ("mesh").
        """
        cfg = self.config
        want_color = cfg.uses_color
        if cfg.model_render == "mesh":
            renderer = renderer if renderer is not None else self._model_mesh(tsdf_map)
            with self.times.section("render"):
                model = render_mesh_model(
                    renderer, image.camera, T_world_pred, tsdf_map.config,
                    want_color and tsdf_map.config.integrate_color,
                )
        else:
            with self.times.section("render"):
                model = render_model(tsdf_map, image.camera, T_world_pred, blocks, with_color=want_color)
        if model.valid_fraction < cfg.min_model_fraction:
            return None, f"model raycast nearly empty ({100 * model.valid_fraction:.0f}% of pixels)"
        method = self._method_for(with_color=want_color and tsdf_map.config.integrate_color)
        a = align(image, model, np.eye(4), cfg, method, timer=self.times)
        T = T_world_pred @ a.T_target_source
        reason = check_alignment(a, T_world_pred, T, cfg, missed)
        return (_Attempt(T, status, a), "") if reason is None else (None, reason)

    def _relocalise(self, frame: Frame, image: AlignImage, tsdf_map: TSDFMap, exclude: int) -> _Attempt | None:
        """Start from the most similar keyframes; accept a pose confirmed by frame-to-model."""
        cfg = self.config
        if len(self.keyframes) < 2:
            return None
        desc = thumbnail_descriptor(image.depth_m, frame.rgb)
        sims = np.array([kf.descriptor @ desc for kf in self.keyframes])
        sims[exclude] = -np.inf
        for k in np.argsort(-sims)[: cfg.relocalise_candidates]:
            kf = self.keyframes[int(k)]
            a = align(image, kf.image, np.eye(4), cfg, self._method_for(with_color=True))
            T = kf.T_world_cam @ a.T_target_source
            if check_alignment(a, kf.T_world_cam, T, cfg, 0) is not None:
                continue
            blocks = frustum_blocks(tsdf_map, kf.image.depth_m, kf.image.camera, kf.T_world_cam)
            renderer = None
            if cfg.model_render == "mesh" and cfg.mesh_scope == "local":  # the cached mesh is of the last view
                with self.times.section("mesh_build"):
                    renderer = build_mesh_renderer(
                        tsdf_map, local_surface_blocks(tsdf_map, blocks, cfg.mesh_local_dilation_blocks)
                    )
                if renderer is None:
                    continue
            attempt, _ = self._try_model(image, tsdf_map, blocks, T, 0, "recovered", renderer)
            if attempt is not None:
                return attempt
        return None

    def _model_mesh(self, tsdf_map: TSDFMap):
        """The model's mesh renderer, rebuilt after ``mesh_refresh_frames`` tracked frames or ``mesh_refresh_m`` /
        ``mesh_refresh_deg`` of camera motion; with ``mesh_scope="local"`` it covers the blocks around the last
        tracked view (dilated by ``mesh_local_dilation_blocks``), else the whole map."""
        cfg = self.config
        seq = self._last_ok_seq if self._last_ok_seq is not None else -1
        due = self._mesh_cache is None or seq - self._mesh_cache[0] >= cfg.mesh_refresh_frames
        if not due and self._T_last is not None:
            dt, dr = pose_difference(self._mesh_cache[1], self._T_last)
            due = dt > cfg.mesh_refresh_m or dr > cfg.mesh_refresh_deg
        if due:
            blocks = None
            if cfg.mesh_scope == "local" and self._last_image is not None:
                blocks = local_surface_blocks(tsdf_map, self._model_blocks(tsdf_map), cfg.mesh_local_dilation_blocks)
            with self.times.section("mesh_build"):
                renderer = build_mesh_renderer(tsdf_map, blocks)
            T = self._T_last if self._T_last is not None else np.eye(4)
            self._mesh_cache = (seq, T, renderer)
        return self._mesh_cache[2]

    def _model_blocks(self, tsdf_map: TSDFMap):
        """Blocks around the last tracked frame's surface (cached per tracked frame)."""
        if self._blocks_cache is None or self._blocks_cache[0] != self._last_ok_seq:
            img = self._last_image
            with self.times.section("frustum_blocks"):
                blocks = frustum_blocks(tsdf_map, img.depth_m, img.camera, self._T_last)
            self._blocks_cache = (self._last_ok_seq, blocks)
        return self._blocks_cache[1]

    def _tracked(self, frame: Frame, seq: int, image: AlignImage, attempt: _Attempt, t0: float) -> TrackResult:
        T = orthonormalize(attempt.T_world_cam)
        consecutive = self._last_ok_seq is not None and self._last_ok_seq == seq - 1
        self._T_prev = self._T_last if consecutive else None
        self._index_prev = self._index_last if consecutive else None
        self._T_last = T
        self._index_last = int(frame.index)
        self._last_ok_seq = seq
        self._last_image = image
        self._poses[seq] = T
        self._timestamps[seq] = float(frame.timestamp)
        self._seq_of_index[int(frame.index)] = seq
        last_kf = self.keyframes[-1] if self.keyframes else None
        is_kf = attempt.status != "ok" or needs_keyframe(last_kf, seq, T, self.config)
        if is_kf:
            with self.times.section("keyframe"):
                self.keyframes.append(make_keyframe(frame, seq, T, image, self.config))
        self._anchor[seq] = len(self.keyframes) - 1
        if attempt.status in ("recovered", "frame_to_frame"):
            self._mesh_cache = None  # the camera may be far from the cached (local) mesh
        if self._own_model is not None:
            with self.times.section("model_integrate"):
                self._own_model.integrate(self._model_frame(frame, image, T))
        a = attempt.alignment
        result = TrackResult(
            T_world_cam=T.copy(),
            ok=True,
            status=attempt.status,
            fitness=a.fitness,
            inlier_rmse=a.residual_m,
            ms=1000.0 * (time.perf_counter() - t0),
            index=int(frame.index),
            reason=attempt.reason,
            keyframe=is_kf,
        )
        self.results.append(result)
        return result

    def _model_frame(self, frame: Frame, image: AlignImage, T_world_cam: np.ndarray) -> Frame:
        """The frame to integrate into the own model: the full frame, or its reduced tracking image."""
        if self.config.model_integrate_full_resolution or self.factor == 1:
            return frame.with_(T_world_cam=T_world_cam)
        if image.color is not None:
            rgb = np.rint(255.0 * image.color).astype(np.uint8)
        else:
            rgb = np.zeros(image.depth_m.shape + (3,), np.uint8)
        # per-pixel weights are at full resolution; the own model integrates at weight 1
        return frame.with_(
            rgb=rgb, depth=image.depth_m, camera=image.camera, T_world_cam=T_world_cam, tsdf_weight=1.0, dropped_depth_m=None
        )

    def _untracked(self, frame: Frame, seq: int, status: str, reason: str, t0: float) -> TrackResult:
        result = TrackResult(
            T_world_cam=None,
            ok=False,
            status=status,
            fitness=0.0,
            inlier_rmse=float("inf"),
            ms=1000.0 * (time.perf_counter() - t0),
            index=int(frame.index),
            reason=reason,
        )
        self.results.append(result)
        frames_lost = seq - (self._last_ok_seq if self._last_ok_seq is not None else -1)
        if frames_lost >= self.config.max_frames_lost:
            where = frame.name or f"frame {frame.index}"
            if self._last_ok_seq is None:
                msg = (
                    f"tracking could not start: none of the first {frames_lost} frames could be used "
                    f"(up to {where}; last reason: {reason})"
                )
                raise TrackingLost(msg, int(frame.index), None, frames_lost)
            last = self.results[self._last_ok_seq].index
            msg = (
                f"tracking lost at {where}: {frames_lost} consecutive frames could not be tracked since frame {last} "
                f"(limit max_frames_lost={self.config.max_frames_lost}); last failure: {reason}. "
                f"Frames up to {last} have poses; none after it were tracked."
            )
            raise TrackingLost(msg, int(frame.index), last, frames_lost)
        return result

    # ------------------------------------------------------------------ outputs
    def trajectory(self) -> Trajectory:
        """Poses of the tracked frames (timestamps = ``Frame.timestamp``), in tracking order."""
        seqs = sorted(self._poses)
        if not seqs:
            return Trajectory(np.zeros(0), np.zeros((0, 4, 4)))
        return Trajectory(np.array([self._timestamps[s] for s in seqs]), np.stack([self._poses[s] for s in seqs]))

    def poses_by_index(self) -> dict[int, np.ndarray]:
        """``Frame.index`` -> (4, 4) ``T_world_cam`` of every tracked frame (corrected after ``finalize``)."""
        return {self.results[s].index: self._poses[s] for s in sorted(self._poses)}

    def summary(self) -> TrackingSummary:
        """Status counts, untracked intervals and timing of the run so far."""
        return TrackingSummary.from_results(self.results, len(self.keyframes), len(self.loops))

    # ------------------------------------------------------------------ loop closure
    def finalize(
        self, tsdf_map_factory: Callable[[], TSDFMap] | None = None, frames: Iterable[Frame] | None = None
    ) -> LoopClosureResult | None:
        """Close loops between keyframes, optimise the pose graph and (optionally) re-integrate a fresh map.

        Args:
            tsdf_map_factory: returns an empty ``TSDFMap`` (same settings as the live map); None:
                only the poses are corrected (``poses_by_index``) and ``tsdf_map`` is None, for a
                caller that re-integrates the frames as it integrated them (``semmap.pipeline``
                with ``mapping.reintegration``).
            frames: with a factory, the frames again (e.g. the source re-opened); every tracked one
                (matched by ``Frame.index``) is re-integrated with its corrected pose. When None,
                only the kept keyframe frames are re-integrated (needs ``keep_keyframe_frames``).
        Raises:
            ValueError: a map is asked for, a correction is due, but ``frames`` is None and no
                keyframe frames were kept.
        Returns:
            LoopClosureResult, or None when loop closure is disabled, no loop was verified, the
            loops agree with the tracked poses within ``loop.min_loop_disagreement_m``, or no
            keyframe moved by more than ``loop.min_pose_change_m`` (the live map then stands).
            ``self.loops`` and ``self.loop_disagreement_m`` report what was found either way.
        """
        t0 = time.perf_counter()
        cfg = self.config.loop
        if not cfg.enabled or len(self.keyframes) < 2:
            return None
        loops = []
        for s, t, _ in loop_candidates(self.keyframes, cfg):
            edge = verify_loop(self.keyframes[s], self.keyframes[t], s, t, cfg, self.config)
            if edge is not None:
                loops.append(edge)
        self.loops = loops
        self.loop_disagreement_m = loop_disagreement_m(self.keyframes, loops)
        if not loops or self.loop_disagreement_m <= cfg.min_loop_disagreement_m:
            return None
        graph = build_pose_graph(self.keyframes, loops, cfg)
        before = np.stack([kf.T_world_cam for kf in self.keyframes])
        after = optimise_pose_graph(graph, cfg)
        kept = {(e.source_node_id, e.target_node_id) for e in graph.edges if e.uncertain}
        self.loops = [e for e in loops if (e.source, e.target) in kept]
        change = float(np.max(np.linalg.norm(after[:, :3, 3] - before[:, :3, 3], axis=1)))
        if not self.loops or change < cfg.min_pose_change_m:
            return None
        if tsdf_map_factory is not None and frames is None and not self.config.keep_keyframe_frames:
            raise ValueError(
                "finalize: a loop closure moved the keyframes but there is nothing to re-integrate; "
                "pass `frames` (e.g. the source again) or set keep_keyframe_frames"
            )
        self._poses = correct_poses(self._poses, self._anchor, before, after)
        for kf, T in zip(self.keyframes, after):
            kf.T_world_cam = T
        tsdf_map, n = None, 0
        if tsdf_map_factory is not None:
            tsdf_map = tsdf_map_factory()
            if frames is None:  # the kept keyframe frames
                frames = (kf.frame for kf in self.keyframes)
            for frame in frames:
                seq = self._seq_of_index.get(int(frame.index))
                if seq is not None and seq in self._poses and frame.depth is not None:
                    tsdf_map.integrate(frame.with_(T_world_cam=self._poses[seq]))
                    n += 1
        return LoopClosureResult(
            trajectory=self.trajectory(),
            tsdf_map=tsdf_map,
            loops=self.loops,
            max_keyframe_correction_m=change,
            reintegrated_frames=n,
            seconds=time.perf_counter() - t0,
        )

