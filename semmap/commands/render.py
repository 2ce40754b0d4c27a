"""`semmap render`: render an RGB-D sequence from a mesh along a trajectory."""

from __future__ import annotations

import argparse
from pathlib import Path

ORDER = 40


def register(subparsers: argparse._SubParsersAction) -> None:
    q = subparsers.add_parser(
        "render",
        help="render an RGB-D sequence from a mesh along a trajectory",
        description="Ray-cast a triangle mesh (vertex colours) along a trajectory and write a folder "
        "sequence (rgb/, depth/, semmap.json) that `semmap map` reads. MESH 'room' renders the generated "
        "room of --seed along an orbit and also writes its labelled ground truth (gt_mesh_labels.ply with "
        "per-vertex instance and class ids, gt_classes.json, gt_objects.json query annotations) for "
        "`semmap eval semantic` and `semmap eval queries`.",
        epilog="example: semmap render room --seed 3 --frames 60 --width 320 --height 240 --out runs/room3",
    )
    q.add_argument("mesh", type=Path, help="triangle mesh with vertex colours (.ply/.obj), or 'room'")
    q.add_argument(
        "--traj", type=Path, default=None, help="camera-to-world trajectory (TUM, 4x4-per-line or .log); room: orbit"
    )
    q.add_argument("--frames", type=int, default=120, help="room: orbit length in frames (default 120)")
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
    q.add_argument("--seed", type=int, default=0, help="noise seed, and the room's layout seed")
    q.set_defaults(func=cmd_render)


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
    mesh, room = args.mesh, str(args.mesh) == "room"
    if room:
        from sensors.scenes import make_room, orbit_trajectory

        mesh = make_room(seed=args.seed)
        traj = read_trajectory(args.traj) if args.traj is not None else orbit_trajectory(mesh, args.frames)
    elif args.traj is None:
        raise ValueError("--traj is required for a mesh file (only 'room' has a default orbit)")
    else:
        traj = read_trajectory(args.traj)
    source = SyntheticSource(mesh, traj, camera=camera, noise=args.noise, noise_seed=args.seed)
    from tqdm import tqdm

    frames = tqdm(
        source.frames(args.stride, args.max_frames),
        total=source.count(args.stride, args.max_frames),
        desc="rendering",
        unit="frame",
    )
    out = write_folder_sequence(frames, args.out)
    gt_paths = {}
    if room:
        from sensors.synthetic import write_labelled_ground_truth

        gt_paths = write_labelled_ground_truth(mesh, out)
    print(f"wrote rendered sequence to {out}/ (read it with: semmap map {out} --out MAPDIR)")
    for what, path in gt_paths.items():
        print(f"  ground truth {what}: {path}")
    return 0
