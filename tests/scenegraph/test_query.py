"""Relational query parsing and ranking on a hand-made scene graph."""

from __future__ import annotations

import numpy as np
import pytest

from scenegraph.graph import Relation, SceneGraph, SceneObject
from scenegraph.query import (
    answer,
    answer_graph,
    parse_query,
    relational_search,
    search_objects,
)

WORDS = ("mug", "table", "chair", "book")


class KeywordEncoder:
    """Text -> one-hot of the first known word it contains (uniform if none)."""

    name = "keywords"

    def __init__(self, words: tuple[str, ...] = WORDS) -> None:
        self.words, self.dim = words, len(words)

    def encode_text(self, texts):
        out = np.full((len(texts), self.dim), 0.5, np.float32)
        for i, t in enumerate(texts):
            for j, w in enumerate(self.words):
                if w in t:
                    out[i] = 0.0
                    out[i, j] = 1.0
                    break
        return out / np.linalg.norm(out, axis=1, keepdims=True)


def onehot(word: str, noise: float = 0.0) -> np.ndarray:
    v = np.full(len(WORDS), noise, np.float32)
    v[WORDS.index(word)] = 1.0
    return v / np.linalg.norm(v)


def obj(i, kind, name, label, c, emb=None):
    c = np.asarray(c, float)
    return SceneObject(i, kind, name, label, c, c - 0.1, c + 0.1, c - 0.1, c + 0.1, 50, 0.1, embedding=emb)


@pytest.fixture
def graph() -> SceneGraph:
    g = SceneGraph(np.array([0, 0, 1.0]), np.eye(3), encoder="keywords")
    g.add_object(obj(0, "floor", "floor", "floor", [2, 2, 0]))
    g.add_object(obj(1, "wall", "wall_1", "wall", [0, 2, 1]))
    g.add_object(obj(2, "object", "table_2", "table", [2, 2, 0.4], onehot("table")))
    g.add_object(obj(3, "object", "mug_3", "mug", [2.1, 2, 0.8], onehot("mug", 0.2)))  # on the table
    g.add_object(obj(4, "object", "mug_4", "mug", [3.5, 1, 0.05], onehot("mug")))  # on the floor (a better mug)
    g.add_object(obj(5, "object", "chair_5", "chair", [2, 1.2, 0.45], onehot("chair")))
    g.add_object(obj(6, "object", "book_6", "book", [1.8, 2.1, 0.77], onehot("book")))
    for s, r, o, sc in [
        (3, "on", 2, 0.95), (2, "supports", 3, 0.95), (6, "on", 2, 0.9), (2, "supports", 6, 0.9),
        (4, "on", 0, 1.0), (2, "on", 0, 1.0), (5, "on", 0, 1.0), (5, "next_to", 2, 0.9), (2, "next_to", 5, 0.9),
        (3, "near", 6, 0.6), (6, "near", 3, 0.6), (5, "near", 2, 0.7), (2, "near", 5, 0.7),
    ]:
        g.add_relation(Relation(s, r, o, sc))
    return g


@pytest.mark.parametrize(
    "text, subject, relation, obj_",
    [
        ("the mug on the table", "mug", "on", "table"),
        ("Find the chair next to the table.", "chair", "next_to", "table"),
        ("a chair that is on the floor", "chair", "on", "floor"),
        ("the book lying on top of the table", "book", "on", "table"),
        ("the box inside the shelf", "box", "inside", "shelf"),
        ("pc tower underneath the desk", "pc tower", "under", "desk"),
        ("cup close to the monitor", "cup", "near", "monitor"),
        ("the shelf against the wall", "shelf", "against", "wall"),
        ("the mug in the box on the table", "mug", "inside", "box on the table"),
    ],
)
def test_parse_relational(text, subject, relation, obj_):
    p = parse_query(text)
    assert (p.relational, p.fallback, p.subject, p.relation, p.object) == (True, False, subject, relation, obj_)


@pytest.mark.parametrize("text", ["coffee mug", "dining table", "the monitor", "screen"])
def test_parse_plain(text):
    p = parse_query(text)
    assert not p.relational and not p.fallback and p.relation is None
    assert "the" not in p.subject.split()


@pytest.mark.parametrize("text", ["mug on", "on the table", "the chair next to", "near"])
def test_parse_unparseable_falls_back(text):
    p = parse_query(text)
    assert p.fallback and not p.relational
    assert "could not parse a relation" in p.note


def test_parse_rejects_empty():
    with pytest.raises(ValueError):
        parse_query("   ")


def test_relational_ranking_uses_the_relation(graph):
    enc = KeywordEncoder()
    # mug_4 looks more like a mug than mug_3, but only mug_3 is on the table
    plain = search_objects(graph, "mug", enc)
    assert plain[0].name == "mug_4" and plain[1].name == "mug_3"
    res = relational_search(graph, parse_query("the mug on the table"), enc)
    assert res[0].name == "mug_3" and res[0].relation == "on" and res[0].partner_name == "table_2"
    np.testing.assert_allclose(res[0].centroid, graph.object(3).centroid)
    assert res[0].score == pytest.approx(res[0].subject_score * res[0].relation_score * res[0].partner_score)
    assert [r.rank for r in res] == list(range(1, len(res) + 1))
    assert res[0].to_dict()["relation"] == "on" and "voxel_count" in res[0].to_dict()
    # structure by name
    assert relational_search(graph, parse_query("mug on the floor"), enc)[0].name == "mug_4"
    assert relational_search(graph, parse_query("chair next to the table"), enc)[0].name == "chair_5"
    assert relational_search(graph, parse_query("the chair near the table"), enc)[0].name == "chair_5"
    # near also accepts next_to; a relation nobody has gives nothing
    assert relational_search(graph, parse_query("mug under the chair"), enc) == []


def test_answer_modes(graph, tmp_path):
    enc = KeywordEncoder()
    a = answer_graph(graph, "the mug on the table", enc)
    assert a.mode == "relational" and a[0].name == "mug_3" and a.message == ""
    a = answer_graph(graph, "mug on", enc)
    assert a.mode == "fallback" and "could not parse" in a.message and a[0].label == "mug"
    a = answer_graph(graph, "book", enc, top=1)
    assert a.mode == "objects" and len(a) == 1 and a[0].name == "book_6"
    a = answer_graph(graph, "table under the mug", enc)
    assert a.mode == "relational" and len(a) == 0 and "nothing" in a.message
    graph.save_json(tmp_path / "scene_graph.json")
    assert answer(tmp_path, "the mug on the table", encoder=enc)[0].name == "mug_3"


def test_graph_without_embeddings_says_so(graph):
    for o in graph.objects:
        o.embedding = None
    with pytest.raises(ValueError, match="no object embeddings"):
        answer_graph(graph, "the mug on the table")
    # structure needs no embeddings: nothing here is a floor standing on a wall, but it answers
    assert answer_graph(graph, "floor on the wall").mode == "relational"


def test_contrast_prefers_objects_the_phrase_describes_best():
    """A table part that resembles "chair" a little more than the chair does, but
    "table" much more, loses "chair" to the chair once the phrase is contrasted with the
    vocabulary names (LERF-style canonical negatives)."""
    from scenegraph.query import GraphQueryConfig, phrase_scores

    g = SceneGraph(np.array([0, 0, 1.0]), np.eye(3), encoder="keywords")
    emb = {
        "table_leg": [0.0, 1.0, 0.8, 0.0],  # cos(chair) 0.62, cos(table) 0.78
        "chair": [0.5, 0.0, 0.55, 0.5],  # cos(chair) 0.61, cos(table) 0: a chair, badly seen
        "mug": [1.0, 0.0, 0.1, 0.0],
        "book": [0.0, 0.0, 0.1, 1.0],
    }
    for i, (name, v) in enumerate(emb.items()):
        v = np.asarray(v, np.float32)
        g.add_object(obj(i, "object", name, name, [i, 0, 0.5], v / np.linalg.norm(v)))
    enc = KeywordEncoder()
    plain = phrase_scores(g, "chair", enc, GraphQueryConfig(contrast=False))
    contrasted = phrase_scores(g, "chair", enc, GraphQueryConfig(vocabulary=WORDS))
    assert max(plain, key=plain.get) == 0  # the leg
    assert max(contrasted, key=contrasted.get) == 1  # the chair
    assert sum(contrasted.values()) == pytest.approx(1.0)
    # structure nodes are still named, not scored
    g.add_object(obj(9, "floor", "floor", "floor", [2, 2, 0]))
    assert phrase_scores(g, "the floor", enc) == {9: 1.0}


def test_size_prior_prefers_the_whole_object_of_the_phrases_size():
    """A chair that an encoder mistakes for a table (its crops show the table behind it)
    resembles "table" more than the whole table does; the size prior (typical longest
    side of a table 1.4 m, of a chair 0.5 m) resolves "table" to the 2 m object."""
    from scenegraph.query import GraphQueryConfig, object_size_m, phrase_scores, size_prior

    def sized(i, name, c, half_xy, emb):
        c = np.asarray(c, float)
        h = np.array([half_xy[0], half_xy[1], 0.4])
        v = np.asarray(emb, np.float32)
        return SceneObject(i, "object", name, "", c, c - h, c + h, c - h, c + h, 50, 0.5, embedding=v / np.linalg.norm(v))

    g = SceneGraph(np.array([0, 0, 1.0]), np.eye(3), encoder="keywords")
    g.add_object(sized(1, "whole_table", [0, 0, 0.4], (1.0, 0.5), [0.0, 0.85, 0.5, 0.1]))
    g.add_object(sized(2, "chair_looks_like_table", [1.3, 0, 0.4], (0.25, 0.25), [0.0, 0.9, 0.45, 0.1]))
    g.add_object(sized(3, "mug", [0, 0, 0.85], (0.05, 0.05), [1.0, 0.1, 0.0, 0.0]))
    enc = KeywordEncoder()
    assert object_size_m(g.object(1)) == pytest.approx(2.0)
    plain = phrase_scores(g, "table", enc, GraphQueryConfig(vocabulary=WORDS, size_prior=False))
    assert max(plain, key=plain.get) == 2  # without the prior: the chair
    sized_scores = phrase_scores(g, "table", enc, GraphQueryConfig(vocabulary=WORDS))
    assert max(sized_scores, key=sized_scores.get) == 1
    assert sum(sized_scores.values()) == pytest.approx(1.0)
    chair = phrase_scores(g, "chair", enc, GraphQueryConfig(vocabulary=WORDS))
    chair_plain = phrase_scores(g, "chair", enc, GraphQueryConfig(vocabulary=WORDS, size_prior=False))
    assert chair[2] > chair_plain[2]  # "chair" moves towards the chair-sized object
    # the prior itself: a table-sized object gets ~1, a mug-sized one ~0
    w = size_prior(g.objects, enc.encode_text(["a photo of a table."])[0], enc, GraphQueryConfig())
    assert w[0] > 0.7 and w[2] < 1e-3
    # no sized name resembles the phrase, or no sizes: no prior
    assert size_prior(g.objects, enc.encode_text(["a photo of a table."])[0], enc, GraphQueryConfig(typical_sizes={})) is None
    assert size_prior(g.objects, -enc.encode_text(["a photo of a table."])[0], enc, GraphQueryConfig()) is None


def test_a_phrase_also_matches_the_kinds_of_it():
    """A desk is a kind of table (``scenegraph.vocabulary.KIND_OF``): "table" finds the
    object that looks like a desk rather than a chair that looks a little like a table
    (the redkitchen case); "desk" still means a desk, not any table."""
    from scenegraph.query import GraphQueryConfig, phrase_scores
    from scenegraph.vocabulary import kinds_of

    words = ("mug", "table", "chair", "book", "desk")
    assert kinds_of("table", words) == ("desk",) and kinds_of("desk", words) == ()
    assert kinds_of("table", ("table", "chair")) == ()  # only names of the vocabulary
    assert kinds_of("shelf") == ("bookshelf",) and kinds_of("counter") == ("kitchen counter",)
    g = SceneGraph(np.array([0, 0, 1.0]), np.eye(3), encoder="keywords")
    emb = {
        "desk_like": [0.0, 0.3, 0.0, 0.0, 1.0],
        "chair_like_a_table": [0.0, 0.6, 0.8, 0.0, 0.0],
        "mug": [1.0, 0.0, 0.0, 0.0, 0.0],
        "book": [0.0, 0.0, 0.0, 1.0, 0.0],
    }
    for i, (name, v) in enumerate(emb.items()):
        v = np.asarray(v, np.float32)
        g.add_object(obj(i, "object", name, name, [i, 0, 0.5], v / np.linalg.norm(v)))
    enc = KeywordEncoder(words)
    cfg = dict(vocabulary=words, size_prior=False)
    without = phrase_scores(g, "table", enc, GraphQueryConfig(kinds=False, **cfg))
    with_kinds = phrase_scores(g, "table", enc, GraphQueryConfig(**cfg))
    assert max(without, key=without.get) == 1 and max(with_kinds, key=with_kinds.get) == 0
    assert sum(with_kinds.values()) == pytest.approx(1.0)
    g.add_object(obj(4, "object", "table", "table", [4, 0, 0.5], np.array([0, 1, 0, 0, 0], np.float32)))
    desk = phrase_scores(g, "desk", enc, GraphQueryConfig(**cfg))
    assert max(desk, key=desk.get) == 0 and desk[4] < 0.01
