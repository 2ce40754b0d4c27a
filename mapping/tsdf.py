"""Metric TSDF map on Open3D's tensor ``VoxelBlockGrid`` (attributes tsdf, weight, color).

Frames: the grid lives in the world frame; frames are integrated with their
``T_world_cam`` (Open3D takes the extrinsic ``T_cam_world``). Units: metres.
Truncation is ``trunc_voxels * voxel_size_m`` and the same multiplier is passed to
every Open3D call (its default of 8 is not used silently).

Weights: :meth:`TSDFMap.integrate` takes an observation weight per frame or per pixel
(sensor depth 1, estimated depth less); a voxel's weight is the sum of the weights of the
observations fused into it, and ``min_observations`` is a threshold on that sum.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from mapping.atomic import atomic_directory
from mapping.mapformat import (
    ArraySpec,
    MapFormatError,
    check_fields,
    check_format_version,
    check_list_of,
    check_shape,
    npz_headers,
    read_json_file,
    require_equal,
)
from sensors.camera import Camera
from sensors.frame import Frame, check_pose

TSDF_FORMAT_VERSION = 1
TSDF_FILE = "tsdf.npz"
TSDF_META_FILE = "tsdf.json"
TSDF_FIELDS = {"format_version": int, "config": dict, "frames_integrated": list, "num_blocks": int}
"""The fields of ``tsdf.json``."""


def check_tsdf_files(directory: Path) -> tuple[dict, TSDFConfig]:
    """Check ``tsdf.json`` and the array headers of ``tsdf.npz`` (an Open3D VoxelBlockGrid archive).

    The archive must hold ``key`` (B, 3) int32 block coordinates and, for each attribute
    (``tsdf``, ``weight``, optionally ``color``), a float32 (B, R, R, R, C) ``value_NNN``
    array, with B = ``num_blocks`` of tsdf.json and R, voxel size as its config says.

    Returns:
        (tsdf.json content, its TSDFConfig).

    Raises:
        MapFormatError: a file is missing or damaged, or the two disagree.
    """
    meta_path, grid_path = directory / TSDF_META_FILE, directory / TSDF_FILE
    meta = read_json_file(meta_path)
    check_format_version(meta, meta_path, TSDF_FORMAT_VERSION, "TSDF")
    check_fields(meta, meta_path, TSDF_FIELDS)
    check_list_of(meta["frames_integrated"], meta_path, "frames_integrated", int)
    try:
        cfg = TSDFConfig(**meta["config"])
    except (TypeError, ValueError) as e:
        raise MapFormatError(meta_path, f"field 'config' is not a TSDF configuration ({e})") from None
    headers = npz_headers(grid_path)
    spec = {
        "key": ArraySpec(("int32",), ("B", 3)),
        "block_resolution": ArraySpec(("int64",), (1,)),
        "voxel_size": ArraySpec(("float32",), (1,)),
    }
    values = sorted(k for k in headers if k.startswith("value_"))
    attrs = [k for k in headers if k.startswith("attr_name_")]
    wanted = {"attr_name_tsdf", "attr_name_weight"} | ({"attr_name_color"} if cfg.integrate_color else set())
    if not wanted <= set(attrs) or len(values) != len(attrs):
        raise MapFormatError(grid_path, f"not a TSDF volume: attributes {sorted(attrs)} and value arrays {values}, "
                                        f"expected {sorted(wanted)} with one value array each")
    R = cfg.block_resolution
    spec.update({k: ArraySpec(("float32",), ("B", R, R, R, None)) for k in values})
    dims: dict[str, int] = {}
    for name, s in spec.items():
        if name not in headers:
            raise MapFormatError(grid_path, f"array '{name}' missing")
        shape, dtype = headers[name]
        if str(dtype) not in s.dtypes:
            raise MapFormatError(grid_path, f"array '{name}' has dtype {dtype}, expected {' or '.join(s.dtypes)}")
        check_shape(grid_path, name, shape, s.shape, dims)
    require_equal(grid_path, "the block count", dims["B"], meta["num_blocks"], TSDF_META_FILE)
    return meta, cfg

WEIGHT_TOLERANCE = 1e-3
"""Slack below ``min_observations`` still counted as reaching it (float32 sums of fractional weights)."""

RAYCAST_RANGE_TILE_PX = 8
"""Range-map down-sampling factor of Open3D's ``ray_cast``. Keep 8: Open3D 0.20's CPU ray-cast
kernel indexes the range map as ``(u / 8, v / 8)`` whatever factor is passed, so any other
value reads the wrong (or out-of-bounds) tiles; 16 hung the process in our tests."""

MAX_DISTINCT_PIXEL_WEIGHTS = 16
"""Per-pixel weight maps are integrated in one pass per distinct value; more values than this are refused."""


def integration_intrinsics(K: np.ndarray, o3c):
    """The intrinsics to pass to Open3D's ``VoxelBlockGrid.integrate`` for a camera with (3, 3) ``K``.

    Open3D projects each voxel to (u, v) and reads the pixel ``(int(u), int(v))``, i.e. it
    truncates where the pixel whose centre is nearest is ``round(u)``: every voxel took
    the depth of a pixel half a pixel up-left of it, which moved the integrated surface
    by half a pixel (about 1 mm at 2 m on 1200x680 Replica frames; tracked against such a
    model, frames settled 1-1.5 mm off along the camera's x and y on every frame, and the
    trajectory drifted 1 cm in 60 frames). Moving the principal point by +0.5 px makes
    the truncation a rounding. Colour is read at the same pixel.
    """
    K_shifted = np.array(K, dtype=np.float64)
    K_shifted[0, 2] += 0.5
    K_shifted[1, 2] += 0.5
    return o3c.Tensor(K_shifted, dtype=o3c.float64)


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
    min_observations: float = 1.0
    """Summed observation weight a voxel needs to count as surface (mesh, points, raycast).

    Every frame integrated with weight 1 adds 1, so for plain RGB-D mapping this is the
    number of frames; a frame integrated with a lower weight (estimated depth) adds its
    weight, so e.g. 1.0 needs four observations at weight 0.3 (or one sensor frame)."""
    integrate_color: bool = True
    """Keep a colour attribute (RGB in [0, 1])."""

    def __post_init__(self) -> None:
        if not self.voxel_size_m > 0:
            raise ValueError(f"voxel_size_m must be positive, got {self.voxel_size_m}")
        if not self.depth_max_m > self.depth_min_m >= 0:
            raise ValueError(f"need depth_max_m > depth_min_m >= 0, got {self.depth_min_m}, {self.depth_max_m}")
        if not self.min_observations > 0:
            raise ValueError(f"min_observations (summed weight) must be positive, got {self.min_observations}")
        if self.trunc_voxels < 1:
            raise ValueError(f"trunc_voxels must be >= 1, got {self.trunc_voxels}")
        self.trunc_voxels = float(self.trunc_voxels)  # Open3D's bindings refuse an int

    @property
    def sdf_trunc_m(self) -> float:
        return self.trunc_voxels * self.voxel_size_m

    @staticmethod
    def o3d_weight_threshold(min_observations: float) -> float:
        """Open3D's threshold for "summed weight >= min_observations".

        Open3D keeps voxels with weight strictly above its threshold. Weights are sums of
        per-frame weights in float32 (e.g. 0.3 + 0.3 + 0.4 may land a few ulp below 1),
        hence the small tolerance; with all weights 1 this equals the old ``n - 0.5`` rule.
        """
        return float(min_observations) - WEIGHT_TOLERANCE


class TSDFMap:
    """A growing TSDF volume.

    Memory: each block holds block_resolution^3 voxels of (tsdf, weight[, r, g, b])
    float32, i.e. 8 (20 with colour) bytes per voxel. Colour is stored in [0, 255] (Open3D).
    """

    #: weighted integration on CPU edits the weight buffer through numpy views (False: the
    #: Open3D tensor path used on CUDA; tests compare the two)
    _numpy_views: bool = True

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
        self._revision = 0
        #: fragments Open3D's ray-cast range-map buffer is known to hold (``tracking.model.render_model``)
        self.raycast_fragment_capacity = 0

    # ------------------------------------------------------------------ integration
    def _tensors(self, frame: Frame, depth: np.ndarray):
        """Depth (H,W,1 float32 m), colour (H,W,3 float32 [0,1]), K, extrinsic as Open3D tensors."""
        o3c = self._o3c
        cfg = self.config
        if cfg.depth_min_m > 0:
            depth = np.where(depth >= cfg.depth_min_m, depth, 0.0).astype(np.float32)
        depth = np.nan_to_num(depth, nan=0.0, posinf=0.0, neginf=0.0)
        d = o3c.Tensor(np.ascontiguousarray(depth[..., None], dtype=np.float32), device=self.device)
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

    def integrate(self, frame: Frame, weight: float | np.ndarray = 1.0) -> None:
        """Fuse one posed frame with depth into the volume, with an observation weight.

        Every voxel within the truncation band of the depth it projects to (voxel -> one
        pixel, Open3D's projection) is updated as a weighted running mean::

            tsdf   <- (W tsdf   + a sdf)    / (W + a)
            colour <- (W colour + a rgb)    / (W + a)
            W      <- W + a

        where ``a`` is the weight of that pixel; Open3D's own update is ``a = 1``, which
        stays the fast path (one Open3D call, nothing else). For ``a != 1`` the weights
        of the touched blocks are divided by ``a`` before Open3D's update (which then
        computes exactly ``(W tsdf + a sdf) / (W + a)``) and set to ``W + a`` (observed
        voxels) or restored to ``W`` (untouched voxels) after it; only those blocks are
        read and written.

        Args:
            frame: a posed frame with depth (``T_world_cam`` and ``depth`` not None).
            weight: the observation weight ``a > 0`` of every pixel, or an (H, W) per-pixel
                weight map (``>= 0``; 0 = pixel not integrated) with at most
                :data:`MAX_DISTINCT_PIXEL_WEIGHTS` distinct positive values (one pass
                each; e.g. 1 for sensor pixels, 0.3 for filled ones). Passes are exact:
                a voxel takes its update from the one pixel it projects to.
        Raises:
            ValueError: no pose, no depth, a non-positive or non-finite scalar weight, or a
                bad weight map (shape, negative / non-finite values, too many distinct values).
        """
        where = frame.name or frame.index
        if frame.T_world_cam is None:
            raise ValueError(f"{where}: cannot integrate a frame without a pose")
        if frame.depth is None:
            raise ValueError(f"{where}: cannot integrate a frame without depth")
        t0 = time.perf_counter()
        if np.ndim(weight) == 0:
            a = float(weight)
            if not (np.isfinite(a) and a > 0):
                raise ValueError(f"{where}: integration weight must be a positive finite number, got {weight}")
            self._integrate_depth(frame, frame.depth, a)
        else:
            for a, depth in self._weight_passes(frame, np.asarray(weight)):
                self._integrate_depth(frame, depth, a)
        self.frames_integrated.append(int(frame.index))
        self._revision += 1
        self.integrate_seconds += time.perf_counter() - t0

    @staticmethod
    def _weight_passes(frame: Frame, weight: np.ndarray) -> list[tuple[float, np.ndarray]]:
        """Split a per-pixel weight map into (weight, depth with only those pixels) passes."""
        where = frame.name or frame.index
        if weight.shape != frame.camera.shape:
            raise ValueError(f"{where}: weight map shape {weight.shape} does not match the frame {frame.camera.shape}")
        w = weight.astype(np.float32)
        if not np.all(np.isfinite(w)) or (w < 0).any():
            raise ValueError(f"{where}: weight map must be finite and >= 0")
        depth = frame.depth
        use = (w > 0) & np.isfinite(depth) & (depth > 0)
        values = np.unique(w[use])
        if len(values) > MAX_DISTINCT_PIXEL_WEIGHTS:
            raise ValueError(
                f"{where}: weight map has {len(values)} distinct positive values; at most "
                f"{MAX_DISTINCT_PIXEL_WEIGHTS} are integrated (one pass each): quantise it"
            )
        return [(float(a), np.where(use & (w == a), depth, 0.0).astype(np.float32)) for a in values]

    def _integrate_depth(self, frame: Frame, depth: np.ndarray, a: float) -> None:
        """One Open3D integration of ``depth`` (H, W metres) with weight ``a`` (see :meth:`integrate`)."""
        import open3d as o3d

        cfg = self.config
        d, c, K, ext = self._tensors(frame, depth)
        depth_img = o3d.t.geometry.Image(d)
        try:
            block_coords = self.vbg.compute_unique_block_coordinates(
                depth_img, K, ext, 1.0, cfg.depth_max_m, cfg.trunc_voxels
            )
        except RuntimeError as e:
            if "No block is touched" in str(e):
                return  # no depth within (depth_min, depth_max): nothing to fuse
            raise
        if block_coords.shape[0] == 0:
            return
        self._ensure_capacity(block_coords)
        hm = self.vbg.hashmap()
        reweight = None
        if a != 1.0:
            # Allocate the touched blocks now (new blocks are zero) so their buffer
            # indices are known; Open3D's integrate then finds them already active.
            hm.activate(block_coords)
            buf, _ = hm.find(block_coords)
            reweight = self._scale_weights(buf, a)
        K_int = integration_intrinsics(frame.camera.K, self._o3c)
        if c is not None:
            self.vbg.integrate(
                block_coords, depth_img, o3d.t.geometry.Image(c), K_int, K_int, ext, 1.0, cfg.depth_max_m, cfg.trunc_voxels
            )
        else:
            self.vbg.integrate(block_coords, depth_img, K_int, ext, 1.0, cfg.depth_max_m, cfg.trunc_voxels)
        if reweight is not None:
            reweight()
        _, found = hm.find(block_coords)
        if not bool(found.all().item()):
            raise RuntimeError("TSDF block allocation failed: blocks were dropped (hash map overflow)")

    def _scale_weights(self, buf_indices, a: float):
        """Divide the weights of the given blocks by ``a``; return the function that, after
        Open3D's update, sets them to ``W + a`` where Open3D added 1 and back to ``W`` elsewhere."""
        o3c = self._o3c
        weights = self.vbg.attribute("weight")  # a view of the hash map's value buffer
        if self._numpy_views and self.device.get_type() == o3c.Device.DeviceType.CPU:
            # numpy views of the CPU buffers: gathers/scatters ~100x faster than Open3D's indexing
            w_all, idx = weights.numpy(), buf_indices.numpy().astype(np.int64)
            w0 = w_all[idx]
            w_scaled = w0 / np.float32(a)
            w_all[idx] = w_scaled

            def restore() -> None:
                observed = w_all[idx] != w_scaled  # Open3D added exactly 1 there
                w_all[idx] = np.where(observed, w0 + np.float32(a), w0)

            return restore
        idx = buf_indices.to(o3c.int64)
        w0 = weights[idx]
        shape = w0.shape
        w0 = w0.reshape((-1,))
        w_scaled = w0 / a
        weights[idx] = w_scaled.reshape(shape)

        def restore_tensor() -> None:
            # Flat tensors and a boolean mask: Open3D 0.19 turns True into 255 in
            # Bool.to(float32) and refuses 5-D boolean indexing.
            observed = weights[idx].reshape((-1,)) != w_scaled
            w_new = w0.clone()
            w_new[observed] = w0[observed] + a
            weights[idx] = w_new.reshape(shape)

        return restore_tensor

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

    def _threshold(self, min_observations: float | None) -> float:
        n = self.config.min_observations if min_observations is None else min_observations
        return TSDFConfig.o3d_weight_threshold(n)

    def extract_mesh_or_none(self, min_observations: float | None = None):
        """Marching-cubes mesh (``open3d.t.geometry.TriangleMesh``, CPU) or None when it has no triangles."""
        mesh = self.vbg.extract_triangle_mesh(weight_threshold=self._threshold(min_observations)).cpu()
        return mesh if mesh.triangle.indices.shape[0] > 0 else None

    def extract_mesh(self, min_observations: float | None = None):
        """Marching-cubes mesh (``open3d.t.geometry.TriangleMesh``, world frame, metres).

        Raises RuntimeError if the volume holds no surface.
        """
        if self.num_blocks == 0:
            raise RuntimeError("TSDF map is empty: no frame with valid depth was integrated")
        mesh = self.vbg.extract_triangle_mesh(weight_threshold=self._threshold(min_observations))
        if mesh.vertex.positions.shape[0] == 0:
            raise RuntimeError("TSDF map has no surface above the weight threshold")
        return mesh

    def extract_point_cloud(self, min_observations: float | None = None):
        """Zero-crossing surface points (``open3d.t.geometry.PointCloud``, world frame)."""
        if self.num_blocks == 0:
            raise RuntimeError("TSDF map is empty: no frame with valid depth was integrated")
        return self.vbg.extract_point_cloud(weight_threshold=self._threshold(min_observations))

    def raycast(
        self,
        camera: Camera,
        T_world_cam: np.ndarray,
        attributes: tuple[str, ...] = ("depth",),
        min_observations: float | None = None,
    ) -> dict[str, np.ndarray]:
        """Render the map from a camera pose.

        The zero-level surface (marching cubes, the same mesh :meth:`extract_mesh` gives) is
        ray-cast with Open3D's ``RaycastingScene``; the scene is cached until the next
        integration. (Open3D 0.20's own ``VoxelBlockGrid.ray_cast`` on CPU can hang or crash
        after "Could not generate full range map", e.g. on a fresh 5 cm grid and full-size
        frames, and reads voxels half a voxel off; the mesh path has neither problem.)

        Returns a dict of numpy arrays: "depth" (H, W) float32 metres along the optical axis
        (0 = no hit or outside [depth_min_m, depth_max_m]), "normal" (H, W, 3) float32 world
        frame, "color" (H, W, 3) float32 in [0, 1], as requested.
        """
        T = check_pose(T_world_cam, "raycast pose")
        unknown = set(attributes) - {"depth", "normal", "color"}
        if unknown:
            raise ValueError(f"unknown raycast attributes {sorted(unknown)}; use depth, normal, color")
        h, w = camera.shape
        renderer = self._surface_renderer(min_observations)
        if renderer is None:
            empty = {"depth": np.zeros((h, w), np.float32)}
            return {k: empty.get(k, np.zeros((h, w, 3), np.float32)) for k in attributes}
        view = renderer.render(camera, T)
        cfg = self.config
        depth = view.depth_m.astype(np.float32)
        outside = (depth < cfg.depth_min_m) | (depth > cfg.depth_max_m)
        depth[outside] = 0.0
        out = {"depth": depth}
        if "normal" in attributes:
            out["normal"] = np.where(outside[..., None], 0.0, view.normals_world).astype(np.float32)
        if "color" in attributes:
            out["color"] = np.where(outside[..., None], 0.0, view.rgb / 255.0).astype(np.float32)
        return {k: out[k] for k in attributes}

    def _surface_renderer(self, min_observations: float | None):
        """A cached ``sensors.synthetic.MeshRenderer`` of the current surface, or None if empty."""
        key = (self._revision, self._threshold(min_observations))
        cached = getattr(self, "_renderer_cache", None)
        if cached is not None and cached[0] == key:
            return cached[1]
        renderer = self.build_surface_renderer(min_observations)
        self._renderer_cache = (key, renderer)
        return renderer

    def build_surface_renderer(self, min_observations: float | None = None):
        """A new ``sensors.synthetic.MeshRenderer`` of the current marching-cubes surface (colours clipped to
        [0, 1]), or None when the map holds no surface. Not cached: see :meth:`raycast` for the cached use."""
        from sensors.synthetic import MeshRenderer

        mesh = self.extract_mesh_or_none(min_observations) if self.num_blocks > 0 else None
        if mesh is None:
            return None
        if "colors" in mesh.vertex:
            mesh.vertex.colors = mesh.vertex.colors.clip(0.0, 1.0)
        return MeshRenderer(mesh)

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
    def load(cls, directory: Path | str, device: str | None = None) -> TSDFMap:
        """Load a volume written by :meth:`save` / :meth:`save_into`.

        Raises:
            FileNotFoundError: the directory does not exist.
            MapFormatError: ``tsdf.json`` or ``tsdf.npz`` is missing or damaged (see
                :func:`check_tsdf_files`).
        """
        import open3d as o3d

        directory = Path(directory)
        if not directory.is_dir():
            raise FileNotFoundError(f"map directory {directory} does not exist")
        meta, cfg = check_tsdf_files(directory)
        if device is not None:
            cfg.device = device
        m = cls.__new__(cls)
        m.config = cfg
        m._o3c = o3d.core
        m.device = o3d.core.Device(cfg.device)
        grid_path = directory / TSDF_FILE
        try:
            m.vbg = o3d.t.geometry.VoxelBlockGrid.load(str(grid_path))
        except RuntimeError as e:
            raise MapFormatError(grid_path, f"Open3D cannot read the volume ({e})") from None
        if cfg.device != "CPU:0":
            m.vbg = m.vbg.to(m.device)
        m.frames_integrated = list(meta["frames_integrated"])
        m.integrate_seconds = 0.0
        m._revision = 0
        m.raycast_fragment_capacity = 0
        return m

