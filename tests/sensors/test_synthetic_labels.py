"""Labelled ground truth of generated rooms (sensors.synthetic) and the PLY reader/writer (sensors.ply)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from sensors.ply import read_ply, write_ply
from sensors.scenes import make_room, orbit_trajectory
from sensors.synthetic import (
    SyntheticSource,
    scene_annotations,
    scene_classes,
    vertex_labels,
    write_labelled_ground_truth,
)


@pytest.fixture(scope="module")
def scene():
    return make_room(seed=3)


def test_vertex_labels_agree_with_the_triangles(scene):
    inst, cls = vertex_labels(scene)
    tri = np.asarray(scene.mesh.triangles)
    assert np.all(inst[tri] == scene.triangle_instance[:, None])  # every corner carries its triangle's instance
    names = scene_classes(scene)
    for i in scene.instances:
        assert set(cls[inst == i.id]) == {names.index(i.label) + 1}
    assert names == sorted(names) and len(set(names)) == len(names)


def test_written_ground_truth_round_trips(scene, tmp_path):
    paths = write_labelled_ground_truth(scene, tmp_path)
    ply = read_ply(paths["mesh"])
    v = ply["vertex"]
    inst, cls = vertex_labels(scene)
    assert np.allclose(np.stack([v["x"], v["y"], v["z"]], 1), np.asarray(scene.mesh.vertices), atol=1e-6)
    assert np.array_equal(v["instance"], inst) and np.array_equal(v["label"], cls)
    assert np.array_equal(ply["face"]["vertex_indices"], np.asarray(scene.mesh.triangles))
    classes = json.loads(paths["classes"].read_text())
    assert [c["name"] for c in classes["classes"]] == scene_classes(scene)
    assert {c["id"] for c in classes["classes"]} == set(np.unique(cls)) - {0}
    import open3d as o3d  # the labelled mesh is still an ordinary mesh for eval recon

    m = o3d.io.read_triangle_mesh(str(paths["mesh"]))
    assert len(m.triangles) == len(scene.mesh.triangles) and m.has_vertex_colors()


def test_annotations_name_every_object_and_relation(scene):
    from eval.queries import Annotations
    from scenegraph.query import parse_query

    doc = scene_annotations(scene)
    ann = Annotations.from_dict(doc)
    plain = [q for q in ann.queries if not parse_query(q.text).relational]
    rel = [q for q in ann.queries if parse_query(q.text).relational]
    assert {q.text for q in plain} == {i.label for i in scene.objects}
    for q in plain:
        assert set(q.objects) == {i.name for i in scene.by_label(q.text)}
    for q in rel:  # each parses back to the generated relation between the two classes
        p = parse_query(q.text)
        for name in q.objects:
            s = scene.instance(name)
            assert p.subject == s.label
            assert any(r == p.relation and scene.instances[o].label == p.object and sid == s.id
                       for sid, r, o in scene.relations)
    assert any(q.text == "the mug on the table" for q in rel)
    for o in doc["objects"]:
        assert all(lo <= c <= hi for lo, c, hi in zip(o["bbox_min"], o["centroid"], o["bbox_max"]))


def test_frames_carry_instance_labels(scene):
    from sensors import Camera

    src = SyntheticSource(scene, orbit_trajectory(scene, 4), camera=Camera(40, 40, 31.5, 23.5, 64, 48))
    truth = src.load(0).truth
    assert truth.instance_labels == tuple(i.label for i in scene.instances)
    ids = truth.instance_ids[truth.instance_ids >= 0]
    assert len(ids) and max(ids) < len(truth.instance_labels)


def test_render_room_writes_ground_truth(tmp_path):
    from semmap.cli import main

    out = tmp_path / "r"
    assert main(["render", "room", "--seed", "2", "--frames", "3", "--width", "64", "--height", "48", "--out", str(out)]) == 0
    assert (out / "semmap.json").is_file() and (out / "gt_mesh_labels.ply").is_file()
    assert json.loads((out / "gt_objects.json").read_text())["dataset"].endswith("seed 2)")


def test_ply_ascii_binary_and_errors(tmp_path):
    p = write_ply(tmp_path / "a.ply", {"x": np.arange(3.0), "y": np.zeros(3), "z": np.ones(3), "label": np.array([1, 2, 3])})
    d = read_ply(p)["vertex"]
    assert d["label"].tolist() == [1, 2, 3] and d["x"].dtype == np.float64
    (tmp_path / "b.ply").write_text("ply\nformat ascii 1.0\nelement vertex 2\nproperty float x\nproperty ushort label\n"
                                    "end_header\n0.5 7\n1.5 9\n")
    d = read_ply(tmp_path / "b.ply")["vertex"]
    assert d["label"].tolist() == [7, 9] and d["x"].tolist() == [0.5, 1.5]
    (tmp_path / "c.ply").write_text("not a ply")
    with pytest.raises(ValueError, match="not a PLY"):
        read_ply(tmp_path / "c.ply")
    with pytest.raises(FileNotFoundError):
        read_ply(tmp_path / "none.ply")
