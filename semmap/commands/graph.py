"""`semmap graph`: build the 3D scene graph of a map directory."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from scenegraph.build import GraphConfig

ORDER = 25


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "graph",
        help="build the 3D scene graph (objects, labels, relations) of a map",
        description="Segment a map into objects (dominant planes, FH segments merged by geometry and colour), "
        "embed each object from its best stored views with the map's encoder, label it from a vocabulary, "
        "score spatial relations (on, inside, under, next to, near, ...) and write scene_graph.json, "
        "scene_graph.graphml and scene_graph.png. Afterwards `semmap query DIR \"the mug on the table\"` "
        "answers relational queries.",
        epilog="examples: semmap graph runs/kitchen --vocab my_objects.txt\n"
        "          semmap graph runs/kitchen --masks sam:/models/sam-vit-base",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("map", type=Path, help="map directory written by `semmap map` (best with --encoder, which stores views)")
    p.add_argument("--vocab", type=Path, default=None, help="extra label names, one per line (or a JSON list)")
    p.add_argument("--vocab-only", action="store_true", help="use only --vocab's names, not the default list")
    p.add_argument("--out", type=Path, default=None, help="folder for the outputs (default: the map directory)")
    p.add_argument("--node-size", type=float, default=None, help="surface node size in metres (default: voxel, >= 0.02)")
    p.add_argument("--no-embed", action="store_true", help="geometry and relations only (no encoder)")
    p.add_argument("--device", default="cpu", help="torch device of the encoder and mask model (default cpu)")
    p.add_argument(
        "--masks",
        default="",
        metavar="SPEC",
        help="2D instance masks from a mask model, lifted to 3D and merged with the geometric proposals: "
        "sam:<hf-name-or-local-path> (transformers SamModel)",
    )
    p.add_argument("--mask-points", type=int, default=None, metavar="N", help="SAM point prompts per image side (default 16)")
    p.set_defaults(func=cmd_graph)


def graph_config(args: argparse.Namespace) -> GraphConfig:
    """The ``scenegraph.build.GraphConfig`` of parsed ``semmap graph`` options (``semmap batch`` uses it too)."""
    from scenegraph.build import GraphConfig
    from scenegraph.masks import MaskConfig
    from scenegraph.vocabulary import load_vocabulary

    if args.vocab_only and args.vocab is None:
        raise ValueError("--vocab-only needs --vocab FILE")
    points = {} if args.mask_points is None else {"points_per_side": args.mask_points}
    masks = MaskConfig(model=args.masks, device=args.device, **points)
    return GraphConfig(
        node_size_m=args.node_size,
        vocabulary=load_vocabulary(args.vocab, extend=not args.vocab_only),
        embed=not args.no_embed,
        device=args.device,
        masks=masks,
    )


def cmd_graph(args: argparse.Namespace) -> int:
    import time

    from scenegraph.build import build_scene_graph
    from scenegraph.report import summary_table, write_outputs

    cfg = graph_config(args)
    t0 = time.perf_counter()
    graph = build_scene_graph(args.map, cfg)
    elapsed = time.perf_counter() - t0
    out = args.out if args.out is not None else args.map
    paths = write_outputs(graph, out)
    print(summary_table(graph))
    t = graph.metadata["timings_s"]
    m = graph.metadata.get("masks")
    if m:
        print(f"masks ({args.masks}): {m['masks']} masks, {m['lifted']} on objects, {m['instances']} 3D instances")
    print(f"built in {elapsed:.1f} s (" + ", ".join(f"{k} {v:.1f}" for k, v in t.items() if k != "total") + ")")
    print(f"wrote scene graph to {out}/")
    for p in paths.values():
        print(f"  {p}")
    return 0
