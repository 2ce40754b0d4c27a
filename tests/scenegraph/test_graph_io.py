"""SceneGraph: JSON schema round trip, GraphML export, bad files."""

from __future__ import annotations

import json

import networkx as nx
import numpy as np
import pytest

from scenegraph.graph import (
    GRAPHML_FILE,
    SCENE_GRAPH_FILE,
    Relation,
    SceneGraph,
    SceneObject,
)


def make_graph() -> SceneGraph:
    rng = np.random.default_rng(0)
    g = SceneGraph(np.array([0.0, 0.0, 1.0]), np.eye(3), encoder="lite", metadata={"note": "hand-made"})
    g.add_object(
        SceneObject(0, "floor", "floor", "floor", np.zeros(3), np.array([0, 0, -0.01]), np.array([5, 4, 0.01]),
                    np.array([0, 0, -0.01]), np.array([5, 4, 0.01]), 900, 20.0, plane=np.array([0, 0, 1.0, 0.0]))
    )
    for i, (label, c) in enumerate((("table", [2, 2, 0.4]), ("mug", [2, 2, 0.8])), start=1):
        e = rng.standard_normal(8).astype(np.float32)
        g.add_object(
            SceneObject(i, "object", f"{label}_{i}", label, np.array(c, float), np.array(c) - 0.1, np.array(c) + 0.1,
                        np.array(c) - 0.1, np.array(c) + 0.1, 100 * i, 0.5 * i, [(label, 0.7), ("cup", 0.1)],
                        views=[3, 5], embedding=e / np.linalg.norm(e), embedding_source="views")
        )
    g.add_relation(Relation(2, "on", 1, 0.93, {"gap_m": 0.004, "overlap": 1.0}))
    g.add_relation(Relation(1, "supports", 2, 0.93))
    g.add_relation(Relation(1, "on", 0, 1.0))
    return g


def test_json_round_trip(tmp_path):
    g = make_graph()
    path = g.save_json(tmp_path / SCENE_GRAPH_FILE)
    data = json.loads(path.read_text())
    assert data["format"] == "semmap.scene_graph" and data["format_version"] == 1
    assert data["embedding_dim"] == 8 and data["encoder"] == "lite"
    h = SceneGraph.load(tmp_path)  # a map directory works too
    assert [o.to_json() for o in h.objects] == [o.to_json() for o in g.objects]
    assert [(r.subject, r.relation, r.object, round(r.score, 5)) for r in h.relations()] == [
        (r.subject, r.relation, r.object, round(r.score, 5)) for r in g.relations()
    ]
    np.testing.assert_allclose(h.object(2).embedding, g.object(2).embedding, atol=1e-5)
    assert h.score(2, "on", 1) == pytest.approx(0.93) and h.score(2, "on", 0) == 0.0
    assert h.metadata == {"note": "hand-made"}
    assert not list(tmp_path.glob(".*")), "temporary files left behind"


def test_graphml_round_trip(tmp_path):
    g = make_graph()
    path = g.save_graphml(tmp_path / GRAPHML_FILE)
    h = nx.read_graphml(path, node_type=int, force_multigraph=True)
    assert isinstance(h, nx.MultiDiGraph)
    assert sorted(h.nodes) == [0, 1, 2]
    assert h.nodes[2]["label"] == "mug" and h.nodes[0]["kind"] == "floor"
    assert h.nodes[2]["centroid_z"] == pytest.approx(0.8)
    edges = sorted((u, d["relation"], v, round(d["score"], 3)) for u, v, d in h.edges(data=True))
    assert edges == [(1, "on", 0, 1.0), (1, "supports", 2, 0.93), (2, "on", 1, 0.93)]


def test_bad_relations_and_files(tmp_path):
    g = make_graph()
    with pytest.raises(ValueError, match="unknown relation"):
        g.add_relation(Relation(1, "beside", 2, 0.5))
    with pytest.raises(KeyError):
        g.add_relation(Relation(1, "on", 42, 0.5))
    with pytest.raises(ValueError, match="itself"):
        g.add_relation(Relation(1, "near", 1, 0.5))
    with pytest.raises(FileNotFoundError, match="semmap graph"):
        SceneGraph.load(tmp_path)
    (tmp_path / SCENE_GRAPH_FILE).write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        SceneGraph.load(tmp_path)
    data = g.to_json()
    data["format_version"] = 99
    (tmp_path / SCENE_GRAPH_FILE).write_text(json.dumps(data))
    with pytest.raises(ValueError, match="version 99"):
        SceneGraph.load(tmp_path)
    data = g.to_json()
    del data["objects"][1]["centroid"]
    (tmp_path / SCENE_GRAPH_FILE).write_text(json.dumps(data))
    with pytest.raises(ValueError, match=r"field 'objects\[1\].centroid' is missing"):
        SceneGraph.load(tmp_path)
