"""One RGB-D (or RGB-only) observation with its camera and pose."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from sensors.camera import Camera

DEPTH_SOURCES_FIXED = ("sensor", "completed", "rendered")
"""Allowed ``Frame.depth_source`` values; estimated depth uses "mono:<model>"."""


@dataclass(frozen=True)
class FrameOrigin:
    """Where a frame sits in its source, beyond ``Frame.index`` / ``Frame.name``.

    Every field is None where the source has no such notion. Readers fill what they know;
    nothing downstream of the readers depends on these (they are for messages and tests).

    Attributes:
        dataset: dataset key of the source (``"nyu"``, ``"tum"``, ...), used for depth caps.
        sequence: sequence folder the frame came from (7-Scenes ``seq-01``).
        frame_number: the frame's number in the source's own file names or stream
            (Replica/7-Scenes file number, ScanNet frame id, RealSense depth frame number).
        color_frame_number: the colour stream's frame number where it differs (RealSense).
        depth_path: the depth file read, or None where the frame has no depth file.
        depth_time: timestamp of the associated depth image, seconds (TUM association).
    """

    dataset: str | None = None
    sequence: str | None = None
    frame_number: int | None = None
    color_frame_number: int | None = None
    depth_path: str | None = None
    depth_time: float | None = None


@dataclass(frozen=True)
class DepthFillShares:
    """Share of a frame's pixels that depth filling took from each source (fractions in [0, 1])."""

    map: float
    prediction: float
    guided: float


@dataclass
class SyntheticFrameTruth:
    """Ground truth of a rendered (synthetic) frame, in ``Frame.truth``.

    Attributes:
        T_world_cam: (4, 4) the pose the frame was rendered from (the reported
            ``Frame.T_world_cam`` differs when pose noise is on).
        depth_m: (H, W) float32 clean rendered depth, metres (0 = no hit).
        instance_ids: (H, W) int64 instance per pixel (-1 = none), or None.
        primitive_ids: (H, W) int64 triangle per pixel (-1 = none).
        instance_labels: class label of each instance id (``instance_labels[instance_ids]``
            is the class of a pixel), or None when the mesh has no labelled instances.
    """

    T_world_cam: np.ndarray
    depth_m: np.ndarray
    instance_ids: np.ndarray | None
    primitive_ids: np.ndarray
    instance_labels: tuple[str, ...] | None = None


def check_pose(T_world_cam: np.ndarray, where: str = "pose") -> np.ndarray:
    """Validate a 4x4 rigid transform and return it as float64.

    Raises ValueError naming ``where`` if it is not 4x4, not finite, its last row
    is not [0, 0, 0, 1], or its rotation is not orthonormal (tolerance 1e-3).
    """
    T = np.asarray(T_world_cam, dtype=np.float64)
    if T.shape != (4, 4):
        raise ValueError(f"{where}: expected a 4x4 pose, got shape {T.shape}")
    if not np.all(np.isfinite(T)):
        raise ValueError(f"{where}: pose contains non-finite values (NaN or inf)")
    if not np.allclose(T[3], [0.0, 0.0, 0.0, 1.0], atol=1e-6):
        raise ValueError(f"{where}: last pose row must be [0, 0, 0, 1], got {T[3].tolist()}")
    R = T[:3, :3]
    err = np.abs(R @ R.T - np.eye(3)).max()
    if err > 1e-3 or np.linalg.det(R) < 0:
        raise ValueError(f"{where}: pose rotation is not a proper rotation (orthonormality error {err:.2e})")
    return T


@dataclass
class Frame:
    """An RGB-D frame.

    Attributes:
        rgb: (H, W, 3) uint8 colour image.
        depth: (H, W) float32 depth in metres along the optical axis, 0 = invalid;
            None when the frame has no depth. Registered to ``rgb`` (same camera).
        camera: intrinsics shared by ``rgb`` and ``depth``.
        T_world_cam: (4, 4) float64 transform taking camera points to world points,
            or None when the pose is unknown (to be tracked).
        timestamp: seconds (source clock), or the frame index where the source has none.
        index: position of the frame in its source.
        depth_source: "sensor", "mono:<model>", "completed" or "rendered".
        name: where the frame came from (a file path or stream name), for messages.
        origin: the frame's place in its source (dataset, sequence, file number, ...).
        tsdf_weight: TSDF integration weight of ``depth``: a float for the whole frame, or
            (H, W) float32 per pixel (0 = not integrated). Set by depth filling
            (``semmap.stages.depth``); 1.0 for sensor depth.
        depth_fill: share of pixels each depth-filling source supplied, or None when the
            frame's depth was not filled.
        dropped_depth_m: (H, W) float32 sensor depth, metres, that a depth stage removed
            (``--drop-depth``) to score its fill against; None otherwise.
        truth: ground truth of a synthetic frame (``SyntheticSource(keep_truth=True)``), or None.
        frames_dropped_before: live sources: frames dropped since the previous delivered one
            (the consumer was slower than the sensor); 0 elsewhere.
    """

    rgb: np.ndarray
    depth: np.ndarray | None
    camera: Camera
    T_world_cam: np.ndarray | None = None
    timestamp: float = 0.0
    index: int = 0
    depth_source: str = "sensor"
    name: str = ""
    origin: FrameOrigin = field(default_factory=FrameOrigin)
    tsdf_weight: float | np.ndarray = 1.0
    depth_fill: DepthFillShares | None = None
    dropped_depth_m: np.ndarray | None = None
    truth: SyntheticFrameTruth | None = None
    frames_dropped_before: int = 0

    def __post_init__(self) -> None:
        where = self.name or f"frame {self.index}"
        h, w = self.camera.shape
        if not isinstance(self.rgb, np.ndarray) or self.rgb.ndim != 3 or self.rgb.shape[2] != 3:
            raise ValueError(f"{where}: rgb must be (H, W, 3), got {getattr(self.rgb, 'shape', type(self.rgb))}")
        if self.rgb.dtype != np.uint8:
            raise ValueError(f"{where}: rgb must be uint8, got {self.rgb.dtype}")
        if self.rgb.shape[:2] != (h, w):
            raise ValueError(f"{where}: rgb size {self.rgb.shape[1]}x{self.rgb.shape[0]} does not match camera {w}x{h}")
        if self.depth is not None:
            if self.depth.shape != (h, w):
                raise ValueError(
                    f"{where}: depth size {self.depth.shape[::-1]} does not match rgb/camera {w}x{h}"
                )
            if self.depth.dtype != np.float32:
                self.depth = self.depth.astype(np.float32)
        if self.T_world_cam is not None:
            self.T_world_cam = check_pose(self.T_world_cam, where)
        if isinstance(self.tsdf_weight, np.ndarray) and self.tsdf_weight.shape != (h, w):
            raise ValueError(
                f"{where}: per-pixel tsdf_weight must be ({h}, {w}), got {self.tsdf_weight.shape}"
            )
        if not (self.depth_source in DEPTH_SOURCES_FIXED or self.depth_source.startswith("mono:")):
            raise ValueError(f"{where}: unknown depth_source {self.depth_source!r}")

    @property
    def has_depth(self) -> bool:
        return self.depth is not None

    def with_(self, **changes) -> "Frame":
        """A copy with some fields replaced (validated again)."""
        return replace(self, **changes)

    def points_world(self) -> np.ndarray:
        """(N, 3) world-frame points of valid depth pixels; needs depth and pose."""
        if self.depth is None or self.T_world_cam is None:
            raise ValueError(f"{self.name or self.index}: points_world needs depth and a pose")
        return self.camera.backproject_valid(self.depth, self.T_world_cam)
