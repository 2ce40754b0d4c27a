"""`semmap eval recon|traj`: measure reconstructions and trajectories."""

from __future__ import annotations

import argparse
from pathlib import Path

ORDER = 30


def register(subparsers: argparse._SubParsersAction) -> None:
    pe = subparsers.add_parser(
        "eval", help="measure reconstructions and trajectories", description="Evaluation commands."
    )
    esub = pe.add_subparsers(dest="what", metavar="WHAT")
    esub.required = True

    r = esub.add_parser(
        "recon",
        help="reconstruction accuracy / completion / F-score against a ground-truth mesh",
        description="Compare a reconstruction (a map directory or a mesh/cloud file) with a ground-truth "
        "mesh. Writes recon_metrics.json and recon_errors.png.",
    )
    r.add_argument("recon", type=Path, help="map directory (uses its mesh.ply) or a .ply/.obj mesh or cloud")
    r.add_argument("gt", type=Path, help="ground-truth mesh (.ply/.obj)")
    r.add_argument(
        "--mode",
        choices=["exact", "samples"],
        default="exact",
        help="exact: point-to-mesh distances; samples: NICE-SLAM style sampled point sets",
    )
    r.add_argument("--samples", type=int, default=200_000, help="points sampled per surface (default 200000)")
    r.add_argument(
        "--thresholds",
        type=float,
        nargs="+",
        default=[0.01, 0.02, 0.05],
        help="precision/recall/F-score thresholds in metres",
    )
    r.add_argument(
        "--cull",
        action="store_true",
        help="restrict ground truth to surface seen by the map's cameras (needs a map directory)",
    )
    r.add_argument("--cull-depth-max", type=float, default=None, help="with --cull: sensor range in metres")
    r.add_argument("--out", type=Path, default=None, help="report directory (default: beside the reconstruction)")
    r.set_defaults(func=cmd_eval_recon)

    t = esub.add_parser(
        "traj",
        help="ATE / RPE of an estimated trajectory against ground truth",
        description="Absolute trajectory error after Umeyama alignment and relative pose error. "
        "Files: TUM (t x y z qx qy qz qw), 4x4-per-line, or Open3D .log. Writes traj_metrics.json and traj.png.",
    )
    t.add_argument("estimate", type=Path)
    t.add_argument("reference", type=Path)
    t.add_argument("--align", choices=["se3", "sim3", "none"], default="se3", help="alignment (default se3)")
    t.add_argument("--delta", type=int, default=1, help="RPE frame delta (default 1)")
    t.add_argument("--max-time-diff", type=float, default=0.02, help="timestamp association tolerance, s")
    t.add_argument("--out", type=Path, default=None, help="report directory (default: beside the estimate)")
    t.set_defaults(func=cmd_eval_traj)


def _recon_inputs(recon: Path):
    """Mesh path and (camera, poses) for culling from a map directory or a mesh file."""
    import json

    import numpy as np

    from sensors import Camera
    from sensors.trajectory_io import read_tum

    if recon.is_dir():
        meta_path = recon / "map.json"
        if not meta_path.is_file():
            raise FileNotFoundError(f"{recon}: not a map directory (no map.json)")
        meta = json.loads(meta_path.read_text())
        camera = Camera.from_dict(meta["camera"]) if meta.get("camera") else None
        poses = read_tum(recon / "trajectory.tum").T_world_cam
        return recon / "mesh.ply", camera, np.asarray(poses)
    return recon, None, None


def cmd_eval_recon(args: argparse.Namespace) -> int:
    from eval.recon import Culling, evaluate_reconstruction
    from eval.report import write_recon_report

    mesh_path, camera, poses = _recon_inputs(args.recon)
    if args.cull and camera is None:
        raise SystemExit("semmap eval recon: --cull needs a map directory (with map.json and trajectory.tum)")
    culling = None
    if args.cull:
        step = max(1, len(poses) // 100)  # at most ~100 culling renders
        culling = Culling(camera, poses[::step], max_depth_m=args.cull_depth_max)
    metrics = evaluate_reconstruction(
        mesh_path,
        args.gt,
        mode=args.mode,
        num_samples=args.samples,
        thresholds_m=tuple(args.thresholds),
        culling=culling,
    )
    out = args.out or (args.recon if args.recon.is_dir() else args.recon.parent)
    paths = write_recon_report(metrics, out)
    print(metrics.summary())
    print(f"wrote report to {out}/")
    for p in paths:
        print(f"  {p}")
    return 0


def cmd_eval_traj(args: argparse.Namespace) -> int:
    from eval.report import write_traj_report
    from eval.traj import evaluate_trajectory

    metrics = evaluate_trajectory(
        args.estimate, args.reference, align=args.align, delta=args.delta, max_time_diff=args.max_time_diff
    )
    out = args.out or args.estimate.parent
    paths = write_traj_report(metrics, out)
    print(metrics.summary())
    print(f"wrote report to {out}/")
    for p in paths:
        print(f"  {p}")
    return 0
