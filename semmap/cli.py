"""The ``semmap`` command line: thin commands over library functions.

Each command parses its arguments, loads inputs, calls a library function and
saves/prints the result, then says where it wrote things.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

EPILOG = """examples:
  semmap demo                                    # synthetic room: render, map, evaluate
  semmap map ../shared/data/7scenes-redkitchen --out runs/kitchen --voxel-size 0.02
  semmap eval recon runs/kitchen gt_mesh.ply --cull
  semmap eval traj estimated.tum groundtruth.tum --align se3
  semmap render mesh.ply --traj traj.txt --out runs/rendered
"""


def _sources_help() -> str:
    from sensors import SOURCES

    return "frame sources (prefix 'name:' or auto-detected from the folder layout):\n" + SOURCES.describe()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="semmap",
        description="Open-vocabulary 3D semantic mapping: RGB-D frames in, metric TSDF map, "
        "scene graph and 3D text queries out.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    # ---------------------------------------------------------------- map
    p = sub.add_parser(
        "map",
        help="build a map from a frame source",
        description="Integrate RGB-D frames into a metric TSDF map and write the map directory "
        "(mesh.ply, tsdf.npz/json, trajectory.tum, map.json).",
        epilog=_sources_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("source", help="dataset folder, 'name:/path' (e.g. 7scenes:/data/kitchen), or 'realsense'")
    p.add_argument("--out", required=True, type=Path, help="map directory to write (replaced atomically)")
    p.add_argument("--voxel-size", type=float, default=0.02, help="TSDF voxel edge in metres (default 0.02)")
    p.add_argument("--stride", type=int, default=1, help="use every N-th frame (default 1)")
    p.add_argument("--max-frames", type=int, default=None, help="stop after N frames (after striding)")
    p.add_argument("--depth-max", type=float, default=4.0, help="ignore depth beyond this many metres (default 4)")
    p.add_argument("--depth-min", type=float, default=0.1, help="ignore depth below this many metres (default 0.1)")
    p.add_argument("--trunc-voxels", type=float, default=4.0, help="TSDF truncation in voxels (default 4)")
    p.add_argument("--min-observations", type=int, default=1, help="frames a voxel needs to appear in the mesh")
    p.add_argument("--device", default="cpu", help="'cpu' or 'cuda[:N]' (default cpu)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_map)

    # ---------------------------------------------------------------- eval
    pe = sub.add_parser("eval", help="measure reconstructions and trajectories", description="Evaluation commands.")
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
    r.add_argument("--mode", choices=["exact", "samples"], default="exact",
                   help="exact: point-to-mesh distances; samples: NICE-SLAM style sampled point sets")
    r.add_argument("--samples", type=int, default=200_000, help="points sampled per surface (default 200000)")
    r.add_argument("--thresholds", type=float, nargs="+", default=[0.01, 0.02, 0.05],
                   help="precision/recall/F-score thresholds in metres")
    r.add_argument("--cull", action="store_true",
                   help="restrict ground truth to surface seen by the map's cameras (needs a map directory)")
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

    # ---------------------------------------------------------------- render
    q = sub.add_parser(
        "render",
        help="render an RGB-D sequence from a mesh along a trajectory",
        description="Ray-cast a triangle mesh (vertex colours) along a trajectory and write a folder "
        "sequence (rgb/, depth/, semmap.json) that `semmap map` reads.",
    )
    q.add_argument("mesh", type=Path, help="triangle mesh with vertex colours (.ply/.obj)")
    q.add_argument("--traj", required=True, type=Path, help="camera-to-world trajectory (TUM, 4x4-per-line or .log)")
    q.add_argument("--out", required=True, type=Path, help="output folder")
    q.add_argument("--width", type=int, default=640)
    q.add_argument("--height", type=int, default=480)
    q.add_argument("--fx", type=float, default=None, help="focal length in pixels (default: 0.8 * width)")
    q.add_argument("--fy", type=float, default=None)
    q.add_argument("--cx", type=float, default=None, help="principal point (default: image centre)")
    q.add_argument("--cy", type=float, default=None)
    q.add_argument("--stride", type=int, default=1, help="render every N-th pose")
    q.add_argument("--max-frames", type=int, default=None)
    q.add_argument("--noise", default="none", help="depth noise preset: none, kinect, heavy")
    q.add_argument("--seed", type=int, default=0)
    q.set_defaults(func=cmd_render)

    # ---------------------------------------------------------------- demo
    d = sub.add_parser(
        "demo",
        help="offline end-to-end demo on a generated room",
        description="Build a synthetic room with furniture, render an RGB-D sequence with sensor noise, "
        "map it, evaluate against the generated ground truth and print a summary.",
    )
    d.add_argument("--out", type=Path, default=Path("semmap_demo"), help="output folder (default ./semmap_demo)")
    d.add_argument("--frames", type=int, default=60, help="frames to render (default 60)")
    d.add_argument("--voxel-size", type=float, default=0.02, help="TSDF voxel edge in metres (default 0.02)")
    d.add_argument("--noise", default="kinect", help="depth noise preset: none, kinect, heavy (default kinect)")
    d.add_argument("--device", default="cpu")
    d.add_argument("--seed", type=int, default=0)
    d.set_defaults(func=cmd_demo)
    return parser


# -------------------------------------------------------------------- commands
def cmd_map(args: argparse.Namespace) -> int:
    from semmap.pipeline import MapConfig, build_map, save_map
    from sensors import open_source

    cfg = MapConfig(
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
    with open_source(args.source) as source:
        result = build_map(source, cfg)
    paths = save_map(result, args.out, args.source, cfg)
    t = result.timings_s
    n = result.frames_integrated
    print(
        f"integrated {n} of {result.frames_seen} frames in {t['total']:.1f} s "
        f"({1000 * t['total'] / max(n, 1):.1f} ms/frame: io {1000 * t['io'] / max(n, 1):.1f}, "
        f"integrate {1000 * t['integrate'] / max(n, 1):.1f}); {result.tsdf.num_blocks} blocks"
    )
    if result.frames_skipped:
        print(f"skipped {len(result.frames_skipped)} frames, e.g. {result.frames_skipped[0]}")
    print(f"wrote map to {args.out}/")
    for name, path in paths.items():
        print(f"  {path}")
    return 0


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
        mesh_path, args.gt, mode=args.mode, num_samples=args.samples, thresholds_m=tuple(args.thresholds),
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


def cmd_render(args: argparse.Namespace) -> int:
    from sensors import Camera
    from sensors.folder import write_folder_sequence
    from sensors.synthetic import SyntheticSource
    from sensors.trajectory_io import read_trajectory

    fx = args.fx or 0.8 * args.width
    camera = Camera(
        fx,
        args.fy or fx,
        args.cx if args.cx is not None else (args.width - 1) / 2,
        args.cy if args.cy is not None else (args.height - 1) / 2,
        args.width,
        args.height,
    )
    traj = read_trajectory(args.traj)
    source = SyntheticSource(args.mesh, traj, camera=camera, noise=args.noise, noise_seed=args.seed)
    from tqdm import tqdm

    frames = tqdm(source.frames(args.stride, args.max_frames), total=source.count(args.stride, args.max_frames),
                  desc="rendering", unit="frame")
    out = write_folder_sequence(frames, args.out)
    print(f"wrote rendered sequence to {out}/ (read it with: semmap map {out} --out MAPDIR)")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from semmap.demo import DemoConfig, run_demo

    cfg = DemoConfig(
        out_dir=args.out, n_frames=args.frames, voxel_size_m=args.voxel_size, noise=args.noise,
        device=args.device, seed=args.seed,
    )
    run_demo(cfg)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (FileNotFoundError, ValueError, KeyError, RuntimeError) as e:
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"semmap {args.command}: error: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
