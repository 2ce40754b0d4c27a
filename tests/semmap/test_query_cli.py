"""`semmap map --encoder lite` then `semmap query` on real 7-Scenes frames, and its bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import open3d as o3d
import pytest
from PIL import Image

from semmap.cli import main
from semmap.commands.query import slug
from tests.conftest import data_path


@pytest.fixture(scope="module")
def lite_map(tmp_path_factory) -> Path:
    """A small lite semantic map: 5 frames (stride 40), one crop scale."""
    root = data_path("7scenes-redkitchen")
    out = tmp_path_factory.mktemp("cli") / "kitchen"
    rc = main(["map", f"7scenes:{root}", "--out", str(out), "--stride", "40", "--max-frames", "5",
               "--voxel-size", "0.04", "--no-progress", "--encoder", "lite", "--crop-scales", "0.4",
               "--semantic-voxel-size", "0.06", "--kf-translation", "0.1", "--kf-rotation-deg", "8"])
    assert rc == 0
    return out


def test_map_help_lists_the_semantic_options():
    out = subprocess.run([sys.executable, "-m", "semmap", "map", "--help"], capture_output=True, text=True,
                         check=True).stdout
    for opt in ("--encoder", "--semantic-voxel-size", "--features", "--kf-translation", "--kf-rotation-deg"):
        assert opt in out
    out = subprocess.run([sys.executable, "-m", "semmap", "--help"], capture_output=True, text=True, check=True).stdout
    assert "query" in out


def test_map_options_reach_the_feature_layer(lite_map):
    meta = json.loads((lite_map / "features.json").read_text())
    assert meta["voxel_size_m"] == 0.06 and meta["encoder"] == "lite"
    assert meta["keyframe_thresholds"] == {"translation_m": 0.1, "rotation_deg": 8.0}
    assert meta["extractor"]["crop_fractions"] == [0.4]


def test_query_prints_json_regions_on_stdout(lite_map, capsys):
    assert main(["query", str(lite_map), "coffee mug", "--top", "3", "--json", "--no-files"]) == 0
    captured = capsys.readouterr()
    regions = json.loads(captured.out)  # stdout is only the JSON
    assert 1 <= len(regions) <= 3
    for r in regions:
        assert {"centroid", "bbox_min", "bbox_max", "score"} <= set(r)
        assert all(lo <= c <= hi for lo, c, hi in zip(r["bbox_min"], r["centroid"], r["bbox_max"]))
    assert [r["score"] for r in regions] == sorted((r["score"] for r in regions), reverse=True)


def test_no_reference_names_gives_plain_lerf_relevancy(lite_map, tmp_path, capsys):
    docs = {}
    for flag in ([], ["--no-reference-names"]):
        out = tmp_path / ("plain" if flag else "default")
        assert main(["query", str(lite_map), "chair", "--top", "3", "--out", str(out), *flag]) == 0
        docs[bool(flag)] = json.loads((out / "query.json").read_text())
    assert docs[True]["reference_names"] is None and docs[False]["reference_names"] == "imagenet"
    # more competitors can only lower a voxel's relevancy, so the best region scores lower
    assert docs[False]["regions"][0]["max_relevancy"] < docs[True]["regions"][0]["max_relevancy"]


def test_query_writes_json_ply_and_png(lite_map, tmp_path, capsys):
    out = tmp_path / "q"
    assert main(["query", str(lite_map), "chair", "--top", "2", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "'chair':" in text and "rank" in text and f"wrote query results to {out}" in text
    doc = json.loads((out / "query.json").read_text())
    assert doc["query"] == "chair" and doc["encoder"] == "lite" and len(doc["regions"]) <= 2
    assert doc["negatives"] == ["object", "things", "stuff", "texture"]
    assert doc["reference_names"] == "imagenet"
    mesh = o3d.io.read_triangle_mesh(str(out / "relevancy.ply"))
    src = o3d.io.read_triangle_mesh(str(lite_map / "mesh.ply"))
    assert len(mesh.vertices) == len(src.vertices) and mesh.has_vertex_colors()
    colours = np.asarray(mesh.vertex_colors)
    assert len(np.unique(colours.round(3), axis=0)) > 50  # a heat map, not a flat colour
    png = Image.open(out / "query.png")
    assert png.size[0] > 800 and np.asarray(png).std() > 20


def test_default_output_folder_is_inside_the_map(lite_map, capsys):
    assert main(["query", str(lite_map), "Dining table!"]) == 0
    folder = lite_map / "queries" / slug("Dining table!")
    assert folder.name == "dining-table" and (folder / "query.json").is_file()


def test_image_query(lite_map, tmp_path, capsys):
    rgb = np.asarray(Image.open(data_path("7scenes-redkitchen", "frame-000000.color.jpg")))
    Image.fromarray(rgb[150:215, 345:415]).save(tmp_path / "mug.png")
    assert main(["query", str(lite_map), "--image", str(tmp_path / "mug.png"), "--json", "--no-files"]) == 0
    assert len(json.loads(capsys.readouterr().out)) >= 1


@pytest.mark.parametrize(
    "argv,message",
    [
        (["query", "{map}", "   "], "query text is empty"),
        (["query", "{map}"], "give either a query text or --image"),
        (["query", "{map}", "mug", "--top", "0"], "--top must be >= 1"),
        (["query", "{map}", "--image", "/nonexistent/x.png"], "does not exist"),
        (["query", "/nonexistent/semmap-map", "mug"], "does not exist"),
    ],
)
def test_bad_query_input_is_a_clear_error(lite_map, argv, message, capsys):
    assert main([a.replace("{map}", str(lite_map)) for a in argv]) == 2
    assert message in capsys.readouterr().err


def test_querying_a_map_without_features(tmp_path, capsys):
    root = data_path("7scenes-redkitchen")
    out = tmp_path / "plain"
    assert main(["map", f"7scenes:{root}", "--out", str(out), "--stride", "100", "--max-frames", "2",
                 "--voxel-size", "0.05", "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["query", str(out), "mug"]) == 2
    assert "no semantic feature layer" in capsys.readouterr().err


def test_unknown_encoder_on_the_command_line(tmp_path, capsys):
    root = data_path("7scenes-redkitchen")
    assert main(["map", f"7scenes:{root}", "--out", str(tmp_path / "m"), "--encoder", "clipp:/x"]) == 2
    assert "unknown encoder 'clipp'" in capsys.readouterr().err
