"""Feature-fusion time per frame against map size: sorted-key index (before) vs Open3D hash map (after).

A generated multi-room scene (a grid of axis-aligned box rooms, 6 x 6 x 3 m each by default)
is swept by a camera that stands in the middle of each room and turns through yaw and pitch
steps; depth is the exact ray-box distance, features are random unit vectors with full
confidence. Every frame is fused with ``FeatureGrid.fuse_frame`` twice, into two grids:

- ``before``: the ``FeatureGrid`` of ``mapping/fusion.py`` at commit ``BEFORE_COMMIT``
  (read with ``git show`` into a temporary module): a sorted key array whose inserts use
  ``np.insert``, O(N) per frame;
- ``after``: the current ``mapping.fusion.FeatureGrid`` (Open3D ``core.HashMap`` index).

Per frame it records the map size before the frame, the fuse time of each, and the part of it
spent looking the frame's voxels up and inserting the new ones (the only part that changed);
the table gives the means per frame within map-size bins. Both grids must end identical (same keys
in the same order, same embeddings, weights and counts); the script fails otherwise.

    python benchmarks/bench_fuse_scaling.py [--rooms 5 5] [--dim 384] [--stride 4] [--out PATH]

Defaults: 25 rooms, about 1.5 M semantic voxels at 5 cm, 900 frames of 80 x 60 feature
pixels (stride 8, the pipeline's), D = 384 (``lite``). Takes about 2 minutes on 2 idle
cores (6 under heavy load; both implementations) and about 4 GB of memory. Prints a table and writes benchmarks/results/fuse_scaling.json.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]

BEFORE_COMMIT = "d7ee567"
"""Last commit whose ``mapping/fusion.py`` has the sorted-key (``np.insert``) FeatureGrid."""

BINS = (0, 100_000, 250_000, 500_000, 750_000, 1_000_000, 10**12)


def load_before_grid():
    """The ``FeatureGrid`` class of ``mapping/fusion.py`` at ``BEFORE_COMMIT``, as a temp module."""
    try:
        src = subprocess.run(
            ["git", "show", f"{BEFORE_COMMIT}:mapping/fusion.py"],
            cwd=REPO,
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    except (subprocess.CalledProcessError, FileNotFoundError) as e:
        raise SystemExit(f"cannot read mapping/fusion.py at {BEFORE_COMMIT} with git (need the history): {e}")
    tmp = Path(tempfile.mkdtemp()) / "fusion_before.py"
    tmp.write_text(src)
    spec = importlib.util.spec_from_file_location("fusion_before", tmp)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up while the class is made
    spec.loader.exec_module(mod)
    return mod.FeatureGrid


def time_index(grid) -> list[float]:
    """Wrap ``grid.find`` and ``grid._append`` (lookup of a frame's voxels, insertion of its new
    ones) with a timer; returns the one-element list their seconds accumulate in."""
    spent = [0.0]
    for name in ("find", "_append"):
        method = getattr(grid, name)

        def timed(*args, _method=method, **kwargs):
            t0 = time.perf_counter()
            out = _method(*args, **kwargs)
            spent[0] += time.perf_counter() - t0
            return out

        setattr(grid, name, timed)
    return spent


def rooms(nx: int, ny: int, size_m: tuple[float, float, float]) -> list[tuple[np.ndarray, np.ndarray]]:
    """(lo, hi) world-frame corners (metres) of an nx x ny grid of box rooms, z up from 0."""
    sx, sy, sz = size_m
    return [
        (np.array([i * sx, j * sy, 0.0]), np.array([(i + 1) * sx, (j + 1) * sy, sz]))
        for j in range(ny)
        for i in range(nx)
    ]


def look_pose(eye: np.ndarray, yaw: float, pitch: float) -> np.ndarray:
    """(4, 4) T_world_cam of an OpenCV camera (x right, y down, z forward) at ``eye`` looking
    along yaw (about world z) and pitch (up positive), radians."""
    fwd = np.array([np.cos(pitch) * np.cos(yaw), np.cos(pitch) * np.sin(yaw), np.sin(pitch)])
    right = np.cross(fwd, [0.0, 0.0, 1.0])
    right /= np.linalg.norm(right)
    down = np.cross(fwd, right)
    T = np.eye(4)
    T[:3, :3] = np.stack([right, down, fwd], axis=1)
    T[:3, 3] = eye
    return T


def box_depth(camera, T_world_cam: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """(H, W) float32 z-depth (metres) of the inside of the box [lo, hi] seen from a camera inside it."""
    u, v = np.meshgrid(np.arange(camera.width), np.arange(camera.height))
    rays_cam = np.stack([(u - camera.cx) / camera.fx, (v - camera.cy) / camera.fy, np.ones_like(u, float)], -1)
    d = rays_cam @ T_world_cam[:3, :3].T  # world directions with z_cam = 1
    o = T_world_cam[:3, 3]
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(d > 0, (hi - o) / d, np.where(d < 0, (lo - o) / d, np.inf))
    return t.min(axis=-1).astype(np.float32)  # t along rays with z_cam = 1 is the z-depth


def frames(room_boxes, camera, yaw_steps: int, pitches_deg: tuple[float, ...]):
    """Yield (T_world_cam, depth_m) sweeping every room from its centre."""
    for lo, hi in room_boxes:
        eye = (lo + hi) / 2
        for p in pitches_deg:
            for k in range(yaw_steps):
                T = look_pose(eye, 2 * np.pi * k / yaw_steps, np.radians(p))
                yield T, box_depth(camera, T, lo, hi)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rooms", type=int, nargs=2, default=(5, 5), help="rooms along x and y")
    ap.add_argument("--room-size", type=float, nargs=3, default=(6.0, 6.0, 3.0), help="metres")
    ap.add_argument("--voxel", type=float, default=0.05, help="semantic voxel edge, metres")
    ap.add_argument("--dim", type=int, default=384, help="embedding dimension")
    ap.add_argument("--stride", type=int, default=8, help="frame pixels per feature pixel (640 x 480 frames)")
    ap.add_argument("--yaw-steps", type=int, default=12)
    ap.add_argument("--pitches", type=float, nargs="+", default=(-50.0, 0.0, 50.0), help="degrees")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "fuse_scaling.json")
    args = ap.parse_args()

    import open3d.core  # noqa: F401  (imported before the timing: the grid imports it on first use)
    from tqdm import tqdm

    from mapping.features import DenseFeatures
    from mapping.fusion import FeatureGrid, FusionConfig
    from sensors.camera import Camera

    Before = load_before_grid()
    camera = Camera(320.0, 320.0, 319.5, 239.5, 640, 480)  # 90 degree horizontal field of view
    h, w = round(480 / args.stride), round(640 / args.stride)
    config = FusionConfig(depth_max_m=6.0)
    grids = {"before": Before(args.voxel, args.dim), "after": FeatureGrid(args.voxel, args.dim)}
    rng = np.random.default_rng(0)
    boxes = rooms(*args.rooms, tuple(args.room_size))
    n_frames = len(boxes) * len(args.pitches) * args.yaw_steps
    sizes, times, index_times = [], {k: [] for k in grids}, {k: [] for k in grids}
    index_spent = {k: time_index(g) for k, g in grids.items()}
    for T, depth in tqdm(frames(boxes, camera, args.yaw_steps, tuple(args.pitches)), total=n_frames, desc="fuse"):
        f = rng.normal(size=(h, w, args.dim)).astype(np.float32)
        f /= np.linalg.norm(f, axis=-1, keepdims=True)
        dense = DenseFeatures(f, np.ones((h, w), np.float32), (480, 640))
        sizes.append(len(grids["after"]))
        for name, g in grids.items():
            index_before = index_spent[name][0]
            t0 = time.perf_counter()
            g.fuse_frame(dense, depth, camera, T, config)
            times[name].append(time.perf_counter() - t0)
            index_times[name].append(index_spent[name][0] - index_before)

    a, b = grids["after"], grids["before"]
    same = (
        len(a) == len(b)
        and np.array_equal(a.keys, b.keys)
        and np.array_equal(a.embeddings, b.embeddings)
        and np.array_equal(a.weights, b.weights)
        and np.array_equal(a.counts, b.counts)
    )
    if not same:
        raise SystemExit("before and after grids differ: the new FeatureGrid does not reproduce the old one")

    sizes_a = np.asarray(sizes)
    rows = []
    for lo, hi in zip(BINS[:-1], BINS[1:]):
        sel = (sizes_a >= lo) & (sizes_a < hi)
        if not sel.any():
            continue
        tb, ta = (1e3 * np.mean(np.asarray(times[k])[sel]) for k in ("before", "after"))
        ib, ia = (1e3 * np.mean(np.asarray(index_times[k])[sel]) for k in ("before", "after"))
        rows.append({"map_voxels_from": lo, "map_voxels_to": min(hi, int(sizes_a.max()) + 1),
                     "frames": int(sel.sum()), "before_ms": tb, "after_ms": ta, "speedup": tb / ta,
                     "before_index_ms": ib, "after_index_ms": ia})

    print(f"\n{n_frames} frames of {h} x {w} feature pixels, D = {args.dim}, {len(a)} voxels at "
          f"{args.voxel * 100:g} cm; grids identical: {same}")
    print("fuse = whole fuse_frame; index = its voxel lookup + insertion of new voxels (ms per frame)")
    print(f"{'map size (voxels)':>24} {'frames':>7} {'fuse before':>12} {'fuse after':>11} {'speedup':>8} "
          f"{'index before':>13} {'index after':>12}")
    for r in rows:
        span = f"{r['map_voxels_from']:,}-{r['map_voxels_to']:,}"
        print(f"{span:>24} {r['frames']:>7} {r['before_ms']:>12.1f} {r['after_ms']:>11.1f} {r['speedup']:>7.2f}x "
              f"{r['before_index_ms']:>13.1f} {r['after_index_ms']:>12.1f}")
    total = {k: float(np.sum(v)) for k, v in times.items()}
    print(f"total fuse time: before {total['before']:.1f} s, after {total['after']:.1f} s")

    args.out.parent.mkdir(parents=True, exist_ok=True)
    result = {
        "benchmark": "fuse_scaling",
        "before": f"mapping/fusion.py at {BEFORE_COMMIT} (sorted keys, np.insert)",
        "after": "mapping.fusion.FeatureGrid (open3d.core.HashMap index)",
        "settings": {**{k: v for k, v in vars(args).items() if k != "out"}, "feature_shape": [h, w]},
        "frames": n_frames,
        "final_voxels": len(a),
        "grids_identical": bool(same),
        "bins": rows,
        "total_s": total,
        "per_frame": {"map_voxels": sizes, "before_s": times["before"], "after_s": times["after"],
                      "before_index_s": index_times["before"], "after_index_s": index_times["after"]},
        "machine": {"python": platform.python_version(), "processor": platform.processor(), "node": platform.node()},
    }
    args.out.write_text(json.dumps(result, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
