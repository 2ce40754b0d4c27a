"""Acceptance on generated rooms: object recall and relation precision / recall vs the generator's truth.

Rooms (``sensors.scenes.make_room``, seeds in ``conftest.ROOM_SEEDS``): a table with a
monitor, a book and two mugs on it, 2-4 chairs beside it, a shelf against the north
wall with a box inside. Rendered noise-free at 320x240 along a 40-frame orbit, mapped at
2 cm with stored views. Protocol: ``scenegraph.evaluate`` (IoU on ground-truth surface
points; ``next_to`` pairs the generator does not list but its own definition accepts
are not counted; ``near`` recall on the ``next_to`` pairs).
"""

from __future__ import annotations

import numpy as np
import pytest

from scenegraph.evaluate import check_against_scene
from tests.scenegraph.conftest import ROOM_SEEDS


@pytest.fixture(scope="module")
def checks(room_graphs):
    return {s: check_against_scene(g, scene) for s, (scene, _, g) in room_graphs.items()}


@pytest.mark.parametrize("seed", ROOM_SEEDS)
def test_object_recall(checks, seed):
    c = checks[seed]
    assert c.recall >= 0.9, f"seed {seed}: recall {c.recall:.2f}; IoU per instance {c.instance_iou}"
    assert not c.unobserved, f"seed {seed}: instances the cameras did not see: {c.unobserved}"


@pytest.mark.parametrize("seed", ROOM_SEEDS)
def test_relation_precision_recall(checks, seed):
    c = checks[seed]
    for rel in ("on", "inside", "next_to", "against"):
        r = c.relations[rel]
        assert r.tp >= 1, f"seed {seed}: no true {rel}"
        assert r.precision >= 0.9 and r.recall >= 0.9, f"seed {seed}: {rel} {r.to_json()}\n{c.summary()}"
    near = c.relations["near"]
    assert near.recall >= 0.9 and near.precision >= 0.9, f"seed {seed}: near {near.to_json()}"


def test_pooled_relations(checks):
    """Pooled over the rooms, every generator relation is found and none is wrong."""
    for rel in ("on", "inside", "next_to"):
        tp = sum(c.relations[rel].tp for c in checks.values())
        fp = sum(c.relations[rel].fp for c in checks.values())
        fn = sum(c.relations[rel].fn for c in checks.values())
        assert tp / max(tp + fp, 1) >= 0.9 and tp / max(tp + fn, 1) >= 0.9, (rel, tp, fp, fn)


def test_structure_and_gravity(room_graphs):
    """Synthetic rooms are z-up: one floor at z = 0, four walls, up = +z."""
    for seed, (scene, _, g) in room_graphs.items():
        kinds = [o.kind for o in g.objects if o.is_structure]
        assert kinds.count("floor") == 1 and kinds.count("wall") == 4, (seed, kinds)
        np.testing.assert_allclose(g.up, [0, 0, 1], atol=0.01)
        floor = next(o for o in g.objects if o.kind == "floor")
        assert abs(floor.centroid[2]) < 0.02


def test_table_holds_its_objects(room_graphs, checks):
    """Every object the generator put on the table is 'on' the table node (and the table supports it)."""
    for seed, (scene, _, g) in room_graphs.items():
        c = checks[seed]
        by_name = {o.name: o.id for o in g.objects}
        table = by_name[c.matches["table"]]
        for s, r, o in scene.relations_named():
            if r == "on" and o == "table":
                node = by_name[c.matches[s]]
                assert g.score(node, "on", table) >= 0.3, (seed, s)
                assert g.score(table, "supports", node) == g.score(node, "on", table)


def test_build_is_deterministic(room_maps, room_graphs):
    from scenegraph.build import GraphConfig, build_scene_graph

    _, d, g1 = room_graphs[ROOM_SEEDS[0]]
    g2 = build_scene_graph(d, GraphConfig(embed=False))
    assert [(o.kind, o.n_points) for o in g1.objects] == [(o.kind, o.n_points) for o in g2.objects]
    assert [(r.subject, r.relation, r.object) for r in g1.relations()] == [
        (r.subject, r.relation, r.object) for r in g2.relations()
    ]
