"""SemanticMap end to end on real 7-Scenes frames: build, save, load, query; bad input.

One lite map of six redkitchen frames is built per module (the frames that see the white
mug from different sides, crops at one scale so that it takes seconds); the clip: path runs
on tiny random CLIP/SigLIP models saved with ``save_pretrained``; the openclip: path where
open_clip imports.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mapping.encoders.base import Encoder
from mapping.mapformat import MapFormatError
from mapping.query import QueryConfig
from mapping.semantic_map import SemanticMap
from semmap.cli import main
from semmap.pipeline import MapConfig, build_map, save_map
from semmap.stages.semantic import SemanticConfig, SemanticStage
from sensors import open_source
from sensors.base import FrameSource
from tests.conftest import DATA_ROOT, data_path
from tests.tiny_models import open_clip_or_reason, save_tiny_openclip

OBJECTS = json.loads((Path(__file__).resolve().parents[1] / "data" / "redkitchen_objects.json").read_text())
MUG = next(o for o in OBJECTS["objects"] if o["id"] == "mug_white")
FRAMES = [0, 250, 500, 600, 756, 945]  # all see the white mug, from different sides


class Subset(FrameSource):
    """Chosen frames of an indexed source, in order."""

    def __init__(self, source, indices: list[int]) -> None:
        self.source, self.indices = source, indices

    def __iter__(self):
        return (self.source.load(i) for i in self.indices)

    def __len__(self) -> int:
        return len(self.indices)


@pytest.fixture(scope="module")
def kitchen_map(tmp_path_factory):
    """(map directory, the stage that built it) for FRAMES of redkitchen."""
    root = data_path("7scenes-redkitchen")
    spec = f"7scenes:{root}"
    cfg = MapConfig(voxel_size_m=0.04, progress=False)
    stage = SemanticStage(
        SemanticConfig(encoder="lite", features="crops", extractor_options={"crop_fractions": (0.3,)})
    )
    with open_source(spec) as src:
        result = build_map(Subset(src, FRAMES), cfg, [stage])
    out = tmp_path_factory.mktemp("maps") / "kitchen"
    save_map(result, out, spec, cfg, [stage])
    return out, stage


@pytest.fixture(scope="module")
def loaded(kitchen_map):
    out, stage = kitchen_map
    return SemanticMap.load(out, encoder=stage.encoder)


def test_map_directory_holds_features_and_metadata(kitchen_map):
    out, stage = kitchen_map
    meta = json.loads((out / "map.json").read_text())
    sem = meta["stages"]["semantic"]
    assert sem["encoder"] == "lite" and sem["dim"] == 384 and sem["voxel_size_m"] == 0.05
    assert sem["bytes_per_voxel"] == 784 and sem["voxels"] == len(stage.grid) > 1000
    assert sem["memory_mb"] == pytest.approx(sem["voxels"] * 784 / 2**20)
    assert sem["keyframes"] == FRAMES  # far apart: every frame is a keyframe
    assert meta["semmap_version"] and meta["frames_integrated"] == 6
    assert json.loads((out / "features.json").read_text())["keyframes"] == sem["keyframes"]
    assert sem["extractor"]["strategy"] == "crops" and sem["timings_s"]["encode"] > 0


def test_round_trip_gives_identical_query_results(kitchen_map, loaded):
    _, stage = kitchen_map
    in_memory = SemanticMap(stage.grid, "lite", encoder=stage.encoder)
    for text in ("coffee mug", "chair"):
        a, b = in_memory.query(text, top=5), loaded.query(text, top=5)
        np.testing.assert_array_equal(a.relevancy, b.relevancy)
        assert [r.to_dict() for r in a.regions] == [r.to_dict() for r in b.regions]
        assert len(b.regions) >= 1


def test_query_results_are_well_formed(loaded):
    res = loaded.query("coffee mug", top=3)
    assert 1 <= len(res.regions) <= 3 and [r.rank for r in res.regions] == list(range(1, len(res.regions) + 1))
    scores = [r.score for r in res.regions]
    assert scores == sorted(scores, reverse=True) and all(0.0 < s < 1.0 for s in scores)
    for r in res.regions:
        assert np.all(r.bbox_min <= r.centroid) and np.all(r.centroid <= r.bbox_max)
        assert r.voxel_count >= loaded.query_config.min_voxels
        assert np.all(res.relevancy[r.voxels] >= res.threshold)
    assert res.relevancy.shape == (len(loaded.grid),) and set(res.timings_s) == {"encode", "relevancy", "regions"}


def test_the_mug_is_where_coffee_mug_points(loaded):
    """Real properties of the lite features (measured: the mug's voxels sit at the 99th
    percentile for "coffee mug" and below the 10th for "chair"; the best region is 12 cm
    from the annotated centroid)."""
    near = np.linalg.norm(loaded.grid.centres() - np.array(MUG["centroid"]), axis=1) < 0.1
    assert near.sum() >= 10
    mug = loaded.query("coffee mug")
    chair = loaded.query("chair").relevancy
    assert np.median(mug.relevancy[near]) > np.percentile(mug.relevancy, 95)
    assert np.median(chair[near]) < np.percentile(chair, 50)
    assert np.linalg.norm(mug.regions[0].centroid - np.array(MUG["centroid"])) < 0.25


def test_segment_features_put_coffee_mug_on_the_mug(tmp_path):
    """The default dense features (object-level crops of RGB-D image segments) on the six
    frames that see the white mug: "coffee mug"'s best region is on it (measured: 8 cm
    from the annotated centroid, 35 crops per frame) and "chair"'s best region is not (75 cm)."""
    stage = SemanticStage(SemanticConfig(encoder="lite"))
    assert stage.extractor.name == "segments"
    with open_source(f"7scenes:{data_path('7scenes-redkitchen')}") as src:
        build_map(Subset(src, FRAMES), MapConfig(voxel_size_m=0.04, progress=False), [stage])
    assert stage.images_encoded / len(FRAMES) < 48  # fewer than the sliding crops (47 + frame)
    smap = SemanticMap(stage.grid, "lite", encoder=stage.encoder)
    mug = np.array(MUG["centroid"])
    assert np.linalg.norm(smap.query("coffee mug").regions[0].centroid - mug) < 0.25
    assert np.linalg.norm(smap.query("chair").regions[0].centroid - mug) > 0.25


def test_text_queries_also_compete_with_the_reference_names(kitchen_map, loaded):
    """Relevancy of a text query = LERF with each voxel's best ImageNet-name match (other than
    the query) as one more negative; ``reference_names=None`` leaves LERF alone."""
    from mapping.query import lerf_relevancy, resolve_reference_names

    _, stage = kitchen_map
    names = resolve_reference_names("imagenet")
    assert len(names) > 990 and "coffee mug" in names and "chair" not in names
    emb = loaded.unit_embeddings
    sims = emb @ stage.encoder.encode_text(list(names)).T  # (N, M)
    negatives = stage.encoder.encode_text(list(loaded.query_config.negatives))
    plain_map = SemanticMap(stage.grid, "lite", encoder=stage.encoder, query_config=QueryConfig(reference_names=None))
    for text in ("coffee mug", "chair"):
        q = stage.encoder.encode_text([text])[0]
        own = np.array([n == text for n in names])
        expected = lerf_relevancy(emb, q, negatives, floor=sims[:, ~own].max(axis=1))
        got = loaded.query(text).relevancy
        np.testing.assert_allclose(got[loaded.usable], expected[loaded.usable], atol=1e-5)
        plain = plain_map.query(text).relevancy
        np.testing.assert_allclose(plain[loaded.usable], lerf_relevancy(emb, q, negatives)[loaded.usable], atol=1e-5)
        assert np.mean(got[loaded.usable] < plain[loaded.usable] - 1e-3) > 0.5  # the names do bite


def test_image_query_with_a_crop_of_the_mug_finds_the_mug(loaded):
    rgb = np.asarray(Image.open(DATA_ROOT / "7scenes-redkitchen" / "frame-000000.color.jpg").convert("RGB"))
    res = loaded.query_image(rgb[150:215, 345:415], top=3)
    assert res.query == "<image 65x70>"
    assert np.linalg.norm(res.regions[0].centroid - np.array(MUG["centroid"])) < 0.25


def test_min_weight_keeps_poorly_observed_voxels_out(kitchen_map):
    from mapping.query import QueryConfig

    _, stage = kitchen_map
    w = stage.grid.weights
    cut = float(np.median(w))
    smap = SemanticMap(stage.grid, "lite", encoder=stage.encoder, query_config=QueryConfig(min_weight=cut))
    res = smap.query("coffee mug")
    assert np.all(res.relevancy[w < cut] == 0.0) and np.all(res.relevancy[w >= cut] > 0.0)
    assert all(np.all(w[r.voxels] >= cut) for r in res.regions)
    none = SemanticMap(stage.grid, "lite", encoder=stage.encoder, query_config=QueryConfig(min_weight=1e9))
    assert none.query("coffee mug").regions == []
    with pytest.raises(ValueError, match="no usable features"):
        none.query_image(np.zeros((8, 8, 3), np.uint8))


def test_tsdf_and_mesh_come_from_the_directory(loaded):
    assert loaded.tsdf.num_blocks > 0 and loaded.mesh_path.is_file()


# -- bad input -----------------------------------------------------------------------------------
class FakeEncoder(Encoder):
    """An encoder that is not the map's (only name and dim matter here)."""

    def _encode_image_batch(self, images):
        raise AssertionError("not used")

    def _encode_text_batch(self, texts):
        raise AssertionError("not used")


def test_encoder_mismatch_is_a_clear_error(kitchen_map):
    out, _ = kitchen_map
    with pytest.raises(ValueError, match=r"dimension 24, but this map was built with 'lite' \(dimension 384\)"):
        SemanticMap.load(out, encoder=FakeEncoder("clip:/models/tiny", 24))
    with pytest.raises(ValueError, match="built with encoder 'lite', not 'clip:/models/other-384'"):
        SemanticMap.load(out, encoder=FakeEncoder("clip:/models/other-384", 384))


def test_empty_query_and_bad_top(loaded):
    for text in ("", "   "):
        with pytest.raises(ValueError, match="non-empty"):
            loaded.query(text)
    with pytest.raises(ValueError, match="top must be >= 1"):
        loaded.query("mug", top=0)


def copy_map(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def test_incomplete_directories_are_rejected(kitchen_map, tmp_path):
    out, _ = kitchen_map
    with pytest.raises(FileNotFoundError, match="does not exist"):
        SemanticMap.load(tmp_path / "nope")
    d = copy_map(out, tmp_path / "no-map-json")
    (d / "map.json").unlink()
    with pytest.raises(ValueError, match="map.json is missing"):
        SemanticMap.load(d)
    d = copy_map(out, tmp_path / "no-features")
    (d / "features.npz").unlink()
    with pytest.raises(MapFormatError, match=r"features.npz: file is missing"):
        SemanticMap.load(d)
    d = copy_map(out, tmp_path / "mixed")
    meta = json.loads((d / "features.json").read_text())
    meta["voxels"] += 1
    (d / "features.json").write_text(json.dumps(meta))
    with pytest.raises(MapFormatError, match=r"features.npz: the voxel count is \d+ but features.json says \d+"):
        SemanticMap.load(d)


def test_map_interrupted_while_writing_features_is_not_a_map(kitchen_map, tmp_path, monkeypatch):
    """save_map writes into a temporary folder renamed at the end: a failure half-way through
    the semantic files leaves no map directory, and the temporary folder is removed."""
    _, stage = kitchen_map
    spec = f"7scenes:{DATA_ROOT / '7scenes-redkitchen'}"
    cfg = MapConfig(voxel_size_m=0.04, stride=25, max_frames=2, progress=False)
    with open_source(spec) as src:
        result = build_map(src, cfg)
    original = stage.save_into

    def crash_after_npz(directory: Path) -> list[str]:
        original(directory)
        (directory / "features.json").unlink()
        raise KeyboardInterrupt("simulated Ctrl-C while writing the feature layer")

    monkeypatch.setattr(stage, "save_into", crash_after_npz)
    target = tmp_path / "interrupted"
    with pytest.raises(KeyboardInterrupt):
        save_map(result, target, spec, cfg, [stage])
    assert not target.exists() and list(tmp_path.iterdir()) == []
    with pytest.raises(FileNotFoundError):
        SemanticMap.load(target)


def test_unknown_encoder_is_rejected_before_any_frame_is_read(tmp_path, capsys):
    rc = main(["map", str(tmp_path / "no-such-source"), "--out", str(tmp_path / "m"), "--encoder", "sam:/x"])
    assert rc == 2
    assert "unknown encoder 'sam'" in capsys.readouterr().err and not (tmp_path / "m").exists()


# -- clip: and openclip: -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory) -> dict[str, Path]:
    """Tiny random CLIP and SigLIP models saved with save_pretrained (tests/tiny_models.py)."""
    from tests.tiny_models import ENCODER_TEST_WORDS, save_tiny_clip, save_tiny_siglip

    out = {}
    for kind, save in (("clip", save_tiny_clip), ("siglip", save_tiny_siglip)):
        out[kind] = save(tmp_path_factory.mktemp(f"tiny-{kind}"), words=ENCODER_TEST_WORDS)
    return out


@pytest.mark.parametrize(
    "kind,features,dim,extra",
    [
        ("clip", "patches", 24, []),
        ("siglip", "crops", 32, []),
        ("siglip", "patches", 32, ["--feature-depth", "raycast"]),
        ("clip", "crops", 24, ["--feature-depth", "raycast"]),
    ],
)
def test_clip_encoders_map_and_query_end_to_end(tiny_models, kind, features, dim, extra, tmp_path, capsys):
    root = data_path("7scenes-redkitchen")
    spec = f"clip:{tiny_models[kind]}"
    out = tmp_path / "map"
    rc = main(["map", f"7scenes:{root}", "--out", str(out), "--stride", "100", "--max-frames", "3",
               "--voxel-size", "0.05", "--no-progress", "--encoder", spec, "--features", features, *extra])
    assert rc == 0, capsys.readouterr().err
    meta = json.loads((out / "features.json").read_text())
    assert meta["encoder"] == spec and meta["dim"] == dim and meta["extractor"]["strategy"] == features
    assert meta["feature_depth"] == ("raycast" if extra else "frame") and meta["voxels"] > 100
    capsys.readouterr()
    assert main(["query", str(out), "coffee mug", "--top", "3", "--json", "--no-files"]) == 0
    regions = json.loads(capsys.readouterr().out)
    assert 1 <= len(regions) <= 3 and all(len(r["centroid"]) == 3 for r in regions)
    smap = SemanticMap.load(out)
    assert smap.encoder.name == spec and smap.dim == dim  # the map's own encoder, loaded by path


def test_patches_need_a_vit_encoder(tmp_path, capsys):
    rc = main(["map", f"7scenes:{data_path('7scenes-redkitchen')}", "--out", str(tmp_path / "m"),
               "--max-frames", "1", "--encoder", "lite", "--features", "patches", "--no-progress"])
    assert rc == 2 and "use --features crops" in capsys.readouterr().err


OPEN_CLIP, WHY_NO_OPEN_CLIP = open_clip_or_reason()


@pytest.mark.skipif(OPEN_CLIP is None, reason=WHY_NO_OPEN_CLIP or "open_clip unavailable")
def test_openclip_encoder_maps_and_queries_end_to_end(tmp_path, capsys):
    _, ckpt = save_tiny_openclip(tmp_path, "semmap-tiny-map")
    spec = f"openclip:semmap-tiny-map/{ckpt}"
    out = tmp_path / "map"
    rc = main(["map", f"7scenes:{data_path('7scenes-redkitchen')}", "--out", str(out), "--stride", "100",
               "--max-frames", "2", "--voxel-size", "0.05", "--no-progress", "--encoder", spec])
    assert rc == 0, capsys.readouterr().err
    capsys.readouterr()
    assert main(["query", str(out), "a mug", "--json", "--no-files"]) == 0
    assert isinstance(json.loads(capsys.readouterr().out), list)
