"""The 3D scene graph: objects (nodes) and scored spatial relations (edges) on networkx.

:class:`SceneGraph` wraps a ``networkx.MultiDiGraph``: node ``id`` carries its
:class:`SceneObject` under the attribute ``"object"``; an edge ``subject -> object`` with
key = relation name ("on", "supports", "inside", ...) carries ``score`` (0..1) and
``evidence`` (the measured quantities behind it). Structure (floor, walls, ceiling) are
nodes too, so "the chair on the floor" is an edge like any other.

Files (written atomically, one at a time):

``scene_graph.json`` (schema below, ``format_version`` 1)::

    {
      "format": "semmap.scene_graph",
      "format_version": 1,
      "encoder": "lite" | null,          # encoder of the object embeddings
      "embedding_dim": 384 | null,
      "up": [ux, uy, uz],                # gravity up, world frame (unit)
      "R_g_world": [[...], [...], [...]],# world -> gravity frame (z = up) rotation
      "metadata": {...},                 # how it was built: settings, counts, timings
      "objects": [{
          "id": 3, "name": "mug_3", "kind": "object" | "floor" | "wall" | "ceiling",
          "label": "mug", "labels": [{"label": "mug", "score": 0.41}, ...],
          "centroid": [x, y, z],                      # world, metres
          "bbox_min": [...], "bbox_max": [...],       # world axis-aligned box
          "gbox_min": [...], "gbox_max": [...],       # box in the gravity frame
          "n_points": 812, "area_m2": 0.31,
          "plane": [nx, ny, nz, d] | null,            # structure: n . x + d = 0
          "views": [4, 17, 22],                       # stored views used for the embedding
          "embedding_source": "views" | "features" | "views+features" | "",
          "embedding": [...] | null                   # unit vector, embedding_dim floats
      }, ...],
      "relations": [{"subject": 3, "relation": "on", "object": 1,
                     "score": 0.93, "evidence": {"gap_m": 0.004, "overlap": 1.0}}, ...]
    }

``scene_graph.graphml``: the same graph for graph tools (Gephi, networkx); node
attributes are flattened to scalars (label, kind, name, centroid_x..z, bbox_*, n_points)
and edges carry ``relation`` and ``score``; embeddings are left out.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import networkx as nx
import numpy as np

from mapping.mapformat import NUMBER, MapFormatError, check_fields, check_format_version, check_list_of, read_json_file

SCENE_GRAPH_FORMAT = "semmap.scene_graph"
SCENE_GRAPH_VERSION = 1
SCENE_GRAPH_FILE = "scene_graph.json"
GRAPHML_FILE = "scene_graph.graphml"
DRAWING_FILE = "scene_graph.png"

STRUCTURE_KINDS = ("floor", "wall", "ceiling")

RELATIONS = ("on", "supports", "inside", "contains", "under", "above", "below", "near", "next_to", "against")
"""Relation names stored on edges (see ``scenegraph.relations`` for their definitions)."""

INVERSE = {
    "on": "supports",
    "supports": "on",
    "inside": "contains",
    "contains": "inside",
    "above": "below",
    "below": "above",
    "near": "near",
    "next_to": "next_to",
}
"""Each relation's converse (``under`` and ``against`` have none stored)."""


GRAPH_FIELDS = {"format": str, "format_version": int, "up": list, "R_g_world": list, "objects": list,
                "relations": list}
OBJECT_FIELDS = {"id": int, "kind": str, "name": str, "centroid": list, "bbox_min": list, "bbox_max": list,
                 "gbox_min": list, "gbox_max": list}
RELATION_FIELDS = {"subject": int, "relation": str, "object": int, "score": NUMBER}
"""The fields of ``scene_graph.json`` (top level, each object, each relation) with their JSON types."""


def _vec(x: Any, n: int | None = None) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64).reshape(-1)
    if n is not None and a.shape != (n,):
        raise ValueError(f"expected {n} numbers, got {a.shape}")
    return a


@dataclass
class SceneObject:
    """One node of the scene graph.

    Attributes:
        id: node id (unique in its graph).
        kind: "object", or a structure kind "floor", "wall", "ceiling".
        name: readable unique name ("mug_3", "wall_1").
        label: best label ("" when unknown).
        label_scores: label candidates with probabilities, best first.
        centroid: (3,) world frame, metres.
        bbox_min, bbox_max: (3,) world-frame axis-aligned box, metres.
        gbox_min, gbox_max: (3,) box in the gravity frame (z = up), metres.
        n_points: surface nodes of the object.
        area_m2: its reconstructed surface area.
        plane: (4,) ``n . x + d = 0`` for structure, else None.
        views: stored views its embedding came from.
        embedding: (D,) float32 unit embedding, or None.
        embedding_source: "views", "features", "views+features" or "".
    """

    id: int
    kind: str
    name: str
    label: str
    centroid: np.ndarray
    bbox_min: np.ndarray
    bbox_max: np.ndarray
    gbox_min: np.ndarray
    gbox_max: np.ndarray
    n_points: int = 0
    area_m2: float = 0.0
    label_scores: list[tuple[str, float]] = field(default_factory=list)
    plane: np.ndarray | None = None
    views: list[int] = field(default_factory=list)
    embedding: np.ndarray | None = None
    embedding_source: str = ""

    @property
    def is_structure(self) -> bool:
        return self.kind in STRUCTURE_KINDS

    def to_json(self, with_embedding: bool = True) -> dict:
        r = lambda a: [round(float(x), 5) for x in a]
        return {
            "id": int(self.id),
            "name": self.name,
            "kind": self.kind,
            "label": self.label,
            "labels": [{"label": lab, "score": round(float(s), 5)} for lab, s in self.label_scores],
            "centroid": r(self.centroid),
            "bbox_min": r(self.bbox_min),
            "bbox_max": r(self.bbox_max),
            "gbox_min": r(self.gbox_min),
            "gbox_max": r(self.gbox_max),
            "n_points": int(self.n_points),
            "area_m2": round(float(self.area_m2), 5),
            "plane": r(self.plane) if self.plane is not None else None,
            "views": [int(v) for v in self.views],
            "embedding_source": self.embedding_source,
            "embedding": r(self.embedding) if (with_embedding and self.embedding is not None) else None,
        }

    @classmethod
    def from_json(cls, d: dict) -> SceneObject:
        emb = d.get("embedding")
        return cls(
            id=int(d["id"]),
            kind=str(d["kind"]),
            name=str(d["name"]),
            label=str(d.get("label", "")),
            centroid=_vec(d["centroid"], 3),
            bbox_min=_vec(d["bbox_min"], 3),
            bbox_max=_vec(d["bbox_max"], 3),
            gbox_min=_vec(d["gbox_min"], 3),
            gbox_max=_vec(d["gbox_max"], 3),
            n_points=int(d.get("n_points", 0)),
            area_m2=float(d.get("area_m2", 0.0)),
            label_scores=[(str(x["label"]), float(x["score"])) for x in d.get("labels", [])],
            plane=_vec(d["plane"], 4) if d.get("plane") is not None else None,
            views=[int(v) for v in d.get("views", [])],
            embedding=np.asarray(emb, dtype=np.float32) if emb is not None else None,
            embedding_source=str(d.get("embedding_source", "")),
        )


@dataclass
class Relation:
    """One scored relation ``subject --relation--> object`` (node ids)."""

    subject: int
    relation: str
    object: int
    score: float
    evidence: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return {
            "subject": int(self.subject),
            "relation": self.relation,
            "object": int(self.object),
            "score": round(float(self.score), 5),
            "evidence": {k: (round(float(v), 5) if isinstance(v, (float, np.floating)) else v) for k, v in self.evidence.items()},
        }


class SceneGraph:
    """Objects and relations of one map (see the module docstring).

    Args:
        up: (3,) gravity up, world frame.
        R_g_world: (3, 3) rotation from world to the gravity frame.
        encoder: name of the encoder of the object embeddings (None without embeddings).
        metadata: free-form build information (JSON-serialisable).
    Attributes (in memory only, not saved):
        node_points: (N, 3) the surface nodes the objects were built from, world frame.
        node_object: (N,) int64 node id owning each surface node (-1: none).
    """

    def __init__(
        self,
        up: np.ndarray,
        R_g_world: np.ndarray,
        encoder: str | None = None,
        metadata: dict | None = None,
    ) -> None:
        self.graph = nx.MultiDiGraph()
        self.up = _vec(up, 3)
        self.R_g_world = np.asarray(R_g_world, dtype=np.float64).reshape(3, 3)
        self.encoder = encoder
        self.metadata: dict = dict(metadata or {})
        self.node_points: np.ndarray | None = None
        self.node_object: np.ndarray | None = None

    # ------------------------------------------------------------------ building
    def add_object(self, obj: SceneObject) -> None:
        if obj.id in self.graph:
            raise ValueError(f"scene graph already has a node {obj.id}")
        self.graph.add_node(obj.id, object=obj)

    def add_relation(self, rel: Relation) -> None:
        """Add (or replace) the edge ``rel.subject -[rel.relation]-> rel.object``."""
        if rel.relation not in RELATIONS:
            raise ValueError(f"unknown relation {rel.relation!r}; known: {', '.join(RELATIONS)}")
        for n in (rel.subject, rel.object):
            if n not in self.graph:
                raise KeyError(f"relation {rel.relation!r} names node {n}, which is not in the graph")
        if rel.subject == rel.object:
            raise ValueError(f"relation {rel.relation!r} from node {rel.subject} to itself")
        self.graph.add_edge(rel.subject, rel.object, key=rel.relation, score=float(rel.score), evidence=dict(rel.evidence))

    # ------------------------------------------------------------------ access
    @property
    def objects(self) -> list[SceneObject]:
        """All nodes' objects, by id."""
        return [self.graph.nodes[n]["object"] for n in sorted(self.graph.nodes)]

    def object(self, node_id: int) -> SceneObject:
        try:
            return self.graph.nodes[node_id]["object"]
        except KeyError:
            raise KeyError(f"no object {node_id} in the scene graph") from None

    def __len__(self) -> int:
        return self.graph.number_of_nodes()

    def relations(self, relation: str | None = None) -> list[Relation]:
        """All relations (optionally only one kind), by (subject, relation, object)."""
        out = [
            Relation(s, k, o, d["score"], d.get("evidence", {}))
            for s, o, k, d in self.graph.edges(keys=True, data=True)
            if relation is None or k == relation
        ]
        return sorted(out, key=lambda r: (r.subject, r.relation, r.object))

    def score(self, subject: int, relation: str, obj: int) -> float:
        """Score of one relation, 0 when the edge is absent."""
        data = self.graph.get_edge_data(subject, obj, key=relation)
        return float(data["score"]) if data else 0.0

    def iter_relations_from(self, subject: int) -> Iterator[Relation]:
        for _, o, k, d in self.graph.out_edges(subject, keys=True, data=True):
            yield Relation(subject, k, o, d["score"], d.get("evidence", {}))

    @property
    def has_embeddings(self) -> bool:
        return any(o.embedding is not None for o in self.objects if not o.is_structure)

    # ------------------------------------------------------------------ files
    def to_json(self) -> dict:
        dims = {len(o.embedding) for o in self.objects if o.embedding is not None}
        return {
            "format": SCENE_GRAPH_FORMAT,
            "format_version": SCENE_GRAPH_VERSION,
            "encoder": self.encoder,
            "embedding_dim": dims.pop() if len(dims) == 1 else None,
            "up": [float(x) for x in self.up],
            "R_g_world": self.R_g_world.tolist(),
            "metadata": self.metadata,
            "objects": [o.to_json() for o in self.objects],
            "relations": [r.to_json() for r in self.relations()],
        }

    @classmethod
    def from_json(cls, data: dict, where: str = "scene graph") -> SceneGraph:
        """Build a graph from :meth:`to_json`'s content.

        Raises:
            MapFormatError: another format, an unknown format version, a field missing or of
                the wrong type, or relations naming unknown objects (the message names ``where``).
        """
        if data.get("format") != SCENE_GRAPH_FORMAT:
            raise MapFormatError(where, f"not a semmap scene graph (format {data.get('format')!r})")
        check_format_version(data, where, SCENE_GRAPH_VERSION, "scene graph")
        check_fields(data, where, GRAPH_FIELDS)
        check_list_of(data["objects"], where, "objects", dict)
        check_list_of(data["relations"], where, "relations", dict)
        dims = set()
        try:
            g = cls(data["up"], data["R_g_world"], data.get("encoder"), data.get("metadata", {}))
            for i, od in enumerate(data["objects"]):
                check_fields(od, where, OBJECT_FIELDS, f"objects[{i}].")
                obj = SceneObject.from_json(od)
                if obj.embedding is not None:
                    dims.add(obj.embedding.shape)
                g.add_object(obj)
            for i, rd in enumerate(data["relations"]):
                check_fields(rd, where, RELATION_FIELDS, f"relations[{i}].")
                g.add_relation(
                    Relation(int(rd["subject"]), str(rd["relation"]), int(rd["object"]), float(rd["score"]), dict(rd.get("evidence", {})))
                )
        except (KeyError, TypeError, ValueError) as e:
            if isinstance(e, MapFormatError):
                raise
            raise MapFormatError(where, f"malformed scene graph ({e.args[0] if e.args else e})") from None
        if len(dims) > 1 or any(len(d) != 1 for d in dims):
            raise MapFormatError(where, f"object embeddings have differing shapes {sorted(dims)}")
        return g

    def save_json(self, path: Path | str) -> Path:
        """Write ``scene_graph.json`` atomically (temporary file, then rename)."""
        return _atomic_write_text(Path(path), json.dumps(self.to_json(), indent=1))

    @classmethod
    def load(cls, path: Path | str) -> SceneGraph:
        """Read a ``scene_graph.json`` file, or the one in a map directory.

        Raises:
            FileNotFoundError: no scene graph there.
            MapFormatError: the file is damaged or of another version (see :meth:`from_json`).
        """
        p = Path(path)
        if p.is_dir():
            p = p / SCENE_GRAPH_FILE
        if not p.is_file():
            raise FileNotFoundError(f"no scene graph at {p} (build it with: semmap graph {p.parent})")
        return cls.from_json(read_json_file(p), str(p))

    def to_graphml_graph(self) -> nx.MultiDiGraph:
        """A copy with scalar attributes only (what GraphML can hold)."""
        g = nx.MultiDiGraph()
        for o in self.objects:
            attrs: dict[str, Any] = {"name": o.name, "kind": o.kind, "label": o.label, "n_points": int(o.n_points)}
            attrs["label_score"] = float(o.label_scores[0][1]) if o.label_scores else 0.0
            for pre, v in (("centroid", o.centroid), ("bbox_min", o.bbox_min), ("bbox_max", o.bbox_max)):
                for axis, x in zip("xyz", v):
                    attrs[f"{pre}_{axis}"] = float(x)
            g.add_node(int(o.id), **attrs)
        for r in self.relations():
            g.add_edge(int(r.subject), int(r.object), key=r.relation, relation=r.relation, score=float(r.score))
        return g

    def save_graphml(self, path: Path | str) -> Path:
        """Write ``scene_graph.graphml`` atomically."""
        path = Path(path)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        os.close(fd)
        try:
            nx.write_graphml(self.to_graphml_graph(), tmp)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return path


def _atomic_write_text(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
