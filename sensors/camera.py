"""Pinhole camera model (OpenCV axes: x right, y down, z forward; metres).

Pixel convention: integer pixel coordinates address pixel *centres*, so pixel
(u, v) covers [u - 0.5, u + 0.5) x [v - 0.5, v + 0.5). See docs/conventions.md.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Camera:
    """Pinhole intrinsics of one image stream.

    Attributes:
        fx, fy: focal lengths in pixels.
        cx, cy: principal point in pixels (pixel-centre convention).
        width, height: image size in pixels.
    """

    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int

    def __post_init__(self) -> None:
        values = (self.fx, self.fy, self.cx, self.cy)
        if not all(np.isfinite(v) for v in values):
            raise ValueError(f"Camera intrinsics must be finite, got {values}")
        if self.fx <= 0 or self.fy <= 0:
            raise ValueError(f"Camera focal lengths must be positive, got fx={self.fx}, fy={self.fy}")
        if int(self.width) <= 0 or int(self.height) <= 0:
            raise ValueError(f"Camera size must be positive, got {self.width}x{self.height}")
        object.__setattr__(self, "width", int(self.width))
        object.__setattr__(self, "height", int(self.height))

    @classmethod
    def from_K(cls, K: np.ndarray, width: int, height: int) -> "Camera":
        """Build from a 3x3 intrinsic matrix."""
        K = np.asarray(K, dtype=np.float64)
        if K.shape != (3, 3):
            raise ValueError(f"K must be 3x3, got {K.shape}")
        return cls(float(K[0, 0]), float(K[1, 1]), float(K[0, 2]), float(K[1, 2]), width, height)

    @property
    def K(self) -> np.ndarray:
        """(3, 3) float64 intrinsic matrix."""
        return np.array(
            [[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]], dtype=np.float64
        )

    @property
    def shape(self) -> tuple[int, int]:
        """(height, width), the shape of images from this camera."""
        return (self.height, self.width)

    def scaled(self, s: float) -> "Camera":
        """Camera for the image resized by factor ``s`` (pixel-centre aware).

        A pixel centre u maps to (u + 0.5) * s - 0.5, so cx' = (cx + 0.5) s - 0.5.
        The new size is round(width * s) x round(height * s).
        """
        if not s > 0:
            raise ValueError(f"scale must be positive, got {s}")
        return Camera(
            fx=self.fx * s,
            fy=self.fy * s,
            cx=(self.cx + 0.5) * s - 0.5,
            cy=(self.cy + 0.5) * s - 0.5,
            width=int(round(self.width * s)),
            height=int(round(self.height * s)),
        )

    def resized(self, width: int, height: int) -> "Camera":
        """Camera for the image resized to exactly ``width`` x ``height`` (anisotropic allowed)."""
        sx, sy = width / self.width, height / self.height
        return Camera(
            fx=self.fx * sx,
            fy=self.fy * sy,
            cx=(self.cx + 0.5) * sx - 0.5,
            cy=(self.cy + 0.5) * sy - 0.5,
            width=width,
            height=height,
        )

    def pixel_rays(self) -> np.ndarray:
        """(H, W, 3) float64 camera-frame ray directions with z = 1 for every pixel centre."""
        u, v = np.meshgrid(np.arange(self.width, dtype=np.float64), np.arange(self.height, dtype=np.float64))
        return np.stack([(u - self.cx) / self.fx, (v - self.cy) / self.fy, np.ones_like(u)], axis=-1)

    def backproject(self, depth_m: np.ndarray) -> np.ndarray:
        """Lift a depth image to camera-frame points.

        Args:
            depth_m: (H, W) depth in metres along the optical axis (0 = invalid).
        Returns:
            (H, W, 3) float64 points in the camera frame; invalid pixels give (0, 0, 0).
        """
        depth_m = np.asarray(depth_m)
        if depth_m.shape != self.shape:
            raise ValueError(f"depth shape {depth_m.shape} does not match camera {self.shape}")
        return self.pixel_rays() * depth_m[..., None]

    def backproject_valid(self, depth_m: np.ndarray, T_world_cam: np.ndarray | None = None) -> np.ndarray:
        """(N, 3) points of the valid (> 0, finite) depth pixels, in world frame if a pose is given."""
        pts = self.backproject(depth_m)
        valid = np.isfinite(depth_m) & (depth_m > 0)
        pts = pts[valid]
        if T_world_cam is not None:
            pts = pts @ T_world_cam[:3, :3].T + T_world_cam[:3, 3]
        return pts

    def project(self, points_cam: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Project camera-frame points to pixels.

        Args:
            points_cam: (N, 3) points in the camera frame (metres).
        Returns:
            uv: (N, 2) float64 pixel coordinates (pixel-centre convention);
            z: (N,) depth along the optical axis. Points with z <= 0 get uv = nan.
        """
        p = np.asarray(points_cam, dtype=np.float64).reshape(-1, 3)
        z = p[:, 2]
        with np.errstate(divide="ignore", invalid="ignore"):
            u = self.fx * p[:, 0] / z + self.cx
            v = self.fy * p[:, 1] / z + self.cy
        uv = np.stack([u, v], axis=-1)
        uv[z <= 0] = np.nan
        return uv, z

    def in_image(self, uv: np.ndarray) -> np.ndarray:
        """(N,) bool: pixel coordinates that fall inside the image (rounded to the nearest pixel)."""
        u, v = np.round(uv[:, 0]), np.round(uv[:, 1])
        return (u >= 0) & (u < self.width) & (v >= 0) & (v < self.height)

    def to_dict(self) -> dict:
        return {"fx": self.fx, "fy": self.fy, "cx": self.cx, "cy": self.cy, "width": self.width, "height": self.height}

    @classmethod
    def from_dict(cls, d: dict) -> "Camera":
        return cls(float(d["fx"]), float(d["fy"]), float(d["cx"]), float(d["cy"]), int(d["width"]), int(d["height"]))

    def o3d_intrinsic(self):
        """(3, 3) float64 ``open3d.core.Tensor`` of K, for the tensor API."""
        import open3d as o3d

        return o3d.core.Tensor(self.K, dtype=o3d.core.Dtype.Float64)
