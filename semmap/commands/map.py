"""`semmap map`: build a map from a frame source."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from semmap.config_args import accept_config_file, add_dataclass_arguments, config_kwargs, effective_config
from semmap.stages import add_stage_arguments, build_stages

if TYPE_CHECKING:
    from semmap.pipeline import MapConfig


def _sources_help() -> str:
    from sensors import SOURCES

    return "frame sources (prefix 'name:' or auto-detected from the folder layout):\n" + SOURCES.describe()


ORDER = 10
MAP_FLAGS = {
    "voxel_size_m": "--voxel-size",
    "stride": "--stride",
    "max_frames": "--max-frames",
    "depth_max_m": "--depth-max",
    "depth_min_m": "--depth-min",
    "trunc_voxels": "--trunc-voxels",
    "min_observations": "--min-observations",
    "device": "--device",
}
"""``semmap.pipeline.MapConfig`` field -> its ``semmap map`` option (default and help come from the field)."""


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
    accept_config_file(p, config_keys)
    p.add_argument(
        "--dump-config", action="store_true", help="print the effective options as YAML (for --config) and exit without mapping"
    )
    p.set_defaults(func=cmd_map)


def config_keys() -> dict[str, str]:
    """``--config`` file key -> ``semmap map`` dest: the keys of a ``semmap batch`` manifest
    (``semmap.batch.option_groups``: MapConfig fields by name, stage options by their dest)."""
    from semmap.batch import option_groups

    return option_groups().map_keys


def add_map_arguments(p: argparse.ArgumentParser) -> None:
    """The mapping options of ``semmap map`` (all but SOURCE and --out), stages included;
    ``semmap serve --live`` takes the same."""
    from semmap.pipeline import MapConfig

    add_dataclass_arguments(p, MapConfig, MAP_FLAGS)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_stage_arguments(p)


def map_config(args: argparse.Namespace) -> MapConfig:
    """The ``semmap.pipeline.MapConfig`` of parsed ``semmap map`` options (``semmap batch`` uses it too)."""
    from semmap.pipeline import MapConfig

    return MapConfig(**config_kwargs(args, MapConfig, MAP_FLAGS), progress=not getattr(args, "no_progress", False))


def cmd_map(args: argparse.Namespace) -> int:
    from semmap.pipeline import build_map, save_map
    from sensors import open_source

    if args.dump_config:
        import yaml

        print(yaml.safe_dump(effective_config(args, config_keys()), sort_keys=False), end="")
        return 0
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
