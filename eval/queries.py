"""Query-hit evaluation: do text queries on a map land on the annotated objects?

Annotations (JSON, the format of ``tests/data/redkitchen_objects.json``; world frame of
the map, metres):

- ``objects``: instances with ``id``, ``centroid`` (3,), ``bbox_min`` / ``bbox_max`` (3,)
  (axis-aligned) and optionally ``queries``: the query texts that may hit them;
- ``queries``: the scored queries, each either a string (the objects listing it in their
  ``queries`` may answer it) or ``{"text": ..., "objects": [ids]}`` (relational queries
  name their answers this way).

Protocol: each query is answered as ``semmap query`` answers it: a relational text ("the
mug on the table", ``scenegraph.query.parse_query``) by the scene graph when the map has
one (``scene_graph.json``), everything else by the voxel feature layer
(``SemanticMap.query``). A result *hits* an object the query names when its centroid is
within ``tolerance_m`` of the object's centroid or inside the object's box grown by
``margin_m`` on every side. ``first_hit_rank`` is the rank (1-based) of the first hitting
result among the top ``top``; top-1 / top-k rates are over the scored queries, overall and
for plain and relational queries separately.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

SCORED_KINDS = ("plain", "relational")


@dataclass
class AnnotatedObject:
    """One annotated instance: id, centroid and axis-aligned box (world frame, metres)."""

    id: str
    centroid: np.ndarray
    bbox_min: np.ndarray
    bbox_max: np.ndarray


@dataclass
class AnnotatedQuery:
    """A scored query and the ids of the objects that may answer it."""

    text: str
    objects: tuple[str, ...]


@dataclass
class Annotations:
    """Objects and scored queries of an annotation file (see the module docstring)."""

    objects: dict[str, AnnotatedObject]
    queries: list[AnnotatedQuery]
    source: str = ""

    @classmethod
    def from_dict(cls, doc: dict, source: str = "annotations") -> Annotations:
        """Parse an annotation document; ValueError naming ``source`` and the bad field."""
        if not isinstance(doc, dict) or not isinstance(doc.get("objects"), list):
            raise ValueError(f"{source}: needs an 'objects' list")
        objects: dict[str, AnnotatedObject] = {}
        named: dict[str, list[str]] = {}
        for k, o in enumerate(doc["objects"]):
            try:
                oid = str(o["id"])
                vals = [np.asarray(o[f], dtype=np.float64) for f in ("centroid", "bbox_min", "bbox_max")]
            except (KeyError, TypeError, ValueError) as e:
                raise ValueError(f"{source}: objects[{k}] needs id, centroid, bbox_min, bbox_max ({e})") from None
            if any(v.shape != (3,) for v in vals):
                raise ValueError(f"{source}: objects[{k}] ({oid}): centroid and box corners must be 3 numbers")
            if np.any(vals[1] > vals[2]):
                raise ValueError(f"{source}: objects[{k}] ({oid}): bbox_min exceeds bbox_max")
            objects[oid] = AnnotatedObject(oid, *vals)
            for q in o.get("queries", []):
                named.setdefault(str(q), []).append(oid)
        queries: list[AnnotatedQuery] = []
        for k, q in enumerate(doc.get("queries", [])):
            if isinstance(q, str):
                queries.append(AnnotatedQuery(q, tuple(named.get(q, ()))))
            elif isinstance(q, dict) and isinstance(q.get("text"), str):
                ids = tuple(str(i) for i in q.get("objects", named.get(q["text"], ())))
                unknown = [i for i in ids if i not in objects]
                if unknown:
                    raise ValueError(f"{source}: queries[{k}] ({q['text']!r}) names unknown objects {unknown}")
                queries.append(AnnotatedQuery(q["text"], ids))
            else:
                raise ValueError(f"{source}: queries[{k}] must be a string or {{'text': ..., 'objects': [...]}}")
            if not queries[-1].text.strip():
                raise ValueError(f"{source}: queries[{k}] is empty")
        if not queries:
            raise ValueError(f"{source}: no queries to score")
        return cls(objects, queries, source)

    @classmethod
    def load(cls, path: Path | str) -> Annotations:
        from sensors.io import read_yaml

        path = Path(path)
        return cls.from_dict(read_yaml(path, "annotation file"), str(path))


def is_hit(centroid: np.ndarray, obj: AnnotatedObject, tolerance_m: float, margin_m: float) -> bool:
    """True when ``centroid`` (3,) is within ``tolerance_m`` of ``obj``'s centroid or inside its box grown by ``margin_m``."""
    c = np.asarray(centroid, dtype=np.float64)
    near = float(np.linalg.norm(c - obj.centroid)) <= tolerance_m
    inside = bool(np.all(c >= obj.bbox_min - margin_m) and np.all(c <= obj.bbox_max + margin_m))
    return near or inside


@dataclass
class QueryRow:
    """One scored query.

    Attributes:
        text: the query.
        kind: "plain" or "relational" (as ``scenegraph.query.parse_query`` reads it).
        route: what answered it: "map" (voxel features) or "graph" (scene graph).
        objects: ids that may answer it.
        first_hit_rank: 1-based rank of the first hit among the top results, None if none.
        results: the returned results (``to_dict()`` of regions / objects) with ``hits``
            (ids hit) and ``nearest`` (nearest annotated object and its distance, m).
    """

    text: str
    kind: str
    route: str
    objects: tuple[str, ...]
    first_hit_rank: int | None
    results: list[dict] = field(default_factory=list)

    @property
    def top1(self) -> bool:
        return self.first_hit_rank == 1

    def hit_within(self, k: int) -> bool:
        return self.first_hit_rank is not None and self.first_hit_rank <= k


@dataclass
class QueryEvaluation:
    """Result of :func:`evaluate_queries`: per-query rows and the protocol that scored them."""

    rows: list[QueryRow]
    top: int
    protocol: dict

    def rates(self, kind: str | None = None) -> dict:
        """{"queries": n, "top1": rate, "topk": rate} over rows of ``kind`` (None: all); rates None when n = 0."""
        rows = [r for r in self.rows if kind is None or r.kind == kind]
        n = len(rows)
        return {
            "queries": n,
            "top1": sum(r.top1 for r in rows) / n if n else None,
            f"top{self.top}": sum(r.hit_within(self.top) for r in rows) / n if n else None,
        }

    @property
    def top1_rate(self) -> float:
        return self.rates()["top1"]

    @property
    def topk_rate(self) -> float:
        return self.rates()[f"top{self.top}"]

    def to_dict(self) -> dict:
        return {
            "protocol": self.protocol,
            "overall": self.rates(),
            **{kind: self.rates(kind) for kind in SCORED_KINDS},
            "queries": [
                {**asdict(r), "objects": list(r.objects), "top1": r.top1, f"top{self.top}": r.hit_within(self.top)}
                for r in self.rows
            ],
        }

    def summary(self) -> str:
        """A table: one line per query, then the rates."""
        k = self.top
        lines = [f"{'query':<40}{'kind':>11}{'route':>6}{'top1':>5}{f'top{k}':>5}{'hit@':>5}  best result (nearest object @ m)"]
        lines.append("-" * len(lines[0]))
        for r in self.rows:
            best = r.results[0]["nearest"] if r.results else None
            desc = f"{best['object']}@{best['distance_m']:.2f}" if best else "no result"
            lines.append(
                f"{r.text[:39]:<40}{r.kind:>11}{r.route:>6}{'y' if r.top1 else '-':>5}"
                f"{'y' if r.hit_within(k) else '-':>5}{r.first_hit_rank or '-':>5}  {desc}"
            )
        for kind in (None, *SCORED_KINDS):
            rt = self.rates(kind)
            if rt["queries"]:
                lines.append(
                    f"{kind or 'all':<10} top-1 {100 * rt['top1']:5.1f} %, top-{k} {100 * rt[f'top{k}']:5.1f} % "
                    f"over {rt['queries']} queries"
                )
        return "\n".join(lines)


def evaluate_queries(
    map_dir: Path | str,
    annotations: Path | str | dict | Annotations,
    top: int = 3,
    tolerance_m: float = 0.25,
    margin_m: float = 0.05,
    query_config=None,
    device: str = "cpu",
    smap=None,
    use_graph: bool = True,
) -> QueryEvaluation:
    """Score the annotated queries on a map (see the module docstring for the protocol).

    Args:
        map_dir: map directory written by ``semmap map --encoder ...`` (with
            ``scene_graph.json`` after ``semmap graph`` for relational queries).
        annotations: annotation file, its parsed JSON, or :class:`Annotations`.
        top: results per query; a query scores top-k when one of its first ``top`` results hits.
        tolerance_m: centroid distance that counts as a hit, metres.
        margin_m: growth of each annotated box on every side, metres.
        query_config: ``mapping.query.QueryConfig`` of the voxel queries (default: the map's
            encoder's default).
        device: torch device of the query encoders.
        smap: an already loaded ``SemanticMap`` of ``map_dir`` (saves the load).
        use_graph: answer relational queries from the scene graph when there is one (as
            ``semmap query`` does); False: every query goes to the voxel features.
    Raises:
        FileNotFoundError / ValueError: missing map or annotation file, bad annotations,
        ``top`` < 1 or negative distances.
    """
    from scenegraph.query import parse_query

    if top < 1:
        raise ValueError(f"top must be >= 1, got {top}")
    if tolerance_m < 0 or margin_m < 0:
        raise ValueError(f"tolerance and margin must be >= 0 m, got {tolerance_m}, {margin_m}")
    map_dir = Path(map_dir)
    if isinstance(annotations, Annotations):
        ann = annotations
    elif isinstance(annotations, dict):
        ann = Annotations.from_dict(annotations)
    else:
        ann = Annotations.load(annotations)
    graph_file = map_dir / "scene_graph.json"
    graph = encoder = None
    rows: list[QueryRow] = []
    for q in ann.queries:
        parsed = parse_query(q.text)
        kind = "relational" if parsed.relational else "plain"
        if parsed.relational and use_graph and graph_file.is_file():
            if graph is None:
                graph, encoder = _load_graph(graph_file, device)
            results, route = _graph_answer(graph, encoder, q.text, top), "graph"
        else:
            if smap is None:
                smap = _load_map(map_dir, device, query_config)
            results, route = list(smap.query(q.text, top=top).regions), "map"
        rows.append(_score(q, kind, route, results, ann, tolerance_m, margin_m))
    protocol = {
        "annotations": ann.source,
        "map": str(map_dir),
        "top": top,
        "tolerance_m": tolerance_m,
        "margin_m": margin_m,
        "hit": "a result hits an object the query names when its centroid is within tolerance_m of the "
        "object's centroid or inside the object's box grown by margin_m",
        "routing": "relational queries (scenegraph.query.parse_query) by the scene graph when the map has one, "
        "the rest by the voxel features (as semmap query)" if use_graph else "every query by the voxel features",
        "reference_names": None if smap is None else _reference_names(smap),
    }
    return QueryEvaluation(rows, top, protocol)


def _load_map(map_dir: Path, device: str, query_config):
    from mapping.semantic_map import SemanticMap

    smap = SemanticMap.load(map_dir, device=device, query_config=query_config)
    smap.prepare()
    return smap


def _load_graph(graph_file: Path, device: str):
    from scenegraph.graph import SceneGraph
    from scenegraph.query import load_query_encoder

    graph = SceneGraph.load(graph_file)
    return graph, load_query_encoder(graph, device=device)


def _graph_answer(graph, encoder, text: str, top: int) -> list:
    from scenegraph.query import answer_graph

    return list(answer_graph(graph, text, encoder, top=top))


def _reference_names(smap) -> str | int | None:
    names = getattr(getattr(smap, "query_config", None), "reference_names", None)
    return names if names is None or isinstance(names, str) else len(names)


def _score(
    q: AnnotatedQuery, kind: str, route: str, results: list, ann: Annotations, tolerance_m: float, margin_m: float
) -> QueryRow:
    named = [ann.objects[i] for i in q.objects]
    out, first = [], None
    for k, r in enumerate(results):
        hits = [o.id for o in named if is_hit(r.centroid, o, tolerance_m, margin_m)]
        if hits and first is None:
            first = k + 1
        d = {o.id: float(np.linalg.norm(np.asarray(r.centroid) - o.centroid)) for o in ann.objects.values()}
        near = min(d, key=d.get) if d else None
        out.append({**r.to_dict(), "hits": hits, "nearest": {"object": near, "distance_m": round(d[near], 3) if near else None}})
    return QueryRow(q.text, kind, route, q.objects, first, out)
