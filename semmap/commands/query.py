"""`semmap query`: ranked 3D regions for a text (or image) query on a semantic map directory."""

from __future__ import annotations

import argparse
import functools
import json
import re
import sys
from pathlib import Path

ORDER = 20


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "query",
        help="find where something is in a semantic map (text or image query)",
        description="Rank 3D regions of a map built with `semmap map ... --encoder` by relevancy to a text "
        "(or an image crop), print them, and write query.json, relevancy.ply (heat-coloured mesh) and "
        "query.png (top-down and camera view with the regions marked).",
        epilog='example: semmap query runs/kitchen "coffee mug" --top 5',
    )
    p.add_argument("map", type=Path, help="map directory written by `semmap map SOURCE --encoder ... --out DIR`")
    p.add_argument("text", nargs="?", default=None, help='what to look for, e.g. "coffee mug"')
    p.add_argument("--image", type=Path, default=None, help="query with an image crop (PNG/JPG) instead of text")
    p.add_argument("--top", type=int, default=5, help="regions to report (default 5)")
    p.add_argument("--json", action="store_true", help="print the regions as JSON on stdout (messages go to stderr)")
    p.add_argument("--out", type=Path, default=None, help="folder for the output files (default MAP/queries/<query>)")
    p.add_argument("--no-files", action="store_true", help="print only; write no files")
    p.add_argument(
        "--negatives",
        default=None,
        help="comma-separated canonical negatives (default: object,things,stuff,texture)",
    )
    p.add_argument(
        "--no-reference-names",
        action="store_true",
        help="compare text queries with the canonical negatives only, not also with each voxel's best "
        "ImageNet class name",
    )
    p.add_argument(
        "--min-relevancy",
        type=float,
        default=None,
        help="absolute relevancy a voxel needs to join a region (default 0: regions are the peaks of the "
        "query's relevancy; 0.5 = more like the query than any negative, LERF's reading for CLIP)",
    )
    p.add_argument("--device", default="cpu", help="torch device of the query encoder (default cpu)")
    p.set_defaults(func=cmd_query)


def slug(text: str) -> str:
    """A file-name-safe folder name for a query."""
    s = re.sub(r"[^A-Za-z0-9]+", "-", text.strip().lower()).strip("-")
    return s[:60] or "query"


def cmd_query(args: argparse.Namespace) -> int:
    from mapping.query import QueryConfig
    from mapping.semantic_map import SemanticMap

    if args.top < 1:
        raise ValueError(f"--top must be >= 1, got {args.top}")
    if (args.text is None) == (args.image is None):
        raise ValueError("give either a query text or --image PATH (not both)")
    if args.text is not None and not args.text.strip():
        raise ValueError("the query text is empty")
    options: dict = {}
    if args.negatives is not None:
        options["negatives"] = tuple(n.strip() for n in args.negatives.split(",") if n.strip())
    if args.min_relevancy is not None:
        options["threshold"] = args.min_relevancy
    if args.no_reference_names:
        options["reference_names"] = None
    qcfg = QueryConfig(**options)
    load = functools.cache(lambda: SemanticMap.load(args.map, device=args.device, query_config=qcfg))  # loaded once
    log = sys.stderr if args.json else sys.stdout
    if args.image is not None:
        smap = load()
        result = smap.query_image(_read_image(args.image), top=args.top)
        name = f"image-{slug(args.image.stem)}"
    else:
        from scenegraph.answer import answer_text
        from scenegraph.graph import SCENE_GRAPH_FILE, SceneGraph

        graph_file = args.map / SCENE_GRAPH_FILE
        graph = (lambda: SceneGraph.load(graph_file)) if graph_file.is_file() else None
        ans = answer_text(args.text, args.top, load, graph, where=str(args.map))
        for note in ans.notes:
            print(f"note: {note}", file=log)
        if ans.path == "graph":
            _print_graph_answer(args, ans)
            return 0
        smap, result, name = load(), ans.voxel_result, slug(args.text)
    if args.json:
        print(json.dumps([r.to_dict() for r in result.regions], indent=1))
    else:
        _print_table(result)
    if not args.no_files:
        from semmap.query_report import write_query_outputs

        out = args.out if args.out is not None else args.map / "queries" / name
        paths = write_query_outputs(smap, result, out)
        print(f"wrote query results to {out}/", file=log)
        for p in paths.values():
            print(f"  {p}", file=log)
    return 0


def _print_graph_answer(args: argparse.Namespace, ans) -> None:
    """Print a scene-graph answer (JSON, or a table naming subject, relation and partner)."""
    if args.json:
        print(json.dumps(ans.results, indent=1))
        return
    parsed, results = ans.graph_answer.parsed, ans.results
    print(f"'{args.text}': {parsed.subject} {parsed.relation} {parsed.object} ({len(results)} pair(s), scene graph)")
    print(f"  {'rank':>4} {'score':>6} {'centroid (m)':>26}  subject / partner")
    for k, d in enumerate(results, 1):
        c = " ".join(f"{v:7.2f}" for v in d["centroid"])
        print(f"  {k:>4} {d['score']:>6.3f} {c:>26}  {d['name']} {d.get('relation', '')} {d.get('partner_name', '')}")


def _print_table(result) -> None:
    t = result.timings_s
    print(
        f"'{result.query}': {len(result.regions)} region(s) (relevancy threshold {result.threshold:.3f}; "
        f"{1000 * sum(t.values()):.0f} ms: encode {1000 * t['encode']:.0f}, relevancy "
        f"{1000 * t['relevancy']:.0f}, regions {1000 * t['regions']:.0f})"
    )
    if not result.regions:
        print("  no voxel passed the threshold")
        return
    print(f"  {'rank':>4} {'score':>6} {'centroid (m)':>26} {'size (m)':>20} {'voxels':>7}")
    for r in result.regions:
        c = " ".join(f"{v:7.2f}" for v in r.centroid)
        s = " ".join(f"{v:5.2f}" for v in (r.bbox_max - r.bbox_min))
        print(f"  {r.rank:>4} {r.score:>6.3f} {c:>26} {s:>20} {r.voxel_count:>7}")


def _read_image(path: Path):
    import numpy as np
    from PIL import Image, UnidentifiedImageError

    if not path.is_file():
        raise FileNotFoundError(f"query image {path} does not exist")
    try:
        return np.asarray(Image.open(path).convert("RGB"))
    except UnidentifiedImageError as e:
        raise ValueError(f"{path}: not an image ({e})") from None
