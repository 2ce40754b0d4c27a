"""Tracking accuracy and speed: estimated poses against the dataset poses, with evo.

Each sequence is tracked the way the pipeline does it: the first frame keeps its dataset
pose (``anchor_to_given_pose``), every later frame is handed over without its pose,
tracked frames are integrated into a 2 cm map. Then ``Tracker.finalize`` runs with the
default settings (loop closure gated by ``min_loop_disagreement_m``) and, when that
changes nothing, once more with the gate at 0 to show what forced loop closure does.

Metrics (evo, SE(3) Umeyama alignment, no scale): ATE RMSE of camera centres; RPE
between consecutive tracked frames (translation m, rotation deg) and over 1 s (30 frames)
where the sequence is long enough. Times: ``track`` per frame (includes the tracker's own
1 cm model) and the whole loop per frame (reading, tracking, integrating the 2 cm map),
on this machine's CPU (shared with other jobs: pessimistic).

    python benchmarks/bench_tracking.py [--data-root ../shared/data] [--datasets redkitchen 3dmatch iclnuim]
                                        [--max-frames N]

Prints a table and writes benchmarks/results/tracking.json.
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


def run_dataset(name: str, root: Path, max_frames: int | None, model_render: str | None = None) -> dict:
    from mapping import TSDFConfig, TSDFMap
    from mapping.tracking import Tracker, TrackerConfig, TrackingLost
    from sensors.trajectory_io import Trajectory

    spec, overrides = DATASETS[name]
    frames, reader = open_frames(spec, root)
    n = len(frames) if max_frames is None else min(len(frames), max_frames)
    first = frames[0]
    # finalize re-integrates keyframes only
    render = {"model_render": model_render} if model_render else {}
    config = TrackerConfig(keep_keyframe_frames=True, **render, **overrides)
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


def fmt(x, scale=1.0, digits=2) -> str:
    return "-" if x is None else f"{scale * x:.{digits}f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-root", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--datasets", nargs="+", default=["redkitchen", "3dmatch", "iclnuim"], choices=sorted(DATASETS))
    ap.add_argument("--max-frames", type=int, default=None)
    ap.add_argument("--model-render", choices=["raycast", "mesh"], default=None,
                    help="how the tracker renders its model (default: TrackerConfig.model_render)")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "tracking.json")
    args = ap.parse_args()

    from mapping.tracking import TrackerConfig

    load_before = os.getloadavg()
    runs = []
    for name in args.datasets:
        print(f"[{name}] tracking ...", flush=True)
        runs.append(run_dataset(name, args.data_root, args.max_frames, args.model_render))

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
    args.out.parent.mkdir(parents=True, exist_ok=True)
    load_after = os.getloadavg()
    print(f"load average {load_before[0]:.1f} -> {load_after[0]:.1f} on {os.cpu_count()} cores")
    meta = {"machine": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
            "load_average_before": load_before, "load_average_after": load_after,
            "model_render": args.model_render or TrackerConfig.model_render}
    args.out.write_text(json.dumps({"meta": meta, "runs": runs}, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
