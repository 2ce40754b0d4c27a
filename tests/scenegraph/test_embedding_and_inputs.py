"""Object embeddings from views (with a deterministic colour encoder), the CLI, and bad input."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from scenegraph.build import GraphConfig, build_scene_graph
from scenegraph.embedding import EmbeddingConfig, aggregate_embeddings, crop_box, object_crop, object_mask
from scenegraph.evaluate import check_against_scene
from scenegraph.query import answer_graph
from semmap.cli import main
from tests.scenegraph.colour_encoder import COLOURS, ColourEncoder
from tests.scenegraph.conftest import ROOM_SEEDS

SEED = ROOM_SEEDS[0]


@pytest.fixture(scope="module")
def coloured(room_maps):
    """Seed-0 room graph embedded with the colour encoder and labelled with colour names."""
    scene, d = room_maps[SEED]
    g = build_scene_graph(d, GraphConfig(vocabulary=list(COLOURS)), encoder=ColourEncoder())
    return scene, g, check_against_scene(g, scene)


def test_objects_are_embedded_from_crops_centred_on_them(coloured):
    """The colour encoder reads the middle of each crop: its label is the object's own colour."""
    scene, g, check = coloured
    colour_of = {i.name: i.color_name for i in scene.instances}
    colour_of["shelf"] = "beige"  # "light wood" in the generator
    by_name = {o.name: o for o in g.objects}
    hits, total = 0, 0
    for inst, node in check.matches.items():
        want = colour_of[inst]
        if want not in COLOURS:
            continue
        o = by_name[node]
        assert o.embedding is not None and o.embedding_source == "views" and 1 <= len(o.views) <= 5
        assert abs(float(np.linalg.norm(o.embedding)) - 1.0) < 1e-5
        total += 1
        hits += o.label == want
    assert total >= 8 and hits / total >= 0.8, (hits, total)
    assert g.encoder == "test-colours"


def test_relational_query_on_built_graph(coloured):
    scene, g, check = coloured
    mug = next(i for i in scene.by_label("mug") if i.color_name in COLOURS)
    # "<colour> mug on the wood table": the colour alone would also pick chairs / books of that colour
    a = answer_graph(g, f"the {mug.color_name} mug on the wood table", encoder=ColourEncoder())
    assert a.mode == "relational" and len(a) >= 1
    assert a[0].name == check.matches[mug.name], [r.name for r in a]
    assert a[0].partner_name == check.matches["table"]
    a = answer_graph(g, "the brown box inside the shelf", encoder=ColourEncoder())
    assert a[0].name == check.matches["box"]
    a = answer_graph(g, "chair on the floor", encoder=ColourEncoder(), top=10)
    chairs = {check.matches[c.name] for c in scene.by_label("chair")}
    assert chairs <= {r.name for r in a}


def test_aggregation_rejects_outlier_views():
    good = np.array([[1.0, 0, 0], [0.99, 0.14, 0], [0.99, -0.14, 0]])
    bad = np.array([[0.0, 1.0, 0.0]])
    e = np.concatenate([good, bad]).astype(np.float32)
    e /= np.linalg.norm(e, axis=1, keepdims=True)
    mean = aggregate_embeddings(e, "mean")
    dom = aggregate_embeddings(e, "dominant", 0.8)
    med = aggregate_embeddings(e, "medoid")
    assert dom @ [1, 0, 0] > 0.99 and med @ [1, 0, 0] > 0.98
    assert mean @ [1, 0, 0] < dom @ [1, 0, 0] - 0.05
    with pytest.raises(ValueError):
        aggregate_embeddings(np.zeros((0, 3)))


def test_crop_box_is_square_with_context():
    cfg = EmbeddingConfig(context=0.25, min_context_px=4)
    u0, v0, u1, v1 = crop_box(100, 100, 140, 120, 320, 240, cfg)
    assert (u1 - u0) == (v1 - v0) and u0 < 100 and u1 > 140 and v0 < 100 and v1 > 120
    assert crop_box(0, 0, 20, 20, 320, 240, cfg)[:2] == (0, 0)  # clipped at the border


def test_object_crop_keeps_the_object_and_greys_the_rest():
    """A red disc (radius 20 px) on blue, seen through sparse node pixels every 3 px."""
    H, W = 100, 120
    vv, uu = np.mgrid[0:H, 0:W]
    dist = np.hypot(uu - 60, vv - 50)
    disc = dist <= 20
    rgb = np.zeros((H, W, 3), np.uint8)
    rgb[disc], rgb[~disc] = (200, 30, 35), (35, 70, 200)
    sparse = disc & (uu % 3 == 0) & (vv % 3 == 0)
    pixels = np.stack([uu[sparse], vv[sparse]], axis=1)
    m = object_mask(pixels, H, W, grow_px=2)
    assert m[disc].mean() > 0.98 and not m[dist > 24].any()
    box = (30, 20, 90, 80)
    crop = object_crop(rgb, box, pixels, EmbeddingConfig())
    assert crop.shape == (60, 60, 3) and crop.dtype == np.uint8
    d = dist[20:80, 30:90]
    assert (crop[d <= 17] == (200, 30, 35)).all()
    assert (crop[d > 24] == 127).all()
    plain = object_crop(rgb, box, pixels, EmbeddingConfig(mask_background=False))
    assert np.array_equal(plain, rgb[20:80, 30:90])


def test_cli_graph_writes_outputs(room_maps, tmp_path, capsys):
    _, d = room_maps[SEED]
    out = tmp_path / "graph_out"
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("# my words\ncoffee grinder\n")
    assert main(["graph", str(d), "--no-embed", "--out", str(out), "--vocab", str(vocab)]) == 0
    text = capsys.readouterr().out
    assert "objects" in text and "relations" in text and f"wrote scene graph to {out}" in text
    for name in ("scene_graph.json", "scene_graph.graphml", "scene_graph.png"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0
    data = json.loads((out / "scene_graph.json").read_text())
    assert len([o for o in data["objects"] if o["kind"] == "object"]) >= 9
    assert any(r["relation"] == "on" for r in data["relations"])
    assert main(["graph", str(d), "--vocab-only"]) == 2  # needs --vocab


def test_map_without_views_or_features(room_maps, tmp_path):
    """Geometry and relations still work; text queries refuse, saying why."""
    scene, d = room_maps[SEED]
    bare = tmp_path / "bare"
    shutil.copytree(d, bare)
    shutil.rmtree(bare / "views")
    g = build_scene_graph(bare)
    assert g.metadata["views"] == 0 and any("no stored views" in w for w in g.metadata["warnings"])
    assert not g.has_embeddings and g.encoder is None
    assert check_against_scene(g, scene).recall >= 0.8
    with pytest.raises(ValueError, match="no object embeddings"):
        answer_graph(g, "the mug on the table")


def test_empty_and_unfinished_maps(room_maps, tmp_path):
    _, d = room_maps[SEED]
    with pytest.raises(FileNotFoundError):
        build_scene_graph(tmp_path / "missing")
    unfinished = tmp_path / "unfinished"
    shutil.copytree(d, unfinished)
    (unfinished / "map.json").unlink()
    with pytest.raises(ValueError, match="map.json is missing"):
        build_scene_graph(unfinished)
    empty = tmp_path / "empty"
    shutil.copytree(d, empty)
    (empty / "mesh.ply").write_text(  # what marching cubes gives for a map without surface
        "ply\nformat ascii 1.0\nelement vertex 0\nproperty float x\nproperty float y\nproperty float z\n"
        "element face 0\nproperty list uchar int vertex_indices\nend_header\n"
    )
    with pytest.raises(ValueError, match="mesh.ply"):
        build_scene_graph(empty)
    assert main(["graph", str(empty)]) == 2


def test_feature_embeddings_count_each_voxel_once():
    """An object's feature embedding is the mean of its distinct voxels' features: a voxel
    that many surface nodes fall in (or with a large fusion weight) does not outweigh the rest."""
    from types import SimpleNamespace

    from scenegraph.embedding import feature_embeddings

    feats = np.array([[1.0, 0.0], [0.0, 1.0]], np.float32)
    # voxel 0 holds nine nodes of the object, voxel 1 one; voxel 0 also has 10x the weight
    grid = SimpleNamespace(lookup=lambda p: (p[:, 0] > 0.5).astype(np.int64), weights=np.array([10.0, 1.0]))
    sem = SimpleNamespace(grid=grid, unit_embeddings=feats, usable=np.array([True, True]))
    pts = np.array([[0.0, 0, 0]] * 9 + [[1.0, 0, 0]])
    out = feature_embeddings(sem, pts, np.zeros(10, np.int64), 1)
    np.testing.assert_allclose(out[0], np.array([1.0, 1.0]) / np.sqrt(2), atol=1e-6)


def test_contrast_features_remove_what_the_whole_map_shares():
    """Two segments whose features are the room's shared look plus a small distinct part
    (raw cosine 0.98) come out orthogonal to the map's mean and far apart (cosine < 0),
    and a segment without usable voxels gets a row of zeros."""
    from types import SimpleNamespace

    from scenegraph.embedding import contrast_features

    shared, a, b = np.eye(3, dtype=np.float32)
    feats = np.stack([shared + 0.1 * a, shared + 0.1 * b, shared])
    feats /= np.linalg.norm(feats, axis=1, keepdims=True)
    assert float(feats[0] @ feats[1]) > 0.98
    lookup = lambda p: np.where(p[:, 0] < 2.5, np.round(p[:, 0]), -1).astype(np.int64)  # noqa: E731
    grid = SimpleNamespace(lookup=lookup, weights=np.ones(3, np.float32))
    mean = feats.mean(axis=0) / np.linalg.norm(feats.mean(axis=0))
    sem = SimpleNamespace(grid=grid, unit_embeddings=feats, usable=np.ones(3, bool), dim=3, mean_embedding=lambda: mean)
    pts = np.array([[0.0, 0, 0], [1.0, 0, 0], [5.0, 0, 0]])  # voxel 0, voxel 1, no voxel
    out = contrast_features(sem, pts, np.array([0, 1, 2]), 3)
    np.testing.assert_allclose(np.linalg.norm(out[:2], axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(out[:2] @ mean, 0.0, atol=1e-5)
    assert float(out[0] @ out[1]) < 0.0
    assert not out[2].any()
