"""`semmap demo`: the offline end-to-end demo."""

from __future__ import annotations

import argparse
from pathlib import Path

ORDER = 0


def register(subparsers: argparse._SubParsersAction) -> None:
    d = subparsers.add_parser(
        "demo",
        help="offline end-to-end demo on a generated room",
        description="Build a synthetic room with furniture, render an RGB-D sequence with sensor noise, "
        "map it, evaluate against the generated ground truth and print a summary.",
    )
    d.add_argument("--out", type=Path, default=Path("semmap_demo"), help="output folder (default ./semmap_demo)")
    d.add_argument("--frames", type=int, default=60, help="frames to render (default 60)")
    d.add_argument("--voxel-size", type=float, default=0.02, help="TSDF voxel edge in metres (default 0.02)")
    d.add_argument("--noise", default="none", help="depth noise preset: none, kinect, heavy (default none)")
    d.add_argument("--device", default="cpu")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument(
        "--features",
        choices=["oracle", "segments", "none"],
        default="oracle",
        help="semantic features with the lite encoder: oracle (true class names: the pipeline's ceiling; "
        "default), segments (lite itself, slower) or none (geometry only)",
    )
    d.set_defaults(func=cmd_demo)


def cmd_demo(args: argparse.Namespace) -> int:
    from semmap.demo import DemoConfig, run_demo

    cfg = DemoConfig(
        out_dir=args.out,
        n_frames=args.frames,
        voxel_size_m=args.voxel_size,
        noise=args.noise,
        device=args.device,
        seed=args.seed,
        features=None if args.features == "none" else args.features,
    )
    run_demo(cfg)
    return 0
