"""Replica office0 reconstruction quality from rendered RGB-D.

Renders every ``--step``-th pose of ``office0/traj.txt`` (default 10: 200 frames) from
``office0_mesh.ply`` at full resolution (1200x680), maps them with ``semmap`` at
``--voxel`` (default 1 cm) and evaluates the mesh against the ground-truth mesh:

1. exact point-to-mesh distances, GT restricted to the surface the cameras saw
   (frustum + depth test over all mapping poses) -- the headline figures;
2. NICE-SLAM style sample-based figures (1M samples per surface, nearest neighbours),
   on the same culled GT;
3. exact figures against the whole GT mesh (part of it is never seen from these poses,
   which caps completion).

Repeated with the ``kinect`` depth-sensor noise model (disparity quantisation, axial and
lateral noise, flying pixels, dropout). Also checks the renderer against the 4 real
Replica frames (median depth difference).

``--poses given estimate`` also maps each sequence from tracked poses (``semmap map
--poses estimate``: the first frame keeps its given pose, every later one is tracked,
then loop closure) and reports the reconstruction figures of both, their differences and
the ATE of the tracked trajectory (evo, against the rendering poses). Both maps are
evaluated in the ground-truth frame without any alignment, so tracking drift counts.
Use ``--step 5`` (or less) for it: at step 10 consecutive frames are 9 cm / 4.6 deg apart
(median; up to 14 cm / 36 deg), which frame-to-model tracking does not follow (lost at
frame 7); step 5 halves that (median 4.6 cm / 2.3 deg, up to 9 cm / 19 deg).

    python benchmarks/bench_replica.py [--step 10] [--voxel 0.01] [--noise none kinect]
                                       [--poses given estimate] [--protocols exact_culled ...]

Prints a table and writes benchmarks/results/replica.json.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "replica-office0"


def replica_camera():
    from sensors import Camera
    from sensors.io import read_json

    c = read_json(DATA / "cam_params.json")["camera"]
    return Camera(c["fx"], c["fy"], c["cx"], c["cy"], c["w"], c["h"]), float(c["scale"])


def real_frame_check(camera, depth_scale: float) -> list[dict]:
    """Rendered vs stored depth of the 4 real frames."""
    from sensors.io import read_depth_m
    from sensors.synthetic import MeshRenderer
    from sensors.trajectory_io import read_matrix_lines

    renderer = MeshRenderer(DATA / "office0_mesh.ply")
    poses = read_matrix_lines(DATA / "office0" / "traj.txt").T_world_cam
    rows = []
    for i in range(4):
        stored = read_depth_m(DATA / "office0" / "results" / f"depth{i:06d}.png", depth_scale)
        view = renderer.render(camera, poses[i])
        both = (stored > 0) & (view.depth_m > 0)
        diff = np.abs(view.depth_m[both] - stored[both])
        rows.append({"frame": i, "median_abs_diff_m": float(np.median(diff)), "valid_both": float(both.mean())})
    return rows


PROTOCOLS = ("exact_culled", "samples_culled", "exact_whole")


def run(noise: str, step: int, voxel: float, samples: int, out_root: Path, poses: str = "given",
        protocols: tuple[str, ...] = PROTOCOLS, model_render: str | None = None,
        tracker_overrides: dict | None = None) -> dict:
    from eval.recon import Culling, evaluate_reconstruction
    from eval.report import write_recon_report
    from mapping.tracking import TrackerConfig
    from semmap.pipeline import MapConfig, build_map, save_map
    from semmap.stages.tracking import TrackingStage
    from sensors.synthetic import SyntheticSource
    from sensors.trajectory_io import Trajectory, read_matrix_lines

    camera, _ = replica_camera()
    traj = read_matrix_lines(DATA / "office0" / "traj.txt")
    idx = np.arange(0, len(traj), step)
    sub = Trajectory(idx.astype(float), traj.T_world_cam[idx])
    gt = DATA / "office0_mesh.ply"
    source = SyntheticSource(gt, sub, camera=camera, noise=noise, noise_seed=0)
    cfg = MapConfig(voxel_size_m=voxel, depth_max_m=8.0)
    stages = []
    if poses == "estimate":
        render = {"model_render": model_render} if model_render else {}
        render.update(tracker_overrides or {})  # TrackerConfig fields (bench_tracking --tracker KEY=VALUE)
        tracker_cfg = TrackerConfig(depth_min_m=cfg.depth_min_m, depth_max_m=cfg.depth_max_m, **render)
        stages = [TrackingStage(tracker_cfg, force=True)]
    t0 = time.perf_counter()
    result = build_map(source, cfg, stages)
    t_map = time.perf_counter() - t0
    out = out_root / (f"replica_{noise}_{voxel}" + ("_estimated" if poses == "estimate" else ""))
    save_map(result, out, f"replica office0 rendered, noise {noise}, poses {poses}", cfg, stages)
    recon = out / "mesh.ply"
    culling = Culling(camera, sub.T_world_cam, max_depth_m=cfg.depth_max_m)
    res: dict = {"noise": noise, "poses": poses, "frames": result.frames_integrated, "voxel_m": voxel,
                 "map_s": t_map, "ms_per_frame": 1000 * t_map / result.frames_integrated}
    if stages:
        res["tracking"] = tracking_figures(stages[0], result.trajectory, sub, t_map)
    all_protocols = {
        "exact_culled": dict(mode="exact", culling=culling),
        "samples_culled": dict(mode="samples", num_samples=samples, culling=culling),
        "exact_whole": dict(mode="exact"),
    }
    for key, kw in ((k, all_protocols[k]) for k in protocols):
        t1 = time.perf_counter()
        m = evaluate_reconstruction(recon, gt, thresholds_m=(0.01, 0.02, 0.05), num_samples=kw.pop("num_samples", samples), **kw)
        write_recon_report(m, out, name=f"recon_{key}")
        p1, r1, f1 = m.at(0.01)
        res[key] = {
            "accuracy_cm": 100 * m.accuracy_m,
            "completion_cm": 100 * m.completion_m,
            "completion_ratio_5cm": m.completion_ratio,
            "precision_1cm": p1,
            "recall_1cm": r1,
            "fscore_1cm": f1,
            "chamfer_l1_cm": 100 * m.chamfer_l1_m,
            "eval_s": time.perf_counter() - t1,
            "protocol": m.protocol,
        }
    return res


def tracking_figures(stage, estimated, given, map_s: float) -> dict:
    """ATE / RPE (evo) of the mapped trajectory against the rendering poses, and tracking time."""
    from bench_tracking import evo_metrics

    tracker = stage.tracker
    summary = tracker.summary()
    return {
        "metrics": evo_metrics(estimated, given),
        "status_counts": summary.status_counts,
        "keyframes": len(tracker.keyframes),
        "loops": len(tracker.loops),
        "loop_closure_applied": stage.loop_result is not None,
        "track_ms_mean": summary.mean_ms,
        "method": tracker.config.method,
        "model_render": tracker.config.model_render,
    }


def compare(rows: list[dict], protocols: tuple[str, ...]) -> list[dict]:
    """Estimated-minus-given accuracy and completion per noise preset and protocol (cm)."""
    out = []
    for est in (r for r in rows if r["poses"] == "estimate"):
        given = next((r for r in rows if r["poses"] == "given" and r["noise"] == est["noise"]), None)
        if given is None:
            continue
        for key in protocols:
            d_acc = est[key]["accuracy_cm"] - given[key]["accuracy_cm"]
            d_comp = est[key]["completion_cm"] - given[key]["completion_cm"]
            out.append({"noise": est["noise"], "protocol": key, "d_accuracy_cm": d_acc, "d_completion_cm": d_comp,
                        "within_0p5cm": bool(abs(d_acc) <= 0.5 and abs(d_comp) <= 0.5)})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--step", type=int, default=10)
    ap.add_argument("--voxel", type=float, default=0.01)
    ap.add_argument("--samples", type=int, default=1_000_000)
    ap.add_argument("--noise", nargs="+", default=["none", "kinect"])
    ap.add_argument("--poses", nargs="+", default=["given"], choices=["given", "estimate"],
                    help="map from the rendering poses, from tracked poses, or both (then compared)")
    ap.add_argument("--model-render", choices=["raycast", "mesh"], default=None,
                    help="how the tracker renders its model (default: TrackerConfig.model_render)")
    ap.add_argument("--protocols", nargs="+", default=list(PROTOCOLS), choices=PROTOCOLS)
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    ap.add_argument("--json", type=Path, default=None, help="results file (default OUT/replica.json)")
    args = ap.parse_args()
    protocols = tuple(args.protocols)
    camera, scale = replica_camera()
    real = real_frame_check(camera, scale)
    print("rendered vs stored depth of the 4 real Replica frames:")
    for r in real:
        print(f"  frame {r['frame']}: median |diff| {1000 * r['median_abs_diff_m']:.2f} mm, valid in both {100 * r['valid_both']:.1f} %")
    rows = [run(n, args.step, args.voxel, args.samples, args.out, p, protocols, args.model_render)
            for n in args.noise for p in args.poses]
    hdr = f"{'noise':<8}{'poses':<9}{'protocol':<16}{'acc cm':>8}{'comp cm':>9}{'comp<5cm':>10}{'P@1cm':>8}{'R@1cm':>8}{'F@1cm':>8}"
    print(hdr)
    print("-" * len(hdr))
    for r in rows:
        for key in protocols:
            m = r[key]
            print(f"{r['noise']:<8}{r['poses']:<9}{key:<16}{m['accuracy_cm']:>8.3f}{m['completion_cm']:>9.3f}"
                  f"{100 * m['completion_ratio_5cm']:>9.2f}%{100 * m['precision_1cm']:>7.2f}%"
                  f"{100 * m['recall_1cm']:>7.2f}%{100 * m['fscore_1cm']:>7.2f}%")
        what = "render + track + integrate" if r["poses"] == "estimate" else "render + integrate"
        print(f"{r['noise']:<8}{r['poses']:<9}mapping: {r['frames']} frames, {r['ms_per_frame']:.0f} ms/frame ({what})")
        if "tracking" in r:
            t, m = r["tracking"], r["tracking"]["metrics"]
            print(f"{'':<17}tracking ({t['method']}): ATE {100 * m['ate_rmse_m']:.2f} cm (max {100 * m['ate_max_m']:.2f}), "
                  f"RPE {100 * m['rpe_trans_rmse_m']:.2f} cm / {m['rpe_rot_rmse_deg']:.3f} deg per frame, "
                  f"{t['track_ms_mean']:.0f} ms/frame, {t['status_counts']}, loops {t['loops']} "
                  f"(applied: {t['loop_closure_applied']})")
    diffs = compare(rows, protocols)
    for d in diffs:
        print(f"estimated - given, noise {d['noise']:<7} {d['protocol']:<15} accuracy {d['d_accuracy_cm']:+.3f} cm, "
              f"completion {d['d_completion_cm']:+.3f} cm -> {'within' if d['within_0p5cm'] else 'NOT within'} 0.5 cm")
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.json or args.out / "replica.json"
    path.write_text(json.dumps({"real_frames": real, "runs": rows, "estimated_minus_given": diffs}, indent=1, default=str))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
