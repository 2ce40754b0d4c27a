"""RGB-only frames: a redkitchen map with every second frame's depth removed vs the full-depth map.

Maps (all at ``--voxel``, default 2 cm, depth range 0.1-4 m, 7-Scenes poses):

- ``full depth``: every frame with its sensor depth;
- ``dropped, map fill``: every second frame (1, 3, 5, ...) loses its depth and is filled by
  the depth stage's default (``semmap map --drop-depth-every 2``): the map rendered at the
  frame's pose, the rest by colour-guided fill within 10 px of rendered depth; neither the
  rendered nor the interpolated pixels are integrated (weight 0; no depth model here);
- ``dropped, map fill, interp. 0.3``: the same with the interpolated pixels integrated at
  weight 0.3 (``--interpolated-depth-weight 0.3``);
- ``dropped, skipped``: the same frames simply left out (``--fill-missing none``).

Protocol: redkitchen has no ground-truth mesh, so each map's mesh is compared
(``eval.recon.evaluate_reconstruction``, exact point-to-triangle mode, ``--samples``
points per side, seed 0, no culling) with a **reference mesh built from all frames with
depth at ``--ref-voxel``** (default 1 cm), and the dropped maps also directly with the
full-depth map. The target is that accuracy and completion of the dropped-depth map
differ from those of the full-depth map by less than 1 cm. The depth stage also scores
the fill of the dropped frames against their removed sensor depth (AbsRel, delta1 on the
filled pixels, coverage).

    python benchmarks/bench_rgb_only.py [--data ../shared/data/7scenes-redkitchen] [--stride 1]
        [--voxel 0.02] [--ref-voxel 0.01] [--samples 200000] [--max-frames N]

Prints a table and writes benchmarks/results/rgb_only.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "7scenes-redkitchen"


def build(spec: str, voxel: float, stride: int, max_frames: int | None, stage_config=None) -> dict:
    """Map the source; returns the legacy mesh, timings and the depth stage's metadata."""
    from semmap.pipeline import MapConfig, build_map
    from semmap.stages.depth import DepthStage
    from sensors import open_source

    cfg = MapConfig(voxel_size_m=voxel, depth_max_m=4.0, stride=stride, max_frames=max_frames, progress=True)
    stages = [DepthStage(stage_config)] if stage_config is not None else []
    t0 = time.perf_counter()
    with open_source(spec) as src, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = build_map(src, cfg, stages)
    seconds = time.perf_counter() - t0
    mesh = result.tsdf.extract_mesh().to_legacy()
    return {
        "mesh": mesh,
        "seconds": seconds,
        "frames": result.frames_integrated,
        "timings_s": result.timings_s,
        "triangles": len(mesh.triangles),
        "stage": stages[0].metadata() if stages else None,
    }


def compare(recon, gt, samples: int) -> dict:
    from eval.recon import evaluate_reconstruction

    m = evaluate_reconstruction(recon, gt, mode="exact", num_samples=samples, seed=0, keep_errors=False)
    return {
        "accuracy_m": m.accuracy_m,
        "completion_m": m.completion_m,
        "chamfer_l1_m": m.chamfer_l1_m,
        "thresholds_m": list(m.thresholds_m),
        "precision": list(m.precision),
        "recall": list(m.recall),
        "fscore": list(m.fscore),
        "seconds": m.seconds,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--stride", type=int, default=1, help="use every N-th frame (1: all 1000)")
    ap.add_argument("--max-frames", type=int, default=None)
    ap.add_argument("--voxel", type=float, default=0.02, help="voxel size of the compared maps, metres")
    ap.add_argument("--ref-voxel", type=float, default=0.01, help="voxel size of the reference map, metres")
    ap.add_argument("--drop-every", type=int, default=2)
    ap.add_argument("--samples", type=int, default=200_000, help="points sampled per mesh side")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "rgb_only.json")
    args = ap.parse_args()

    from semmap.stages.depth import DepthStageConfig

    spec = f"7scenes:{args.data}"
    runs = {
        "full depth": None,
        "dropped, map fill": DepthStageConfig(drop_depth_every=args.drop_every),
        "dropped, map fill, interp. 0.3": DepthStageConfig(drop_depth_every=args.drop_every, interpolated_weight=0.3),
        "dropped, skipped": DepthStageConfig(drop_depth_every=args.drop_every, fill_missing="none"),
    }
    maps = {name: build(spec, args.voxel, args.stride, args.max_frames, cfg) for name, cfg in runs.items()}
    reference = build(spec, args.ref_voxel, args.stride, args.max_frames)

    rows = {}
    for name, m in maps.items():
        rows[name] = {"vs_reference": compare(m["mesh"], reference["mesh"], args.samples)}
        if name != "full depth":
            rows[name]["vs_full_depth_map"] = compare(m["mesh"], maps["full depth"]["mesh"], args.samples)
    full = rows["full depth"]["vs_reference"]
    for row in rows.values():
        r = row["vs_reference"]
        row["accuracy_diff_vs_full_m"] = r["accuracy_m"] - full["accuracy_m"]
        row["completion_diff_vs_full_m"] = r["completion_m"] - full["completion_m"]

    print(f"\nredkitchen, stride {args.stride}, {args.voxel * 100:g} cm voxels; every {args.drop_every}nd frame's "
          f"depth removed; reference: all depth at {args.ref_voxel * 100:g} cm; exact mode, {args.samples} samples")
    print("| map | frames | build s | acc cm | comp cm | F@1cm | F@2cm | d acc cm | d comp cm | vs full: acc cm | comp cm |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for name, m in maps.items():
        r, row = rows[name]["vs_reference"], rows[name]
        vf = row.get("vs_full_depth_map")
        tail = f"{100 * vf['accuracy_m']:.2f} | {100 * vf['completion_m']:.2f}" if vf else "- | -"
        print(f"| {name} | {m['frames']} | {m['seconds']:.0f} | {100 * r['accuracy_m']:.2f} | "
              f"{100 * r['completion_m']:.2f} | {100 * r['fscore'][0]:.1f} | {100 * r['fscore'][1]:.1f} | "
              f"{100 * row['accuracy_diff_vs_full_m']:+.2f} | {100 * row['completion_diff_vs_full_m']:+.2f} | {tail} |")
    fill = maps["dropped, map fill"]["stage"]
    dd = fill.get("dropped_depth", {})
    print(f"fill of the dropped frames vs their removed sensor depth: AbsRel {dd.get('mean_abs_rel', float('nan')):.4f}, "
          f"delta1 {dd.get('mean_d1', float('nan')):.4f}, coverage {dd.get('mean_coverage', float('nan')):.3f} "
          f"({dd.get('scored', 0)} frames)")
    ok = all(abs(rows[n][k]) < 0.01 for n in ("dropped, map fill",) for k in
             ("accuracy_diff_vs_full_m", "completion_diff_vs_full_m"))
    print(f"target (accuracy and completion within 1 cm of the full-depth map's): {'met' if ok else 'NOT met'}")

    args.out.parent.mkdir(parents=True, exist_ok=True)
    out = {
        "config": {
            "data": str(args.data), "stride": args.stride, "max_frames": args.max_frames, "voxel_m": args.voxel,
            "reference_voxel_m": args.ref_voxel, "drop_every": args.drop_every, "samples": args.samples,
            "machine": platform.platform(),
        },
        "protocol": "each map's mesh vs a reference mesh built from all frames with depth at the reference voxel "
        "size (no ground-truth mesh exists for redkitchen); eval.recon.evaluate_reconstruction exact mode, seed 0, "
        "no culling; dropped maps also vs the full-depth map. Target: |acc - acc_full| and |comp - comp_full| < 1 cm.",
        "target_met": ok,
        "maps": {
            name: {k: v for k, v in m.items() if k != "mesh"} | rows[name] for name, m in maps.items()
        },
        "reference": {k: v for k, v in reference.items() if k not in ("mesh", "stage")},
    }
    args.out.write_text(json.dumps(out, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
