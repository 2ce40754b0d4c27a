"""Views stage of ``semmap map``: keep downscaled keyframe views in the map directory.

The scene graph (``semmap graph``) embeds each object from crops of its best views, so
the map has to carry some frames. A posed frame with depth becomes a view when the
camera moved at least ``--views-translation`` metres or turned ``--views-rotation-deg``
degrees since the last view (``mapping.keyframes.KeyframeSelector``). Views are stored
downscaled to ``--views-width`` pixels (JPEG colour, 16-bit PNG depth in millimetres),
encoded in memory as they arrive (about 30 kB each at 320x240). When more than
``--views-max`` accumulate, every other one is dropped and the thresholds doubled, so
long sequences keep an even coverage in bounded memory.

On by default when ``--encoder`` is given; ``--save-views`` turns it on without one and
``--no-views`` turns it off. After a pose correction (loop closure) each view takes its
frame's corrected pose (``on_poses_corrected``). Files: see ``scenegraph.views``.
"""

from __future__ import annotations

import argparse
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from mapping.keyframes import KEYFRAME_ROTATION_DEG, KEYFRAME_TRANSLATION_M, KeyframeSelector
from mapping.tsdf import TSDFMap
from scenegraph.views import EncodedView, downscale_frame, encode_view, write_views
from semmap.config_args import add_dataclass_arguments, config_kwargs
from semmap.pipeline import MapResult, Stage
from sensors.frame import Frame

ORDER = 70


@dataclass
class ViewsConfig:
    """Settings of the views stage."""

    translation_m: float = KEYFRAME_TRANSLATION_M
    """Camera motion since the last view that makes a new view, metres."""
    rotation_deg: float = KEYFRAME_ROTATION_DEG
    """Camera rotation since the last view that makes a new view, degrees."""
    width: int = 320
    """Stored image width, pixels (aspect kept; smaller frames are stored as they are)."""
    max_views: int = 400
    """Upper bound on stored views (thinned by half when exceeded)."""
    jpeg_quality: int = 90
    """JPEG quality of the colour images."""

    def __post_init__(self) -> None:
        if self.width < 16:
            raise ValueError(f"views width must be >= 16 pixels, got {self.width}")
        if self.max_views < 2:
            raise ValueError(f"max_views must be >= 2, got {self.max_views}")


class ViewsStage(Stage):
    """Collect keyframe views during mapping and write them into ``views/``."""

    name = "views"

    def __init__(self, config: ViewsConfig | None = None) -> None:
        self.config = config or ViewsConfig()
        self.selector = KeyframeSelector(self.config.translation_m, self.config.rotation_deg)
        self.views: list[EncodedView] = []
        self.thinned = 0

    def after_integrate(self, frame: Frame, tsdf: TSDFMap) -> None:
        if frame.depth is None or frame.T_world_cam is None:
            return
        if not self.selector.update(frame.T_world_cam, frame.index):
            return
        rgb, depth, cam = downscale_frame(frame.rgb, frame.depth, frame.camera, self.config.width)
        rgb_b, depth_b = encode_view(rgb, depth, self.config.jpeg_quality)
        self.views.append(
            EncodedView(
                rgb_jpeg=rgb_b,
                depth_png=depth_b,
                camera=cam,
                T_world_cam=np.array(frame.T_world_cam, dtype=np.float64),
                frame_index=int(frame.index),
                timestamp=float(frame.timestamp),
            )
        )
        if len(self.views) > self.config.max_views:
            self.views = self.views[::2]
            self.selector.translation_m *= 2.0
            self.selector.rotation_deg *= 2.0
            self.thinned += 1

    def on_poses_corrected(self, corrected: dict[int, np.ndarray], result: MapResult) -> None:
        """Each view takes the corrected pose of the frame it came from."""
        for v in self.views:
            T = corrected.get(v.frame_index)
            if T is not None:
                v.T_world_cam = np.array(T, dtype=np.float64)

    def save_into(self, directory: Path) -> list[str]:
        if not self.views:
            return []
        return write_views(Path(directory), self.views)

    def metadata(self) -> dict:
        return {
            "count": len(self.views),
            "bytes": int(sum(v.nbytes for v in self.views)),
            "thinned": self.thinned,
            "config": asdict(self.config),
        }


VIEWS_FLAGS = {
    "width": "--views-width",
    "translation_m": "--views-translation",
    "rotation_deg": "--views-rotation-deg",
    "max_views": "--views-max",
}
"""``ViewsConfig`` field -> its ``semmap map`` option."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("stored views (for `semmap graph`; on with --encoder or --save-views)")
    g.add_argument("--save-views", action="store_true", help="store keyframe views even without --encoder")
    g.add_argument("--no-views", action="store_true", help="do not store views (even with --encoder)")
    add_dataclass_arguments(g, ViewsConfig, VIEWS_FLAGS)


def from_args(args: argparse.Namespace) -> ViewsStage | None:
    if getattr(args, "no_views", False):
        return None
    if not (getattr(args, "save_views", False) or getattr(args, "encoder", None)):
        return None
    return ViewsStage(ViewsConfig(**config_kwargs(args, ViewsConfig, VIEWS_FLAGS)))
