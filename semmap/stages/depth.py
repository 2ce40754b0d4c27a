"""Depth filling in ``semmap map``: frames without depth, holes in sensor depth, lower TSDF weight.

Runs first in the loop (``ORDER = 10``: before tracking, 30, and semantic fusion, 50), so
later stages and the TSDF see the filled depth. Per frame, in this order:

1. ``--drop-depth-every N`` (evaluation switch): frames N-1, 2N-1, ... (counted over the
   frames this stage sees, so frame 0 keeps its depth) lose their depth, which is kept in
   ``frame.dropped_depth_m`` to score the fill (``metadata()["dropped_depth"]``).
2. A frame **without depth** is filled as ``--fill-missing`` says:

   - ``map``: the map rendered at the frame's pose (:func:`mapping.depth.map_prior_depth`),
     the rest completed from it (the ``--depth-model`` prediction aligned to the rendered
     pixels if a model is given, else the colour-guided fill within ``max_fill_px`` of
     rendered depth): ``depth_source = "rendered"``. Needs a pose; where the map shows
     nothing in view (first frames, new ground) the model's depth is used if there is a
     model, otherwise the frame is skipped with the reason.
   - ``model``: the model's metric depth, ``depth_source = "mono:<model name>"``. A relative
     model is aligned to the map rendered at the pose (needs a pose and map surface in
     view; otherwise the frame is skipped, saying why); a metric model is used as is (no
     render).
   - ``none``: left alone (the pipeline skips frames without depth).

   The default is ``model`` when ``--depth-model`` is given, else ``map``.
3. With ``--complete-depth``, **holes in sensor depth** are filled (map prior, then the
   model's prediction aligned to the sensor depth, then guided fill; measured pixels kept
   bit-exactly): ``depth_source = "completed"``.

Weights (``frame.tsdf_weight``, which the pipeline passes to ``TSDFMap.integrate``):
sensor pixels 1; model-predicted depth ``--estimated-depth-weight`` (default 0.3); pixels
rendered from the map ``--map-pixel-weight`` and pixels filled by colour-guided
interpolation ``--interpolated-depth-weight`` (both default 0: not integrated, but kept in
``frame.depth`` for later stages). A wholly predicted frame gets a float, a filled frame an
(H, W) map. Why 0 for rendered and interpolated pixels: rendered depth only repeats the
map, and a render made before later frames reveal nearer surfaces carves them away;
interpolation bridges holes with membranes that many frames seeing the same hole add up
into surfaces. Measured on all 1000 redkitchen frames at 2 cm with every second frame's
depth removed (benchmarks/bench_rgb_only.py; mesh vs a 1 cm all-depth reference): full
depth 0.44 / 0.52 cm accuracy / completion; interpolated pixels at 0.3 (within 10 px of
rendered depth) 1.08 / 0.64 cm; leaving those frames out 0.43 / 0.61 cm. So without a
depth model, RGB-only frames add nothing to the TSDF by default: the map prior cannot
create geometry it does not have, and only a model's prediction is integrated. With the
map's ``min_observations`` (summed weight, default 1) a surface seen only by predicted
depth needs several frames (4 at 0.3) before it appears in the mesh.

Frames without a pose (to be tracked by a later stage) cannot use the map; they get the
model's depth when a model is configured and are left alone otherwise.
"""

from __future__ import annotations

import argparse
import warnings
from dataclasses import asdict, dataclass, field
from typing import NoReturn

import numpy as np

from mapping.depth import (
    CompletionConfig,
    DepthEstimator,
    MetricDepthError,
    complete_depth,
    load_depth_model,
    map_prior_depth,
)
from mapping.depth.completion import (
    SOURCE_GUIDED,
    SOURCE_KNOWN,
    SOURCE_MAP,
    SOURCE_PREDICTION,
    CompletionResult,
)
from mapping.tsdf import TSDFMap
from semmap.config_args import add_dataclass_arguments, config_kwargs
from semmap.pipeline import SkipFrame, Stage
from sensors.frame import DepthFillShares, Frame

ORDER = 10

FILL_MODES = ("map", "model", "none")

MIN_MAP_PIXELS = 100
"""Fewest rendered map pixels for the map to count as "in view" of a frame."""


@dataclass
class DepthStageConfig:
    """What the depth stage does (see the module docstring)."""

    model: str | None = None
    """Depth model spec: ``hf:<name-or-path>`` or ``depthclip:<encoder spec>``; None = no model."""
    canonical_focal_px: float | None = None
    """Wrap the model in a canonical camera with this focal (pixels), for models metric at one focal."""
    complete_depth: bool = False
    """Fill the holes of sensor depth (map prior, then model / guided fill)."""
    fill_missing: str | None = None
    """Frames without depth: "map", "model" or "none"; None = "model" with a model, else "map"."""
    estimated_weight: float = 0.3
    """TSDF weight of depth predicted by the model (whole frames or filled pixels); sensor depth has weight 1."""
    map_pixel_weight: float = 0.0
    """TSDF weight of pixels rendered from the map itself. 0: not integrated (they only repeat
    the map, and a render made before later frames reveal nearer surfaces would carve those
    surfaces away); they stay in ``frame.depth`` for later stages."""
    interpolated_weight: float = 0.0
    """TSDF weight of pixels filled by the colour-guided interpolation. 0: not integrated (an
    interpolated membrane across a hole is no observation, and the same hole seen by many
    frames would accumulate it into a surface); they stay in ``frame.depth``."""
    max_fill_px: float | None = 10.0
    """Without a model, the colour-guided fill only fills holes within this many pixels of
    known (sensor or rendered) depth; None = every hole. With a model, the aligned prediction
    fills every hole."""
    drop_depth_every: int = 0
    """Evaluation: remove the depth of every N-th frame (0 = never)."""
    device: str = "cpu"
    """Torch device of the model."""
    completion: CompletionConfig = field(default_factory=CompletionConfig)
    """Hole-filling settings (seam blending, guided fill)."""

    def __post_init__(self) -> None:
        if self.fill_missing is None:
            self.fill_missing = "model" if self.model else "map"
        if self.fill_missing not in FILL_MODES:
            raise ValueError(f"fill_missing must be one of {FILL_MODES}, got {self.fill_missing!r}")
        if self.fill_missing == "model" and not self.model:
            raise ValueError("--fill-missing model needs --depth-model (e.g. hf:/models/depth-anything-metric)")
        if not 0 < self.estimated_weight <= 1:
            raise ValueError(f"estimated depth weight must be in (0, 1], got {self.estimated_weight}")
        if not 0 <= self.map_pixel_weight <= 1:
            raise ValueError(f"map pixel weight must be in [0, 1], got {self.map_pixel_weight}")
        if not 0 <= self.interpolated_weight <= 1:
            raise ValueError(f"interpolated depth weight must be in [0, 1], got {self.interpolated_weight}")
        if self.max_fill_px is not None and not self.max_fill_px >= 0:
            raise ValueError(f"max_fill_px must be >= 0 or None, got {self.max_fill_px}")
        if self.drop_depth_every < 0 or self.drop_depth_every == 1:
            raise ValueError(
                f"drop_depth_every must be 0 (off) or >= 2 (1 would drop every frame's depth), got {self.drop_depth_every}"
            )


@dataclass
class DepthStageStats:
    """Counts for map.json."""

    frames: int = 0
    dropped: int = 0
    by_source: dict[str, int] = field(default_factory=dict)
    skipped: int = 0
    filled_pixel_fraction: list[float] = field(default_factory=list)
    dropped_abs_rel: list[float] = field(default_factory=list)
    dropped_d1: list[float] = field(default_factory=list)
    dropped_coverage: list[float] = field(default_factory=list)


class DepthStage(Stage):
    """Fills missing depth and holes before integration; marks estimated depth with a lower weight."""

    name = "depth"

    def __init__(self, config: DepthStageConfig, model: DepthEstimator | None = None) -> None:
        """Args: config; model: an already built estimator (else loaded from ``config.model``)."""
        self.config = config
        if model is None and config.model:
            model = load_depth_model(config.model, device=config.device, canonical_focal_px=config.canonical_focal_px)
        self.model = model
        if model is not None and model.output_kind != "metric" and config.fill_missing == "model":
            warnings.warn(
                f"{model.name} outputs {model.output_kind.replace('_', ' ')} depth, which has no metric scale: frames "
                f"without depth are aligned to the map rendered at their pose, and skipped where the map shows "
                f"too little; use a metric model (or --canonical-focal for a canonical-camera model) for RGB-only input",
                stacklevel=2,
            )
        self.stats = DepthStageStats()
        self._warned: set[str] = set()

    # ------------------------------------------------------------------ the loop
    def before_integrate(self, frame: Frame, tsdf: TSDFMap) -> Frame:
        cfg = self.config
        k = self.stats.frames
        self.stats.frames += 1
        if cfg.drop_depth_every and (k + 1) % cfg.drop_depth_every == 0 and frame.depth is not None:
            frame = frame.with_(depth=None, dropped_depth_m=frame.depth)
            self.stats.dropped += 1
        if frame.depth is None:
            if cfg.fill_missing == "none":
                self.stats.by_source["none (left without depth)"] = self.stats.by_source.get("none (left without depth)", 0) + 1
                return frame
            frame = self._fill_missing(frame, tsdf)
        elif cfg.complete_depth:
            frame = self._complete(frame, tsdf)
        self.stats.by_source[frame.depth_source] = self.stats.by_source.get(frame.depth_source, 0) + 1
        if frame.dropped_depth_m is not None and frame.depth is not None:
            self._score_dropped(frame)
        return frame

    def _render(self, frame: Frame, tsdf: TSDFMap) -> np.ndarray | None:
        """The map's depth at the frame's pose, or None without a pose or with too little map in view."""
        if frame.T_world_cam is None or tsdf.num_blocks == 0:
            return None
        prior = map_prior_depth(tsdf, frame.camera, frame.T_world_cam)
        return prior if int((prior > 0).sum()) >= MIN_MAP_PIXELS else None

    def _skip(self, reason: str) -> NoReturn:
        self.stats.skipped += 1
        if reason not in self._warned:
            self._warned.add(reason)
            warnings.warn(f"depth stage: {reason}", stacklevel=3)
        raise SkipFrame(reason)

    def _fill_missing(self, frame: Frame, tsdf: TSDFMap) -> Frame:
        cfg = self.config
        # the map render: the fill itself ("map"), or anchors for a relative model
        needs_render = cfg.fill_missing == "map" or (self.model is not None and self.model.output_kind != "metric")
        prior = self._render(frame, tsdf) if needs_render else None
        if cfg.fill_missing == "map" and prior is not None:
            res = self._completion(None, frame, prior)
            return self._filled(frame, res, "rendered")
        if self.model is None:
            why = "no pose" if frame.T_world_cam is None else "the map shows nothing in view"
            self._skip(f"frame has no depth and {why}; give --depth-model to estimate it")
        try:
            depth, _ = self.model.estimate_metric(frame.rgb, frame.camera, anchors=prior, align_metric=False)
        except MetricDepthError as e:
            self._skip(f"frame has no depth and {e}")
        if not (depth > 0).any():
            self._skip(f"{self.model.name} predicted no valid depth")
        self.stats.filled_pixel_fraction.append(float((depth > 0).mean()))
        return frame.with_(depth=depth, depth_source=f"mono:{self.model.name}", tsdf_weight=cfg.estimated_weight)

    def _complete(self, frame: Frame, tsdf: TSDFMap) -> Frame:
        known = np.isfinite(frame.depth) & (frame.depth > 0)
        if known.all():
            return frame
        res = self._completion(frame.depth, frame, self._render(frame, tsdf))
        if not ((res.depth_m > 0) & ~known).any():
            return frame
        return self._filled(frame, res, "completed")

    def _completion(self, depth: np.ndarray | None, frame: Frame, prior: np.ndarray | None) -> CompletionResult:
        """Complete ``depth`` (None = no sensor depth) from the map render, the model and the guided fill."""
        from scipy.ndimage import distance_transform_edt

        cfg = self.config
        prediction = self.model.predict(frame.rgb, frame.camera) if self.model is not None else None
        fill_mask = None
        if prediction is None and cfg.max_fill_px is not None:
            have = np.zeros(frame.camera.shape, bool)
            for d in (depth, prior):
                if d is not None:
                    have |= np.isfinite(d) & (d > 0)
            fill_mask = distance_transform_edt(~have) <= cfg.max_fill_px
        return complete_depth(
            depth, frame.rgb, prior_depth=prior, prediction=prediction, fill_mask=fill_mask, config=cfg.completion
        )

    def _filled(self, frame: Frame, res: CompletionResult, source: str) -> Frame:
        """The frame with completed depth and its per-pixel TSDF weights (see :class:`DepthStageConfig`)."""
        cfg = self.config
        weight = np.zeros(res.depth_m.shape, np.float32)
        weight[res.source == SOURCE_KNOWN] = 1.0
        weight[res.source == SOURCE_MAP] = cfg.map_pixel_weight
        weight[res.source == SOURCE_PREDICTION] = cfg.estimated_weight
        weight[res.source == SOURCE_GUIDED] = cfg.interpolated_weight
        self.stats.filled_pixel_fraction.append(float(((res.depth_m > 0) & (res.source != SOURCE_KNOWN)).mean()))
        return frame.with_(
            depth=res.depth_m, depth_source=source, tsdf_weight=weight, depth_fill=_fill_summary(res.source)
        )

    def _score_dropped(self, frame: Frame) -> None:
        """Filled depth vs the removed sensor depth: errors on the filled pixels, coverage of the rest."""
        from eval.depth_metrics import depth_metrics

        gt = frame.dropped_depth_m
        valid = np.isfinite(gt) & (gt > 0.1) & (gt < 10.0)
        filled = valid & (frame.depth > 0)
        if not filled.any():
            return
        m = depth_metrics(frame.depth, gt, mask=filled, min_depth=0.1, max_depth=10.0)
        self.stats.dropped_abs_rel.append(m.abs_rel)
        self.stats.dropped_d1.append(m.d1)
        self.stats.dropped_coverage.append(float(filled.sum() / valid.sum()))

    # ------------------------------------------------------------------ reporting
    def metadata(self) -> dict:
        s = self.stats
        cfg = asdict(self.config)
        out = {
            "config": cfg,
            "model": self.model.name if self.model is not None else None,
            "frames": s.frames,
            "frames_by_depth_source": dict(s.by_source),
            "frames_skipped": s.skipped,
            "mean_filled_pixel_fraction": float(np.mean(s.filled_pixel_fraction)) if s.filled_pixel_fraction else 0.0,
        }
        if s.dropped:
            out["dropped_depth"] = {
                "frames": s.dropped,
                "scored": len(s.dropped_abs_rel),
                "mean_abs_rel": float(np.mean(s.dropped_abs_rel)) if s.dropped_abs_rel else None,
                "mean_d1": float(np.mean(s.dropped_d1)) if s.dropped_d1 else None,
                "mean_coverage": float(np.mean(s.dropped_coverage)) if s.dropped_coverage else None,
                "protocol": "filled depth vs the removed sensor depth (eval.depth_metrics.depth_metrics) on the pixels "
                "with both, sensor depth in (0.1, 10) m; coverage = filled share of those sensor pixels",
            }
        return out


def _fill_summary(codes: np.ndarray) -> DepthFillShares:
    """Share of pixels filled from each source (map, prediction, guided); ``codes`` (H, W) ``SOURCE_*``."""
    return DepthFillShares(
        map=float((codes == SOURCE_MAP).mean()),
        prediction=float((codes == SOURCE_PREDICTION).mean()),
        guided=float((codes == SOURCE_GUIDED).mean()),
    )


# ---------------------------------------------------------------------- CLI
DEPTH_FLAGS = {
    "model": "--depth-model",
    "canonical_focal_px": "--canonical-focal",
    "complete_depth": "--complete-depth",
    "fill_missing": "--fill-missing",
    "estimated_weight": "--estimated-depth-weight",
    "map_pixel_weight": "--map-pixel-weight",
    "interpolated_weight": "--interpolated-depth-weight",
    "drop_depth_every": "--drop-depth-every",
}
"""``DepthStageConfig`` field -> its ``semmap map`` option."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("depth filling (frames without depth, holes, monocular models)")
    add_dataclass_arguments(
        g,
        DepthStageConfig,
        DEPTH_FLAGS,
        model={
            "metavar": "SPEC",
            "help": "monocular depth model: hf:<name-or-path> (transformers, e.g. Depth Anything metric) or "
            "depthclip:<encoder spec> (e.g. depthclip:clip:/models/clip-vit-b16)",
        },
        canonical_focal_px={"metavar": "PX"},
        fill_missing={"choices": FILL_MODES},
        estimated_weight={"metavar": "W"},
        map_pixel_weight={"metavar": "W"},
        interpolated_weight={"metavar": "W"},
        drop_depth_every={"metavar": "N"},
    )


def from_args(args: argparse.Namespace) -> DepthStage | None:
    """The configured stage, or None when no depth option was given."""
    wanted = (
        args.depth_model
        or args.complete_depth
        or args.fill_missing is not None
        or args.drop_depth_every
        or args.canonical_focal is not None
    )
    if not wanted:
        return None
    if args.canonical_focal is not None and not args.depth_model:
        raise ValueError("--canonical-focal needs --depth-model")
    from semmap.commands.map import map_config

    config = DepthStageConfig(**config_kwargs(args, DepthStageConfig, DEPTH_FLAGS), device=map_config(args).device)
    return DepthStage(config)
