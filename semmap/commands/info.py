"""`semmap info`: what a map directory holds, after checking every file of it."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

ORDER = 15


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "info",
        help="what a map holds (checks every file)",
        description="Check every file of a map directory (the same checks the loaders make) and print what it "
        "holds: source, frames, voxel sizes, bounds, mesh size, encoder and semantic voxels, tracking status, "
        "scene-graph objects, format versions. A damaged file is reported by name; exit status 2.",
        epilog="example: semmap info runs/kitchen --json",
    )
    p.add_argument("map", type=Path, help="map directory written by semmap map (and semmap graph)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=cmd_info)


def cmd_info(args: argparse.Namespace) -> int:
    from scenegraph.mapdir import inspect_map

    summary = inspect_map(args.map)
    print(json.dumps(summary.to_dict(), indent=1) if args.json else "\n".join(summary.lines()))
    return 0
