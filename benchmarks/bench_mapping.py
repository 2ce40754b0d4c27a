"""Mapping throughput and peak memory: semmap vs a plain Open3D VoxelBlockGrid loop.

Both loops read the same frames through the same source (so image reading and
colour registration cost the same) and integrate them at the same voxel size,
truncation and depth range. Each configuration runs in its own child process
so that its peak resident memory (ru_maxrss) is its own. Configurations are
interleaved (semmap, plain, semmap, plain, ...) so drift hits both alike.

    python benchmarks/bench_mapping.py [--data ../shared/data/7scenes-redkitchen] [--voxels 0.02 0.01]

Prints a table and writes benchmarks/results/mapping.json.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import resource
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "7scenes-redkitchen"


def _semmap_run(source_spec: str, voxel: float, max_frames: int | None, out_dir: str, q: mp.Queue) -> None:
    from semmap.pipeline import MapConfig, build_map, save_map
    from sensors import open_source

    cfg = MapConfig(voxel_size_m=voxel, depth_max_m=4.0, max_frames=max_frames, progress=True)
    t0 = time.perf_counter()
    with open_source(source_spec) as src:
        result = build_map(src, cfg)
    t_loop = time.perf_counter() - t0
    save_map(result, out_dir, source_spec, cfg)
    t_total = time.perf_counter() - t0
    q.put(
        {
            "frames": result.frames_integrated,
            "loop_s": t_loop,
            "total_s": t_total,
            "io_s": result.timings_s["io"],
            "blocks": result.tsdf.num_blocks,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        }
    )


def _plain_run(source_spec: str, voxel: float, max_frames: int | None, q: mp.Queue) -> None:
    """The reference: the loop from Open3D's own VoxelBlockGrid integration example."""
    import numpy as np
    import open3d as o3d
    from tqdm import tqdm

    from sensors import open_source

    o3c = o3d.core
    device = o3c.Device("CPU:0")
    trunc = 4.0
    vbg = o3d.t.geometry.VoxelBlockGrid(
        attr_names=("tsdf", "weight", "color"),
        attr_dtypes=(o3c.float32, o3c.float32, o3c.float32),
        attr_channels=((1), (1), (3)),
        voxel_size=voxel,
        block_resolution=16,
        block_count=2000,
        device=device,
    )
    t0 = time.perf_counter()
    io = 0.0
    n = 0
    with open_source(source_spec) as src:
        frames = src.frames(1, max_frames)
        bar = tqdm(total=src.count(1, max_frames), desc="plain o3d", unit="frame")
        while True:
            ta = time.perf_counter()
            f = next(frames, None)
            io += time.perf_counter() - ta
            if f is None:
                break
            depth = np.where(f.depth >= 0.1, f.depth, 0).astype(np.float32)
            d = o3d.t.geometry.Image(o3c.Tensor(depth[..., None]))
            c = o3d.t.geometry.Image(o3c.Tensor(f.rgb).to(o3c.float32) / 255.0)
            K = o3c.Tensor(f.camera.K)
            ext = o3c.Tensor(np.linalg.inv(f.T_world_cam))
            bc = vbg.compute_unique_block_coordinates(d, K, ext, 1.0, 4.0, trunc)
            vbg.integrate(bc, d, c, K, K, ext, 1.0, 4.0, trunc)
            n += 1
            bar.update(1)
        bar.close()
    t_loop = time.perf_counter() - t0
    mesh = vbg.extract_triangle_mesh(weight_threshold=0.5)
    q.put(
        {
            "frames": n,
            "loop_s": t_loop,
            "total_s": time.perf_counter() - t0,
            "io_s": io,
            "blocks": int(vbg.hashmap().size()),
            "mesh_vertices": int(mesh.vertex.positions.shape[0]),
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        }
    )


def _child(target, *args) -> dict:
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=target, args=(*args, q))
    p.start()
    res = q.get()
    p.join()
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--voxels", type=float, nargs="+", default=[0.02, 0.01])
    ap.add_argument("--max-frames", type=int, default=None)
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "mapping.json")
    args = ap.parse_args()
    spec = f"7scenes:{args.data}"
    rows = []
    for voxel in args.voxels:
        ours = _child(_semmap_run, spec, voxel, args.max_frames, str(REPO / "benchmarks" / "results" / f"map_{voxel}"))
        plain = _child(_plain_run, spec, voxel, args.max_frames)
        for name, r in (("semmap map", ours), ("plain Open3D VBG", plain)):
            r.update(method=name, voxel_m=voxel, ms_per_frame_loop=1000 * r["loop_s"] / r["frames"],
                     ms_per_frame_io=1000 * r["io_s"] / r["frames"])
            rows.append(r)
        ours["ratio_vs_plain"] = ours["ms_per_frame_loop"] / plain["ms_per_frame_loop"]
    hdr = f"{'method':<18}{'voxel':>7}{'frames':>7}{'ms/frame':>10}{'io ms':>8}{'total s':>9}{'blocks':>8}{'peak MB':>9}{'ratio':>7}"
    print(hdr)
    print("-" * len(hdr))
    for r in rows:
        ratio = f"{r['ratio_vs_plain']:.2f}" if "ratio_vs_plain" in r else ""
        print(f"{r['method']:<18}{r['voxel_m']:>7.3f}{r['frames']:>7}{r['ms_per_frame_loop']:>10.1f}"
              f"{r['ms_per_frame_io']:>8.1f}{r['total_s']:>9.1f}{r['blocks']:>8}{r['peak_rss_mb']:>9.0f}{ratio:>7}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"data": str(args.data), "rows": rows}, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
