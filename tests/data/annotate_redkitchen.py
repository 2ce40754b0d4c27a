"""Regenerate ``redkitchen_objects.json``: 3D ground truth of objects in 7-Scenes redkitchen.

Boxes were drawn by hand (pixel rectangles on the colour images, looked at with a pixel
grid) on two to four frames per object. Each box is back-projected with the frame's
colour-registered depth (``sensors.open_source("7scenes:...")``) and ground-truth pose:

- ``method="depth"``: the object is the depth layer at the box centre: pixels whose depth
  is within ``depth_tol_m`` of the median depth of the central third of the box
  (drops the table or wall behind a mug, the floor behind a chair's slats);
- ``method="plane"``: the dominant plane in the box (RANSAC, 2 cm inliers), for the table top;
  with ``floor=(frame, box)`` the object stands on the floor (a table on its legs): its box
  also holds the top's points moved along gravity (``gravity-direction.txt``) down to the
  floor plane fitted (RANSAC) in that box, while its centroid stays the top's. (Fix: the
  first version of this file boxed the table top only, 40 cm thick, so the table's own
  legs lay outside the table's box.)
- ``method="ray_plane"``: for a flat object without depth (a glossy screen): the plane
  fitted (RANSAC) to the valid depth in the box widened by ``tol`` pixels (the wall and
  bezel around it), intersected with the rays of the box's pixels.

An object's points are the union of its views; its centroid is the per-axis median and
its box the 2nd-98th percentile per axis (world frame, metres). The spread of the
per-view centroids is stored as a consistency check. Annotations were fixed before the
semantic map was queried against them; nothing here was tuned to query results.

    python tests/data/annotate_redkitchen.py [--data ../shared/data/7scenes-redkitchen]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
DEFAULT_DATA = HERE.parents[2] / "shared" / "data" / "7scenes-redkitchen"
OUT = HERE / "redkitchen_objects.json"

# object id -> label, query words, method, depth tolerance (m), views [(frame, (x0, y0, x1, y1)), ...]
# Boxes are (x0, y0, x1, y1) colour pixels, x1/y1 exclusive.
OBJECTS: dict[str, dict] = {
    "mug_white": dict(
        label="white coffee mug", queries=["coffee mug", "mug", "cup"], method="depth", tol=0.06,
        views=[(0, (358, 162, 400, 200)), (250, (205, 308, 250, 358)), (600, (345, 292, 408, 358)),
               (945, (62, 335, 112, 390))],
    ),
    "cup_patterned": dict(
        label="small patterned cup", queries=["coffee mug", "mug", "cup"], method="depth", tol=0.06,
        views=[(315, (418, 245, 462, 298)), (500, (470, 402, 515, 455)), (900, (498, 318, 545, 365)),
               (945, (485, 290, 522, 335))],
    ),
    "table": dict(
        label="wooden dining table (top, box down to the floor)", queries=["dining table", "table"], method="plane",
        tol=0.0, floor=(0, (0, 340, 90, 470)),
        views=[(0, (250, 170, 600, 330)), (315, (0, 200, 640, 470)), (378, (0, 130, 640, 380)),
               (945, (0, 290, 640, 480))],
    ),
    "chair_left_end": dict(
        label="chair at the left end of the table", queries=["chair"], method="depth", tol=0.3,
        views=[(0, (175, 128, 300, 330)), (40, (215, 112, 345, 330)), (100, (420, 155, 590, 470)),
               (600, (45, 240, 280, 440))],
    ),
    "chair_far_left": dict(
        label="chair on the far side, left", queries=["chair"], method="depth", tol=0.25,
        views=[(0, (420, 147, 545, 200)), (250, (275, 250, 410, 310)), (500, (220, 228, 360, 290)),
               (900, (90, 265, 240, 380))],
    ),
    "chair_far_right": dict(
        label="chair on the far side, right", queries=["chair"], method="depth", tol=0.25,
        views=[(378, (310, 110, 450, 180)), (819, (415, 105, 555, 180)), (900, (405, 220, 540, 270)),
               (945, (440, 205, 590, 240))],
    ),
    "chair_near": dict(
        label="chair on the near side (start of the sequence)", queries=["chair"], method="depth", tol=0.25,
        views=[(0, (330, 375, 570, 480)), (40, (395, 385, 640, 480))],
    ),
    "monitor_left": dict(
        label="left wall-mounted screen", queries=["monitor", "screen"], method="ray_plane", tol=30,
        views=[(450, (305, 20, 415, 95)), (460, (395, 25, 485, 135)), (470, (445, 35, 590, 150))],
    ),
    "monitor_right": dict(
        label="right wall-mounted screen (no depth on its glass: seen in frames 445-455 only)",
        queries=["monitor", "screen"], method="ray_plane", tol=30,
        views=[(445, (445, 5, 595, 120)), (450, (485, 30, 625, 155))],
    ),
    "keyboard": dict(
        label="keyboard on the counter", queries=["computer keyboard", "keyboard"], method="depth", tol=0.08,
        views=[(0, (483, 80, 585, 110)), (800, (130, 70, 265, 100)), (945, (165, 160, 270, 185))],
    ),
    "pc_tower": dict(
        label="PC tower under the shelf", queries=["desktop computer", "computer tower"], method="depth", tol=0.15,
        views=[(220, (440, 280, 490, 345)), (250, (425, 270, 465, 315)), (500, (415, 240, 480, 330)),
               (945, (280, 235, 325, 285))],
    ),
    "game_controller": dict(
        label="red game controller on the table", queries=["joystick"], method="depth", tol=0.05,
        views=[(378, (390, 250, 495, 322)), (400, (270, 245, 365, 325))],
    ),
}

QUERIES = ["coffee mug", "computer keyboard", "monitor", "dining table", "desktop computer", "chair"]
"""The evaluated queries (ImageNet-like words); each object lists the queries that name it."""


def ransac_plane(p: np.ndarray, rng, inlier_m: float = 0.02, iters: int = 300) -> tuple[np.ndarray, np.ndarray]:
    """(unit normal n, point a) of the plane with the most points within ``inlier_m``; p is (M, 3)."""
    best, best_n = None, -1
    for _ in range(iters):
        a, b, c = p[rng.choice(len(p), 3, replace=False)]
        n = np.cross(b - a, c - a)
        if np.linalg.norm(n) < 1e-9:
            continue
        n /= np.linalg.norm(n)
        count = int((np.abs((p - a) @ n) < inlier_m).sum())
        if count > best_n:
            best, best_n = (n, a), count
    return best


def box_points(frame, box: tuple[int, int, int, int], method: str, tol: float, rng) -> np.ndarray:
    """World points (M, 3) of the object inside a pixel box of one frame."""
    x0, y0, x1, y1 = box
    depth = frame.depth
    pts_cam = frame.camera.backproject(depth)  # (H, W, 3)
    T = frame.T_world_cam
    if method == "ray_plane":
        m = int(tol)
        H, W = depth.shape
        wy0, wy1, wx0, wx1 = max(y0 - m, 0), min(y1 + m, H), max(x0 - m, 0), min(x1 + m, W)
        d = depth[wy0:wy1, wx0:wx1]
        p_all = pts_cam[wy0:wy1, wx0:wx1][np.isfinite(d) & (d > 0)]
        if len(p_all) < 50:
            raise ValueError(f"{frame.name}: too little depth around box {box}")
        n, a = ransac_plane(p_all, rng)
        rays = frame.camera.pixel_rays()[y0:y1, x0:x1].reshape(-1, 3)
        t = (a @ n) / (rays @ n)
        p = rays * t[:, None]
        return p @ T[:3, :3].T + T[:3, 3]
    sub_d = depth[y0:y1, x0:x1]
    sub_p = pts_cam[y0:y1, x0:x1]
    valid = np.isfinite(sub_d) & (sub_d > 0)
    if method == "depth":
        h, w = sub_d.shape
        inner = sub_d[h // 3 : h - h // 3, w // 3 : w - w // 3]
        inner = inner[np.isfinite(inner) & (inner > 0)]
        if inner.size == 0:
            raise ValueError(f"{frame.name}: no depth in the centre of box {box}")
        keep = valid & (np.abs(sub_d - np.median(inner)) <= tol)
        p = sub_p[keep]
    elif method == "plane":
        p_all = sub_p[valid]
        n, a = ransac_plane(p_all, rng)
        p = p_all[np.abs((p_all - a) @ n) < 0.02]
    else:
        raise ValueError(f"unknown method {method!r}")
    return p @ T[:3, :3].T + T[:3, 3]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--probe", nargs="*", default=None, help="frame:x0,y0,x1,y1:method:tol boxes to print")
    args = ap.parse_args()
    from sensors import open_source

    rng = np.random.default_rng(0)
    src = open_source(f"7scenes:{args.data}")
    if args.probe is not None:
        for spec in args.probe:
            f, b, m, t = spec.split(":")
            fr = src.load(int(f))
            try:
                p = box_points(fr, tuple(int(v) for v in b.split(",")), m, float(t), rng)
            except ValueError as e:
                print(spec, e)
                continue
            size = np.percentile(p, 98, 0) - np.percentile(p, 2, 0)
            print(spec, len(p), np.round(np.median(p, axis=0), 3), np.round(size, 2))
        return
    objects = []
    for oid, spec in OBJECTS.items():
        pts, per_view = [], []
        for frame_index, box in spec["views"]:
            p = box_points(src.load(frame_index), box, spec["method"], spec["tol"], rng)
            per_view.append({"frame": frame_index, "box_xyxy": list(box), "points": int(len(p)),
                             "centroid": np.round(np.median(p, axis=0), 4).tolist()})
            pts.append(p)
        allp = np.concatenate(pts)
        # one point per 1 cm cell, so that views with more pixels do not dominate
        _, first = np.unique(np.floor(allp / 0.01).astype(np.int64), axis=0, return_index=True)
        allp = allp[first]
        centroid = np.median(allp, axis=0)
        extra = {}
        if "floor" in spec:
            g = np.loadtxt(args.data / "gravity-direction.txt").reshape(3)
            g /= np.linalg.norm(g)
            f_index, f_box = spec["floor"]
            floor_h = float(np.median(box_points(src.load(f_index), f_box, "plane", 0.0, np.random.default_rng(1)) @ g))
            allp = np.concatenate([allp, allp + (floor_h - allp @ g)[:, None] * g])
            extra = {"floor_view": {"frame": f_index, "box_xyxy": list(f_box)}, "floor_height_m": round(floor_h, 4)}
        view_c = np.array([v["centroid"] for v in per_view])
        objects.append({
            "id": oid,
            "label": spec["label"],
            "queries": spec["queries"],
            "centroid": np.round(centroid, 4).tolist(),
            "bbox_min": np.round(np.percentile(allp, 2, axis=0), 4).tolist(),
            "bbox_max": np.round(np.percentile(allp, 98, axis=0), 4).tolist(),
            "view_spread_m": round(float(np.linalg.norm(view_c - centroid, axis=1).max()), 4),
            "method": spec["method"],
            "depth_tol_m": spec["tol"],
            "views": per_view,
            **extra,
        })
        print(f"{oid:<18} centroid {np.round(centroid, 3)} spread {objects[-1]['view_spread_m']:.3f} m "
              f"size {np.round(np.array(objects[-1]['bbox_max']) - objects[-1]['bbox_min'], 2)}")
    doc = {
        "dataset": "7-Scenes redkitchen (1000 frames), colour-registered depth, ground-truth poses",
        "frame": "world frame of the dataset poses (camera-to-world), metres",
        "protocol": "a query hits an object it names when a region centroid is within hit_radius_m of the "
        "object centroid or inside the object's box",
        "hit_radius_m": 0.25,
        "queries": QUERIES,
        "generator": "tests/data/annotate_redkitchen.py",
        "objects": objects,
    }
    OUT.write_text(json.dumps(doc, indent=1))
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
