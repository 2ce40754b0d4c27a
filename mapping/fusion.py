"""The semantic feature layer: a sparse voxel grid of fused image-text embeddings.

Voxel (i, j, k) of a grid with edge ``voxel_size_m`` covers world points p with
floor(p / voxel_size_m) = (i, j, k); its centre is ((i, j, k) + 0.5) * voxel_size_m
(world frame, metres). The grid is coarser than the TSDF (default 5 cm vs 2 cm) so that
features are stored once per semantic voxel.

Per voxel (named attributes, as in Open3D's VoxelBlockGrid):

==============  =========  ==========================================================
attribute       dtype      meaning
==============  =========  ==========================================================
``key``         int64      the packed voxel index (:func:`pack_keys`)
``embedding``   float16    running weighted mean of the unit embeddings fused into it
                           (not renormalised: its length says how much they agree)
``weight``      float32    sum of the fusion weights
``count``       int32      number of feature pixels fused into it
==============  =========  ==========================================================

Bytes per voxel: 2 D + 8 + 4 + 4 (D = embedding dimension), e.g. 784 for D = 384
(``lite``) and 1040 for D = 512 (CLIP ViT-B). A room-sized map at 5 cm keeps on the order
of 10^4 to 10^5 surface voxels: 40 000 voxels x 784 B = 31 MB for ``lite``. Runtime lookup
adds an Open3D hash map from key to row (16 B per voxel plus the table's spare capacity).

Fusion of a frame (:meth:`FeatureGrid.fuse_frame`): every feature pixel with valid
depth is back-projected from its centre with the frame's depth (or a raycast of the TSDF)
and pose; its weight is ``confidence * w_distance * w_angle`` with
``w_distance = min(1, (reference_distance_m / ray_length)^2)`` (closer views see more
detail) and ``w_angle = max(cos(angle between the viewing ray and the surface normal),
min_cos)`` (grazing views see less), the normal taken from the depth image. Points of one
frame that fall into one voxel are averaged first, then merged into the voxel's running
mean: ``m <- (W m + w f) / (W + w)``, computed in float32 and stored as float16.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mapping.features import DenseFeatures, sample_at_centres
from sensors.camera import Camera

_OFFSET = 1 << 20
_BITS = 21
_MASK = (1 << _BITS) - 1


def pack_keys(coords: np.ndarray) -> np.ndarray:
    """(N, 3) integer voxel indices -> (N,) int64 keys (21 bits per axis, indices in [-2^20, 2^20)).

    Raises:
        ValueError: an index outside that range (> 52 km from the origin at 5 cm).
    """
    c = np.asarray(coords, dtype=np.int64).reshape(-1, 3)
    if c.size and (c.min() < -_OFFSET or c.max() >= _OFFSET):
        raise ValueError(f"voxel index out of range [-{_OFFSET}, {_OFFSET}): {c.min()}..{c.max()}")
    c = c + _OFFSET
    return (c[:, 0] << (2 * _BITS)) | (c[:, 1] << _BITS) | c[:, 2]


def _mix_keys(keys: np.ndarray) -> np.ndarray:
    """(N,) int64 packed keys -> (N, 1) int64 scrambled keys, a bijection (splitmix64's finaliser).

    Open3D's hash of an int64 key barely mixes its bits, and packed keys differ in a few
    bits at fixed places, so unscrambled they collide: 11 000 lookups in a 200 000-voxel
    grid took 4.7 s; scrambled, 1 ms.
    """
    x = np.ascontiguousarray(keys, np.int64).reshape(-1, 1).view(np.uint64).copy()
    x ^= x >> np.uint64(30)
    x *= np.uint64(0xBF58476D1CE4E5B9)
    x ^= x >> np.uint64(27)
    x *= np.uint64(0x94D049BB133111EB)
    x ^= x >> np.uint64(31)
    return x.view(np.int64)


def unpack_keys(keys: np.ndarray) -> np.ndarray:
    """(N,) int64 keys -> (N, 3) int64 voxel indices (inverse of :func:`pack_keys`)."""
    k = np.asarray(keys, dtype=np.int64)
    return np.stack([(k >> (2 * _BITS)) & _MASK, (k >> _BITS) & _MASK, k & _MASK], axis=-1) - _OFFSET


@dataclass
class FusionConfig:
    """How a frame's dense features are weighted when fused."""

    reference_distance_m: float = 1.0
    """Ray length (metres) up to which distance does not lower the weight."""
    min_cos: float = 0.1
    """Floor of the viewing-angle term (cosine between ray and surface normal)."""
    unknown_normal_cos: float = 0.5
    """Angle term for points whose normal cannot be estimated (depth edge)."""
    depth_min_m: float = 0.1
    """Feature pixels with depth below this are not fused, metres."""
    depth_max_m: float = 4.0
    """Feature pixels with depth beyond this are not fused, metres."""
    max_depth_jump: float = 0.1
    """Relative depth difference to a neighbour beyond which no normal is estimated (depth edge)."""

    def __post_init__(self) -> None:
        if not self.reference_distance_m > 0:
            raise ValueError(f"reference_distance_m must be > 0, got {self.reference_distance_m}")
        if not 0 < self.min_cos <= 1 or not 0 < self.unknown_normal_cos <= 1:
            raise ValueError("min_cos and unknown_normal_cos must be in (0, 1]")
        if not self.depth_max_m > self.depth_min_m >= 0:
            raise ValueError(f"need depth_max_m > depth_min_m >= 0, got {self.depth_min_m}, {self.depth_max_m}")


def sample_depth(depth_m: np.ndarray, dense: DenseFeatures) -> np.ndarray:
    """Depth (metres) of the frame at every feature pixel's centre (nearest frame pixel): (h, w) float32."""
    if depth_m.shape != dense.frame_shape:
        raise ValueError(f"depth {depth_m.shape} does not match the features' frame {dense.frame_shape}")
    return sample_at_centres(depth_m, dense.shape)


def normals_from_points(points: np.ndarray, valid: np.ndarray, max_jump: float) -> np.ndarray:
    """Unit normals of an organised point image by central differences; NaN where unknown.

    Args:
        points: (h, w, 3) camera-frame points, metres.
        valid: (h, w) bool, points with depth.
        max_jump: relative depth difference to a neighbour that counts as an edge (no normal).

    Returns:
        (h, w, 3) float64 normals oriented towards the camera (n . p < 0), NaN where a
        neighbour is missing or across a depth edge.
    """
    h, w = valid.shape
    n = np.full((h, w, 3), np.nan)
    if h < 3 or w < 3:
        return n
    z = points[..., 2]
    c = points[1:-1, 1:-1]
    dx = points[1:-1, 2:] - points[1:-1, :-2]
    dy = points[2:, 1:-1] - points[:-2, 1:-1]
    ok = valid[1:-1, 1:-1] & valid[1:-1, 2:] & valid[1:-1, :-2] & valid[2:, 1:-1] & valid[:-2, 1:-1]
    zc = np.maximum(z[1:-1, 1:-1], 1e-6)
    for nb in (z[1:-1, 2:], z[1:-1, :-2], z[2:, 1:-1], z[:-2, 1:-1]):
        ok &= np.abs(nb - zc) <= max_jump * zc
    cr = np.cross(dx, dy)
    norm = np.linalg.norm(cr, axis=-1)
    ok &= norm > 1e-12
    cr = cr / np.maximum(norm, 1e-12)[..., None]
    flip = np.sum(cr * c, axis=-1) > 0
    cr[flip] *= -1
    n[1:-1, 1:-1] = np.where(ok[..., None], cr, np.nan)
    return n


def fusion_weights(
    points_cam: np.ndarray, valid: np.ndarray, confidence: np.ndarray, config: FusionConfig
) -> np.ndarray:
    """Per-feature-pixel fusion weight: confidence * distance term * angle term.

    Args:
        points_cam: (h, w, 3) camera-frame points of the feature pixels, metres.
        valid: (h, w) bool, pixels with usable depth.
        confidence: (h, w) dense-feature confidence in [0, 1].

    Returns:
        (h, w) float32 weights, 0 where not valid.
    """
    ray = np.linalg.norm(points_cam, axis=-1)
    w_dist = np.minimum(1.0, (config.reference_distance_m / np.maximum(ray, 1e-6)) ** 2)
    normals = normals_from_points(points_cam, valid, config.max_depth_jump)
    cos = -np.sum(normals * points_cam, axis=-1) / np.maximum(ray, 1e-6)
    w_angle = np.where(np.isfinite(cos), np.maximum(cos, config.min_cos), config.unknown_normal_cos)
    return np.where(valid, confidence * w_dist * w_angle, 0.0).astype(np.float32)


class FeatureGrid:
    """Sparse voxel grid of fused embeddings (see module docstring).

    Rows are kept in insertion order in capacity-doubling numpy buffers; an Open3D
    ``core.HashMap`` (scrambled int64 key, :func:`_mix_keys` -> int64 row) answers lookups
    and takes new keys in amortised O(1) each, so fusing a frame costs the same whatever
    the map's size.

    Args:
        voxel_size_m: voxel edge, metres.
        dim: embedding dimension D.
    """

    def __init__(self, voxel_size_m: float, dim: int) -> None:
        if not voxel_size_m > 0:
            raise ValueError(f"voxel_size_m must be positive, got {voxel_size_m}")
        if dim < 1:
            raise ValueError(f"dim must be >= 1, got {dim}")
        self.voxel_size_m = float(voxel_size_m)
        self.dim = int(dim)
        self._n = 0
        self._keys = np.empty(0, np.int64)
        self._emb = np.empty((0, self.dim), np.float16)
        self._weight = np.empty(0, np.float32)
        self._count = np.empty(0, np.int32)
        self._index = None  # open3d.core.HashMap, built on the first insert

    @classmethod
    def from_arrays(
        cls,
        voxel_size_m: float,
        keys: np.ndarray,
        embeddings: np.ndarray,
        weights: np.ndarray,
        counts: np.ndarray,
    ) -> FeatureGrid:
        """A grid holding the given voxels, rows in the given order.

        Args:
            voxel_size_m: voxel edge, metres.
            keys: (N,) int64 packed voxel keys (:func:`pack_keys`), unique.
            embeddings: (N, D) running means (stored as float16).
            weights: (N,) accumulated fusion weights.
            counts: (N,) feature pixels fused.

        Raises:
            ValueError: inconsistent shapes or duplicate keys.
        """
        keys = np.ascontiguousarray(keys, np.int64)
        emb = np.asarray(embeddings)
        weights = np.ascontiguousarray(weights, np.float32)
        counts = np.ascontiguousarray(counts, np.int32)
        n = len(keys)
        if keys.ndim != 1 or emb.ndim != 2 or emb.shape[0] != n or weights.shape != (n,) or counts.shape != (n,):
            raise ValueError(
                f"inconsistent feature grid: keys {keys.shape}, embeddings {emb.shape}, "
                f"weights {weights.shape}, counts {counts.shape}"
            )
        if n > 1 and len(np.unique(keys)) != n:
            raise ValueError("duplicate voxel keys")
        g = cls(voxel_size_m, emb.shape[1])
        g._n = n
        g._keys, g._emb = keys, np.ascontiguousarray(emb, np.float16)
        g._weight, g._count = weights, counts
        return g  # the hash index is built on the first lookup or insert (a served map may never need it)

    def __getstate__(self) -> dict:
        """Pickle / deepcopy state: the arrays, without the Open3D index (rebuilt on load)."""
        state = self.__dict__.copy()
        state["_index"] = None
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)  # the index is rebuilt when first needed

    def _ensure_index(self) -> "open3d.core.HashMap":  # noqa: F821 (imported where used)
        """The hash index of rows 0..N-1, built now if it is not there yet."""
        if self._index is None:
            import open3d.core as o3c

            self._index = o3c.HashMap(
                max(2 * self._n, 1024),
                key_dtype=o3c.int64,
                key_element_shape=(1,),
                value_dtypes=[o3c.int64],
                value_element_shapes=[(1,)],
                device=o3c.Device("CPU:0"),
            )
            if self._n:
                self._index_insert(self._keys[: self._n], np.arange(self._n, dtype=np.int64))
        return self._index

    def _index_insert(self, keys: np.ndarray, rows: np.ndarray) -> bool:
        """Add (M,) keys -> (M,) rows to the (existing) hash index; False if any key was already there."""
        import open3d.core as o3c

        _, inserted = self._index.insert(
            o3c.Tensor.from_numpy(_mix_keys(keys)),
            o3c.Tensor.from_numpy(np.ascontiguousarray(rows, np.int64).reshape(-1, 1)),
        )
        return bool(inserted.numpy().all())

    # ------------------------------------------------------------------ views
    def __len__(self) -> int:
        return self._n

    @property
    def keys(self) -> np.ndarray:
        """(N,) int64 packed voxel keys, insertion order."""
        return self._keys[: self._n]

    @property
    def embeddings(self) -> np.ndarray:
        """(N, D) float16 running weighted means (not unit length)."""
        return self._emb[: self._n]

    @property
    def weights(self) -> np.ndarray:
        """(N,) float32 accumulated fusion weight."""
        return self._weight[: self._n]

    @property
    def counts(self) -> np.ndarray:
        """(N,) int32 feature pixels fused."""
        return self._count[: self._n]

    def coords(self) -> np.ndarray:
        """(N, 3) int64 voxel indices."""
        return unpack_keys(self.keys)

    def centres(self) -> np.ndarray:
        """(N, 3) float64 voxel centres, world frame, metres."""
        return (self.coords() + 0.5) * self.voxel_size_m

    def unit_embeddings(self) -> np.ndarray:
        """(N, D) float32 embeddings renormalised to unit length (zero rows stay zero)."""
        e = self.embeddings.astype(np.float32)
        n = np.linalg.norm(e, axis=1, keepdims=True)
        return np.divide(e, n, out=np.zeros_like(e), where=n > 1e-8)

    @property
    def bytes_per_voxel(self) -> int:
        """Stored bytes per voxel: embedding (2 D) + key (8) + weight (4) + count (4)."""
        return 2 * self.dim + 8 + 4 + 4

    def memory_bytes(self) -> int:
        """Bytes of the stored attributes of the N voxels (excluding spare buffer capacity)."""
        return self._n * self.bytes_per_voxel

    # ------------------------------------------------------------------ lookup
    def voxel_coords(self, points_world: np.ndarray) -> np.ndarray:
        """(M, 3) world points -> (M, 3) int64 indices of the voxels containing them."""
        return np.floor(np.asarray(points_world, np.float64) / self.voxel_size_m).astype(np.int64)

    def find(self, keys: np.ndarray) -> np.ndarray:
        """(M,) packed keys -> (M,) int64 rows, -1 where the voxel is not in the grid."""
        keys = np.asarray(keys, np.int64)
        rows = np.full(keys.shape, -1, np.int64)
        if self._n == 0 or keys.size == 0:
            return rows
        import open3d.core as o3c

        index = self._ensure_index()
        buf, hit = index.find(o3c.Tensor.from_numpy(_mix_keys(keys)))
        hit = hit.numpy().reshape(keys.shape)
        rows[hit] = index.value_tensor().numpy()[buf.numpy().reshape(keys.shape)[hit], 0]
        return rows

    def lookup(self, points_world: np.ndarray) -> np.ndarray:
        """(M, 3) world points -> (M,) rows of their voxels, -1 where there is none."""
        return self.find(pack_keys(self.voxel_coords(points_world)))

    # ------------------------------------------------------------------ fusion
    def fuse_points(self, points_world: np.ndarray, features: np.ndarray, weights: np.ndarray) -> int:
        """Fuse unit embeddings at world points into their voxels.

        Args:
            points_world: (M, 3) world-frame points, metres.
            features: (M, D) unit embeddings (float32 or float16).
            weights: (M,) non-negative weights; points with weight 0 are ignored.

        Returns:
            Number of voxels touched.
        """
        points_world = np.asarray(points_world, np.float64).reshape(-1, 3)
        features = np.asarray(features).reshape(len(points_world), -1)
        weights = np.asarray(weights, np.float64).reshape(-1)
        if features.shape[1] != self.dim:
            raise ValueError(f"features have dimension {features.shape[1]}, the grid holds {self.dim}")
        if len(weights) != len(points_world):
            raise ValueError(f"{len(weights)} weights for {len(points_world)} points")
        keep = (weights > 0) & np.isfinite(points_world).all(axis=1) & np.isfinite(weights)
        if not keep.any():
            return 0
        keys = pack_keys(self.voxel_coords(points_world[keep]))
        f = features[keep].astype(np.float64)
        w = weights[keep]
        # 1. aggregate within this frame: sum of w f, sum of w, count per voxel
        order = np.argsort(keys, kind="stable")
        ks = keys[order]
        starts = np.flatnonzero(np.r_[True, ks[1:] != ks[:-1]])
        ukeys = ks[starts]
        wsum = np.add.reduceat(w[order], starts)
        fsum = np.add.reduceat(f[order] * w[order, None], starts, axis=0)
        cnt = np.diff(np.r_[starts, len(ks)]).astype(np.int32)
        # 2. merge into the running means
        rows = self.find(ukeys)
        old = rows >= 0
        if old.any():
            r = rows[old]
            W = self._weight[r].astype(np.float64)
            mean = (self._emb[r].astype(np.float64) * W[:, None] + fsum[old]) / (W + wsum[old])[:, None]
            self._emb[r] = mean.astype(np.float16)
            self._weight[r] = (W + wsum[old]).astype(np.float32)
            self._count[r] += cnt[old]
        new = ~old
        if new.any():
            self._append(ukeys[new], fsum[new] / wsum[new, None], wsum[new], cnt[new])
        return int(len(ukeys))

    def _append(self, keys: np.ndarray, mean: np.ndarray, weight: np.ndarray, count: np.ndarray) -> None:
        m = len(keys)
        need = self._n + m
        if need > len(self._keys):
            cap = max(need, 2 * len(self._keys), 1024)
            self._keys = np.resize(self._keys, cap)
            self._weight = np.resize(self._weight, cap)
            self._count = np.resize(self._count, cap)
            emb = np.zeros((cap, self.dim), np.float16)
            emb[: self._n] = self._emb[: self._n]
            self._emb = emb
        s = slice(self._n, need)
        self._keys[s] = keys
        self._emb[s] = mean.astype(np.float16)
        self._weight[s] = weight.astype(np.float32)
        self._count[s] = count.astype(np.int32)
        new_rows = np.arange(self._n, need, dtype=np.int64)
        self._ensure_index()  # of the rows so far, before the new ones count
        self._n = need
        # keys are unique and absent from the grid (fuse_points looked them up)
        self._index_insert(keys, new_rows)

    def fuse_frame(
        self,
        dense: DenseFeatures,
        depth_m: np.ndarray,
        camera: Camera,
        T_world_cam: np.ndarray,
        config: FusionConfig | None = None,
        depth_is_feature_res: bool = False,
    ) -> int:
        """Fuse one frame's dense features into the grid.

        Args:
            dense: the frame's features, (h, w, D) with confidence (h, w).
            depth_m: (H, W) frame depth, metres (0 = invalid), registered to the RGB the
                features came from; or, with ``depth_is_feature_res``, (h, w) depth already
                at the feature pixels (e.g. a TSDF raycast from ``dense.camera(camera)``).
            camera: the frame's intrinsics (H, W).
            T_world_cam: (4, 4) camera-to-world pose.

        Returns:
            Number of voxels touched.
        """
        config = config or FusionConfig()
        if dense.dim != self.dim:
            raise ValueError(f"dense features have dimension {dense.dim}, the grid holds {self.dim}")
        fcam = dense.camera(camera)
        if depth_is_feature_res:
            if depth_m.shape != dense.shape:
                raise ValueError(f"feature-resolution depth {depth_m.shape} does not match features {dense.shape}")
            d = np.where(np.isfinite(depth_m), depth_m, 0.0).astype(np.float32)
        else:
            d = sample_depth(depth_m, dense)
        valid = (d >= max(config.depth_min_m, 1e-6)) & (d <= config.depth_max_m) & (dense.confidence > 0)
        pts_cam = fcam.backproject(d)  # (h, w, 3)
        w = fusion_weights(pts_cam, valid, dense.confidence, config)
        sel = w > 0
        if not sel.any():
            return 0
        T = np.asarray(T_world_cam, np.float64)
        pts_world = pts_cam[sel] @ T[:3, :3].T + T[:3, 3]
        return self.fuse_points(pts_world, dense.features[sel], w[sel])

    # ------------------------------------------------------------------ persistence
    def save_npz(self, path: Path | str) -> None:
        """Write keys, embeddings (float16), weights, counts and the voxel size to an .npz file."""
        np.savez(
            path,
            keys=self.keys,
            embeddings=self.embeddings,
            weights=self.weights,
            counts=self.counts,
            voxel_size_m=np.float64(self.voxel_size_m),
        )

    @classmethod
    def load_npz(cls, path: Path | str) -> FeatureGrid:
        """Read a file written by :meth:`save_npz`.

        Raises:
            ValueError: missing arrays or inconsistent shapes (the message names the file).
        """
        path = Path(path)
        with np.load(path, allow_pickle=False) as z:
            missing = {"keys", "embeddings", "weights", "counts", "voxel_size_m"} - set(z.files)
            if missing:
                raise ValueError(f"{path}: not a feature grid (missing {', '.join(sorted(missing))})")
            keys, emb = z["keys"].astype(np.int64), z["embeddings"]
            weights, counts = z["weights"].astype(np.float32), z["counts"].astype(np.int32)
            voxel = float(z["voxel_size_m"])
        n = len(keys)
        if emb.ndim != 2 or emb.shape[0] != n or weights.shape != (n,) or counts.shape != (n,):
            raise ValueError(
                f"{path}: inconsistent feature grid: {n} keys, embeddings {emb.shape}, "
                f"weights {weights.shape}, counts {counts.shape}"
            )
        try:
            return cls.from_arrays(voxel, keys, emb, weights, counts)
        except ValueError as e:
            raise ValueError(f"{path}: {e}") from None


def describe_grid(grid: FeatureGrid) -> dict:
    """Size figures for metadata: voxels, bytes per voxel, MB."""
    return {
        "voxels": len(grid),
        "voxel_size_m": grid.voxel_size_m,
        "dim": grid.dim,
        "bytes_per_voxel": grid.bytes_per_voxel,
        "memory_mb": grid.memory_bytes() / 2**20,
    }


__all__ = [
    "FeatureGrid",
    "FusionConfig",
    "describe_grid",
    "fusion_weights",
    "normals_from_points",
    "pack_keys",
    "sample_depth",
    "unpack_keys",
]
