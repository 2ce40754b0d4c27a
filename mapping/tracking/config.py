"""Settings of the RGB-D tracker and of its loop closure (dataclasses, one docstring per field)."""

from __future__ import annotations

from dataclasses import dataclass, field

ODOMETRY_METHODS = ("point_to_plane", "hybrid", "fused")
"""Open3D tensor odometry losses the tracker accepts: geometric only, or geometric + intensity."""


def reduction_for(factor: int, width_px: int, min_width_px: int) -> int:
    """The largest integer reduction <= ``factor`` that keeps an image of ``width_px`` at least
    ``min_width_px`` wide (1 when even the full width is narrower)."""
    f = int(factor)
    while f > 1 and width_px // f < min_width_px:
        f -= 1
    return f


@dataclass
class LoopClosureConfig:
    """Keyframe loop detection, verification and pose-graph optimisation (run by ``Tracker.finalize``)."""

    enabled: bool = True
    """Search for loop closures in ``finalize``; when False ``finalize`` always returns None."""
    min_frame_gap: int = 150
    """Two keyframes are loop candidates only if their frame indices differ by at least this."""
    max_distance_m: float = 0.75
    """Loop candidates: camera centres (current estimate) at most this far apart, metres."""
    max_view_angle_deg: float = 35.0
    """Loop candidates: optical axes at most this far apart, degrees."""
    min_descriptor_similarity: float = 0.6
    """Loop candidates: cosine similarity of the keyframe thumbnail descriptors at least this."""
    max_candidates_per_keyframe: int = 2
    """At most this many (most similar) older keyframes are verified per keyframe."""
    max_candidates: int = 200
    """At most this many candidate pairs are verified in total (most similar first)."""
    downsample: int = 2
    """Integer reduction of the keyframe images that loops are verified and weighted on (``finalize``, off the
    per-frame path), independent of ``TrackerConfig.downsample``: each keyframe keeps a second image at this
    factor when tracking uses another (about 0.4 ms per frame on redkitchen). At 4 a keyframe aligned to itself
    reaches fitness 0.58 (0.80 at 2) against ``min_fitness`` 0.5: redkitchen verified 20 loops at 4, 42 at 2."""
    iterations: tuple[int, ...] = (10, 10, 10)
    """Gauss-Newton iterations per pyramid level of the verifying dense alignment, coarsest first."""
    min_fitness: float = 0.5
    """A loop is accepted if at least this fraction of the source keyframe's valid pixels has a correspondence."""
    max_residual_m: float = 0.015
    """A loop is accepted if the RMS point-to-plane residual is at most this, metres."""
    max_correspondence_m: float = 0.03
    """Correspondence distance for edge information matrices and the optimiser's line process, metres."""
    max_correction_m: float = 0.3
    """Reject a loop whose alignment moves the pair by more than this from the tracked estimate, metres."""
    max_correction_deg: float = 15.0
    """Reject a loop whose alignment rotates the pair by more than this from the tracked estimate, degrees."""
    edge_prune_threshold: float = 0.25
    """Open3D ``GlobalOptimizationOption.edge_prune_threshold``: loop edges with a line-process weight below it are pruned."""
    preference_loop_closure: float = 1.0
    """Open3D ``GlobalOptimizationOption.preference_loop_closure`` (weight of loop edges vs odometry edges)."""
    min_loop_disagreement_m: float = 0.03
    """Corrections are applied only if the verified loops disagree with the tracked trajectory by more than this
    (median translation, metres). Below it, drift is within the accuracy of single-keyframe alignment (about
    2-3 cm on Kinect v1 depth, measured on redkitchen) and optimising would add about as much error as it removes."""
    min_pose_change_m: float = 0.005
    """``finalize`` returns None (nothing changed) when no keyframe moved by more than this, metres."""

    def __post_init__(self) -> None:
        if int(self.downsample) != self.downsample or self.downsample < 1:
            raise ValueError(f"loop downsample must be a positive integer, got {self.downsample}")
        if self.min_frame_gap < 1:
            raise ValueError(f"min_frame_gap must be >= 1, got {self.min_frame_gap}")
        if not 0.0 < self.min_fitness <= 1.0:
            raise ValueError(f"min_fitness must be in (0, 1], got {self.min_fitness}")
        if self.max_residual_m <= 0 or self.max_correspondence_m <= 0:
            raise ValueError("max_residual_m and max_correspondence_m must be positive")
        self.iterations = tuple(int(i) for i in self.iterations)


@dataclass
class TrackerConfig:
    """Frame-to-model RGB-D tracking with failure detection and recovery.

    Units: metres, degrees, frames. Every threshold is checked on each tracked
    frame; a frame that fails them is reported and must not be integrated.
    """

    method: str = "fused"
    """Odometry loss: "point_to_plane" (depth only), "hybrid" (Open3D's joint depth + intensity loss; needs
    colour registered to depth, as the readers deliver it) or "fused" (both, combined per direction: the
    depth-only pose where the surface constrains it, the hybrid pose along the directions the depth leaves
    loose, such as sliding along a row of cabinets; see ``odometry.fuse_degenerate``). The source's brightness
    is matched to the model's before each hybrid alignment (auto-exposure biases the intensity term
    otherwise). Redkitchen 1000 frames, 1 cm model: ATE 2.63 cm fused. Measured before the half-pixel
    integration fix (``mapping.tsdf.integration_intrinsics``): 2.48 cm fused, 3.74 cm hybrid, 4.43 cm
    point_to_plane (point_to_plane has the lowest frame-to-frame error but slides about 10 cm along the
    cabinets in frames 300-450; hybrid drifts in frames 0-200)."""
    fusion_prior: float = 0.05
    """"fused" only: information of the photometric estimate relative to the normalised point-to-plane
    information (1 = a single plane seen head-on). Directions whose point-to-plane eigenvalue is well above it
    follow the depth-only alignment, those well below it the depth + intensity alignment. Redkitchen 1000
    frames, before the half-pixel integration fix: ATE 2.92 cm at 0.02, 2.48 cm at 0.05, 2.60 cm at 0.2."""
    downsample: int = 4
    """Integer factor by which depth/colour are reduced before alignment (1 = full resolution; 2 = half); the
    map is still integrated at full resolution. Every per-pixel cost of tracking (render, both odometry losses,
    scoring) scales with 1 / downsample^2. Redkitchen 1000 frames against the 2 cm map (tracker only, issue 16,
    under load average 4): ATE 2.61 cm at 4 vs 2.57 cm at 2, RPE 0.63 vs 0.43 cm and 0.26 vs 0.17 deg per frame,
    tracking 47 vs 176 ms per frame (with ``iterations`` (6, 4, 3); (8, 6) at 4: ATE 2.58 cm, RPE 0.54 cm and
    0.21 deg). 4 is the default because it is the most accurate factor that tracks at
    mapping rate (``benchmarks/bench_tracking.py``); 2 with ``iterations`` (6, 4, 3) (``semmap map
    --track-downsample 2 --track-iterations 6 4 3``) is the slower choice with the lower per-frame error. Loops are verified
    on keyframe images of their own resolution (``LoopClosureConfig.downsample``), since at 4 a keyframe aligned
    to itself reaches only fitness 0.58 (0.80 at 2)."""
    min_track_width_px: int = 160
    """``downsample`` (and ``loop.downsample``) is lowered for small frames so that the reduced image stays at
    least this wide: 640 x 480 tracks at 160 x 120 (4), 320 x 240 at 160 x 120 (2), 160 x 120 at full size; a
    40 x 30 image of a 160 x 120 frame loses track."""
    iterations: tuple[int, ...] = (8, 6)
    """Gauss-Newton iterations per pyramid level, coarsest first (its length is the number of levels). With
    ``downsample`` 4 two levels (80 x 60 and 160 x 120 for a 640 x 480 frame) start as coarse as three did at 2;
    a third, 40 x 30 level lets point-to-plane slide on larger motion: redkitchen frames 0-60 and back at a
    stride of 6, downsample 4, point-to-plane: max error 10-13 cm with (6, 4, 3), 2.2 cm with (8, 6) and
    4.2 cm with (6, 4); all 1000 frames, fused: ATE 2.58 cm (8, 6), 2.56 cm (6, 4), 2.61 cm (6, 4, 3)."""
    refine_iterations: tuple[int, ...] | None = (3, 2)
    """"fused" only: iterations of the depth + intensity alignment, which starts from the depth-only result, on
    the finest ``len(refine_iterations)`` levels of the same pyramid, coarsest first; the coarser levels run none
    (None: ``iterations``). With ``iterations`` (6, 4, 3), (3, 2) runs (0, 3, 2). Redkitchen 1000 frames, tracker only,
    nearly idle machine: (3, 2) ATE 2.56 cm, RPE 0.52 cm / 0.20 deg, 26 ms per frame; None (8, 6) 2.59 cm,
    0.54 cm / 0.21 deg, 28 ms; frames 0-60 and back at a stride of 6: max error 1.8 vs 1.9-2.4 cm."""
    depth_min_m: float = 0.1
    """Frame depth below this is ignored for alignment, metres."""
    depth_max_m: float = 4.0
    """Frame depth beyond this is ignored for alignment, metres."""
    depth_outlier_trunc_m: float = 0.07
    """Projective correspondences whose depths differ by more than this are rejected, metres."""
    depth_huber_delta_m: float = 0.05
    """Huber threshold of the depth residual, metres."""
    intensity_huber_delta: float = 0.1
    """Huber threshold of the intensity residual (intensities in [0, 1]); "hybrid" only."""
    constant_velocity: bool = True
    """Predict the next pose by repeating the last inter-frame motion (only when the last two frames were tracked).
    The motion is per ``Frame.index`` step: after a gap in the indices (a live source that kept only the newest
    frame, or a stride) it is scaled by the gap."""
    velocity_max_gap_frames: int = 15
    """The constant-velocity prediction is not extrapolated over an index gap larger than this (frames); the
    last pose is the prediction then."""
    anchor_to_given_pose: bool = True
    """The first tracked frame takes its reader pose when it has one (else identity)."""
    min_valid_depth_fraction: float = 0.05
    """A frame with less valid depth (fraction of pixels in [depth_min_m, depth_max_m]) is skipped as unusable."""
    min_fitness: float = 0.5
    """Alignment fails if fewer than this fraction of the frame's valid pixels that land on valid model pixels
    have a correspondence (inliers / overlap: a camera turning towards unmapped space keeps tracking; Replica
    office0 at step 5 was lost at frame 226 with 0.48 against all valid pixels)."""
    max_residual_m: float = 0.03
    """Alignment fails if the RMS point-to-plane residual of its correspondences (depth difference below
    ``depth_outlier_trunc_m``) exceeds this, metres. Correct Kinect v1 alignments give 0.6-2 cm."""
    max_pose_jump_m: float = 0.1
    """Alignment fails if the result is further than this from the predicted pose, metres."""
    max_pose_jump_deg: float = 10.0
    """Alignment fails if the result is rotated more than this from the predicted pose, degrees."""
    jump_growth_m_per_frame: float = 0.02
    """After untracked frames the allowed translation jump grows by this per missed frame, metres."""
    jump_growth_deg_per_frame: float = 1.5
    """After untracked frames the allowed rotation jump grows by this per missed frame, degrees."""
    model_voxel_m: float | None = 0.02
    """When set (metres) and the map passed to ``track`` is None or coarser, the tracker keeps its own TSDF at
    this voxel size, integrates tracked frames (only) into it and tracks against it; None tracks against the
    caller's map. The default tracks against the caller's map when it is 2 cm or finer (``semmap map``: 2 cm),
    which saves a second integration per frame (the largest single cost before issue 16: 138 of 410 ms per
    frame at 1 cm). Measured with the mesh render: redkitchen 400 frames ATE 2.29 cm against the 2 cm map;
    ICL-NUIM 5 frames max error 0.25 cm (2 cm) vs 0.35 cm (own 1 cm). Set 0.01 for an own 1 cm model (the
    earlier default: redkitchen 1000 frames 2.51 cm). With ``model_render="raycast"`` use 0.01: a ray cast of a
    2 cm model quantises depth to 2 cm and blurs the colour the "hybrid" loss needs (ICL-NUIM, hybrid: 2.6 cm
    max error against the 2 cm map; earlier 3.4 vs 0.7 cm)."""
    model_render: str = "mesh"
    """How the model is rendered for frame-to-model alignment: "mesh" (the model's marching-cubes mesh,
    rebuilt every ``mesh_refresh_frames`` tracked frames, rendered with a BVH; unbiased, costs a mesh
    extraction per refresh) or "raycast" (Open3D ``VoxelBlockGrid.ray_cast`` on the blocks near the last
    view; faster, but depth is quantised to the voxel). Clean Replica renders, 400 frames at step 5: ATE
    0.16 cm mesh, 1.30 cm raycast (reconstruction 0.1 vs 1.3 cm worse than from the true poses).
    Redkitchen (Kinect noise) 1000 frames: ATE 2.51 cm at 177 ms/frame mesh, 2.63 cm at 104 ms/frame raycast."""
    mesh_refresh_frames: int = 10
    """"mesh" rendering: rebuild the model mesh after this many tracked frames ..."""
    mesh_refresh_m: float = 0.15
    """... or when the camera moved this far from where it was last built, metres ..."""
    mesh_refresh_deg: float = 15.0
    """... or turned this much, degrees (and after every recovery)."""
    mesh_scope: str = "local"
    """"mesh" rendering: "local" meshes only the blocks around the last tracked view (dilated by
    ``mesh_local_dilation_blocks``), so a rebuild costs what the view holds rather than what the map holds;
    "full" meshes the whole map at every rebuild (its cost grows with the map)."""
    mesh_local_dilation_blocks: int = 0
    """"local" mesh: also mesh the allocated blocks within this many blocks of the view's blocks (1 block =
    ``block_resolution`` voxels, 32 cm at 2 cm), so the next frames' views stay covered. Redkitchen 1000 frames
    (downsample 4, under load): 0 meshes 143 instead of 246 blocks per rebuild (mesh_build 6.9 vs 17.0 ms per
    frame) at ATE 2.63 vs 2.61 cm; the rebuild on motion (``mesh_refresh_m`` / ``mesh_refresh_deg``) keeps
    the view covered."""
    model_integrate_full_resolution: bool = True
    """Integrate the full-resolution frame into the own model; False integrates the reduced tracking image
    (``downsample``; cheaper)."""
    device: str = "CPU:0"
    """Open3D device of the own model and of the odometry, "CPU:0" or "CUDA:0" (mesh rendering and the
    numpy parts stay on the CPU)."""
    min_model_fraction: float = 0.1
    """Frame-to-model is only tried when at least this fraction of the raycast model image is valid."""
    relocalise_candidates: int = 3
    """When lost, this many keyframes (most similar thumbnails) are tried as starting poses."""
    max_frames_lost: int = 60
    """Raise ``TrackingLost`` when this many consecutive frames were skipped or lost."""
    keyframe_every: int = 10
    """A tracked frame becomes a keyframe after this many frames since the last keyframe ..."""
    keyframe_translation_m: float = 0.1
    """... or when it is this far from the last keyframe, metres ..."""
    keyframe_rotation_deg: float = 10.0
    """... or rotated this much from the last keyframe, degrees."""
    keep_keyframe_frames: bool = False
    """Keep each keyframe's ``Frame`` so ``finalize`` can re-integrate the keyframes without the source
    (about 2 MB per 640x480 keyframe, roughly one per 10 frames); otherwise pass the frames to ``finalize``."""
    loop: LoopClosureConfig = field(default_factory=LoopClosureConfig)
    """Loop closure and pose-graph settings."""

    @property
    def refine_schedule(self) -> tuple[int, ...]:
        """Iterations per level (one per ``iterations`` level, coarsest first) of the "fused" refinement."""
        if self.refine_iterations is None:
            return self.iterations
        return (0,) * (len(self.iterations) - len(self.refine_iterations)) + self.refine_iterations

    def factor_for(self, width_px: int) -> int:
        """The tracking reduction for frames ``width_px`` wide (``downsample``, bounded by ``min_track_width_px``)."""
        return reduction_for(self.downsample, width_px, self.min_track_width_px)

    def loop_factor_for(self, width_px: int) -> int:
        """The loop-verification reduction for frames ``width_px`` wide (``loop.downsample``, bounded likewise)."""
        return reduction_for(self.loop.downsample, width_px, self.min_track_width_px)

    @property
    def uses_color(self) -> bool:
        """Whether the loss needs colour (frames, keyframes and the tracking model keep it)."""
        return self.method in ("hybrid", "fused")

    def __post_init__(self) -> None:
        if self.method not in ODOMETRY_METHODS:
            raise ValueError(f"unknown odometry method {self.method!r}; known: {', '.join(ODOMETRY_METHODS)}")
        if self.model_render not in ("raycast", "mesh"):
            raise ValueError(f"model_render must be 'raycast' or 'mesh', got {self.model_render!r}")
        if self.mesh_scope not in ("local", "full"):
            raise ValueError(f"mesh_scope must be 'local' or 'full', got {self.mesh_scope!r}")
        if self.mesh_local_dilation_blocks < 0:
            raise ValueError(f"mesh_local_dilation_blocks must be >= 0, got {self.mesh_local_dilation_blocks}")
        if self.mesh_refresh_frames < 1:
            raise ValueError(f"mesh_refresh_frames must be >= 1, got {self.mesh_refresh_frames}")
        if not self.fusion_prior > 0:
            raise ValueError(f"fusion_prior must be positive, got {self.fusion_prior}")
        if int(self.downsample) != self.downsample or self.downsample < 1:
            raise ValueError(f"downsample must be a positive integer, got {self.downsample}")
        if self.min_track_width_px < 1:
            raise ValueError(f"min_track_width_px must be >= 1, got {self.min_track_width_px}")
        self.iterations = tuple(int(i) for i in self.iterations)
        if self.refine_iterations is not None:
            self.refine_iterations = tuple(int(i) for i in self.refine_iterations)
            if not 0 < len(self.refine_iterations) <= len(self.iterations) or min(self.refine_iterations) < 1:
                raise ValueError(f"refine_iterations needs positive counts for at most the {len(self.iterations)} "
                                 f"levels of iterations {self.iterations}, got {self.refine_iterations}")
        if not self.iterations or min(self.iterations) < 1:
            raise ValueError(f"iterations needs one positive count per pyramid level, got {self.iterations}")
        if not self.depth_max_m > self.depth_min_m >= 0:
            raise ValueError(f"need depth_max_m > depth_min_m >= 0, got {self.depth_min_m}, {self.depth_max_m}")
        if not 0.0 < self.min_fitness <= 1.0:
            raise ValueError(f"min_fitness must be in (0, 1], got {self.min_fitness}")
        if self.max_frames_lost < 1:
            raise ValueError(f"max_frames_lost must be >= 1, got {self.max_frames_lost}")
        if self.model_voxel_m is not None and not self.model_voxel_m > 0:
            raise ValueError(f"model_voxel_m must be positive or None, got {self.model_voxel_m}")
        if self.velocity_max_gap_frames < 1:
            raise ValueError(f"velocity_max_gap_frames must be >= 1, got {self.velocity_max_gap_frames}")
        if self.keyframe_every < 1:
            raise ValueError(f"keyframe_every must be >= 1, got {self.keyframe_every}")
