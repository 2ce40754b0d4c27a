"""Tracking acceptance: estimated vs given poses through the mapping pipeline, per-stage profile, accuracy.

One command, ``python benchmarks/bench_tracking.py``, runs the acceptance of issue 16:

1. redkitchen (7-Scenes, all 1000 frames) mapped by ``semmap.pipeline.build_map`` (2 cm map, as
   ``semmap map``) with ``--poses given`` (no tracking), then ``--poses estimate`` (every frame
   tracked, the first keeps its dataset pose, loop closure after the last frame), then given again;
   the ratio estimate / given of ms per frame (given = mean of its two runs, so both see the same
   machine state), ATE RMSE and RPE (evo, SE(3) Umeyama, no scale) of the estimated trajectory,
   and the tracker's per-stage profile (wall and CPU ms per frame);
2. Replica office0 rendered every 5th pose (1200x680, no noise), mapped at 1 cm from the rendering
   poses and from tracked poses (``bench_replica.run``): accuracy and completion of both
   reconstructions (exact, culled GT) and their differences (target: within 0.5 cm).

``--datasets`` adds tracker-only runs (no pipeline: track, integrate a 2 cm map, ``finalize``) of
redkitchen, 3dmatch, iclnuim or raw-depth redkitchen, as before. ``--tracker KEY=VALUE`` overrides
``TrackerConfig`` fields everywhere (e.g. ``--tracker model_render=raycast mesh_scope=full``).

Took 532 s on 2 idle cores on 2026-12-04 with the quarter-resolution defaults (redkitchen: given
36.0 / 34.1 ms/frame, estimate 64.9 ms/frame of which tracking 25.3, ratio 1.85 (1.77 without the
loop closure at the end), ATE 2.55 cm, RPE 0.50 cm / 0.199 deg per frame; Replica: estimated - given
+0.085 cm accuracy and completion). Before them (half resolution, 700 s): estimate 140.0 ms/frame,
ratio 4.00, ATE 2.57 cm. Under load average 7-20 (issue 16's first session) the redkitchen part
took 27 min and Replica about 35. ``--skip-replica`` leaves out step 2. Times on
a shared machine are pessimistic: the load average is printed and stored, and the tracker's stages
are also given in CPU time.

    python benchmarks/bench_tracking.py [--data-root ../shared/data] [--max-frames N] [--skip-replica]
                                        [--tracker KEY=VALUE ...] [--datasets redkitchen 3dmatch iclnuim]

Prints tables and writes benchmarks/results/tracking.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data"

DATASETS = {
    # name: (source spec relative to the data root, tracker overrides)
    "redkitchen": ("7scenes:7scenes-redkitchen", {}),
    "redkitchen-raw": ("raw7scenes:7scenes-redkitchen", {"method": "point_to_plane"}),
    "3dmatch": ("3dmatch:3dmatch-seq01", {}),
    "iclnuim": ("o3dlog:open3d-rgbd/RGBD", {}),
}
"""``raw7scenes`` reads the unregistered depth in the depth camera (585 px), as the tests do."""


def open_frames(spec: str, root: Path):
    """(list-like of Frames, description) for a dataset spec."""
    kind, rel = spec.split(":", 1)
    path = root / rel
    if kind != "raw7scenes":
        from sensors import open_source

        return open_source(f"{kind}:{path}"), f"{kind} reader"
    from sensors import Camera, Frame
    from sensors.io import read_depth_m, read_pose, read_rgb

    camera = Camera(585.0, 585.0, 320.0, 240.0, 640, 480)
    n = len(sorted(path.glob("frame-*.depth.png")))

    class RawFrames:
        def __len__(self) -> int:
            return n

        def __getitem__(self, i: int) -> Frame:
            p = path / f"frame-{i:06d}"
            return Frame(
                read_rgb(f"{p}.color.jpg"),
                read_depth_m(f"{p}.depth.png", 1000.0, (0, 65535)),
                camera,
                read_pose(f"{p}.pose.txt"),
                timestamp=i / 30.0,
                index=i,
            )

    return RawFrames(), "raw depth camera (unregistered colour)"


def evo_metrics(est, gt) -> dict:
    """ATE / RPE of ``est`` against ``gt`` (both ``sensors.trajectory_io.Trajectory``), associated by timestamp."""
    from evo.core import metrics, sync
    from evo.core.trajectory import PoseTrajectory3D

    from mapping.tracking.odometry import orthonormalize

    if len(est) < 3:
        return {"ate_rmse_m": None, "note": f"only {len(est)} tracked frames"}
    # dataset poses are printed with ~7 digits (3DMatch: det(R) - 1 = 3e-6); evo insists on 1e-6
    ref = PoseTrajectory3D(poses_se3=[orthonormalize(T) for T in gt.T_world_cam], timestamps=gt.timestamps)
    traj = PoseTrajectory3D(poses_se3=list(est.T_world_cam), timestamps=est.timestamps)
    ref, traj = sync.associate_trajectories(ref, traj, max_diff=1e-3)
    traj.align(ref, correct_scale=False)
    data = (ref, traj)
    ape = metrics.APE(metrics.PoseRelation.translation_part)
    ape.process_data(data)
    out = {
        "ate_rmse_m": float(ape.get_statistic(metrics.StatisticsType.rmse)),
        "ate_max_m": float(ape.get_statistic(metrics.StatisticsType.max)),
    }
    for name, relation in (("rpe_trans_rmse_m", metrics.PoseRelation.translation_part),
                           ("rpe_rot_rmse_deg", metrics.PoseRelation.rotation_angle_deg)):
        rpe = metrics.RPE(relation, delta=1, delta_unit=metrics.Unit.frames, all_pairs=False)
        rpe.process_data(data)
        out[name] = float(rpe.get_statistic(metrics.StatisticsType.rmse))
    if len(traj.timestamps) > 60:
        rpe = metrics.RPE(metrics.PoseRelation.translation_part, delta=30, delta_unit=metrics.Unit.frames)
        rpe.process_data(data)
        out["rpe_trans_30f_rmse_m"] = float(rpe.get_statistic(metrics.StatisticsType.rmse))
    return out


def run_dataset(name: str, root: Path, max_frames: int | None, tracker_overrides: dict | None = None) -> dict:
    """Tracker-only run of one dataset (no pipeline): track, integrate a 2 cm map, ``finalize``."""
    from mapping import TSDFConfig, TSDFMap
    from mapping.tracking import Tracker, TrackerConfig, TrackingLost
    from sensors.trajectory_io import Trajectory

    spec, overrides = DATASETS[name]
    frames, reader = open_frames(spec, root)
    n = len(frames) if max_frames is None else min(len(frames), max_frames)
    first = frames[0]
    # finalize re-integrates keyframes only
    config = TrackerConfig(keep_keyframe_frames=True, **{**overrides, **(tracker_overrides or {})})
    tracker = Tracker(config, first.camera)
    tsdf_config = TSDFConfig(voxel_size_m=0.02)
    tsdf_map = TSDFMap(tsdf_config)
    gt_t, gt_T, lost_message = [], [], None
    t0 = time.perf_counter()
    for i in range(n):
        frame = frames[i]
        gt_t.append(frame.timestamp)
        gt_T.append(frame.T_world_cam)
        try:
            r = tracker.track(frame if i == 0 else frame.with_(T_world_cam=None), tsdf_map)
        except TrackingLost as e:
            lost_message = str(e)
            break
        if r.ok:
            tsdf_map.integrate(frame.with_(T_world_cam=r.T_world_cam))
    loop_s = time.perf_counter() - t0
    calls = len(tracker.results)
    gt = Trajectory(np.array(gt_t), np.stack(gt_T))
    summary = tracker.summary()
    out = {
        "dataset": name,
        "reader": reader,
        "frames": n,
        "frames_tracked_or_tried": calls,
        "camera": first.camera.to_dict(),
        "config": {k: v for k, v in asdict(config).items() if k != "loop"},
        "status_counts": summary.status_counts,
        "events": summary.lines()[1:],
        "tracking_lost": lost_message,
        "keyframes": len(tracker.keyframes),
        "track_ms_mean": summary.mean_ms,
        "track_ms_median": float(np.median([r.ms for r in tracker.results])),
        "stages_ms_per_frame": tracker.times.per_frame_ms(calls),
        "loop_ms_per_frame": 1000.0 * loop_s / max(calls, 1),
        "no_lc": evo_metrics(tracker.trajectory(), gt),
    }
    t1 = time.perf_counter()
    result = tracker.finalize(lambda: TSDFMap(tsdf_config))
    lc = {
        "default_applied": result is not None,
        "loops_verified": len(tracker.loops),
        "loop_disagreement_m": tracker.loop_disagreement_m,
        "seconds": time.perf_counter() - t1,
    }
    if result is None and tracker.loops:
        tracker.config.loop.min_loop_disagreement_m = 0.0
        t1 = time.perf_counter()
        result = tracker.finalize(lambda: TSDFMap(tsdf_config))
        lc["forced_seconds"] = time.perf_counter() - t1
    if result is not None:
        lc["loops_kept"] = len(result.loops)
        lc["max_keyframe_correction_m"] = result.max_keyframe_correction_m
        lc["metrics"] = evo_metrics(tracker.trajectory(), gt)
    out["loop_closure"] = lc
    return out


ACCEPTANCE_SOURCE = "7scenes:7scenes-redkitchen"
"""The redkitchen sequence as ``semmap map`` reads it (colour registered to depth)."""


def pipeline_run(spec: str, max_frames: int | None, estimate: bool, tracker_overrides: dict) -> dict:
    """Map ``spec`` with ``build_map`` (2 cm, as ``semmap map``) from given or estimated poses; times and results.

    Returns a dict with ms per frame (whole run, and the per-frame loop without the tracking
    stage's ``finish``), the pipeline's timings, the trajectory and, when estimating, the stage.
    """
    from mapping.tracking import TrackerConfig
    from semmap.pipeline import MapConfig, build_map
    from semmap.stages.tracking import TrackingStage
    from sensors import open_source

    cfg = MapConfig(max_frames=max_frames, progress=False)
    stages = []
    if estimate:
        tracker_cfg = TrackerConfig(depth_min_m=cfg.depth_min_m, depth_max_m=cfg.depth_max_m, **tracker_overrides)
        stages = [TrackingStage(tracker_cfg, force=True)]
    t0 = time.perf_counter()
    result = build_map(open_source(spec), cfg, stages)
    total_s = time.perf_counter() - t0
    n = result.frames_seen
    timings = dict(result.timings_s)
    out = {"frames": n, "frames_integrated": result.frames_integrated, "total_s": total_s,
           "ms_per_frame": 1000.0 * total_s / n, "timings_s": timings, "trajectory": result.trajectory}
    if estimate:
        stage = stages[0]
        track_s = sum(r.ms for r in stage.tracker.results) / 1000.0
        finish_s = max(timings.get("tracking", 0.0) - track_s, 0.0)
        out.update(stage=stage, finish_s=finish_s, loop_ms_per_frame=1000.0 * (total_s - finish_s) / n,
                   track_ms_per_frame=1000.0 * track_s / n)
    else:
        out["loop_ms_per_frame"] = out["ms_per_frame"]
    return out


def acceptance_redkitchen(root: Path, max_frames: int | None, tracker_overrides: dict) -> dict:
    """Given, estimate, given again on redkitchen; ratio, ATE / RPE, per-stage profile."""
    spec = f"7scenes:{root / ACCEPTANCE_SOURCE.split(':', 1)[1]}"
    runs = {}
    for key, estimate in (("given_1", False), ("estimate", True), ("given_2", False)):
        print(f"[redkitchen] poses {'estimate' if estimate else 'given'} ...", flush=True)
        runs[key] = pipeline_run(spec, max_frames, estimate, tracker_overrides)
    given_ms = 0.5 * (runs["given_1"]["ms_per_frame"] + runs["given_2"]["ms_per_frame"])
    est = runs["estimate"]
    stage = est["stage"]
    tracker = stage.tracker
    n = len(tracker.results)
    summary = tracker.summary()
    metrics = evo_metrics(est["trajectory"], runs["given_1"]["trajectory"])
    return {
        "frames": est["frames"],
        "given_ms_per_frame": [runs["given_1"]["ms_per_frame"], runs["given_2"]["ms_per_frame"]],
        "given_timings_s": [runs["given_1"]["timings_s"], runs["given_2"]["timings_s"]],
        "estimate_ms_per_frame": est["ms_per_frame"],
        "estimate_loop_ms_per_frame": est["loop_ms_per_frame"],
        "estimate_timings_s": est["timings_s"],
        "track_ms_per_frame": est["track_ms_per_frame"],
        "finish_s": est["finish_s"],
        "ratio": est["ms_per_frame"] / given_ms,
        "ratio_without_finish": est["loop_ms_per_frame"] / given_ms,
        "metrics": metrics,
        "status_counts": summary.status_counts,
        "events": summary.lines()[1:],
        "keyframes": summary.keyframes,
        "loops": summary.loops,
        "loop_closure_applied": stage.loop_result is not None,
        "stages_ms_per_frame": tracker.times.per_frame_ms(n),
        "stages_cpu_ms_per_frame": tracker.times.per_frame_ms(n, cpu=True),
        "stage_calls": dict(tracker.times.calls),
        "config": {k: v for k, v in asdict(tracker.config).items() if k != "loop"},
    }


def acceptance_replica(tracker_overrides: dict) -> dict:
    """Replica office0 at step 5, no noise: reconstruction from given vs estimated poses (``bench_replica``)."""
    import tempfile

    import bench_replica

    protocols = ("exact_culled",)
    with tempfile.TemporaryDirectory(prefix="bench_tracking_replica_") as tmp:
        rows = []
        for poses in ("given", "estimate"):
            print(f"[replica office0 step 5] poses {poses} ...", flush=True)
            rows.append(bench_replica.run("none", 5, 0.01, 200_000, Path(tmp), poses, protocols,
                                          tracker_overrides=tracker_overrides))
    return {"runs": rows, "estimated_minus_given": bench_replica.compare(rows, protocols)}


def fmt(x, scale=1.0, digits=2) -> str:
    return "-" if x is None else f"{scale * x:.{digits}f}"


def parse_overrides(items: list[str]) -> dict:
    """``KEY=VALUE`` strings -> TrackerConfig overrides (values parsed as JSON where they parse, else strings)."""
    from dataclasses import fields

    from mapping.tracking import TrackerConfig

    known = {f.name for f in fields(TrackerConfig)}
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or key not in known:
            raise SystemExit(f"--tracker {item!r}: expected KEY=VALUE with KEY one of {', '.join(sorted(known))}")
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError:
            parsed = value
        out[key] = tuple(parsed) if isinstance(parsed, list) else parsed
    return out


def print_redkitchen(r: dict) -> None:
    m = r["metrics"]
    g1, g2 = r["given_ms_per_frame"]
    print(f"\nredkitchen {r['frames']} frames, pipeline (2 cm map):")
    print(f"  given     {g1:7.1f} / {g2:.1f} ms/frame (before / after the estimate run)")
    print(f"  estimate  {r['estimate_ms_per_frame']:7.1f} ms/frame ({r['estimate_loop_ms_per_frame']:.1f} per-frame loop "
          f"+ {r['finish_s']:.1f} s loop closure at the end; tracking {r['track_ms_per_frame']:.1f} ms/frame)")
    print(f"  ratio estimate / given {r['ratio']:.2f} (per-frame loop only {r['ratio_without_finish']:.2f}); "
          f"sensor rate is 33 ms/frame")
    print(f"  ATE RMSE {fmt(m.get('ate_rmse_m'), 100)} cm (max {fmt(m.get('ate_max_m'), 100)}), RPE "
          f"{fmt(m.get('rpe_trans_rmse_m'), 100)} cm / {fmt(m.get('rpe_rot_rmse_deg'), 1, 3)} deg per frame, "
          f"{fmt(m.get('rpe_trans_30f_rmse_m'), 100)} cm per 30 frames; {r['status_counts']}; "
          f"loops {r['loops']} (applied: {r['loop_closure_applied']})")
    for line in r["events"][:6]:
        print(f"    {line}")
    et, gt_ = r["estimate_timings_s"], r["given_timings_s"][0]
    n = r["frames"]
    print(f"  pipeline ms/frame  given: io {1000 * gt_['io'] / n:.1f}, integrate {1000 * gt_['integrate'] / n:.1f};  "
          f"estimate: io {1000 * et['io'] / n:.1f}, integrate {1000 * et['integrate'] / n:.1f}, "
          f"tracking {1000 * et.get('tracking', 0.0) / n:.1f} (incl. finish)")
    print(f"  tracker stages, ms per frame (wall / CPU of this process; nested sections counted in both):")
    cpu = r["stages_cpu_ms_per_frame"]
    for k, v in r["stages_ms_per_frame"].items():
        print(f"    {k:<26}{v:8.1f}{cpu[k]:8.1f}   ({r['stage_calls'][k]} calls)")


def print_replica(r: dict) -> None:
    for row in r["runs"]:
        m = row["exact_culled"]
        line = (f"replica office0 step 5, poses {row['poses']:<8}: accuracy {m['accuracy_cm']:.3f} cm, "
                f"completion {m['completion_cm']:.3f} cm, {row['frames']} frames, {row['ms_per_frame']:.0f} ms/frame")
        if "tracking" in row:
            t = row["tracking"]["metrics"]
            line += f"; ATE {fmt(t.get('ate_rmse_m'), 100)} cm, RPE {fmt(t.get('rpe_trans_rmse_m'), 100)} cm"
        print(line)
    for d in r["estimated_minus_given"]:
        print(f"  estimated - given: accuracy {d['d_accuracy_cm']:+.3f} cm, completion {d['d_completion_cm']:+.3f} cm "
              f"-> {'within' if d['within_0p5cm'] else 'NOT within'} 0.5 cm")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-root", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--max-frames", type=int, default=None, help="redkitchen frames (default all 1000)")
    ap.add_argument("--skip-replica", action="store_true", help="leave out the Replica reconstruction comparison")
    ap.add_argument("--skip-acceptance", action="store_true", help="only the --datasets runs")
    ap.add_argument("--tracker", nargs="*", default=[], metavar="KEY=VALUE", help="TrackerConfig overrides")
    ap.add_argument("--datasets", nargs="*", default=[], choices=sorted(DATASETS),
                    help="also tracker-only runs of these datasets (no pipeline)")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "tracking.json")
    args = ap.parse_args()
    overrides = parse_overrides(args.tracker)
    load_before = os.getloadavg()
    t_start = time.perf_counter()
    report: dict = {}
    if not args.skip_acceptance:
        report["redkitchen"] = acceptance_redkitchen(args.data_root, args.max_frames, overrides)
        print_redkitchen(report["redkitchen"])
        if not args.skip_replica:
            report["replica"] = acceptance_replica(overrides)
            print_replica(report["replica"])
    runs = []
    for name in args.datasets:
        print(f"[{name}] tracking (tracker only) ...", flush=True)
        runs.append(run_dataset(name, args.data_root, args.max_frames, overrides))
    if runs:
        print_tracker_runs(runs)
    load_after = os.getloadavg()
    print(f"load average {load_before[0]:.1f} -> {load_after[0]:.1f} on {os.cpu_count()} cores; "
          f"{time.perf_counter() - t_start:.0f} s in all")
    meta = {"machine": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
            "load_average_before": load_before, "load_average_after": load_after, "tracker_overrides": overrides,
            "seconds": time.perf_counter() - t_start}
    for r in report.get("replica", {}).get("runs", []):
        r.pop("trajectory", None)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"meta": meta, **report, "runs": runs}, indent=1, default=str))
    print(f"wrote {args.out}")


def print_tracker_runs(runs: list[dict]) -> None:
    header = (f"{'dataset':<15}{'frames':>7}{'ok':>6}{'ATE cm':>8}{'max cm':>8}{'RPE cm':>8}{'RPE deg':>8}"
              f"{'RPE30 cm':>9}{'LC ATE cm':>10}{'loops':>6}{'ms/trk':>8}{'ms/all':>8}")
    print(header)
    for r in runs:
        m, lc = r["no_lc"], r["loop_closure"]
        tracked = sum(v for k, v in r["status_counts"].items() if k in ("ok", "recovered", "frame_to_frame"))
        lc_ate = lc.get("metrics", {}).get("ate_rmse_m")
        lc_cell = fmt(lc_ate, 100) + ("" if lc["default_applied"] or lc_ate is None else "*")
        print(f"{r['dataset']:<15}{r['frames']:>7}{tracked:>6}{fmt(m.get('ate_rmse_m'), 100):>8}"
              f"{fmt(m.get('ate_max_m'), 100):>8}{fmt(m.get('rpe_trans_rmse_m'), 100):>8}"
              f"{fmt(m.get('rpe_rot_rmse_deg')):>8}{fmt(m.get('rpe_trans_30f_rmse_m'), 100):>9}{lc_cell:>10}"
              f"{lc['loops_verified']:>6}{r['track_ms_mean']:>8.0f}{r['loop_ms_per_frame']:>8.0f}")
        for line in r["events"][:6]:
            print(f"    {line}")
        if r["tracking_lost"]:
            print(f"    TrackingLost: {r['tracking_lost']}")
    if any(not r["loop_closure"]["default_applied"] and "metrics" in r["loop_closure"] for r in runs):
        print("* loop closure forced (min_loop_disagreement_m = 0); by default it was not applied")


if __name__ == "__main__":
    main()
