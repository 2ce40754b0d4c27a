"""`semmap batch` on real scenes: serial (one process, one scene at a time) against Ray, same run.

Scenes (from ``../shared/data``; nothing is copied: the redkitchen halves are folders of
symbolic links):

- ``kitchen_a`` / ``kitchen_b``: 7-Scenes redkitchen frames 0-499 and 500-999, poses
  estimated (trajectory evaluated against the dataset poses), ``lite`` encoder, scene
  graph, query hits against ``tests/data/redkitchen_objects.json``;
- ``office0``: Replica office0 rendered from its mesh along every ``--replica-step``-th
  pose of ``traj.txt`` (1200x680, as ``bench_replica.py``), reconstruction against the mesh
  (culled to what the cameras saw);
- ``icl``: ICL-NUIM living room from ``open3d-rgbd`` (5 frames), poses estimated;
- ``missing``: a folder that does not exist (fails alone, with its message).

Runs ``semmap batch --serial`` (one process, scenes one after another) and ``semmap batch``
on a fresh local Ray instance (one CPU per scene: 2 scenes at once on 2 cores), both as
subprocesses with ``OMP_NUM_THREADS=1`` for the serial one, so every scene runs with the
same thread count in both and the metrics must match exactly. Ideal ratio on 2 cores:
2.0 (Ray start-up and the longest scene bound it). Scenes with estimated poses are the
exception: frame-to-model tracking is not bit-reproducible from one run to the next even
in one process with one thread (``semmap map --poses estimate`` twice on ICL-NUIM: poses
differ by up to 0.5 mm after 5 frames; Open3D's hash-map order reaches the tracker's
model), so their metrics differ between any two runs; ``--control`` repeats the serial
run to show that spread next to the serial-vs-Ray one. Then the driver's memory over a
manifest of ``--memory-scenes`` tiny rendered scenes (sampled every 0.2 s against the
number of finished scenes).

    python benchmarks/bench_batch.py [--short] [--memory-scenes 20] [--skip-memory]

``--short`` (every 10th kitchen frame, every 100th office0 pose): 15 min measured on 2
cores shared with other jobs (load average ~17); the full run about 35 min at that load
(estimated from the per-frame costs; less alone). Prints a table and writes
benchmarks/results/batch.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"


def kitchen_half(root: Path, first: int, last: int, work: Path) -> tuple[Path, Path]:
    """A folder of symlinks to redkitchen frames first..last and their ground-truth TUM trajectory."""
    import numpy as np

    from sensors.io import read_pose
    from sensors.sevenscenes import FRAME_RATE_HZ
    from sensors.trajectory_io import Trajectory, write_tum

    folder = work / f"redkitchen_{first:03d}_{last:03d}"
    folder.mkdir(parents=True, exist_ok=True)
    names = ["camera-intrinsics.txt"] + [f"frame-{n:06d}.{k}" for n in range(first, last + 1)
                                         for k in ("color.jpg", "depth.png", "pose.txt")]
    for name in names:
        link = folder / name
        if not link.is_symlink():
            link.symlink_to(root / name)
    stamps = np.arange(first, last + 1) / FRAME_RATE_HZ
    poses = np.stack([read_pose(root / f"frame-{n:06d}.pose.txt") for n in range(first, last + 1)])
    return folder, write_tum(work / f"{folder.name}.tum", Trajectory(stamps, poses))


def replica_source(step: int) -> str:
    """``synthetic:`` spec rendering office0 from its mesh along its poses (every ``step``-th by stride)."""
    from sensors.io import read_json

    c = read_json(DATA / "replica-office0" / "cam_params.json")["camera"]
    return (f"synthetic:{DATA / 'replica-office0' / 'office0_mesh.ply'}?traj={DATA / 'replica-office0' / 'office0' / 'traj.txt'}"
            f"&traj_format=lines&width={c['w']}&height={c['h']}&fx={c['fx']}&fy={c['fy']}&cx={c['cx']}&cy={c['cy']}")


def real_manifest(work: Path, short: bool, replica_step: int) -> dict:
    kitchen = DATA / "7scenes-redkitchen"
    a, a_gt = kitchen_half(kitchen, 0, 499, work)
    b, b_gt = kitchen_half(kitchen, 500, 999, work)
    kstride = 10 if short else 1
    kitchen_opts = {"poses": "estimate", "encoder": "lite", "stride": kstride, "graph": True,
                    "annotations": str(REPO / "tests" / "data" / "redkitchen_objects.json")}
    return {
        "defaults": {"voxel_size_m": 0.02, "graph": False, "recon": {"cull": True}},
        "scenes": [
            {"name": "kitchen_a", "source": f"7scenes:{a}", "gt_trajectory": str(a_gt), **kitchen_opts},
            {"name": "kitchen_b", "source": f"7scenes:{b}", "gt_trajectory": str(b_gt), **kitchen_opts},
            {"name": "office0", "source": replica_source(replica_step), "stride": 100 if short else replica_step,
             "depth_max_m": 8.0, "gt_mesh": str(DATA / "replica-office0" / "office0_mesh.ply")},
            {"name": "icl", "source": f"o3dlog:{DATA / 'open3d-rgbd' / 'RGBD'}", "poses": "estimate",
             "gt_trajectory": str(DATA / "open3d-rgbd" / "RGBD" / "trajectory.log")},
            {"name": "missing", "source": f"7scenes:{DATA / 'no-such-scene'}"},
        ],
    }


def run_cli(args: list[str], env: dict | None = None, sample_rss: bool = False, jsonl: Path | None = None) -> dict:
    """Run ``semmap batch ...`` as a subprocess; wall time and (optionally) its RSS over the finished-scene count."""
    cmd = [sys.executable, "-m", "semmap", "batch", *args, "--no-progress"]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env={**os.environ, **(env or {})}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    samples = []
    if sample_rss:
        import psutil

        p = psutil.Process(proc.pid)
        while proc.poll() is None:
            try:
                rss = p.memory_info().rss
            except psutil.NoSuchProcess:
                break
            done = sum(1 for line in jsonl.open() if line.strip()) if jsonl is not None and jsonl.is_file() else 0
            samples.append((time.perf_counter() - t0, done, rss / 2**20))
            time.sleep(0.2)
    out, _ = proc.communicate()
    return {"wall_s": time.perf_counter() - t0, "rc": proc.returncode, "output": out, "rss_samples": samples}


def scene_table(doc: dict) -> dict[str, dict]:
    return {r["name"]: r for r in doc["scenes"]}


def relative_differences(a: dict, b: dict) -> dict[str, float | None]:
    """Metric -> |a - b| / max(|a|, |b|) for the metrics that differ (None when one side lacks it)."""
    out = {}
    for k in sorted(set(a) | set(b)):
        x, y = a.get(k), b.get(k)
        if x != y:
            out[k] = None if x is None or y is None else abs(x - y) / max(abs(x), abs(y), 1e-12)
    return out


def compare(serial: dict[str, dict], ray: dict[str, dict]) -> list[dict]:
    rows = []
    for name, s in serial.items():
        r = ray.get(name, {})
        same = s.get("metrics") == r.get("metrics")
        diff = relative_differences(s.get("metrics", {}), r.get("metrics", {}))
        rows.append({"name": name, "status": (s["status"], r.get("status")), "metrics_equal": same, "differ": diff,
                     "serial_s": s["timings_s"].get("total"), "ray_s": r.get("timings_s", {}).get("total"),
                     "peak_rss_mb_ray": r.get("peak_rss_mb"), "metrics": s.get("metrics"), "error": r.get("error")})
    return rows


def describe(differ: dict[str, float | None]) -> str:
    worst = max(differ, key=lambda k: -1.0 if differ[k] is None else differ[k])
    rel = differ[worst]
    return f"NO: {len(differ)} differ, most {worst} ({'missing' if rel is None else f'{100 * rel:.2g} %'})"


def memory_run(work: Path, n: int) -> dict:
    """Driver RSS over ``n`` tiny rendered scenes (semmap batch on local Ray)."""
    import numpy as np
    import open3d as o3d

    from semmap.cli import main
    from sensors.scenes import make_room, orbit_trajectory
    from sensors.trajectory_io import Trajectory, write_tum

    scene = make_room(seed=2)
    mesh = work / "tiny_room.ply"
    o3d.io.write_triangle_mesh(str(mesh), scene.mesh)
    orbit = orbit_trajectory(scene, 240)
    traj = write_tum(work / "tiny_orbit.tum", Trajectory(orbit.timestamps[:4], orbit.T_world_cam[:4]))
    seq = work / "tiny_seq"
    if not (seq / "semmap.json").is_file():
        main(["render", str(mesh), "--traj", str(traj), "--out", str(seq), "--width", "64", "--height", "48"])
    manifest = work / "tiny.json"
    manifest.write_text(json.dumps({"defaults": {"voxel_size_m": 0.08, "graph": False},
                                    "scenes": [{"name": f"t{i:03d}", "source": str(seq), "max_frames": 2 + i % 3}
                                               for i in range(n)]}))
    out = work / "tiny_out"
    res = run_cli([str(manifest), "--out", str(out)], sample_rss=True, jsonl=out / "batch.jsonl")
    s = np.array(res["rss_samples"])  # (t, done, rss MiB)
    by_done = {}
    for _, done, rss in s:
        by_done.setdefault(int(done), []).append(rss)
    per_count = {k: float(np.max(v)) for k, v in sorted(by_done.items())}
    started = s[(s[:, 1] >= 1) & (s[:, 1] < n)]  # while scenes run (the reports at the end import matplotlib)
    slope = float(np.polyfit(started[:, 1], started[:, 2], 1)[0]) if len(np.unique(started[:, 1])) > 2 else None
    return {"scenes": n, "wall_s": res["wall_s"], "rc": res["rc"], "driver_rss_mb_by_finished": per_count,
            "driver_rss_peak_running_mb": float(started[:, 2].max()) if len(started) else None,
            "driver_rss_peak_mb": float(s[:, 2].max()), "slope_mb_per_scene": slope}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--short", action="store_true", help="every 10th kitchen frame, every 100th office0 pose")
    ap.add_argument("--replica-step", type=int, default=10, help="office0: render every N-th pose (full run)")
    ap.add_argument("--memory-scenes", type=int, default=20, help="tiny scenes for the driver-memory run")
    ap.add_argument("--control", action="store_true", help="run the serial pass twice (run-to-run spread)")
    ap.add_argument("--skip-memory", action="store_true")
    ap.add_argument("--skip-real", action="store_true", help="only the driver-memory run")
    ap.add_argument("--work", type=Path, default=REPO / "benchmarks" / "results" / "batch_runs")
    ap.add_argument("--json", type=Path, default=REPO / "benchmarks" / "results" / "batch.json")
    args = ap.parse_args()
    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    result: dict = {"short": args.short, "cpus": os.cpu_count(), "load_avg_start": os.getloadavg()}
    if not args.skip_real:
        manifest = work / "real.json"
        manifest.write_text(json.dumps(real_manifest(work, args.short, args.replica_step), indent=1))
        serial = run_cli([str(manifest), "--out", str(work / "serial"), "--serial"], env={"OMP_NUM_THREADS": "1"})
        ray = run_cli([str(manifest), "--out", str(work / "ray")])
        runs = ("serial", "ray", "control") if args.control else ("serial", "ray")
        if args.control:
            run_cli([str(manifest), "--out", str(work / "control"), "--serial"], env={"OMP_NUM_THREADS": "1"})
        docs = {k: json.loads((work / k / "batch.json").read_text()) for k in runs}
        rows = compare(scene_table(docs["serial"]), scene_table(docs["ray"]))
        if args.control:
            for row, ctl in zip(rows, compare(scene_table(docs["serial"]), scene_table(docs["control"]))):
                row["serial_vs_serial_differ"] = ctl["differ"]
        ratio = serial["wall_s"] / ray["wall_s"]
        kitchen = [r for r in rows if r["name"].startswith("kitchen") and r["ray_s"]]
        per_kitchen_s = sum(r["ray_s"] for r in kitchen)  # the two halves: one whole redkitchen scene
        result["real"] = {
            "serial_wall_s": serial["wall_s"], "ray_wall_s": ray["wall_s"], "ratio": ratio, "ideal_ratio": 2.0,
            "serial_rc": serial["rc"], "ray_rc": ray["rc"], "ray_batch_wall_s": docs["ray"]["wall_s"],
            "scenes": rows, "all_metrics_equal": all(r["metrics_equal"] for r in rows),
            "redkitchen_scene_s_1cpu": per_kitchen_s,
            "redkitchen_scenes_per_hour_2core_node": 2 * 3600 / per_kitchen_s if per_kitchen_s else None,
        }
        print(f"{'scene':<11}{'status':<16}{'serial s':>9}{'ray s':>8}{'RSS MiB':>9}  metrics equal / headline")
        for r in rows:
            m = r["metrics"] or {}
            head = ", ".join(f"{k} {m[k]:.4g}" for k in ("traj_ate_rmse_m", "recon_accuracy_m", "recon_completion_m",
                                                          "queries_top1", "graph_objects") if m.get(k) is not None)
            rss = f"{r['peak_rss_mb_ray']:9.0f}" if r["peak_rss_mb_ray"] else f"{'-':>9}"
            print(f"{r['name']:<11}{'/'.join(map(str, r['status'])):<16}{r['serial_s'] or 0:9.1f}{r['ray_s'] or 0:8.1f}"
                  f"{rss}  {'yes' if r['metrics_equal'] else describe(r['differ'])}  {head}")
            if "serial_vs_serial_differ" in r:
                ctl = r["serial_vs_serial_differ"]
                print(f"{'':<11}serial run again: {describe(ctl) if ctl else 'equal'}")
            if r["error"]:
                print(f"{'':<11}error: {r['error']}")
        print(f"wall: serial {serial['wall_s']:.1f} s, Ray {ray['wall_s']:.1f} s (incl. Ray start-up), "
              f"ratio {ratio:.2f} (ideal 2.0 on 2 cores)")
        if per_kitchen_s:
            print(f"redkitchen-sized scene (both halves, 1 CPU): {per_kitchen_s:.0f} s -> "
                  f"{result['real']['redkitchen_scenes_per_hour_2core_node']:.1f} scenes/hour on a 2-core node")
    if not args.skip_memory:
        mem = memory_run(work, args.memory_scenes)
        result["memory"] = mem
        counts = sorted(mem["driver_rss_mb_by_finished"])
        marks = [c for c in counts if c in (0, 1, 5, 10, 15, 20, 30, 40) or c == counts[-1]]
        slope = mem["slope_mb_per_scene"]
        print(f"driver RSS over {mem['scenes']} tiny scenes (MiB by scenes finished): "
              + ", ".join(f"{c}: {mem['driver_rss_mb_by_finished'][c]:.0f}" for c in marks)
              + (f"; slope {slope:.3f} MiB/scene" if slope is not None else ""))
    result["load_avg_end"] = os.getloadavg()
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=1, default=str))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
