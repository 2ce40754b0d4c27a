"""The frames as they were integrated, kept compactly so the map can be rebuilt after a pose correction.

When a loop closure corrects the poses after the last frame, the map is rebuilt from
exactly what went into it: the depth after the depth stage (filled, completed or
monocular), its per-pixel TSDF weights, its ``depth_source`` tag and colour, for the
frames that were integrated (``--stride`` respected; the source is never re-opened, so a
live RealSense run is rebuilt as fully as a dataset).

Storage per frame (:class:`RetainedFrame`):

- depth: uint16 in steps of ``RetentionConfig.depth_unit_m`` (1 mm: exact for sensors that
  report millimetres; at most 0.5 mm off for filled or rendered float depth), zlib level 1;
- weights: a scalar, or the weight map as a palette of its distinct values (at most
  ``mapping.tsdf.MAX_DISTINCT_PIXEL_WEIGHTS``) plus zlib-compressed uint8 codes, exact;
- colour: JPEG (quality ``jpeg_quality``; only the mesh colours see the loss);
- pose, timestamp, index, name, depth source.

Semantic keyframes keep their fusion input (:class:`RetainedFeatures`): the dense features
at feature resolution (float16; rows shared by many pixels, as the default "segments"
strategy gives, stored once with a per-pixel index), their confidence and the depth sampled
at the feature pixels, so the feature grid is re-fused at the corrected poses without
re-encoding (:func:`refuse_features`). Redkitchen, lite, segments, 80 x 60 features: about
0.1-0.2 MB per keyframe (measured in ``benchmarks/bench_loop_closure.py``); "crops" and
"patches" give a distinct row per pixel, 80 x 60 x D x 2 bytes (3.7 MB for D = 384).

Measured on 7-Scenes redkitchen (640 x 480 Kinect v1, the first 1000 frames,
``benchmarks/bench_loop_closure.py``): 146 kB per frame (depth ~90 kB, JPEG ~55 kB), i.e.
142 MB per 1000 frames; encoding took 10-20 ms per frame on a lightly loaded core (zlib ~10 ms,
JPEG 2-10 ms) and 69 ms at a load average of 15 on the shared 2-core machine; it runs on a
background thread (:class:`FrameStore`), off the mapping loop. (Full-resolution
float32 frames would take 2.1 MB each, 2 GB per 1000.) Memory is bounded by
``max_mb``: when the store exceeds it, every other retained frame is dropped and from then on
only every second new frame is kept (repeated as needed, like the views stage), so a long
live run degrades to a sparser re-integration instead of growing without bound.
"""

from __future__ import annotations

import io
import time
import zlib
from collections.abc import Iterator, Mapping
from concurrent.futures import Future
from dataclasses import dataclass

import numpy as np
from tqdm import tqdm

from mapping.features import DenseFeatures
from mapping.fusion import FeatureGrid, FusionConfig, sample_depth
from mapping.tsdf import TSDFConfig, TSDFMap
from sensors.camera import Camera
from sensors.frame import Frame


@dataclass
class RetentionConfig:
    """How integrated frames are kept for re-integration."""

    depth_unit_m: float = 0.001
    """Depth quantisation step, metres (uint16: depths up to 65535 steps, 65.5 m at 1 mm)."""
    jpeg_quality: int = 90
    """JPEG quality of the kept colour images."""
    max_mb: float = 2048.0
    """Memory bound of the store, MiB (about 13,000 redkitchen frames); beyond it the store thins itself."""

    def __post_init__(self) -> None:
        if not self.depth_unit_m > 0:
            raise ValueError(f"depth_unit_m must be positive, got {self.depth_unit_m}")
        if not 1 <= self.jpeg_quality <= 100:
            raise ValueError(f"jpeg_quality must be in [1, 100], got {self.jpeg_quality}")
        if not self.max_mb > 0:
            raise ValueError(f"max_mb must be positive, got {self.max_mb}")


@dataclass
class RetainedFrame:
    """One integrated frame, compressed (see the module docstring).

    Attributes:
        index, timestamp, name, depth_source: the frame's own fields.
        camera: its intrinsics (H, W).
        T_world_cam: (4, 4) float64 pose it was integrated with.
        rgb_jpeg: JPEG bytes of the (H, W, 3) colour image.
        depth_z: zlib bytes of the (H, W) uint16 depth in ``depth_unit_m`` steps (0 = invalid).
        depth_unit_m: the quantisation step of ``depth_z``, metres.
        weight: the scalar TSDF weight, or None when ``weight_palette`` is used.
        weight_palette: (P,) float32 distinct weights of a per-pixel weight map, or None.
        weight_codes_z: zlib bytes of the (H, W) uint8 palette index of each pixel, or None.
    """

    index: int
    timestamp: float
    name: str
    depth_source: str
    camera: Camera
    T_world_cam: np.ndarray
    rgb_jpeg: bytes
    depth_z: bytes
    depth_unit_m: float
    weight: float | None = None
    weight_palette: np.ndarray | None = None
    weight_codes_z: bytes | None = None

    @classmethod
    def encode(cls, frame: Frame, weight: float | np.ndarray, config: RetentionConfig) -> RetainedFrame:
        """Compress a posed frame with depth and the TSDF weight it was integrated with."""
        from PIL import Image

        where = frame.name or f"frame {frame.index}"
        if frame.depth is None or frame.T_world_cam is None:
            raise ValueError(f"{where}: only integrated frames (with depth and pose) can be retained")
        d = np.nan_to_num(np.asarray(frame.depth, np.float64), nan=0.0, posinf=0.0, neginf=0.0)
        steps = np.clip(np.round(d / config.depth_unit_m), 0, 65535).astype(np.uint16)
        buf = io.BytesIO()
        Image.fromarray(np.ascontiguousarray(frame.rgb)).save(buf, format="JPEG", quality=config.jpeg_quality)
        out = cls(
            index=int(frame.index),
            timestamp=float(frame.timestamp),
            name=frame.name,
            depth_source=frame.depth_source,
            camera=frame.camera,
            T_world_cam=np.array(frame.T_world_cam, np.float64),
            rgb_jpeg=buf.getvalue(),
            depth_z=zlib.compress(steps.tobytes(), 1),
            depth_unit_m=config.depth_unit_m,
        )
        if np.ndim(weight) == 0:
            out.weight = float(weight)
        else:
            w = np.asarray(weight, np.float32)
            if w.shape != frame.camera.shape:
                raise ValueError(f"{where}: weight map {w.shape} does not match the frame {frame.camera.shape}")
            palette, codes = np.unique(w, return_inverse=True)
            if len(palette) > 255:
                raise ValueError(f"{where}: weight map has {len(palette)} distinct values (at most 255 can be kept)")
            out.weight_palette = palette.astype(np.float32)
            out.weight_codes_z = zlib.compress(codes.astype(np.uint8).reshape(w.shape).tobytes(), 1)
        return out

    @property
    def nbytes(self) -> int:
        """Bytes held (compressed payloads, palette and pose)."""
        n = len(self.rgb_jpeg) + len(self.depth_z) + 128 + 8 * 16
        if self.weight_codes_z is not None:
            n += len(self.weight_codes_z) + 4 * len(self.weight_palette)
        return n

    def depth_m(self) -> np.ndarray:
        """(H, W) float32 depth, metres (0 = invalid)."""
        steps = np.frombuffer(zlib.decompress(self.depth_z), np.uint16).reshape(self.camera.shape)
        return (steps.astype(np.float64) * self.depth_unit_m).astype(np.float32)

    def weights(self) -> float | np.ndarray:
        """The scalar weight, or the (H, W) float32 per-pixel weight map."""
        if self.weight_palette is None:
            return float(self.weight)
        codes = np.frombuffer(zlib.decompress(self.weight_codes_z), np.uint8).reshape(self.camera.shape)
        return self.weight_palette[codes]

    def decode(self, T_world_cam: np.ndarray | None = None) -> Frame:
        """The frame again (colour from JPEG), posed at ``T_world_cam`` (default: the pose it was integrated with)."""
        from PIL import Image

        rgb = np.asarray(Image.open(io.BytesIO(self.rgb_jpeg)).convert("RGB"))
        return Frame(
            rgb=rgb,
            depth=self.depth_m(),
            camera=self.camera,
            T_world_cam=self.T_world_cam if T_world_cam is None else T_world_cam,
            timestamp=self.timestamp,
            index=self.index,
            depth_source=self.depth_source,
            name=self.name,
        )


MAX_PENDING_FRAMES = 4
"""At most this many frames wait for compression (about 2 MB each at 640 x 480); ``add`` then waits."""


class FrameStore:
    """The integrated frames of one mapping run, compressed, in integration order (bounded by ``max_mb``).

    Frames are compressed on one background thread (zlib and JPEG release the GIL), so ``add``
    costs the mapping loop only the checks; ``frames`` waits for what is still being encoded.
    The frames handed to ``add`` must not be modified afterwards (the pipeline never does).
    """

    def __init__(self, config: RetentionConfig | None = None) -> None:
        from concurrent.futures import ThreadPoolExecutor

        self.config = config or RetentionConfig()
        self._entries: list[Future | RetainedFrame] = []
        """Encoded frames, then (the tail: one worker encodes in order) the futures still encoding."""
        self._done = 0
        """How many leading ``_entries`` are encoded frames."""
        self._done_bytes = 0
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="frame-store")
        self.keep_every = 1
        """Only every ``keep_every``-th offered frame is kept (doubles each time the store thins)."""
        self.offered = 0
        self.thinned = 0
        self.encode_seconds = 0.0
        """Seconds spent compressing, on the background thread."""

    def _encode(self, frame: Frame, weight: float | np.ndarray) -> RetainedFrame:
        t0 = time.perf_counter()
        r = RetainedFrame.encode(frame, weight, self.config)
        self.encode_seconds += time.perf_counter() - t0  # one worker thread: no race
        return r

    def _resolve(self, wait_for: int = 0) -> None:
        """Replace the finished encodings at the head of ``_entries`` by their frames (re-raising an
        encoding error), waiting for the first ``wait_for`` entries."""
        while self._done < len(self._entries):
            e = self._entries[self._done]
            if self._done >= wait_for and not e.done():
                return
            self._entries[self._done] = r = e.result()
            self._done += 1
            self._done_bytes += r.nbytes

    @property
    def frames(self) -> list[RetainedFrame]:
        """The retained frames (waits for the ones still being compressed)."""
        self._resolve(wait_for=len(self._entries))
        return list(self._entries)

    @property
    def nbytes(self) -> int:
        """Bytes held; frames still being compressed count as the mean of the finished ones."""
        pending = len(self._entries) - self._done
        return int(self._done_bytes + (pending * self._done_bytes / self._done if self._done else 0))

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self) -> Iterator[RetainedFrame]:
        return iter(self.frames)

    def add(self, frame: Frame, weight: float | np.ndarray = 1.0) -> None:
        """Keep a frame as integrated (its depth, pose and the TSDF ``weight`` it was fused with)."""
        k = self.offered
        self.offered += 1
        if k % self.keep_every:
            return
        where = frame.name or f"frame {frame.index}"
        if frame.depth is None or frame.T_world_cam is None:
            raise ValueError(f"{where}: only integrated frames (with depth and pose) can be retained")
        if np.ndim(weight) != 0 and np.shape(weight) != frame.camera.shape:
            raise ValueError(f"{where}: weight map {np.shape(weight)} does not match the frame {frame.camera.shape}")
        # at most MAX_PENDING_FRAMES raw frames wait: when the encoder fell behind, wait for it
        self._resolve(wait_for=len(self._entries) - MAX_PENDING_FRAMES + 1)
        self._entries.append(self._pool.submit(self._encode, frame, weight))
        while self.nbytes > self.config.max_mb * 2**20 and len(self._entries) > 1:
            self._entries = self._entries[::2]
            self._done = sum(1 for e in self._entries if not isinstance(e, Future))
            self._done_bytes = sum(e.nbytes for e in self._entries[: self._done])
            self.keep_every *= 2
            self.thinned += 1

    def describe(self) -> dict:
        """Counts and memory, for map metadata (waits for the frames still being compressed)."""
        n = len(self.frames)
        nbytes = self.nbytes
        return {
            "frames": n,
            "frames_offered": self.offered,
            "keep_every": self.keep_every,
            "thinned": self.thinned,
            "bytes": int(nbytes),
            "bytes_per_frame": float(nbytes / n) if n else 0.0,
            "encode_seconds": self.encode_seconds,
            "depth_unit_m": self.config.depth_unit_m,
            "max_mb": self.config.max_mb,
        }


def reintegrate(
    store: FrameStore,
    poses: Mapping[int, np.ndarray],
    tsdf_config: TSDFConfig,
    progress: bool = False,
) -> TSDFMap:
    """A fresh TSDF from the retained frames, each at its corrected pose, with its own weights.

    Args:
        store: the frames as integrated.
        poses: ``Frame.index`` -> (4, 4) corrected ``T_world_cam``; frames not listed keep the
            pose they were integrated with.
        tsdf_config: settings of the new map (those of the map being replaced).
        progress: show a progress bar.
    Returns:
        the new map (``frames_integrated`` lists the retained frames, in integration order).
    """
    tsdf = TSDFMap(tsdf_config)
    for r in tqdm(store.frames, desc="re-integrating", unit="frame", disable=not progress):
        T = np.asarray(poses.get(r.index, r.T_world_cam), np.float64)
        tsdf.integrate(r.decode(T), weight=r.weights())
    return tsdf


@dataclass
class RetainedFeatures:
    """One semantic keyframe's fusion input, kept for re-fusion at a corrected pose.

    Attributes:
        index: ``Frame.index`` of the keyframe.
        camera: the frame's intrinsics (H, W).
        frame_shape: (H, W) of the frame the features describe.
        rows: (U, D) float16 feature rows; with ``codes`` the distinct rows, else one per pixel (U = h w).
        codes: (h, w) int32 row of each feature pixel, or None.
        confidence: (h, w) float16 feature confidence.
        depth_m: (h, w) float32 depth at the feature pixels, metres (0 = invalid).
    """

    index: int
    camera: Camera
    frame_shape: tuple[int, int]
    rows: np.ndarray
    codes: np.ndarray | None
    confidence: np.ndarray
    depth_m: np.ndarray

    @classmethod
    def encode(cls, index: int, dense: DenseFeatures, depth_m: np.ndarray, camera: Camera) -> RetainedFeatures:
        """Keep ``dense`` and the (H, W) frame depth (or raycast) it was fused with."""
        h, w = dense.shape
        flat = np.asarray(dense.features, np.float16).reshape(h * w, -1)
        uniq, inverse = np.unique(flat, axis=0, return_inverse=True)
        shared = len(uniq) <= (h * w) // 2
        return cls(
            index=int(index),
            camera=camera,
            frame_shape=dense.frame_shape,
            rows=uniq if shared else flat,
            codes=inverse.reshape(h, w).astype(np.int32) if shared else None,
            confidence=np.asarray(dense.confidence, np.float16),
            depth_m=sample_depth(depth_m, dense).astype(np.float32),
        )

    @property
    def nbytes(self) -> int:
        n = self.rows.nbytes + self.confidence.nbytes + self.depth_m.nbytes
        return n + (self.codes.nbytes if self.codes is not None else 0)

    def dense(self) -> DenseFeatures:
        """The dense features again (float16 rows)."""
        h, w = self.confidence.shape
        feats = self.rows[self.codes] if self.codes is not None else self.rows.reshape(h, w, -1)
        return DenseFeatures(feats, self.confidence.astype(np.float32), self.frame_shape)


def refuse_features(
    records: list[RetainedFeatures],
    poses: Mapping[int, np.ndarray],
    voxel_size_m: float,
    dim: int,
    config: FusionConfig,
) -> FeatureGrid:
    """A fresh feature grid with every kept keyframe fused at its pose in ``poses`` (by ``Frame.index``).

    Raises:
        ValueError: a keyframe has no pose in ``poses``.
    """
    grid = FeatureGrid(voxel_size_m, dim)
    for r in records:
        if r.index not in poses:
            raise ValueError(f"re-fusing features: keyframe {r.index} has no corrected pose")
        grid.fuse_frame(r.dense(), r.depth_m, r.camera, poses[r.index], config, depth_is_feature_res=True)
    return grid
