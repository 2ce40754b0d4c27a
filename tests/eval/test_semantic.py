"""Semantic segmentation metrics (eval.semantic): analytic cases, class lists, GT readers, a map end to end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from eval.semantic import ClassList, load_labelled_points, segmentation_metrics
from sensors.ply import write_ply

IDS = np.array([1, 2, 3, 7])


def _labels(rng, n=400, absent=(7,)):
    present = [c for c in IDS if c not in absent]
    return rng.choice(present, size=n)


def test_gt_against_itself_is_perfect():
    gt = _labels(np.random.default_rng(0))
    m = segmentation_metrics(gt, gt, IDS)
    assert m.miou == 1.0 and m.fmiou == 1.0 and m.macc == 1.0 and m.overall_accuracy == 1.0
    assert m.unmatched_share == 0.0


def test_one_class_swapped_gives_the_hand_computed_drop():
    # 60 points of class 1, 30 of class 2, 10 of class 3; 10 of class 1 predicted as 2.
    gt = np.array([1] * 60 + [2] * 30 + [3] * 10)
    pred = gt.copy()
    pred[:10] = 2
    m = segmentation_metrics(gt, pred, IDS)
    iou1, iou2, iou3 = 50 / 60, 30 / 40, 1.0  # TP / (TP + FP + FN)
    assert m.iou[0] == pytest.approx(iou1) and m.iou[1] == pytest.approx(iou2) and m.iou[2] == 1.0
    assert m.miou == pytest.approx((iou1 + iou2 + iou3) / 3)
    assert m.fmiou == pytest.approx(0.6 * iou1 + 0.3 * iou2 + 0.1 * iou3)
    assert m.macc == pytest.approx((50 / 60 + 1 + 1) / 3)
    assert m.overall_accuracy == pytest.approx(0.9)


def test_class_absent_from_gt_is_not_averaged():
    gt = np.array([1] * 50 + [2] * 50)
    pred = gt.copy()
    pred[:5] = 7  # class 7 is predicted but absent from the GT
    m = segmentation_metrics(gt, pred, IDS)
    assert np.isnan(m.iou[3]) and np.isnan(m.iou[2])  # 7 and 3: not in the GT
    assert m.miou == pytest.approx((45 / 50 + 1.0) / 2)  # its false positives still cost class 1
    assert "7" not in m.to_dict()["per_class"] and m.to_dict()["classes_present"] == 2


def test_unmatched_points_wrong_or_excluded():
    gt = np.array([1] * 80 + [2] * 20)
    pred = gt.copy()
    pred[:20] = -1  # 20 % of class 1 unmatched
    wrong = segmentation_metrics(gt, pred, IDS, unmatched="wrong")
    excl = segmentation_metrics(gt, pred, IDS, unmatched="exclude")
    assert wrong.unmatched_share == excl.unmatched_share == pytest.approx(0.2)
    assert wrong.iou[0] == pytest.approx(60 / 80) and wrong.iou[1] == 1.0  # nobody's false positive
    assert excl.miou == 1.0
    with pytest.raises(ValueError, match="unmatched"):
        segmentation_metrics(gt, pred, IDS, unmatched="ignore")


def test_gt_outside_the_class_list_is_an_error():
    with pytest.raises(ValueError, match="outside the class list"):
        segmentation_metrics(np.array([1, 5]), np.array([1, 1]), IDS)


def test_class_lists_json_replica_and_scannet_tsv(tmp_path):
    p = tmp_path / "c.json"
    p.write_text(json.dumps({"classes": [{"id": 2, "name": "chair"}, {"id": 1, "name": "wall"}]}))
    cl = ClassList.load(p)
    assert list(cl.ids) == [1, 2] and cl.names == ["wall", "chair"] and cl.instance_class is None
    p.write_text(json.dumps({"3": "table", "5": "sofa"}))
    assert ClassList.load(p).name_of(5) == "sofa"
    p.write_text(json.dumps({"classes": [{"id": 4, "name": "lamp"}], "objects": [{"id": 10, "class_id": 4}]}))
    assert ClassList.load(p).instance_class == {10: 4}  # Replica info_semantic.json
    tsv = tmp_path / "scannetv2-labels.combined.tsv"
    tsv.write_text("id\traw_category\tcategory\tcount\tnyu40id\tnyu40class\n1\twall\twall\t8277\t1\twall\n"
                   "2\tchair\tchair\t4646\t5\tchair\n22\tbookshelf\tbookshelf\t100\t10\tbookshelf\n"
                   "3\tbooks\tbook\t1678\t23\tbooks\n")
    cl = ClassList.load(tsv)
    assert list(cl.ids) == [1, 5, 10, 23] and cl.name_of(10) == "bookshelf"
    p.write_text("[1, 2]")
    with pytest.raises(ValueError, match="list of names"):
        ClassList.load(p)


def _square(tmp_path, face_labels: bool):
    """Two unit squares side by side in z = 0 (x in [0, 1] class 1, x in [1, 2] class 2)."""
    v = np.array([[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0], [2, 0, 0], [2, 1, 0]], np.float32)
    f = np.array([[0, 1, 2], [0, 2, 3], [1, 4, 5], [1, 5, 2]])
    vert = {"x": v[:, 0], "y": v[:, 1], "z": v[:, 2]}
    if not face_labels:
        vert["label"] = np.array([1, 2, 2, 1, 2, 2], np.int32)
        return write_ply(tmp_path / "v.ply", vert, f)
    from sensors.ply import read_ply

    path = write_ply(tmp_path / "f.ply", vert, f)
    # append a face property by rewriting as ASCII (Replica stores face object_id)
    lines = ["ply", "format ascii 1.0", "element vertex 6", "property float x", "property float y",
             "property float z", "element face 4", "property list uchar int vertex_indices",
             "property int object_id", "end_header"]
    lines += [" ".join(map(str, p)) for p in v]
    lines += [f"3 {a} {b} {c} {o}" for (a, b, c), o in zip(f, [10, 10, 20, 20])]
    path.write_text("\n".join(lines) + "\n")
    assert read_ply(path)["face"]["object_id"].tolist() == [10, 10, 20, 20]
    return path


def test_vertex_and_face_labels_and_surface_sampling(tmp_path):
    cl = ClassList(np.array([1, 2]), ["a", "b"])
    pts, lab = load_labelled_points(_square(tmp_path, False), cl)
    assert len(pts) == 6 and sorted(lab.tolist()) == [1, 1, 2, 2, 2, 2]
    pts, lab = load_labelled_points(_square(tmp_path, False), cl, sample_spacing_m=0.05)
    assert len(pts) == pytest.approx(2 / 0.05**2, rel=0.01)
    # triangles take their vertices' majority: the left square's second triangle (0, 2, 3) is class 1
    assert np.all(pts[lab == 2][:, 0] >= 0.0)
    cl_rep = ClassList(np.array([1, 2]), ["a", "b"], instance_class={10: 1, 20: 2})
    pts, lab = load_labelled_points(_square(tmp_path, True), cl_rep, label_attr="object_id")
    assert len(pts) == 4 and np.all(lab[pts[:, 0] < 1] == 1) and np.all(lab[pts[:, 0] > 1] == 2)
    with pytest.raises(ValueError, match="no label property 'nope'"):
        load_labelled_points(_square(tmp_path, False), cl, label_attr="nope")


@pytest.fixture(scope="module")
def oracle_room(tmp_path_factory):
    """A generated room (seed 3) mapped with --features oracle, its labelled GT."""
    from semmap.cli import main

    root = tmp_path_factory.mktemp("semroom")
    assert main(["render", "room", "--seed", "3", "--frames", "2", "--width", "64", "--height", "48",
                 "--out", str(root / "frames")]) == 0
    rc = main(["map", "synthetic:room?seed=3&frames=16&width=128&height=96", "--encoder", "lite", "--features",
               "oracle", "--out", str(root / "map"), "--no-progress", "--voxel-size", "0.04"])
    assert rc == 0
    return root / "map", root / "frames"


def test_oracle_map_scores_high_and_writes_the_report(oracle_room, capsys):
    from semmap.cli import main

    map_dir, gt = oracle_room
    rc = main(["eval", "semantic", str(map_dir), str(gt / "gt_mesh_labels.ply"), "--classes",
               str(gt / "gt_classes.json"), "--unmatched", "exclude", "--sample-spacing", "0.03"])
    assert rc == 0
    doc = json.loads((map_dir / "semantic_metrics.json").read_text())
    assert doc["protocol"]["prompt_templates"] == ["a photo of a {}."] and doc["protocol"]["unmatched"] == "exclude"
    # perfect 2D labels: only voxel mixing at class boundaries is lost
    assert doc["mIoU"] > 0.7 and doc["f-mIoU"] > 0.85 and doc["mAcc"] > 0.85  # measured 0.81 / 0.95 / 0.93
    assert 0 < doc["unmatched_share"] < 0.95
    assert "ceiling" not in doc["per_class"] or doc["per_class"]["ceiling"]["gt_points"] > 0
    assert (map_dir / "semantic_iou.png").stat().st_size > 0 and (map_dir / "semantic_errors.png").stat().st_size > 0


def test_oracle_features_refuse_frames_without_truth(tmp_path, capsys):
    from semmap.cli import main

    frames = tmp_path / "frames"
    assert main(["render", "room", "--seed", "1", "--frames", "3", "--width", "64", "--height", "48",
                 "--out", str(frames)]) == 0
    rc = main(["map", str(frames), "--encoder", "lite", "--features", "oracle", "--out", str(tmp_path / "m"),
               "--no-progress"])
    assert rc == 2 and "true instance ids" in capsys.readouterr().err
