"""`semmap map`: build a map from a frame source."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from semmap.stages import add_stage_arguments, build_stages

if TYPE_CHECKING:
    from semmap.pipeline import MapConfig


def _sources_help() -> str:
    from sensors import SOURCES

    return "frame sources (prefix 'name:' or auto-detected from the folder layout):\n" + SOURCES.describe()


ORDER = 10


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "map",
        help="build a map from a frame source",
        description="Integrate RGB-D frames into a metric TSDF map and write the map directory "
        "(mesh.ply, tsdf.npz/json, trajectory.tum, map.json).",
        epilog=_sources_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("source", help="dataset folder, 'name:/path' (e.g. 7scenes:/data/kitchen), or 'realsense'")
    p.add_argument("--out", required=True, type=Path, help="map directory to write (replaced atomically)")
    add_map_arguments(p)
    p.set_defaults(func=cmd_map)


def add_map_arguments(p: argparse.ArgumentParser) -> None:
    """The mapping options of ``semmap map`` (all but SOURCE and --out), stages included;
    ``semmap serve --live`` takes the same."""
    p.add_argument("--voxel-size", type=float, default=0.02, help="TSDF voxel edge in metres (default 0.02)")
    p.add_argument("--stride", type=int, default=1, help="use every N-th frame (default 1)")
    p.add_argument("--max-frames", type=int, default=None, help="stop after N frames (after striding)")
    p.add_argument("--depth-max", type=float, default=4.0, help="ignore depth beyond this many metres (default 4)")
    p.add_argument("--depth-min", type=float, default=0.1, help="ignore depth below this many metres (default 0.1)")
    p.add_argument("--trunc-voxels", type=float, default=4.0, help="TSDF truncation in voxels (default 4)")
    p.add_argument("--min-observations", type=int, default=1, help="frames a voxel needs to appear in the mesh")
    p.add_argument("--device", default="cpu", help="'cpu' or 'cuda[:N]' (default cpu)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_stage_arguments(p)


def map_config(args: argparse.Namespace) -> MapConfig:
    """The ``semmap.pipeline.MapConfig`` of parsed ``semmap map`` options (``semmap batch`` uses it too)."""
    from semmap.pipeline import MapConfig

    return MapConfig(
        voxel_size_m=args.voxel_size,
        depth_max_m=args.depth_max,
        depth_min_m=args.depth_min,
        trunc_voxels=args.trunc_voxels,
        stride=args.stride,
        max_frames=args.max_frames,
        device=args.device,
        min_observations=args.min_observations,
        progress=not args.no_progress,
    )


def cmd_map(args: argparse.Namespace) -> int:
    from semmap.pipeline import build_map, save_map
    from sensors import open_source

    cfg = map_config(args)
    stages = build_stages(args)
    with open_source(args.source) as source:
        result = build_map(source, cfg, stages)
    paths = save_map(result, args.out, args.source, cfg, stages)
    t = result.timings_s
    n = result.frames_integrated
    print(
        f"integrated {n} of {result.frames_seen} frames in {t['total']:.1f} s "
        f"({1000 * t['total'] / max(n, 1):.1f} ms/frame: "
        + ", ".join(f"{k} {1000 * v / max(n, 1):.1f}" for k, v in t.items() if k != "total")
        + f"); {result.tsdf.num_blocks} blocks"
    )
    if result.frames_skipped:
        print(f"skipped {len(result.frames_skipped)} frames, e.g. {result.frames_skipped[0]}")
    print(f"wrote map to {args.out}/")
    for name, path in paths.items():
        print(f"  {path}")
    return 0
