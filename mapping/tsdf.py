"""Metric TSDF map on Open3D's tensor ``VoxelBlockGrid`` (attributes tsdf, weight, color).

Frames: the grid lives in the world frame; frames are integrated with their
``T_world_cam`` (Open3D takes the extrinsic ``T_cam_world``). Units: metres.
Truncation is ``trunc_voxels * voxel_size_m`` and the same multiplier is passed to
every Open3D call (its default of 8 is not used silently).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from mapping.atomic import atomic_directory
from sensors.camera import Camera
from sensors.frame import Frame, check_pose

TSDF_FORMAT_VERSION = 1


@dataclass
class TSDFConfig:
    """Settings of the TSDF volume."""

    voxel_size_m: float = 0.02
    """Edge length of one TSDF voxel, metres."""
    trunc_voxels: float = 4.0
    """Truncation distance in voxels (sdf_trunc = trunc_voxels * voxel_size_m)."""
    depth_min_m: float = 0.1
    """Depth below this is ignored, metres."""
    depth_max_m: float = 4.0
    """Depth beyond this is ignored, metres."""
    block_resolution: int = 16
    """Voxels per block edge (blocks are block_resolution^3 voxels)."""
    initial_block_count: int = 2000
    """Blocks allocated up front; the hash map is grown (doubled) before it would overflow."""
    device: str = "CPU:0"
    """Open3D device, "CPU:0" or "CUDA:0"."""
    min_observations: int = 1
    """A voxel needs at least this many integrated frames to count as surface (mesh, points, raycast)."""
    integrate_color: bool = True
    """Keep a colour attribute (RGB in [0, 1])."""

    def __post_init__(self) -> None:
        if not self.voxel_size_m > 0:
            raise ValueError(f"voxel_size_m must be positive, got {self.voxel_size_m}")
        if not self.depth_max_m > self.depth_min_m >= 0:
            raise ValueError(f"need depth_max_m > depth_min_m >= 0, got {self.depth_min_m}, {self.depth_max_m}")
        if self.min_observations < 1:
            raise ValueError(f"min_observations must be >= 1, got {self.min_observations}")
        if self.trunc_voxels < 1:
            raise ValueError(f"trunc_voxels must be >= 1, got {self.trunc_voxels}")

    @property
    def sdf_trunc_m(self) -> float:
        return self.trunc_voxels * self.voxel_size_m

    @staticmethod
    def o3d_weight_threshold(min_observations: float) -> float:
        """Open3D keeps voxels with weight strictly above its threshold; each frame adds weight 1."""
        return float(min_observations) - 0.5


class TSDFMap:
    """A growing TSDF volume.

    Memory: each block holds block_resolution^3 voxels of (tsdf, weight[, r, g, b])
    float32, i.e. 8 (20 with colour) bytes per voxel.
    """

    def __init__(self, config: TSDFConfig | None = None) -> None:
        import open3d as o3d

        self.config = config or TSDFConfig()
        self._o3c = o3d.core
        self.device = o3d.core.Device(self.config.device)
        names, dtypes, channels = ["tsdf", "weight"], [o3d.core.float32] * 2, [1, 1]
        if self.config.integrate_color:
            names.append("color")
            dtypes.append(o3d.core.float32)
            channels.append(3)
        self.vbg = o3d.t.geometry.VoxelBlockGrid(
            attr_names=names,
            attr_dtypes=dtypes,
            attr_channels=channels,
            voxel_size=self.config.voxel_size_m,
            block_resolution=self.config.block_resolution,
            block_count=self.config.initial_block_count,
            device=self.device,
        )
        self.frames_integrated: list[int] = []
        self.integrate_seconds = 0.0

    # ------------------------------------------------------------------ integration
    def _tensors(self, frame: Frame):
        """Depth (H,W,1 float32 m), colour (H,W,3 float32 [0,1]), K, extrinsic as Open3D tensors."""
        o3c = self._o3c
        depth = frame.depth
        cfg = self.config
        if depth is None:
            raise ValueError(f"{frame.name or frame.index}: cannot integrate a frame without depth")
        if cfg.depth_min_m > 0:
            depth = np.where(depth >= cfg.depth_min_m, depth, 0.0).astype(np.float32)
        depth = np.nan_to_num(depth, nan=0.0, posinf=0.0, neginf=0.0)
        d = o3c.Tensor(np.ascontiguousarray(depth[..., None]), device=self.device)
        if cfg.integrate_color:
            c = o3c.Tensor(np.ascontiguousarray(frame.rgb), device=self.device).to(o3c.float32) / 255.0
        else:
            c = None
        K = o3c.Tensor(frame.camera.K, dtype=o3c.float64)
        ext = o3c.Tensor(np.linalg.inv(frame.T_world_cam), dtype=o3c.float64)
        return d, c, K, ext

    def _ensure_capacity(self, block_coords) -> None:
        """Grow the block hash map before it could overflow (never drop blocks)."""
        hm = self.vbg.hashmap()
        needed = hm.size() + int(block_coords.shape[0])
        if needed > hm.capacity():
            hm.reserve(max(2 * hm.capacity(), needed))

    def integrate(self, frame: Frame) -> None:
        """Fuse one posed frame with depth into the volume."""
        import open3d as o3d

        if frame.T_world_cam is None:
            raise ValueError(f"{frame.name or frame.index}: cannot integrate a frame without a pose")
        t0 = time.perf_counter()
        cfg = self.config
        d, c, K, ext = self._tensors(frame)
        depth_img = o3d.t.geometry.Image(d)
        block_coords = self.vbg.compute_unique_block_coordinates(
            depth_img, K, ext, 1.0, cfg.depth_max_m, cfg.trunc_voxels
        )
        if block_coords.shape[0] > 0:
            self._ensure_capacity(block_coords)
            if c is not None:
                self.vbg.integrate(
                    block_coords, depth_img, o3d.t.geometry.Image(c), K, K, ext, 1.0, cfg.depth_max_m, cfg.trunc_voxels
                )
            else:
                self.vbg.integrate(block_coords, depth_img, K, ext, 1.0, cfg.depth_max_m, cfg.trunc_voxels)
            _, found = self.vbg.hashmap().find(block_coords)
            if not bool(found.all().item()):
                raise RuntimeError("TSDF block allocation failed: blocks were dropped (hash map overflow)")
        self.frames_integrated.append(int(frame.index))
        self.integrate_seconds += time.perf_counter() - t0

    # ------------------------------------------------------------------ queries
    @property
    def num_blocks(self) -> int:
        return int(self.vbg.hashmap().size())

    def memory_bytes(self) -> int:
        """Bytes of the allocated voxel attribute buffers (capacity, not only used blocks)."""
        bytes_per_voxel = 4 * (2 + (3 if self.config.integrate_color else 0))
        return int(self.vbg.hashmap().capacity()) * self.config.block_resolution**3 * bytes_per_voxel

    def _active_block_coords(self):
        hm = self.vbg.hashmap()
        return hm.key_tensor()[hm.active_buf_indices().to(self._o3c.int64)]

    def _threshold(self, min_observations: int | None) -> float:
        n = self.config.min_observations if min_observations is None else min_observations
        return TSDFConfig.o3d_weight_threshold(n)

    def extract_mesh(self, min_observations: int | None = None):
        """Marching-cubes mesh (``open3d.t.geometry.TriangleMesh``, world frame, metres).

        Raises RuntimeError if the volume holds no surface.
        """
        if self.num_blocks == 0:
            raise RuntimeError("TSDF map is empty: no frame with valid depth was integrated")
        mesh = self.vbg.extract_triangle_mesh(weight_threshold=self._threshold(min_observations))
        if mesh.vertex.positions.shape[0] == 0:
            raise RuntimeError("TSDF map has no surface above the weight threshold")
        return mesh

    def extract_point_cloud(self, min_observations: int | None = None):
        """Zero-crossing surface points (``open3d.t.geometry.PointCloud``, world frame)."""
        if self.num_blocks == 0:
            raise RuntimeError("TSDF map is empty: no frame with valid depth was integrated")
        return self.vbg.extract_point_cloud(weight_threshold=self._threshold(min_observations))

    def raycast(
        self,
        camera: Camera,
        T_world_cam: np.ndarray,
        attributes: tuple[str, ...] = ("depth",),
        min_observations: int | None = None,
    ) -> dict[str, np.ndarray]:
        """Render the map from a camera pose.

        Returns a dict of numpy arrays: "depth" (H, W) float32 metres (0 = no hit),
        "normal" (H, W, 3) world frame, "color" (H, W, 3) float32 in [0, 1], as requested.
        """
        o3c = self._o3c
        T = check_pose(T_world_cam, "raycast pose")
        cfg = self.config
        h, w = camera.shape
        if self.num_blocks == 0:
            out = {"depth": np.zeros((h, w), np.float32)}
            return {k: out.get(k, np.zeros((h, w, 3), np.float32)) for k in attributes}
        args = (
            self._active_block_coords(),
            o3c.Tensor(camera.K, dtype=o3c.float64),
            o3c.Tensor(np.linalg.inv(T), dtype=o3c.float64),
            w,
            h,
            list(dict.fromkeys(("depth",) + tuple(attributes))),
            1.0,
            cfg.depth_min_m,
            cfg.depth_max_m,
            self._threshold(min_observations),
            cfg.trunc_voxels,
            8,
        )
        res = self.vbg.ray_cast(*args)
        # Open3D sizes its range-map fragment buffer from the previous call: a call that
        # outgrows it returns an empty image (with only a warning) and reallocates. Retry.
        for _ in range(2):
            if bool((res["depth"] > 0).any().item()):
                break
            res = self.vbg.ray_cast(*args)
        out = {}
        for k in attributes:
            a = res[k].cpu().numpy().astype(np.float32)
            out[k] = a[..., 0] if k == "depth" else a
        return out

    # ------------------------------------------------------------------ persistence
    def save_into(self, directory: Path) -> None:
        """Write ``tsdf.npz`` and ``tsdf.json`` into an existing directory (not atomic)."""
        directory = Path(directory)
        self.vbg.save(str(directory / "tsdf.npz"))
        meta = {
            "format_version": TSDF_FORMAT_VERSION,
            "config": asdict(self.config),
            "frames_integrated": self.frames_integrated,
            "num_blocks": self.num_blocks,
        }
        (directory / "tsdf.json").write_text(json.dumps(meta, indent=1))

    def save(self, directory: Path | str) -> Path:
        """Write the volume to ``directory`` atomically (temp dir, then rename)."""
        with atomic_directory(directory) as tmp:
            self.save_into(tmp)
        return Path(directory)

    @classmethod
    def load(cls, directory: Path | str, device: str | None = None) -> "TSDFMap":
        """Load a volume written by :meth:`save` / :meth:`save_into`."""
        import open3d as o3d

        directory = Path(directory)
        meta_path, grid_path = directory / "tsdf.json", directory / "tsdf.npz"
        if not meta_path.is_file() or not grid_path.is_file():
            raise FileNotFoundError(f"{directory}: not a TSDF map (missing tsdf.json or tsdf.npz)")
        meta = json.loads(meta_path.read_text())
        if meta.get("format_version") != TSDF_FORMAT_VERSION:
            raise ValueError(f"{meta_path}: unsupported TSDF format version {meta.get('format_version')}")
        cfg = TSDFConfig(**meta["config"])
        if device is not None:
            cfg.device = device
        m = cls.__new__(cls)
        m.config = cfg
        m._o3c = o3d.core
        m.device = o3d.core.Device(cfg.device)
        m.vbg = o3d.t.geometry.VoxelBlockGrid.load(str(grid_path))
        if cfg.device != "CPU:0":
            m.vbg = m.vbg.to(m.device)
        m.frames_integrated = list(meta.get("frames_integrated", []))
        m.integrate_seconds = 0.0
        return m

