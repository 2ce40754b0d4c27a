"""``semmap demo``: generate a room, render a noisy RGB-D sequence, map it, evaluate it.

Runs offline on a fresh install. Writes into ``out_dir``:
``scene/gt_mesh.ply`` (the generated room), ``scene/instances.json``, the labelled ground
truth ``scene/gt_mesh_labels.ply``, ``scene/gt_classes.json``, ``scene/gt_objects.json``
(``sensors.synthetic.write_labelled_ground_truth``), ``map/`` (the map directory of ``semmap
map``), ``map/recon_metrics.json``, ``map/recon_errors.png``, the scene graph
``map/scene_graph.{json,graphml,png}`` checked against the generated objects and relations,
and with a feature layer (``features``, default ``oracle``) the semantic segmentation
(``map/semantic_metrics.json``, ``semantic_iou.png``, ``semantic_errors.png``) and query hits
(``map/query_metrics.json``) against the labelled ground truth.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

from semmap.pipeline import MapConfig, build_map, save_map


@dataclass
class DemoConfig:
    """Settings of the demo run."""

    out_dir: Path = Path("semmap_demo")
    """Output folder."""
    n_frames: int = 60
    """Frames rendered along the orbit."""
    width: int = 320
    """Rendered image width, pixels."""
    height: int = 240
    """Rendered image height, pixels."""
    voxel_size_m: float = 0.02
    """TSDF voxel edge, metres."""
    noise: str = "none"
    """Depth-sensor noise preset (none, kinect, heavy); try kinect to see a structured-light sensor's effect."""
    device: str = "cpu"
    """"cpu" or "cuda"."""
    seed: int = 0
    """Scene and noise seed."""
    features: str | None = "oracle"
    """Semantic features with the ``lite`` encoder: "oracle" (true class names, the pipeline's
    ceiling), "segments" (lite itself; slower) or None (geometry only)."""


def run_demo(cfg: DemoConfig) -> dict:
    """Run the demo and print a summary; returns the summary dict."""
    import open3d as o3d

    from eval.recon import Culling, evaluate_reconstruction
    from scenegraph import GraphConfig, build_scene_graph, write_outputs
    from scenegraph.evaluate import check_against_scene
    from semmap.stages.views import ViewsStage
    from eval.report import write_recon_report
    from sensors import Camera
    from sensors.scenes import make_room, orbit_trajectory
    from sensors.synthetic import SyntheticSource, write_labelled_ground_truth

    t0 = time.perf_counter()
    out = Path(cfg.out_dir)
    scene_dir = out / "scene"
    scene_dir.mkdir(parents=True, exist_ok=True)
    scene = make_room(seed=cfg.seed)
    gt_path = scene_dir / "gt_mesh.ply"
    o3d.io.write_triangle_mesh(str(gt_path), scene.mesh)
    (scene_dir / "instances.json").write_text(json.dumps(_scene_json(scene), indent=1))

    camera = Camera(0.8 * cfg.width, 0.8 * cfg.width, (cfg.width - 1) / 2, (cfg.height - 1) / 2, cfg.width, cfg.height)
    traj = orbit_trajectory(scene, cfg.n_frames)
    source = SyntheticSource(scene, traj, camera=camera, noise=cfg.noise, noise_seed=cfg.seed)
    map_cfg = MapConfig(voxel_size_m=cfg.voxel_size_m, depth_max_m=6.0, device=cfg.device)
    stages: list = [ViewsStage()]
    if cfg.features:
        from mapping.fusion import FusionConfig
        from semmap.stages.semantic import SemanticConfig, SemanticStage

        fusion = FusionConfig(depth_max_m=map_cfg.depth_max_m)  # features over the TSDF's depth range
        sem = SemanticConfig(encoder="lite", features=cfg.features, device=cfg.device, fusion=fusion)
        stages.insert(0, SemanticStage(sem))
    gt_labels = write_labelled_ground_truth(scene, scene_dir)
    result = build_map(source, map_cfg, stages)
    map_dir = out / "map"
    save_map(result, map_dir, f"demo room (seed {cfg.seed}, noise {cfg.noise})", map_cfg, stages)

    culling = Culling(camera, result.trajectory.T_world_cam, max_depth_m=map_cfg.depth_max_m)
    metrics = evaluate_reconstruction(map_dir / "mesh.ply", gt_path, mode="exact", culling=culling)
    report_paths = write_recon_report(metrics, map_dir)
    graph = build_scene_graph(map_dir, GraphConfig(embed=bool(cfg.features)))  # no features: geometry only
    report_paths += list(write_outputs(graph, map_dir).values())
    graph_check = check_against_scene(graph, scene)
    semantic = queries = None
    if cfg.features:
        from eval.queries import evaluate_queries
        from eval.report import write_json
        from eval.semantic import evaluate_semantic, write_semantic_report

        semantic = evaluate_semantic(
            map_dir, gt_labels["mesh"], gt_labels["classes"], unmatched="exclude", sample_spacing_m=0.02
        )
        report_paths += write_semantic_report(semantic, map_dir)
        queries = evaluate_queries(map_dir, gt_labels["annotations"], top=3)
        report_paths.append(write_json(queries.to_dict(), map_dir / "query_metrics.json"))
    elapsed = time.perf_counter() - t0

    n = result.frames_integrated
    print()
    print(f"semmap demo: {len(scene.instances)} objects in a generated room, {n} frames {cfg.width}x{cfg.height}, "
          f"noise '{cfg.noise}', voxel {100 * cfg.voxel_size_m:.0f} cm")
    print(f"  mapping: {1000 * result.timings_s['total'] / n:.1f} ms/frame (render + integrate), "
          f"{result.tsdf.num_blocks} blocks")
    print("  reconstruction vs generated ground truth (seen surface):")
    print("    " + metrics.summary().replace("\n", "\n    "))
    print("  scene graph vs generated ground truth:")
    print("    " + graph_check.summary().replace("\n", "\n    "))
    if semantic is not None:
        print(f"  semantic segmentation ({cfg.features} features, lite text space) vs labelled ground truth:")
        print("    " + semantic.summary().replace("\n", "\n    "))
        r = {k: queries.rates(k) for k in (None, "plain", "relational")}
        print(
            "  text queries (generated from the ground truth): "
            + ", ".join(f"{k or 'all'} top-1 {100 * v['top1']:.0f} % / top-3 {100 * v['top3']:.0f} % ({v['queries']})"
                        for k, v in r.items() if v["queries"])
        )
    print(f"  total {elapsed:.1f} s")
    print(f"wrote demo outputs to {out}/")
    for p in [gt_path, scene_dir / "instances.json", *gt_labels.values(), map_dir / "mesh.ply", *report_paths]:
        print(f"  {p}")
    return {
        "frames": n,
        "seconds": elapsed,
        "metrics": metrics,
        "graph_check": graph_check,
        "semantic": semantic,
        "queries": queries,
    }


def _scene_json(scene) -> dict:
    """Instances and relations of a generated scene as plain JSON."""
    return {
        "seed": scene.seed,
        "room_size_m": [float(x) for x in scene.room_size_m],
        "instances": [
            {
                "id": i.id,
                "name": i.name,
                "label": i.label,
                "is_structure": i.is_structure,
                "bbox_min": [float(x) for x in i.bbox_min],
                "bbox_max": [float(x) for x in i.bbox_max],
                "color": i.color_name,
            }
            for i in scene.instances
        ],
        "relations": [list(r) for r in scene.relations_named()],
    }
