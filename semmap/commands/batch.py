"""`semmap batch`: map and evaluate every scene of a manifest, in parallel on Ray."""

from __future__ import annotations

import argparse
from pathlib import Path

ORDER = 35

EPILOG = """manifest (YAML or JSON; keys: `semmap map` options by config name, graph/recon/traj/queries
options by argument name):
  defaults: {voxel_size_m: 0.02, encoder: lite, recon: {cull: true}}
  scenes:
    - {name: kitchen, source: 7scenes:/data/redkitchen, annotations: /data/kitchen_objects.json}
    - {name: office0, source: replica:/data/office0, gt_mesh: /data/office0_mesh.ply, poses: estimate,
       gt_trajectory: /data/office0.tum}

examples:
  semmap batch scenes.yaml --out runs/batch                        # local Ray instance, all cores
  semmap batch scenes.yaml --out runs/batch --resume               # skip scenes already done
  semmap batch scenes.yaml --out /shared/runs --address auto --gpus-per-scene 1   # on a Ray cluster

Sources, ground truth and --out must be paths every node of the cluster can read (and write).
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "batch",
        help="map and evaluate a whole dataset (a manifest of scenes) on Ray",
        description="One Ray task per scene: `semmap map`, `semmap graph`, then every evaluation the scene has "
        "ground truth for (recon vs gt_mesh, traj vs gt_trajectory when poses were estimated, queries vs "
        "annotations). Writes OUT/<name>/ per scene and OUT/batch.json, batch.csv, batch.png.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("manifest", type=Path, help="YAML or JSON manifest: defaults and a list of scenes")
    p.add_argument("--out", required=True, type=Path, help="output folder (one map directory per scene, reports)")
    p.add_argument("--address", default=None,
                   help="Ray cluster to join: auto, ray://HOST:PORT or HOST:PORT (default: a local instance)")
    p.add_argument("--cpus-per-scene", type=float, default=1.0, help="CPUs each scene reserves (default 1)")
    p.add_argument("--gpus-per-scene", type=float, default=0.0,
                   help="GPUs each scene reserves (default 0; with device: cuda in the manifest)")
    p.add_argument("--max-retries", type=int, default=2,
                   help="restarts of a scene whose worker died (killed, out of memory) before it counts as failed")
    p.add_argument("--resume", action="store_true", help="skip scenes whose output exists with the same settings")
    p.add_argument("--serial", action="store_true", help="run the scenes one by one in this process, without Ray")
    p.add_argument("--num-cpus", type=int, default=None, help="local instance: CPUs to use (default all)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_batch)


def cmd_batch(args: argparse.Namespace) -> int:
    from semmap.batch import BatchConfig, load_manifest, read_records, run_batch

    manifest = load_manifest(args.manifest)
    cfg = BatchConfig(
        address=args.address,
        cpus_per_scene=args.cpus_per_scene,
        gpus_per_scene=args.gpus_per_scene,
        max_retries=args.max_retries,
        resume=args.resume,
        serial=args.serial,
        progress=not args.no_progress,
        num_cpus=args.num_cpus,
    )
    summary = run_batch(manifest, args.out, cfg)
    for r in read_records(summary.out_dir, [s.name for s in manifest.scenes]):
        line = f"  {r['name']:<24}{r['status']:<8}{r['timings_s'].get('total', 0.0):8.1f} s"
        if r.get("peak_rss_mb"):
            line += f"{r['peak_rss_mb']:8.0f} MiB"
        print(line + (f"  {r['error']}" if r.get("error") else ""))
    c = summary.counts
    print(f"{c['ok']} ok, {c['failed']} failed, {c['skipped']} skipped in {summary.wall_s:.1f} s "
          f"({summary.cluster.get('address')})")
    if summary.interrupted:
        print(f"interrupted: {len(summary.not_run)} scene(s) not finished: {', '.join(summary.not_run[:10])}")
    print(f"wrote per-scene maps and reports to {summary.out_dir}/")
    for path in summary.paths.values():
        print(f"  {path}")
    if summary.interrupted:
        return 130
    return 1 if c["failed"] else 0
