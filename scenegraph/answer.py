"""One answer to a text query on a map: the scene graph for relational phrases, else the voxels.

``semmap query --json`` and the map service (``semmap serve``) both call
:func:`answer_text` with already loaded objects, so they return the same results:

- a relational phrase ("the mug on the table", see :func:`scenegraph.query.parse_query`)
  is answered from the scene graph when the map has one (:func:`scenegraph.query.answer_graph`);
- anything else (a plain phrase, a relation word that does not parse, or a map without
  a scene graph) is answered from the semantic voxel grid (:meth:`SemanticMap.query`).

The results are plain JSON dicts: ``Region.to_dict`` for voxel answers,
``ObjectResult.to_dict`` for graph answers (both share ``rank``, ``score``, ``centroid``,
``bbox_min``, ``bbox_max``, ``voxel_count``; world frame, metres).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from mapping.encoders.base import torch_threads
from scenegraph.query import GraphAnswer, answer_graph, parse_query

if TYPE_CHECKING:
    from mapping.encoders.base import Encoder
    from mapping.semantic_map import QueryResult, SemanticMap
    from scenegraph.graph import SceneGraph

GRAPH_QUERY_TORCH_THREADS = 1
"""torch threads while a graph query embeds its text, like the voxel path
(``mapping.query.QueryConfig.torch_threads``): the embedding's last bits depend on the thread
count, so a fixed count makes every process (``semmap query``, the service) answer alike."""

PATHS = ("graph", "voxels")
"""Which part of the map answered: the scene graph or the semantic voxel grid."""


class MissingLayer(ValueError):
    """The map lacks what the request needs (no feature layer, or no scene graph)."""


@dataclass
class TextAnswer:
    """The answer to one text query.

    Attributes:
        text: the query as given.
        path: "graph" (scene graph) or "voxels" (semantic voxel grid).
        results: ranked results, best first, as JSON dicts (exactly ``semmap query --json``).
        notes: sentences for the user (why it fell back to the voxels, what was not found).
        timings_s: seconds per step ("encode", "relevancy", "regions" for voxel answers).
        voxel_result: the voxel query's full result (relevancy of every voxel), or None.
        graph_answer: the scene graph's answer (with its parsed query), or None.
    """

    text: str
    path: str
    results: list[dict]
    notes: list[str] = field(default_factory=list)
    timings_s: dict[str, float] = field(default_factory=dict)
    voxel_result: QueryResult | None = field(default=None, repr=False)
    graph_answer: GraphAnswer | None = field(default=None, repr=False)


def answer_text(
    text: str,
    top: int,
    semantic: SemanticMap | Callable[[], SemanticMap] | None,
    graph: SceneGraph | Callable[[], SceneGraph] | None,
    graph_encoder: Encoder | None = None,
    where: str = "the map",
) -> TextAnswer:
    """Answer ``text`` from a loaded map (see the module docstring).

    Args:
        text: the query ("coffee mug", "the mug on the table").
        top: results to return (>= 1).
        semantic: the map's semantic layer, or a function that loads it (called only when
            the voxels answer), or None when the map has none.
        graph: the map's scene graph, or a function that loads it (called only for a
            relational phrase), or None when the map has none.
        graph_encoder: text encoder for graph queries (default: the graph's own, loaded).
        where: how notes name the map (``semmap query`` passes the directory).
    Raises:
        ValueError: empty text or top < 1; MissingLayer: the voxels must answer and the map
        has no feature layer.
    """
    if not isinstance(text, str) or not text.strip():
        raise ValueError("the query text is empty")
    if top < 1:
        raise ValueError(f"top must be >= 1, got {top}")
    parsed = parse_query(text)
    notes: list[str] = []
    if parsed.fallback:
        notes.append(parsed.note)
    elif parsed.relational and graph is None:
        notes.append(f"{where} has no scene graph (run `semmap graph {where}`); answering as plain text")
    elif parsed.relational:
        with torch_threads(GRAPH_QUERY_TORCH_THREADS):
            res = answer_graph(graph() if callable(graph) else graph, text, graph_encoder, top)
        if res.message:
            notes.append(res.message)
        return TextAnswer(text, "graph", [r.to_dict() for r in res], notes, graph_answer=res)
    if semantic is None:
        raise MissingLayer(
            f"{where} has no semantic feature layer (build it with semmap map SOURCE --encoder lite --out DIR)"
        )
    smap = semantic() if callable(semantic) else semantic
    result = smap.query(text, top=top)
    return TextAnswer(
        text, "voxels", [r.to_dict() for r in result.regions], notes, dict(result.timings_s), voxel_result=result
    )
