"""`semmap eval recon|traj|depth|queries|semantic`: measure reconstructions, trajectories, depth maps and semantics."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from eval.recon import ReconMetrics

ORDER = 30


def register(subparsers: argparse._SubParsersAction) -> None:
    pe = subparsers.add_parser(
        "eval", help="measure reconstructions, trajectories and depth", description="Evaluation commands."
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

    d = esub.add_parser(
        "depth",
        help="depth accuracy (AbsRel, RMSE, delta1, ...) of predictions, a model, or hole filling",
        description="Standard monocular-depth metrics against a source's own depth. One of: --pred DIR "
        "(predictions written by `semmap depth`), --model SPEC (run a model), --fill guided|map (cut random "
        "blob holes into the sensor depth, fill them, score the removed pixels; with --model the prediction "
        "helps the fill). Depth range per dataset (NYU/indoor 10 m, KITTI 80 m). Writes depth_metrics.json "
        "with --out.",
    )
    d.add_argument("source", help="frames with ground-truth depth: a monodepth folder (NYU/KITTI samples) or any source")
    how = d.add_mutually_exclusive_group()
    how.add_argument("--pred", type=Path, default=None, metavar="DIR", help="folder of <stem>.depth.npy|png predictions")
    how.add_argument("--fill", choices=["guided", "map"], default=None, help="fill synthetic holes in the sensor depth")
    d.add_argument("--model", default=None, metavar="SPEC", help="depth model (hf:<path>, depthclip:<encoder>)")
    d.add_argument("--canonical-focal", type=float, default=None, metavar="PX", help="model is metric at this focal")
    d.add_argument(
        "--align",
        choices=["none", "median", "lsq", "lsq_inverse"],
        default="none",
        help="align predictions before scoring (relative models: median/lsq, inverse depth: lsq_inverse)",
    )
    d.add_argument("--dataset", default=None, help="depth-cap key (nyu, kitti, 7scenes, ...; default from the source)")
    d.add_argument("--hole-fraction", type=float, default=0.3, help="share of valid pixels removed for --fill")
    d.add_argument("--seed", type=int, default=0, help="hole seed (frame k uses seed + k)")
    d.add_argument("--stride", type=int, default=1, help="evaluate every N-th frame")
    d.add_argument("--max-frames", type=int, default=None, help="evaluate at most N frames")
    d.add_argument("--map-window", type=int, default=10, help="--fill map: neighbour frames either side")
    d.add_argument("--map-voxel", type=float, default=0.01, help="--fill map: TSDF voxel size, metres")
    d.add_argument("--device", default="cpu", help="torch device of the model")
    d.add_argument("--out", type=Path, default=None, help="folder for depth_metrics.json")
    d.set_defaults(func=cmd_eval_depth)

    q = esub.add_parser(
        "queries",
        help="top-1 / top-k hit rates of annotated text queries on a semantic map",
        description="Answer each annotated query as `semmap query` does (relational ones by the scene graph "
        "when the map has one) and score it: a result hits an object the query names when its centroid is "
        "within --tolerance of the object's centroid or inside its box grown by --margin. Prints per-query "
        "rows and top-1 / top-k, overall and for plain and relational queries; writes query_metrics.json.",
        epilog="example: semmap eval queries runs/kitchen tests/data/redkitchen_objects.json --top 3",
    )
    q.add_argument("map", type=Path, help="map directory written by `semmap map SOURCE --encoder ...`")
    q.add_argument("annotations", type=Path, help="annotation JSON (objects with centroid and box, queries)")
    q.add_argument("--top", type=int, default=3, help="results per query for the top-k rate (default 3)")
    q.add_argument("--tolerance", type=float, default=0.25, help="centroid distance that hits, metres (default 0.25)")
    q.add_argument("--margin", type=float, default=0.05, help="growth of each annotated box, metres (default 0.05)")
    q.add_argument("--json", action="store_true", help="print the evaluation as JSON on stdout")
    q.add_argument("--out", type=Path, default=None, help="folder for query_metrics.json (default: the map)")
    q.add_argument("--no-files", action="store_true", help="print only; write no files")
    q.add_argument("--device", default="cpu", help="torch device of the query encoder (default cpu)")
    q.set_defaults(func=cmd_eval_queries)

    s = esub.add_parser(
        "semantic",
        help="3D semantic segmentation (mIoU, f-mIoU, mAcc) against a labelled GT mesh or cloud",
        description="Label every GT point with the class whose text embedding best matches the map's nearest "
        "voxel feature (or, --object-level, the scene-graph object it falls in) and score against the GT labels "
        "over the classes present in the GT. GT: a PLY with an integer label property (ScanNet *_labels.ply: "
        "vertex 'label'; Replica mesh_semantic.ply: face 'object_id' with info_semantic.json; `semmap render "
        "room`: gt_mesh_labels.ply + gt_classes.json). Writes semantic_metrics.json (with the protocol), "
        "semantic_iou.png and semantic_errors.png.",
        epilog="example: semmap eval semantic runs/room3 runs/room3-frames/gt_mesh_labels.ply "
        "--classes runs/room3-frames/gt_classes.json",
    )
    s.add_argument("map", type=Path, help="map directory written by `semmap map SOURCE --encoder ...`")
    s.add_argument("gt", type=Path, help="labelled ground truth PLY (map world frame, metres)")
    s.add_argument("--classes", type=Path, required=True, help="class list: JSON, Replica info_semantic.json or ScanNet TSV")
    s.add_argument("--label-attr", default="label", help="PLY property with the labels (default label; Replica object_id)")
    s.add_argument(
        "--prompt-template",
        action="append",
        default=None,
        help='prompt of the class names (default "a photo of a {}."); repeat to average several (ensembling)',
    )
    s.add_argument("--max-distance", type=float, default=0.05, help="GT point to voxel centre, metres (default 0.05)")
    s.add_argument(
        "--unmatched", choices=["wrong", "exclude"], default="wrong", help="GT points with no map feature nearby"
    )
    s.add_argument(
        "--sample-spacing",
        type=float,
        default=None,
        metavar="M",
        help="sample the GT surface uniformly at about this spacing (metres) instead of using its vertices",
    )
    s.add_argument("--ignore-classes", default="", help="comma-separated class names left out of the evaluation")
    s.add_argument("--object-level", action="store_true", help="label by the scene-graph objects (needs semmap graph)")
    s.add_argument("--device", default="cpu", help="torch device of the text encoder (default cpu)")
    s.add_argument("--out", type=Path, default=None, help="report folder (default: the map directory)")
    s.set_defaults(func=cmd_eval_semantic)


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


def recon_metrics(args: argparse.Namespace) -> ReconMetrics:
    """``eval.recon.evaluate_reconstruction`` with parsed ``semmap eval recon`` options (``semmap batch`` uses it too)."""
    from eval.recon import Culling, evaluate_reconstruction

    mesh_path, camera, poses = _recon_inputs(args.recon)
    if args.cull and camera is None:
        raise SystemExit("semmap eval recon: --cull needs a map directory (with map.json and trajectory.tum)")
    culling = None
    if args.cull:
        step = max(1, len(poses) // 100)  # at most ~100 culling renders
        culling = Culling(camera, poses[::step], max_depth_m=args.cull_depth_max)
    return evaluate_reconstruction(
        mesh_path,
        args.gt,
        mode=args.mode,
        num_samples=args.samples,
        thresholds_m=tuple(args.thresholds),
        culling=culling,
    )


def _print_report(summary: str, out: Path, paths: list[Path]) -> int:
    """Print a metrics summary, then the report folder ``out`` and each file written there; exit status 0."""
    print(summary)
    print(f"wrote report to {out}/")
    for p in paths:
        print(f"  {p}")
    return 0


def cmd_eval_recon(args: argparse.Namespace) -> int:
    from eval.report import write_recon_report

    metrics = recon_metrics(args)
    out = args.out or (args.recon if args.recon.is_dir() else args.recon.parent)
    return _print_report(metrics.summary(), out, write_recon_report(metrics, out))


def cmd_eval_traj(args: argparse.Namespace) -> int:
    from eval.report import write_traj_report
    from eval.traj import evaluate_trajectory

    metrics = evaluate_trajectory(
        args.estimate, args.reference, align=args.align, delta=args.delta, max_time_diff=args.max_time_diff
    )
    out = args.out or args.estimate.parent
    return _print_report(metrics.summary(), out, write_traj_report(metrics, out))


def cmd_eval_depth(args: argparse.Namespace) -> int:
    from eval.depth_metrics import format_depth_table
    from eval.depth_protocols import evaluate_depth
    from eval.report import write_json
    from sensors import open_source

    if args.pred is None and args.fill is None and args.model is None:
        raise ValueError("give --pred DIR, --model SPEC or --fill guided|map")
    model = None
    if args.model:
        from mapping.depth import load_depth_model

        model = load_depth_model(args.model, device=args.device, canonical_focal_px=args.canonical_focal)
    protocol = "pred" if args.pred is not None else ("fill" if args.fill else "model")
    with open_source(args.source) as source:
        if not hasattr(source, "__getitem__"):
            raise ValueError(f"{args.source}: depth evaluation needs a dataset with random access, not a stream")
        n = len(source)
        indices = list(range(0, n, max(1, args.stride)))[: args.max_frames]
        result = evaluate_depth(
            source,
            protocol=protocol,
            pred_dir=args.pred,
            model=model,
            fill=args.fill,
            align=args.align,
            dataset=args.dataset,
            hole_fraction=args.hole_fraction,
            seed=args.seed,
            indices=indices,
            map_window=args.map_window,
            map_voxel_m=args.map_voxel,
        )
    p = result.protocol
    what = {"pred": f"predictions in {args.pred}", "model": f"model {p.get('model')}"}.get(
        protocol, f"{args.fill} fill of {100 * args.hole_fraction:g} % blob holes (removed pixels scored)"
    )
    lo, hi = p["depth_range_m"]
    hi_text = f"{hi:g}" if hi is not None else "inf"
    print(f"{args.source}: {what}; dataset {result.dataset or '-'}, depth range ({lo:g}, {hi_text}) m, align {p['align']}")
    print(format_depth_table(result.table_rows()))
    if args.out is not None:
        path = write_json({"protocol": p, "mean": result.mean, "rows": dict(result.rows)}, args.out / "depth_metrics.json")
        print(f"wrote {path}")
    return 0


def cmd_eval_queries(args: argparse.Namespace) -> int:
    import json
    import sys

    from eval.queries import evaluate_queries
    from eval.report import to_jsonable, write_json

    result = evaluate_queries(
        args.map, args.annotations, top=args.top, tolerance_m=args.tolerance, margin_m=args.margin, device=args.device
    )
    log = sys.stderr if args.json else sys.stdout
    if args.json:
        print(json.dumps(to_jsonable(result.to_dict()), indent=1))
    else:
        print(result.summary())
    if not args.no_files:
        path = write_json(result.to_dict(), (args.out or args.map) / "query_metrics.json")
        print(f"wrote {path}", file=log)
    return 0


def cmd_eval_semantic(args: argparse.Namespace) -> int:
    from eval.semantic import DEFAULT_TEMPLATE, ClassList, evaluate_semantic, write_semantic_report

    ignore = tuple(n.strip() for n in args.ignore_classes.split(",") if n.strip())
    result = evaluate_semantic(
        args.map,
        args.gt,
        ClassList.load(args.classes, ignore=ignore),
        label_attr=args.label_attr,
        templates=tuple(args.prompt_template or (DEFAULT_TEMPLATE,)),
        max_distance_m=args.max_distance,
        unmatched=args.unmatched,
        object_level=args.object_level,
        device=args.device,
        sample_spacing_m=args.sample_spacing,
    )
    out = args.out or args.map
    return _print_report(result.summary(), out, write_semantic_report(result, out))
