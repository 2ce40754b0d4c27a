"""Query-hit evaluation (eval.queries, `semmap eval queries`): the hit protocol, annotation errors, a real map."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from eval.queries import AnnotatedObject, Annotations, evaluate_queries, is_hit
from semmap.cli import main
from tests.conftest import data_path

ANNOTATIONS = Path(__file__).resolve().parents[1] / "data" / "redkitchen_objects.json"


def _box(cid: str = "a") -> AnnotatedObject:
    return AnnotatedObject(cid, np.zeros(3), np.array([-0.1, -0.1, -0.1]), np.array([0.1, 0.1, 0.1]))


def test_hit_by_distance_or_grown_box():
    o = _box()
    assert is_hit(np.array([0.25, 0, 0]), o, 0.25, 0.0)  # on the tolerance sphere
    assert not is_hit(np.array([0.26, 0, 0]), o, 0.25, 0.0)
    # a box corner lies 0.17 m from the centroid: with tolerance 0.1 only the box counts
    assert is_hit(np.array([0.1, 0.1, 0.1]), o, 0.1, 0.0)
    assert not is_hit(np.array([0.14, 0.14, 0.0]), o, 0.1, 0.0)
    assert is_hit(np.array([0.14, 0.14, 0.0]), o, 0.1, 0.05)  # inside the box grown by 5 cm


def test_annotations_parse_strings_and_relational_entries():
    doc = json.loads(ANNOTATIONS.read_text())
    ann = Annotations.from_dict(doc)
    mug = next(q for q in ann.queries if q.text == "coffee mug")
    assert set(mug.objects) == {o["id"] for o in doc["objects"] if "coffee mug" in o["queries"]}
    doc["queries"].append({"text": "the mug on the table", "objects": ["mug_white"]})
    assert Annotations.from_dict(doc).queries[-1].objects == ("mug_white",)


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda d: d.pop("objects"), "'objects' list"),
        (lambda d: d["objects"][0].pop("centroid"), r"objects\[0\] needs id, centroid"),
        (lambda d: d["objects"][0].update(centroid=[1, 2]), "3 numbers"),
        (lambda d: d["queries"].append({"text": "x", "objects": ["nope"]}), "unknown objects"),
        (lambda d: d.update(queries=[]), "no queries"),
    ],
)
def test_bad_annotations_name_the_field(mutate, message):
    doc = json.loads(ANNOTATIONS.read_text())
    mutate(doc)
    with pytest.raises(ValueError, match=message):
        Annotations.from_dict(doc, "ann.json")


@pytest.fixture(scope="module")
def lite_map(tmp_path_factory) -> Path:
    """A small lite semantic map of redkitchen: 5 frames (stride 40), one crop scale."""
    root = data_path("7scenes-redkitchen")
    out = tmp_path_factory.mktemp("q") / "kitchen"
    rc = main(["map", f"7scenes:{root}", "--out", str(out), "--stride", "40", "--max-frames", "5",
               "--voxel-size", "0.04", "--no-progress", "--encoder", "lite", "--crop-scales", "0.4",
               "--semantic-voxel-size", "0.06"])
    assert rc == 0
    return out


def test_rates_match_an_independent_count(lite_map):
    from mapping.semantic_map import SemanticMap

    res = evaluate_queries(lite_map, ANNOTATIONS, top=3, tolerance_m=0.25, margin_m=0.05)
    doc = json.loads(ANNOTATIONS.read_text())
    smap = SemanticMap.load(lite_map)
    top1 = top3 = 0
    for text in doc["queries"]:  # reference: every region against every named object, by hand
        named = [o for o in doc["objects"] if text in o["queries"]]
        ok = [
            any(
                np.linalg.norm(r.centroid - np.array(o["centroid"])) <= 0.25
                or (np.all(r.centroid >= np.array(o["bbox_min"]) - 0.05) and np.all(r.centroid <= np.array(o["bbox_max"]) + 0.05))
                for o in named
            )
            for r in smap.query(text, top=3).regions
        ]
        top1 += bool(ok and ok[0])
        top3 += any(ok)
    n = len(doc["queries"])
    assert res.rates()["queries"] == n and res.rates("plain")["queries"] == n
    assert res.top1_rate == pytest.approx(top1 / n) and res.topk_rate == pytest.approx(top3 / n)
    assert res.rates("relational")["top1"] is None
    for row in res.rows:
        assert row.route == "map" and len(row.results) <= 3
        if row.first_hit_rank is not None:
            assert row.results[row.first_hit_rank - 1]["hits"]


def test_cli_prints_json_and_writes_metrics(lite_map, tmp_path, capsys):
    assert main(["eval", "queries", str(lite_map), str(ANNOTATIONS), "--top", "2", "--json", "--out", str(tmp_path)]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["protocol"]["top"] == 2 and doc["protocol"]["margin_m"] == 0.05
    assert set(doc) >= {"overall", "plain", "relational", "queries"}
    assert json.loads((tmp_path / "query_metrics.json").read_text())["overall"] == doc["overall"]


def test_cli_bad_input_is_a_clear_error(lite_map, tmp_path, capsys):
    assert main(["eval", "queries", str(lite_map), str(tmp_path / "none.json")]) == 2
    assert "annotation file" in capsys.readouterr().err
    assert main(["eval", "queries", str(lite_map), str(ANNOTATIONS), "--top", "0"]) == 2
    assert "top must be >= 1" in capsys.readouterr().err
