"""Relation tests on hand-made boxes (gravity frame = world frame, z up, metres)."""

from __future__ import annotations

import numpy as np
import pytest

from scenegraph.relations import Body, RelationConfig, compute_relations
from sensors.scenes import box_surface, merge_parts

NODE = 0.02
FLOOR, WALL = 0, 1


def box_points(lo, hi, cell: float = NODE) -> np.ndarray:
    return box_surface(np.asarray(lo, float), np.asarray(hi, float), cell)[0]


def table_points(x0=1.0, y0=1.0, w=1.2, d=0.8, h=0.75) -> np.ndarray:
    top = box_points([x0, y0, h - 0.04], [x0 + w, y0 + d, h])
    legs = [box_points([x, y, 0.0], [x + 0.05, y + 0.05, h - 0.04]) for x in (x0 + 0.05, x0 + w - 0.1) for y in (y0 + 0.05, y0 + d - 0.1)]
    return np.concatenate([top, *legs])


def shelf_points(x0=0.2, y1=3.99, w=0.9, d=0.35, h=1.6) -> np.ndarray:
    y0, t = y1 - d, 0.02
    parts = [
        box_surface([x0, y0, 0], [x0 + t, y1, h], NODE),
        box_surface([x0 + w - t, y0, 0], [x0 + w, y1, h], NODE),
        box_surface([x0 + t, y1 - t, 0], [x0 + w - t, y1, h], NODE),
    ]
    parts += [box_surface([x0 + t, y0, z], [x0 + w - t, y1 - t, z + t], NODE) for z in (0.05, 0.6, 1.1, h - t)]
    return merge_parts(parts)[0]


def relations_of(bodies: list[Body]) -> dict[tuple[int, str, int], float]:
    rels = compute_relations(bodies, NODE, RelationConfig())
    return {(r.subject, r.relation, r.object): r.score for r in rels}


@pytest.fixture(scope="module")
def scene():
    floor = Body.from_plane(FLOOR, "floor", np.array([0.0, 0.0, 1.0, 0.0]))
    wall = Body.from_plane(WALL, "wall", np.array([0.0, -1.0, 0.0, 4.0]))  # y = 4, facing -y
    bodies = {
        "table": Body.from_points(2, table_points()),
        "mug": Body.from_points(3, box_points([1.3, 1.3, 0.75], [1.38, 1.38, 0.85])),
        "mug_far": Body.from_points(4, box_points([1.53, 1.3, 0.75], [1.61, 1.38, 0.85])),
        "floater": Body.from_points(5, box_points([1.9, 1.5, 0.95], [1.98, 1.58, 1.05])),
        "chair": Body.from_points(6, box_points([1.2, 0.46, 0.0], [1.64, 0.9, 0.9])),
        "shelf": Body.from_points(7, shelf_points()),
        "box": Body.from_points(8, box_points([0.4, 3.72, 0.62], [0.68, 3.94, 0.8])),
        "crate": Body.from_points(9, box_points([1.9, 1.4, 0.0], [2.1, 1.6, 0.3])),
    }
    ids = {k: b.id for k, b in bodies.items()}
    return ids, relations_of([floor, wall, *bodies.values()])


def test_on_and_supports(scene):
    ids, rel = scene
    assert rel[(ids["mug"], "on", ids["table"])] >= 0.9
    assert rel[(ids["table"], "supports", ids["mug"])] == rel[(ids["mug"], "on", ids["table"])]
    for name in ("table", "chair", "shelf", "crate"):
        assert rel.get((ids[name], "on", FLOOR), 0) >= 0.9, name
    for name in ("mug", "floater", "box"):
        assert (ids[name], "on", FLOOR) not in rel, name


def test_above_not_on_when_floating(scene):
    ids, rel = scene
    assert (ids["floater"], "on", ids["table"]) not in rel
    assert rel[(ids["floater"], "above", ids["table"])] >= 0.9
    assert rel[(ids["table"], "below", ids["floater"])] == rel[(ids["floater"], "above", ids["table"])]
    assert (ids["mug"], "above", ids["table"]) not in rel  # in contact: on, not above


def test_inside_supersedes_on(scene):
    ids, rel = scene
    assert rel[(ids["box"], "inside", ids["shelf"])] >= 0.9
    assert rel[(ids["shelf"], "contains", ids["box"])] >= 0.9
    assert (ids["box"], "on", ids["shelf"]) not in rel
    # a mug on a table is not inside it, a crate under a table is under it but not inside
    assert (ids["mug"], "inside", ids["table"]) not in rel
    assert (ids["crate"], "inside", ids["table"]) not in rel


def test_under(scene):
    ids, rel = scene
    assert rel[(ids["crate"], "under", ids["table"])] >= 0.9
    assert rel[(ids["box"], "under", ids["shelf"])] >= 0.9  # the board above it
    assert (ids["chair"], "under", ids["table"]) not in rel
    assert (ids["table"], "under", ids["mug"]) not in rel


def test_next_to_and_near(scene):
    ids, rel = scene
    assert rel[(ids["chair"], "next_to", ids["table"])] >= 0.9
    assert rel[(ids["table"], "next_to", ids["chair"])] == rel[(ids["chair"], "next_to", ids["table"])]
    assert rel[(ids["chair"], "near", ids["table"])] >= 0.5
    assert (ids["mug"], "next_to", ids["table"]) not in rel  # on it, not beside it
    # mugs 15 cm apart are near each other (threshold scales with size: 0.3 m for mugs)
    assert rel[(ids["mug"], "near", ids["mug_far"])] == pytest.approx(0.5, abs=0.05)
    assert (ids["mug"], "near", ids["shelf"]) not in rel


def test_near_threshold_scales_with_size():
    small_a = Body.from_points(1, box_points([0, 0, 0], [0.08, 0.08, 0.1]))
    small_b = Body.from_points(2, box_points([0.48, 0, 0], [0.56, 0.08, 0.1]))  # 40 cm gap
    big_a = Body.from_points(3, box_points([0, 2, 0], [1.5, 2.8, 0.75]))
    big_b = Body.from_points(4, box_points([1.9, 2, 0], [3.4, 2.8, 0.75]))  # 40 cm gap
    rel = relations_of([small_a, small_b, big_a, big_b])
    assert (1, "near", 2) not in rel
    assert rel[(3, "near", 4)] > 0


def test_against_wall(scene):
    ids, rel = scene
    assert rel[(ids["shelf"], "against", WALL)] >= 0.9
    assert (ids["table"], "against", WALL) not in rel
    assert (ids["box"], "against", WALL) not in rel
