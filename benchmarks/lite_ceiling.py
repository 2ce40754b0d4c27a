"""Can the ``lite`` encoder see the annotated redkitchen objects at all? (the ceiling of #3's hit rates)

A text query's relevancy at a voxel is a sigmoid of the query's margin over the best other
name (``QueryConfig.reference_names``) on that voxel's fused embedding, and a voxel's
embedding is a weighted mean of its views' crop embeddings: the map cannot hold evidence
that no view of the object gives. This script measures that evidence
directly, without the map:

1. For every ``--stride``-th frame of 7-Scenes redkitchen, each annotated object
   (``tests/data/redkitchen_objects.json``) whose centroid projects into the frame, in front
   of the camera and not hidden (the sensor depth around the projection is not more than
   ``--occlusion-m`` in front of it; missing depth, as on the screens' glass, counts as seen).
2. Square crops of ``--sizes`` pixels centred on the projection (shifted to stay inside the
   frame) are embedded by ``lite``'s ``encode_images``, the call through which the map's
   dense features embed their crops (the default strategy embeds context-padded segment
   crops instead of square windows; the encoder is the same).
   ``--background`` more crops per size at random places of the same frame, away from the
   objects the query names, are the background.
3. For each crop and each scored query: the query's rank among itself and the reference
   names (its own name left out, as in the map's relevancy; rank 1: the crop is closer to
   the query than to any other ImageNet name) and its margin (query cosine minus the best
   other name's, the argument of the map's relevancy sigmoid). Region ranking is relative,
   so what decides whether the map can single out the object is how its crops' margins
   compare with the background's: the AUC (chance that an object crop beats a background
   crop; 0.5 = no better than chance) and the share of object crops above the background's
   95th percentile.

    python benchmarks/lite_ceiling.py [--data ../shared/data/7scenes-redkitchen] [--stride 10]

Prints a table per query and writes benchmarks/results/lite_ceiling.json (``--out``).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "7scenes-redkitchen"
ANNOTATIONS = REPO / "tests" / "data" / "redkitchen_objects.json"


def projection(frame, centroid: np.ndarray) -> tuple[np.ndarray | None, float]:
    """Pixel (2,) of a world point in ``frame`` and its depth (m); the pixel is None when the
    point is less than 10 cm in front of the camera."""
    T_cam_world = np.linalg.inv(frame.T_world_cam)
    p = T_cam_world[:3, :3] @ centroid + T_cam_world[:3, 3]
    return (frame.camera.project(p[None])[0][0] if p[2] > 0.1 else None), float(p[2])


def is_visible(frame, uv: np.ndarray, z: float, occlusion_m: float, margin_px: int) -> bool:
    """Whether a point at pixel ``uv`` (2,) and depth ``z`` (m, :func:`projection`) is in the
    image (by ``margin_px``) and not hidden by sensor depth more than ``occlusion_m`` nearer."""
    u, v = (float(x) for x in uv)
    h, w = frame.depth.shape
    if not (margin_px <= u < w - margin_px and margin_px <= v < h - margin_px):
        return False
    iu, iv = int(round(u)), int(round(v))
    patch = frame.depth[max(0, iv - 2) : iv + 3, max(0, iu - 2) : iu + 3]
    valid = patch[np.isfinite(patch) & (patch > 0)]
    return not (valid.size and float(np.median(valid)) < z - occlusion_m)


def square_crop(rgb: np.ndarray, u: float, v: float, size: int) -> np.ndarray:
    """(size, size, 3) crop centred on (u, v), shifted to lie inside the (H, W, 3) frame."""
    h, w = rgb.shape[:2]
    size = min(size, h, w)
    x0 = int(np.clip(round(u - size / 2), 0, w - size))
    y0 = int(np.clip(round(v - size / 2), 0, h - size))
    return rgb[y0 : y0 + size, x0 : x0 + size]


def query_scores(
    crop_emb: np.ndarray, query_emb: np.ndarray, names: tuple[str, ...], name_emb: np.ndarray, query: str
) -> tuple[np.ndarray, np.ndarray]:
    """Rank (N,) int and margin (N,) float of ``query`` for unit crop embeddings (N, D) against
    the names other than the query's own: rank 1 = closer to the query than to any other
    name; margin = query cosine - best other name's cosine."""
    keep = np.array([n.lower() != query.lower() for n in names])
    s_query = crop_emb @ query_emb  # (N,)
    s_names = crop_emb @ name_emb[keep].T  # (N, M')
    return 1 + (s_names > s_query[:, None]).sum(axis=1), s_query - s_names.max(axis=1)


def auc(positive: np.ndarray, negative: np.ndarray) -> float:
    """P(a positive score > a negative score), ties counting half (Mann-Whitney U / (P N))."""
    if positive.size == 0 or negative.size == 0:
        return float("nan")
    diff = positive[:, None] - negative[None, :]
    return float((diff > 0).mean() + 0.5 * (diff == 0).mean())


def summary(ranks: np.ndarray, margins: np.ndarray, background: np.ndarray, views: int) -> dict:
    """One query's row: crop counts, rank statistics, margin AUC against the background."""
    has = ranks.size > 0
    p95 = float(np.percentile(background, 95)) if background.size else float("nan")
    return {
        "views": views,
        "crops": int(ranks.size),
        "background_crops": int(background.size),
        "best_rank": int(ranks.min()) if has else None,
        "median_rank": float(np.median(ranks)) if has else None,
        "share_rank1": float((ranks == 1).mean()) if has else 0.0,
        "share_rank_le3": float((ranks <= 3).mean()) if has else 0.0,
        "margin_auc": auc(margins, background),
        "share_above_background_p95": float((margins > p95).mean()) if has else 0.0,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--stride", type=int, default=10, help="every n-th frame")
    ap.add_argument("--sizes", default="64,96,128,192,256", help="crop sizes, pixels")
    ap.add_argument("--background", type=int, default=3, help="random background crops per size and frame")
    ap.add_argument("--occlusion-m", type=float, default=0.3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "lite_ceiling.json")
    args = ap.parse_args()

    from mapping.encoders import load_encoder
    from mapping.encoders.base import vocabulary_embeddings
    from mapping.query import QueryConfig, resolve_reference_names
    from sensors import open_source

    t0 = time.perf_counter()
    rng = np.random.default_rng(args.seed)
    annotations = json.loads(ANNOTATIONS.read_text())
    queries: list[str] = annotations["queries"]
    objects = [o for o in annotations["objects"] if any(q in o["queries"] for q in queries)]
    centroids = [np.asarray(o["centroid"], np.float64) for o in objects]
    sizes = [int(s) for s in args.sizes.split(",")]
    encoder = load_encoder("lite")
    names = resolve_reference_names(QueryConfig().for_encoder("lite").reference_names)
    name_emb = vocabulary_embeddings(encoder, names)
    query_emb = dict(zip(queries, encoder.encode_text(queries)))

    ranks: dict[str, list[int]] = {q: [] for q in queries}
    margins: dict[str, list[float]] = {q: [] for q in queries}
    background: dict[str, list[float]] = {q: [] for q in queries}
    views: dict[str, int] = {q: 0 for q in queries}
    with open_source(f"7scenes:{args.data}") as src:
        for frame in tqdm(src.frames(stride=args.stride), total=src.count(stride=args.stride), desc="frames"):
            h, w = frame.rgb.shape[:2]
            projected = [projection(frame, c) for c in centroids]  # (pixel or None, depth) per object
            seen = [
                (o, uv)
                for o, (uv, z) in zip(objects, projected)
                if uv is not None and is_visible(frame, uv, z, args.occlusion_m, margin_px=8)
            ]
            # (object or None for background, crop size, crop centre (u, v))
            where = [(o, s, uv) for o, uv in seen for s in sizes]
            sizes_bg = np.repeat(sizes, args.background)
            where += [(None, s, c) for s, c in zip(sizes_bg, rng.uniform((0, 0), (w, h), size=(len(sizes_bg), 2)))]
            emb = encoder.encode_images([square_crop(frame.rgb, *c, s) for _, s, c in where])
            for q in queries:
                named = [o for o in objects if q in o["queries"]]
                views[q] += sum(o in named for o, _ in seen)
                near = [uv for o, (uv, _) in zip(objects, projected) if o in named and uv is not None]
                r, m = query_scores(emb, query_emb[q], names, name_emb, q)
                for i, (o, s, c) in enumerate(where):
                    if o is not None and o in named:
                        ranks[q].append(int(r[i]))
                        margins[q].append(float(m[i]))
                    elif o is None and all(np.abs(np.asarray(c) - uv).max() > s / 2 for uv in near):
                        background[q].append(float(m[i]))  # no object the query names inside the crop

    table = {
        q: summary(np.asarray(ranks[q]), np.asarray(margins[q]), np.asarray(background[q]), views[q])
        for q in queries
    }
    print(f"{'query':18s} {'views':>5s} {'crops':>5s} {'best':>5s} {'median':>6s} {'rank 1':>7s} {'AUC':>5s} {'>bg p95':>7s}")
    for q, row in table.items():
        best = "-" if row["best_rank"] is None else str(row["best_rank"])
        med = "-" if row["median_rank"] is None else f"{row['median_rank']:.0f}"
        print(
            f"{q:18s} {row['views']:5d} {row['crops']:5d} {best:>5s} {med:>6s} "
            f"{100 * row['share_rank1']:6.1f}% {row['margin_auc']:5.2f} {100 * row['share_above_background_p95']:6.1f}%"
        )
    result = {
        "data": str(args.data),
        "stride": args.stride,
        "sizes_px": sizes,
        "background_per_size": args.background,
        "reference_names": len(names),
        "queries": table,
        "wall_s": time.perf_counter() - t0,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"{len(names)} reference names; wall {result['wall_s']:.1f} s; wrote {args.out}")


if __name__ == "__main__":
    main()
