"""Scene-graph outputs: the three files and a printable summary."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from scenegraph.graph import DRAWING_FILE, GRAPHML_FILE, SCENE_GRAPH_FILE, SceneGraph

SHOWN_RELATIONS = ("on", "inside", "under", "above", "next_to", "against")
"""Relations listed in the summary (converses and ``near`` are counted, not listed)."""


def write_outputs(graph: SceneGraph, out_dir: Path | str) -> dict[str, Path]:
    """Write ``scene_graph.json``, ``scene_graph.graphml`` and ``scene_graph.png`` into
    ``out_dir`` (each atomically); returns {kind: path}."""
    from scenegraph.draw import draw_top_down

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    return {
        "json": graph.save_json(out / SCENE_GRAPH_FILE),
        "graphml": graph.save_graphml(out / GRAPHML_FILE),
        "png": draw_top_down(graph, out / DRAWING_FILE),
    }


def summary_table(graph: SceneGraph, max_relations: int = 60) -> str:
    """Objects (name, label and score, centroid, size, nodes, relations) and the main relations."""
    lines = []
    objs = graph.objects
    n_obj = sum(not o.is_structure for o in objs)
    counts = Counter(r.relation for r in graph.relations())
    lines.append(
        f"{n_obj} objects, {len(objs) - n_obj} structure nodes, {graph.graph.number_of_edges()} relations ("
        + ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
        + ")"
    )
    lines.append(f"  {'id':>3} {'name':<22} {'label (p)':<24} {'centroid (m)':>22} {'size (m)':>17} {'nodes':>6} {'rel':>4}")
    for o in objs:
        lab = f"{o.label} ({o.label_scores[0][1]:.2f})" if o.label_scores else (o.label or "-")
        c = " ".join(f"{v:6.2f}" for v in o.centroid)
        s = " ".join(f"{v:5.2f}" for v in (o.gbox_max - o.gbox_min))
        n_rel = graph.graph.out_degree(o.id)
        lines.append(f"  {o.id:>3} {o.name[:22]:<22} {lab[:24]:<24} {c:>22} {s:>17} {o.n_points:>6} {n_rel:>4}")
    shown = [r for r in graph.relations() if r.relation in SHOWN_RELATIONS]
    shown.sort(key=lambda r: (SHOWN_RELATIONS.index(r.relation), -r.score))
    lines.append(f"relations ({len(shown)} of {graph.graph.number_of_edges()}; converses and 'near' omitted):")
    seen = set()
    k = 0
    for r in shown:
        if r.relation == "next_to":
            key = (min(r.subject, r.object), max(r.subject, r.object))
            if key in seen:
                continue
            seen.add(key)
        if k >= max_relations:
            lines.append(f"  ... {len(shown) - k} more in {SCENE_GRAPH_FILE}")
            break
        lines.append(f"  {graph.object(r.subject).name} {r.relation.replace('_', ' ')} {graph.object(r.object).name}  ({r.score:.2f})")
        k += 1
    for w in graph.metadata.get("warnings", []):
        lines.append(f"warning: {w}")
    return "\n".join(lines)
