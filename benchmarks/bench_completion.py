"""Depth completion quality on real data, plus the math checks of mapping.depth.

For every test image, 30 % of the valid sensor depth is removed in random blobs
(seeded, :func:`eval.depth_metrics.random_blob_mask`), the holes are filled, and the
filled values are compared with the removed ground truth (AbsRel, delta1, RMSE on
the masked pixels only). Methods:

- ``harmonic``: inverse-depth harmonic interpolation without colour guidance;
- ``guided``: the classical colour-guided fill (the default when no model is set);
- ``map prior`` (7-Scenes): a TSDF built from the frames around the target
  (target excluded), raycast at the target pose, seams blended, rest guided;
- ``map, no seam blend``: the same without the residual blending at hole borders.

Also reported: robust alignment error (scale/shift with 30 % outliers and 0.5 %
anchor noise, worst over seeds).

    python benchmarks/bench_completion.py [--data ../shared/data] [--targets 100 300 500 700 900]
        [--voxel 0.01] [--map-frames 40] [--quick]

Prints a table and writes benchmarks/results/completion.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data"
SEVEN_SCENES_CAMERA = (585.0, 585.0, 320.0, 240.0)


def seven_scenes_frame(root: Path, i: int):
    """(rgb, depth_m, T_world_cam) of 7-Scenes frame i (depth: uint16 mm, 0 and 65535 invalid)."""
    from sensors.io import read_depth_m, read_pose, read_rgb

    stem = root / f"frame-{i:06d}"
    return (
        read_rgb(f"{stem}.color.jpg"),
        read_depth_m(f"{stem}.depth.png", 1000.0, (0, 65535)),
        read_pose(f"{stem}.pose.txt"),
    )


def nyu_samples(root: Path):
    """Yield (name, rgb, depth_m, camera) for the NYU demo images (depth uint16 / 1000)."""
    from sensors import Camera
    from sensors.io import read_depth_m, read_json, read_rgb

    ann = read_json(root / "test_annotations.json")
    for item in ann["files"]:
        rgb = read_rgb(root / "rgb" / Path(item["rgb"]).name)
        depth = read_depth_m(root / "depth" / Path(item["depth"]).name, float(item["depth_scale"]))
        fx, fy, cx, cy = item["cam_in"]
        yield Path(item["rgb"]).stem, rgb, depth, Camera(fx, fy, cx, cy, rgb.shape[1], rgb.shape[0])


def build_map(root: Path, frames: list[int], voxel: float):
    from mapping import TSDFConfig, TSDFMap
    from sensors import Camera, Frame

    cam = Camera(*SEVEN_SCENES_CAMERA, 640, 480)
    m = TSDFMap(TSDFConfig(voxel_size_m=voxel, depth_max_m=4.0, integrate_color=False))
    for i in frames:
        rgb, d, T = seven_scenes_frame(root, i)
        m.integrate(Frame(rgb, d, cam, T, index=i))
    return m, cam


def masked_metrics(filled: np.ndarray, gt: np.ndarray, mask: np.ndarray) -> dict:
    from eval.depth_metrics import depth_metrics

    m = depth_metrics(filled, gt, mask=mask)
    return {"abs_rel": m.abs_rel, "d1": m.d1, "rmse": m.rmse, "coverage": m.coverage, "n_pixels": m.n_pixels}


def fill_methods(rgb, holey, mask, prior=None) -> dict[str, tuple[np.ndarray, float]]:
    from mapping.depth import CompletionConfig, complete_depth, guided_fill

    out = {}
    t = time.perf_counter()
    out["harmonic"] = (guided_fill(holey, None, fill_mask=mask), time.perf_counter() - t)
    t = time.perf_counter()
    out["guided"] = (complete_depth(holey, rgb, fill_mask=mask).depth_m, time.perf_counter() - t)
    if prior is not None:
        t = time.perf_counter()
        out["map prior"] = (complete_depth(holey, rgb, prior_depth=prior, fill_mask=mask).depth_m, time.perf_counter() - t)
        t = time.perf_counter()
        no_blend = CompletionConfig(feather_px=1e-3)  # residual weight exp(-1 px / 1e-3 px) = 0 in holes
        out["map, no seam blend"] = (
            complete_depth(holey, rgb, prior_depth=prior, fill_mask=mask, config=no_blend).depth_m,
            time.perf_counter() - t,
        )
    return out


def alignment_check(seeds: int = 20) -> dict:
    """Worst relative scale/shift error over seeds, 30 % outliers, 0.5 % anchor noise."""
    from mapping.depth import fit_scale_shift

    worst = {"depth": [0.0, 0.0], "inverse_depth": [0.0, 0.0]}
    for space, s, t in (("depth", 2.5, 0.7), ("inverse_depth", 0.8, 0.05)):
        for seed in range(seeds):
            rng = np.random.default_rng(seed)
            d = rng.uniform(0.5, 6.0, 5000)
            y = d if space == "depth" else 1 / d
            p = (y - t) / s
            d = d * (1 + 0.005 * rng.standard_normal(d.size))
            bad = rng.random(d.size) < 0.3
            d[bad] = rng.uniform(0.3, 10.0, bad.sum())
            r = fit_scale_shift(p, d, space=space, seed=seed)
            worst[space][0] = max(worst[space][0], abs(r.scale / s - 1))
            worst[space][1] = max(worst[space][1], abs(r.shift / t - 1))
    return {k: {"max_scale_rel_err": v[0], "max_shift_rel_err": v[1], "seeds": seeds} for k, v in worst.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--targets", type=int, nargs="+", default=[100, 300, 500, 700, 900])
    ap.add_argument("--voxel", type=float, default=0.01, help="TSDF voxel size of the map prior, metres")
    ap.add_argument("--map-frames", type=int, default=40, help="frames around the target fused into the map")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="one 7-Scenes target, one NYU image")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "completion.json")
    args = ap.parse_args()

    from eval.depth_metrics import random_blob_mask
    from mapping.depth import map_prior_depth

    rows: list[dict] = []
    kitchen = args.data / "7scenes-redkitchen"
    targets = args.targets[:1] if args.quick else args.targets
    for target in targets:
        half = args.map_frames // 2
        others = [i for i in range(max(0, target - half), min(1000, target + half + 1)) if i != target]
        t = time.perf_counter()
        tsdf, cam = build_map(kitchen, others, args.voxel)
        t_build = time.perf_counter() - t
        rgb, depth, T = seven_scenes_frame(kitchen, target)
        mask = random_blob_mask(depth > 0, 0.3, seed=args.seed + target)
        holey = np.where(mask, 0.0, depth).astype(np.float32)
        t = time.perf_counter()
        prior = map_prior_depth(tsdf, cam, T)
        t_ray = time.perf_counter() - t
        for method, (filled, secs) in fill_methods(rgb, holey, mask, prior).items():
            assert np.array_equal(filled[~mask & (depth > 0)], depth[~mask & (depth > 0)])
            extra = {"map_build_s": t_build, "raycast_s": t_ray} if method.startswith("map") else {}
            rows.append({"dataset": "7scenes-redkitchen", "image": target, "method": method, "fill_s": secs,
                         **masked_metrics(filled, depth, mask), **extra})
    nyu = list(nyu_samples(args.data / "monodepth-nyu-kitti" / "nyu_demo"))
    for k, (name, rgb, depth, cam) in enumerate(nyu[:1] if args.quick else nyu):
        mask = random_blob_mask(depth > 0, 0.3, seed=args.seed + k)
        holey = np.where(mask, 0.0, depth).astype(np.float32)
        for method, (filled, secs) in fill_methods(rgb, holey, mask).items():
            rows.append({"dataset": "nyu", "image": name, "method": method, "fill_s": secs,
                         **masked_metrics(filled, depth, mask)})

    summary = {}
    for ds in sorted({r["dataset"] for r in rows}):
        for method in dict.fromkeys(r["method"] for r in rows if r["dataset"] == ds):
            sel = [r for r in rows if r["dataset"] == ds and r["method"] == method]
            summary[f"{ds} / {method}"] = {
                k: float(np.mean([r[k] for r in sel])) for k in ("abs_rel", "d1", "rmse", "coverage", "fill_s")
            } | {"images": len(sel)}
    align = alignment_check(5 if args.quick else 20)

    print(f"Completion of 30 % blob holes (metrics on the masked pixels; mean over images); "
          f"map prior: {args.map_frames} frames, voxel {args.voxel} m")
    width = max(len(n) for n in summary)
    print(f"| {'dataset / method':<{width}} | images | AbsRel | delta1 | RMSE m | fill s |")
    print(f"|{'-' * (width + 2)}|--------|--------|--------|--------|--------|")
    for name, s in summary.items():
        print(f"| {name:<{width}} | {s['images']:>6} | {s['abs_rel']:.4f} | {s['d1']:.4f} | {s['rmse']:.4f} | "
              f"{s['fill_s']:>6.3f} |")
    for space, a in align.items():
        print(f"alignment ({space}, 30 % outliers, {a['seeds']} seeds): max scale err {100 * a['max_scale_rel_err']:.3f} %, "
              f"max shift err {100 * a['max_shift_rel_err']:.3f} %")

    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "config": {"targets": targets, "voxel_m": args.voxel, "map_frames": args.map_frames, "seed": args.seed,
                   "hole_fraction": 0.3, "machine": platform.platform(), "quick": args.quick},
        "summary": summary, "alignment": align, "rows": rows,
    }, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
