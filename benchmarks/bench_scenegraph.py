"""Scene graph of 7-Scenes redkitchen (``lite`` map): proposals vs annotations, relations, queries, time.

1. Builds the map once if ``--map`` is not given: ``semmap map 7scenes:DATA --encoder lite``
   (TSDF 2 cm, semantic feature layer, stored views), about 10 minutes on 2 cores.
2. Builds the scene graph (``scenegraph.build.build_scene_graph``), timed per step,
   with the machine's load average (the 2 cores may be shared).
3. Proposals vs the hand-made annotations ``tests/data/redkitchen_objects.json``: an
   annotated instance is found when a proposal matches it one to one at 3D box IoU >=
   0.25 or with its centroid within 20 cm (Hungarian: most matches, then highest IoU).
   Over-segmentation: proposals beyond the first whose centroid lies in an annotated
   instance's box (grown by 5 cm), other instances' matches excluded, summed.
4. Checks: the table proposal is one object with both mugs ``on`` it; every found
   chair is ``near`` or ``next_to`` the table.
5. Relational queries (``scenegraph.query``): a query hits when its top-1 subject's
   centroid is within 25 cm of, or inside the box of, one of the instances it asks for
   (the annotation file's protocol).

    python benchmarks/bench_scenegraph.py [--data ../shared/data/7scenes-redkitchen] [--map DIR]

Prints a table and writes benchmarks/results/scenegraph.json.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "7scenes-redkitchen"
ANNOTATIONS = REPO / "tests" / "data" / "redkitchen_objects.json"

QUERIES: list[tuple[str, tuple[str, ...]]] = [
    ("the mug on the table", ("mug_white", "cup_patterned")),
    ("the cup on the table", ("mug_white", "cup_patterned")),
    ("coffee mug on the dining table", ("mug_white", "cup_patterned")),
    ("chair next to the table", ("chair_left_end", "chair_far_left", "chair_far_right", "chair_near")),
    ("the chair near the table", ("chair_left_end", "chair_far_left", "chair_far_right", "chair_near")),
    ("a chair on the floor", ("chair_left_end", "chair_far_left", "chair_far_right", "chair_near")),
    ("the table on the floor", ("table",)),
    ("the joystick on the table", ("game_controller",)),
    ("the keyboard on the counter", ("keyboard",)),
    ("the screen against the wall", ("monitor_left", "monitor_right")),
]
"""(query, annotated instances that answer it)."""


def build_map(data: Path, out: Path) -> float:
    from semmap.cli import main

    t0 = time.perf_counter()
    rc = main(["map", f"7scenes:{data}", "--encoder", "lite", "--out", str(out), "--no-progress"])
    if rc != 0:
        raise SystemExit(f"semmap map failed ({rc})")
    return time.perf_counter() - t0


def match_instances(objects, annotations, iou_min: float = 0.25, dist_max: float = 0.2) -> dict[str, tuple]:
    """One-to-one matches {annotation id: (object, iou, centroid distance)}.

    A pair is eligible at box IoU >= ``iou_min`` or centroid distance <= ``dist_max``; the
    assignment maximises the number of matched instances, then their IoU (Hungarian).
    """
    from scipy.optimize import linear_sum_assignment

    from scenegraph.geometry import box_iou

    iou = np.zeros((len(annotations), len(objects)))
    dist = np.full_like(iou, np.inf)
    for i, a in enumerate(annotations):
        lo, hi, c = (np.asarray(a[k], float) for k in ("bbox_min", "bbox_max", "centroid"))
        for j, o in enumerate(objects):
            iou[i, j] = box_iou(lo, hi, o.bbox_min, o.bbox_max)
            dist[i, j] = float(np.linalg.norm(o.centroid - c))
    ok = (iou >= iou_min) | (dist <= dist_max)
    rows, cols = linear_sum_assignment(np.where(ok, -(1.0 + iou), 0.0))
    return {
        annotations[i]["id"]: (objects[j], float(iou[i, j]), float(dist[i, j])) for i, j in zip(rows, cols) if ok[i, j]
    }


def over_segmentation(objects, annotations, matches: dict, margin: float = 0.05) -> dict[str, int]:
    """Per instance: proposals beyond the first whose centroid lies in its box (grown by
    ``margin``), not counting proposals matched to other instances (the mugs on the table)."""
    taken = {aid: m[0].id for aid, m in matches.items()}
    out = {}
    for a in annotations:
        lo, hi = np.asarray(a["bbox_min"]) - margin, np.asarray(a["bbox_max"]) + margin
        others = {oid for aid, oid in taken.items() if aid != a["id"]}
        n = sum(bool(np.all(o.centroid >= lo) and np.all(o.centroid <= hi)) for o in objects if o.id not in others)
        out[a["id"]] = max(0, n - 1)
    return out


def query_hit(result, annotations: dict, wanted: tuple[str, ...], radius: float) -> bool:
    c = np.asarray(result.centroid)
    for aid in wanted:
        a = annotations[aid]
        inside = np.all(c >= np.asarray(a["bbox_min"])) and np.all(c <= np.asarray(a["bbox_max"]))
        if inside or np.linalg.norm(c - np.asarray(a["centroid"])) <= radius:
            return True
    return False


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--map", type=Path, default=None, help="existing lite map directory (skips mapping)")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "scenegraph.json")
    args = ap.parse_args()

    from scenegraph.build import GraphConfig, build_scene_graph
    from scenegraph.query import answer_graph, load_query_encoder
    from scenegraph.report import write_outputs

    map_dir = args.map
    map_seconds = None
    if map_dir is None:
        map_dir = Path("/tmp") / "semmap_bench_scenegraph_map"
        map_seconds = build_map(args.data, map_dir)
    meta = json.loads((map_dir / "map.json").read_text())
    ann_doc = json.loads(ANNOTATIONS.read_text())
    annotations = ann_doc["objects"]
    by_id = {a["id"]: a for a in annotations}

    load = os.getloadavg()
    t0 = time.perf_counter()
    graph = build_scene_graph(map_dir, GraphConfig())
    build_s = time.perf_counter() - t0
    write_outputs(graph, map_dir)
    objects = [o for o in graph.objects if not o.is_structure]

    matches = match_instances(objects, annotations)
    overseg = over_segmentation(objects, annotations, matches)
    found = sorted(matches)
    missed = sorted(set(by_id) - set(matches))

    # table with the mugs on it; chairs near / next to the table
    checks = {}
    table = matches.get("table", (None,))[0]
    if table is not None:
        for mug in ("mug_white", "cup_patterned"):
            m = matches.get(mug, (None,))[0]
            checks[f"{mug} on table"] = bool(m is not None and graph.score(m.id, "on", table.id) > 0)
        for chair in ("chair_left_end", "chair_far_left", "chair_far_right", "chair_near"):
            c = matches.get(chair, (None,))[0]
            checks[f"{chair} near/next_to table"] = bool(
                c is not None and max(graph.score(c.id, "near", table.id), graph.score(c.id, "next_to", table.id)) > 0
            )

    encoder = load_query_encoder(graph)
    radius = float(ann_doc.get("hit_radius_m", 0.25))
    queries = []
    for text, wanted in QUERIES:
        t1 = time.perf_counter()
        ans = answer_graph(graph, text, encoder, top=3)
        dt = time.perf_counter() - t1
        top = ans[0] if len(ans) else None
        hit = bool(top is not None and query_hit(top, by_id, wanted, radius))
        queries.append(
            {
                "query": text,
                "wanted": list(wanted),
                "mode": ans.mode,
                "hit_top1": hit,
                "top1": top.to_dict() if top is not None else None,
                "seconds": round(dt, 3),
            }
        )

    result = {
        "map": str(map_dir),
        "map_frames": meta.get("frames_integrated"),
        "map_voxel_m": (meta.get("config") or {}).get("voxel_size_m"),
        "map_seconds": map_seconds,
        "graph_build_seconds": round(build_s, 2),
        "graph_timings_s": graph.metadata["timings_s"],
        "load_average_before": [round(x, 2) for x in load],
        "cpu_count": os.cpu_count(),
        "proposals": len(objects),
        "structure": [o.kind for o in graph.objects if o.is_structure],
        "up": [round(float(x), 4) for x in graph.up],
        "annotated_instances": len(annotations),
        "found": found,
        "missed": missed,
        "recall": round(len(found) / len(annotations), 4),
        "matches": {k: {"object": v[0].name, "label": v[0].label, "iou": round(v[1], 3), "centroid_dist_m": round(v[2], 3)} for k, v in matches.items()},
        "over_segmentation": overseg,
        "over_segmentation_total": int(sum(overseg.values())),
        "checks": checks,
        "queries": queries,
        "query_hit_rate": round(sum(q["hit_top1"] for q in queries) / len(queries), 4),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))

    print(f"\nscene graph of {map_dir} ({result['map_frames']} frames, voxel {result['map_voxel_m']} m)")
    print(f"  build {build_s:.1f} s on {os.cpu_count()} cores, load average {load[0]:.1f}: "
          + ", ".join(f"{k} {v:.1f}" for k, v in graph.metadata["timings_s"].items() if k != "total"))
    print(f"  {len(objects)} proposals, structure {result['structure']}, up {result['up']}")
    print(f"  annotated instances found: {len(found)}/{len(annotations)} (IoU >= 0.25 or centroid <= 20 cm); "
          f"over-segmentation {result['over_segmentation_total']} extra proposals")
    print(f"  {'instance':<16} {'proposal':<18} {'label':<12} {'IoU':>5} {'dist':>5} {'extra':>5}")
    for a in annotations:
        m = matches.get(a["id"])
        if m:
            print(f"  {a['id']:<16} {m[0].name:<18} {m[0].label:<12} {m[1]:5.2f} {m[2]:5.2f} {overseg[a['id']]:5d}")
        else:
            print(f"  {a['id']:<16} {'-':<18} {'':<12} {'':>5} {'':>5} {overseg[a['id']]:5d}")
    print("  checks:")
    for k, v in checks.items():
        print(f"    {'ok  ' if v else 'FAIL'} {k}")
    print(f"  relational queries: top-1 hit rate {result['query_hit_rate']:.2f} ({sum(q['hit_top1'] for q in queries)}/{len(queries)})")
    for q in queries:
        t = q["top1"]
        desc = f"{t['name']} {t.get('relation', '')} {t.get('partner_name', '')}".strip() if t else "(none)"
        print(f"    {'hit ' if q['hit_top1'] else 'miss'} {q['query']!r:40} -> {desc}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
