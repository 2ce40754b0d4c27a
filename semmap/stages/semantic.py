"""Semantic fusion stage of ``semmap map``: dense image-text features on keyframes, fused into voxels.

Enabled by ``--encoder``. After each frame is integrated into the TSDF, the stage decides
whether it is a keyframe (pose change since the last keyframe, ``mapping.keyframes``);
only keyframes are encoded (``mapping.features``) and fused into the semantic voxel
grid (``mapping.fusion``). Writes ``features.npz`` and ``features.json`` into the map
directory; ``mapping.SemanticMap.load`` reads them back.

When a stage may correct poses (loop closure), each keyframe's fusion input is kept
(``mapping.reintegration.RetainedFeatures``, ~0.1-0.2 MB per keyframe with "segments") and
the grid is re-fused at the corrected poses in ``on_poses_corrected``, so every embedding
sits where its corrected frame puts it.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mapping.encoders import load_encoder
from mapping.encoders.base import Encoder, torch_threads
from mapping.features import FEATURE_STRATEGIES, DenseExtractor, make_extractor
from mapping.fusion import FeatureGrid, FusionConfig, describe_grid
from mapping.keyframes import KEYFRAME_ROTATION_DEG, KEYFRAME_TRANSLATION_M, KeyframeSelector
from mapping.reintegration import RetainedFeatures, refuse_features
from mapping.semantic_map import FEATURES_FILE, FEATURES_META_FILE, SEMANTIC_FORMAT_VERSION
from mapping.tsdf import TSDFMap
from semmap.config_args import add_dataclass_arguments, config_kwargs
from semmap.pipeline import MapResult, Stage
from sensors.frame import Frame

ORDER = 50


@dataclass
class SemanticConfig:
    """Settings of the semantic fusion stage."""

    encoder: str = "lite"
    """Encoder spec: "lite", "clip:<path>", "openclip:<arch>/<pretrained>"."""
    device: str = "cpu"
    """torch device of the encoder."""
    voxel_size_m: float = 0.05
    """Semantic voxel edge, metres (coarser than the TSDF)."""
    features: str = "segments"
    """Dense feature strategy: "segments" (object-level crops of RGB-D image segments, any
    encoder), "crops" (multi-scale sliding crops, any encoder) or "patches" (ViT clip:
    encoders). On redkitchen with lite, segments took ~35 crops per keyframe against 47
    for crops, and found more of the annotated objects (benchmarks/bench_semantic.py)."""
    feature_stride: int = 8
    """Frame pixels per feature pixel."""
    kf_translation_m: float = KEYFRAME_TRANSLATION_M
    """Camera motion since the last keyframe that makes a keyframe, metres."""
    kf_rotation_deg: float = KEYFRAME_ROTATION_DEG
    """Camera rotation since the last keyframe that makes a keyframe, degrees."""
    feature_depth: str = "frame"
    """Depth used to place feature pixels: "frame" (sensor depth) or "raycast" (the TSDF surface)."""
    fusion: FusionConfig = field(default_factory=FusionConfig)
    """Fusion weights and depth range."""
    extractor_options: dict[str, Any] = field(default_factory=dict)
    """Extra keywords for the feature strategy (e.g. crop_fractions for "crops")."""
    torch_threads: int | None = 1
    """torch intra-op threads while keyframes are encoded (restored afterwards); None: unchanged.
    Measured on the shared 2-core machine: one thread 35 ms per 224 px crop (fp32), two
    threads 68-220 ms (the TSDF integration and other processes compete for the cores)."""

    def __post_init__(self) -> None:
        if self.feature_depth not in ("frame", "raycast"):
            raise ValueError(f"feature_depth must be 'frame' or 'raycast', got {self.feature_depth!r}")
        if not self.voxel_size_m > 0:
            raise ValueError(f"semantic voxel size must be positive, got {self.voxel_size_m}")
        if self.torch_threads is not None and self.torch_threads < 1:
            raise ValueError(f"torch_threads must be >= 1 or None, got {self.torch_threads}")


class SemanticStage(Stage):
    """Encode keyframes and fuse their dense features into a :class:`FeatureGrid`.

    Args:
        config: stage settings.
        encoder: an already loaded encoder (its ``name`` must equal ``config.encoder``);
            None loads ``config.encoder`` on ``config.device``.
    """

    name = "semantic"

    def __init__(self, config: SemanticConfig, encoder: Encoder | None = None) -> None:
        self.config = config
        if encoder is not None and encoder.name != config.encoder:
            raise ValueError(f"encoder {encoder.name!r} does not match the configured {config.encoder!r}")
        self.encoder = encoder or load_encoder(config.encoder, device=config.device)
        self.extractor: DenseExtractor = make_extractor(
            config.features, self.encoder, stride=config.feature_stride, **config.extractor_options
        )
        self.selector = KeyframeSelector(config.kf_translation_m, config.kf_rotation_deg)
        self.grid = FeatureGrid(config.voxel_size_m, self.encoder.dim)
        self.timings_s = {"keyframe_select": 0.0, "encode": 0.0, "depth": 0.0, "fuse": 0.0}
        self.frames_seen = 0
        self.images_encoded = 0
        self.retained: list[RetainedFeatures] | None = None
        """Each keyframe's fusion input, kept when poses may be corrected (see ``begin``)."""
        self.refused = 0

    def begin(self, poses_may_change: bool) -> None:
        self.retained = [] if poses_may_change else None

    @property
    def keyframes(self) -> list[int]:
        """``Frame.index`` of every keyframe fused so far."""
        return self.selector.keyframes

    def after_integrate(self, frame: Frame, tsdf: TSDFMap) -> None:
        t = self.timings_s
        self.frames_seen += 1
        t0 = time.perf_counter()
        is_kf = self.selector.update(frame.T_world_cam, frame.index)
        t1 = time.perf_counter()
        t["keyframe_select"] += t1 - t0
        if not is_kf:
            return
        dense = self._extract(frame)
        self.images_encoded += self.extractor.last_crop_count
        t2 = time.perf_counter()
        t["encode"] += t2 - t1
        if self.config.feature_depth == "raycast":
            # Rendered at the frame's own size, then sampled at the feature pixels like sensor
            # depth: a first ray cast of a fresh Open3D grid at a small size (80 x 60) hung in
            # Open3D 0.20 (its range-map buffer is reallocated one fragment short).
            depth = tsdf.raycast(frame.camera, frame.T_world_cam, ("depth",))["depth"]
        else:
            depth = frame.depth
        t3 = time.perf_counter()
        t["depth"] += t3 - t2
        self.grid.fuse_frame(dense, depth, frame.camera, frame.T_world_cam, self.config.fusion)
        if self.retained is not None:
            self.retained.append(RetainedFeatures.encode(frame.index, dense, depth, frame.camera))
        t["fuse"] += time.perf_counter() - t3

    def on_poses_corrected(self, corrected: dict[int, np.ndarray], result: MapResult) -> None:
        """Re-fuse every kept keyframe at its corrected pose into a fresh grid."""
        if self.retained is None:
            raise ValueError("semantic stage: poses were corrected but no keyframe features were kept")
        t0 = time.perf_counter()
        self.grid = refuse_features(
            self.retained, corrected, self.config.voxel_size_m, self.encoder.dim, self.config.fusion
        )
        self.refused += 1
        self.timings_s["refuse"] = self.timings_s.get("refuse", 0.0) + time.perf_counter() - t0

    def _extract(self, frame: Frame):
        with torch_threads(self.config.torch_threads):
            return self.extractor.extract_frame(frame)

    def finish(self, result: MapResult) -> None:
        if len(self.grid) == 0:
            raise ValueError(
                f"semantic stage: no feature was fused ({len(self.keyframes)} keyframes of "
                f"{self.frames_seen} frames); do the frames have valid depth within the depth range?"
            )

    def save_into(self, directory: Path) -> list[str]:
        directory = Path(directory)
        self.grid.save_npz(directory / FEATURES_FILE)
        (directory / FEATURES_META_FILE).write_text(json.dumps(self.metadata(), indent=1))
        return [FEATURES_FILE, FEATURES_META_FILE]

    def metadata(self) -> dict:
        cfg = self.config
        return {
            "format_version": SEMANTIC_FORMAT_VERSION,
            "encoder": self.encoder.name,
            "dim": self.encoder.dim,
            "voxel_size_m": cfg.voxel_size_m,
            **{k: v for k, v in describe_grid(self.grid).items() if k not in ("voxel_size_m", "dim")},
            "extractor": self.extractor.describe(),
            "feature_depth": cfg.feature_depth,
            "fusion": asdict(cfg.fusion),
            "keyframe_thresholds": {"translation_m": cfg.kf_translation_m, "rotation_deg": cfg.kf_rotation_deg},
            "frames_seen": self.frames_seen,
            "images_encoded": self.images_encoded,
            "keyframes": list(self.keyframes),
            "refused_after_pose_correction": self.refused,
            "retained_keyframe_bytes": int(sum(r.nbytes for r in self.retained)) if self.retained else 0,
            "timings_s": dict(self.timings_s),
        }


SEMANTIC_FLAGS = {
    "encoder": "--encoder",
    "voxel_size_m": "--semantic-voxel-size",
    "features": "--features",
    "feature_stride": "--feature-stride",
    "kf_translation_m": "--kf-translation",
    "kf_rotation_deg": "--kf-rotation-deg",
    "feature_depth": "--feature-depth",
}
"""``SemanticConfig`` field -> its ``semmap map`` option (``--crop-scales`` sets ``extractor_options``)."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("semantic features (enabled by --encoder)")
    add_dataclass_arguments(
        g,
        SemanticConfig,
        SEMANTIC_FLAGS,
        encoder={
            "default": None,
            "help": "image-text encoder: lite | clip:<hf-name-or-path> | openclip:<arch>/<pretrained>; "
            "builds the semantic feature layer (features.npz) for `semmap query`",
        },
        features={
            "choices": FEATURE_STRATEGIES.names(),
            "default": None,
            "help": "dense features: segments (object-level crops of RGB-D image segments, any encoder; "
            "the default), crops (multi-scale sliding crops, any encoder; the default when --crop-scales "
            "is given) or patches (ViT patch tokens, clip: encoders)",
        },
        feature_depth={"choices": ["frame", "raycast"]},
    )
    g.add_argument(
        "--crop-scales",
        type=float,
        nargs="+",
        default=None,
        metavar="F",
        help="crops strategy: crop sides as fractions of the frame's short side (default 0.3 0.5 0.8)",
    )


def from_args(args: argparse.Namespace) -> SemanticStage | None:
    if getattr(args, "encoder", None) is None:
        return None
    from semmap.commands.map import map_config

    shared = map_config(args)  # depth range and device: semmap map's, one path for every stage
    kw = config_kwargs(args, SemanticConfig, SEMANTIC_FLAGS)
    features = kw.pop("features") or ("crops" if args.crop_scales else SemanticConfig.features)
    if args.crop_scales and features != "crops":
        raise ValueError("--crop-scales applies to --features crops only")
    cfg = SemanticConfig(
        **kw,
        features=features,
        device=shared.device,
        fusion=shared.fusion_config(),
        extractor_options={"crop_fractions": tuple(args.crop_scales)} if args.crop_scales else {},
    )
    return SemanticStage(cfg)
