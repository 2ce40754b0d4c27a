"""Top-down drawing of a scene graph (PNG): object boxes, labels and relation edges.

The view is the gravity frame seen from above (x right, y up in the picture, metres).
Floor and walls are drawn as the outline of the room, objects as their gravity-frame
footprint boxes with their names, and relations as arrows from subject to object
coloured by kind. Converse relations (supports, contains, below) and ``near`` are left
out to keep the drawing readable (they are in the JSON).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from scenegraph.graph import SceneGraph

EDGE_COLOURS = {
    "on": "tab:blue",
    "inside": "tab:purple",
    "next_to": "tab:green",
    "under": "tab:orange",
    "above": "tab:cyan",
    "against": "tab:gray",
}
"""Relations drawn, and their colours."""


def draw_top_down(graph: SceneGraph, path: Path | str, title: str | None = None, dpi: int = 110) -> Path:
    """Write the drawing to ``path`` (PNG, written atomically) and return it."""
    import matplotlib

    matplotlib.use("Agg")
    import os
    import tempfile

    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    path = Path(path)
    objs = graph.objects
    fig, ax = plt.subplots(figsize=(9, 8))
    for o in objs:
        lo, hi = o.gbox_min, o.gbox_max
        if o.kind == "floor":
            ax.add_patch(Rectangle(lo[:2], *(hi - lo)[:2], facecolor="#f3efe6", edgecolor="none", zorder=0))
        elif o.kind == "wall":
            ax.add_patch(Rectangle(lo[:2], *(hi - lo)[:2], facecolor="#888888", edgecolor="#555555", lw=1.5, zorder=1))
    centres = {o.id: (o.gbox_min + o.gbox_max)[:2] / 2 for o in objs}
    for o in objs:
        if o.is_structure:
            continue
        lo, hi = o.gbox_min, o.gbox_max
        ax.add_patch(Rectangle(lo[:2], *(hi - lo)[:2], facecolor="none", edgecolor="#333333", lw=1.0, zorder=2))
        ax.text(*centres[o.id], o.name, fontsize=7, ha="center", va="center", zorder=5,
                bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none", "alpha": 0.7})
    drawn = set()
    for r in graph.relations():
        colour = EDGE_COLOURS.get(r.relation)
        if colour is None:
            continue
        a, b = graph.object(r.subject), graph.object(r.object)
        if b.is_structure:
            if r.relation == "against":
                ax.plot(*centres[a.id], marker="s", ms=4, color=colour, zorder=4)
            continue
        key = (min(r.subject, r.object), max(r.subject, r.object), r.relation)
        if r.relation == "next_to" and key in drawn:
            continue
        drawn.add(key)
        p, q = centres[a.id], centres[b.id]
        ax.annotate("", xy=q, xytext=p, zorder=3,
                    arrowprops={"arrowstyle": "-" if r.relation == "next_to" else "->", "color": colour,
                                "lw": 0.6 + 1.4 * r.score, "shrinkA": 4, "shrinkB": 4})
    for name, colour in EDGE_COLOURS.items():
        ax.plot([], [], color=colour, lw=2, label=name.replace("_", " "))
    ax.legend(loc="upper right", fontsize=7, framealpha=0.8)
    pts = np.array([[*o.gbox_min[:2], *o.gbox_max[:2]] for o in objs]) if objs else np.zeros((1, 4))
    lo, hi = pts[:, :2].min(axis=0) - 0.2, pts[:, 2:].max(axis=0) + 0.2
    ax.set_xlim(lo[0], hi[0])
    ax.set_ylim(lo[1], hi[1])
    ax.set_aspect("equal")
    ax.set_xlabel("x (m, gravity frame)")
    ax.set_ylabel("y (m, gravity frame)")
    n_obj = sum(not o.is_structure for o in objs)
    ax.set_title(title or f"scene graph: {n_obj} objects, {len(objs) - n_obj} structure, "
                 f"{graph.graph.number_of_edges()} relations", fontsize=10)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".png", dir=path.parent)
    os.close(fd)
    try:
        fig.savefig(tmp, dpi=dpi, bbox_inches="tight")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    finally:
        plt.close(fig)
    return path
