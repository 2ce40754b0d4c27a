"""`semmap depth`, `semmap eval depth` and `semmap map` with a depth model, on tiny random models
(transformers Depth Anything with the metric head, DepthCLIP on a tiny CLIP) and real data."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from eval.depth_metrics import depth_metrics
from semmap.cli import main
from tests.conftest import data_path
from tests.tiny_models import cached_model_dir


@pytest.fixture(scope="module")
def da_dir(tmp_path_factory):
    return cached_model_dir("depth_anything", tmp_path_factory, max_depth_m=4)


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    return cached_model_dir("clip", tmp_path_factory)


@pytest.fixture
def nyu():
    return data_path("monodepth-nyu-kitti", "nyu_demo")


@pytest.fixture
def kitti():
    return data_path("monodepth-nyu-kitti", "kitti_demo")


def test_depth_on_an_image_writes_png_npy_preview(da_dir, nyu, tmp_path, capsys):
    image = nyu / "rgb" / "rgb_00000.jpg"
    out = tmp_path / "pred"
    assert main(["depth", str(image), "--model", f"hf:{da_dir}", "--out", str(out), "--fx", "518.9"]) == 0
    text = capsys.readouterr().out
    assert f"hf:{da_dir}: metric depth for 1 frame(s)" in text and f"wrote depth to {out}/" in text
    d = np.load(out / "rgb_00000.depth.npy")
    assert d.shape == (480, 640) and d.dtype == np.float32
    assert 0 < d.min() and d.max() <= 4.0 and d.std() > 1e-3  # sigmoid * max_depth 4 m, not constant
    mm = np.asarray(Image.open(out / "rgb_00000.depth.png"))
    assert mm.dtype == np.uint16
    np.testing.assert_array_equal(mm, np.round(d.astype(np.float64) * 1000).astype(np.uint16))
    preview = np.asarray(Image.open(out / "rgb_00000.preview.png"))
    assert preview.shape == (480, 1280, 3)
    np.testing.assert_array_equal(preview[:, :640], np.asarray(Image.open(image).convert("RGB")))


def test_depthclip_on_a_source_then_eval_reads_the_predictions_back(clip_dir, nyu, tmp_path, capsys):
    out = tmp_path / "pred"
    assert main(["depth", str(nyu), "--model", f"depthclip:clip:{clip_dir}", "--out", str(out),
                 "--max-frames", "2"]) == 0
    text = capsys.readouterr().out
    assert "against the sensor depth:" in text and "| rgb_00050 |" in text
    files = sorted(p.name for p in out.iterdir())
    assert files == [f"rgb_{i}.{k}" for i in ("00000", "00050") for k in ("depth.npy", "depth.png", "preview.png")]
    d = np.load(out / "rgb_00050.depth.npy")
    assert d.min() >= 1.0 - 1e-5 and d.max() <= 3.0 + 1e-5  # DepthCLIP: convex combination of 1 .. 3 m bins

    assert main(["eval", "depth", str(nyu), "--pred", str(out), "--align", "median", "--max-frames", "2",
                 "--out", str(tmp_path / "report")]) == 0
    text = capsys.readouterr().out
    assert "dataset nyu, depth range (0.001, 10) m, align median" in text
    for col in ("abs_rel", "sq_rel", "rmse", "rmse_log", "silog", "d1", "d2", "d3"):
        assert col in text
    report = json.loads((tmp_path / "report" / "depth_metrics.json").read_text())
    from sensors import open_source

    gt = open_source(str(nyu))[1].depth
    ref = depth_metrics(d, gt, align="median", dataset="nyu")  # independent recomputation
    assert report["rows"]["rgb_00050"]["abs_rel"] == pytest.approx(ref.abs_rel, rel=1e-9)
    assert report["protocol"]["protocol"] == "pred" and report["protocol"]["depth_range_m"] == [0.001, 10.0]


@pytest.mark.parametrize("dataset, cap", [("nyu", 10.0), ("kitti", 80.0)])
def test_eval_depth_guided_fill_on_shared_samples(dataset, cap, nyu, kitti, tmp_path, capsys):
    folder = nyu if dataset == "nyu" else kitti
    assert main(["eval", "depth", str(folder), "--fill", "guided", "--max-frames", "1",
                 "--out", str(tmp_path)]) == 0
    text = capsys.readouterr().out
    assert f"dataset {dataset}, depth range (0.001, {cap:g}) m" in text and "mean (1)" in text
    r = json.loads((tmp_path / "depth_metrics.json").read_text())
    m = r["mean"]
    # measured: NYU AbsRel 0.018 / delta1 0.993, KITTI (sparse GT, all unknown pixels filled) 0.035 / 0.990
    assert m["abs_rel"] < 0.06 and m["d1"] > 0.95 and m["coverage"] == 1.0, m
    assert r["protocol"]["hole_fraction"] == 0.3 and r["protocol"]["fill"] == "guided"


def test_map_with_a_depth_model_end_to_end(da_dir, redkitchen, tmp_path, capsys):
    out = tmp_path / "map"
    assert main(["map", f"7scenes:{redkitchen}", "--out", str(out), "--stride", "100", "--max-frames", "4",
                 "--voxel-size", "0.04", "--no-progress", "--depth-model", f"hf:{da_dir}",
                 "--drop-depth-every", "2"]) == 0
    meta = json.loads((out / "map.json").read_text())
    depth = meta["stages"]["depth"]
    assert meta["frames_integrated"] == 4
    assert depth["frames_by_depth_source"] == {"sensor": 2, f"mono:hf:{da_dir}": 2}
    assert depth["config"]["estimated_weight"] == 0.3 and depth["config"]["fill_missing"] == "model"
    assert depth["dropped_depth"]["frames"] == 2
    assert meta["timings_s"]["depth"] > 0


# ---------------------------------------------------------------- bad input
def test_image_and_camera_size_mismatch(da_dir, nyu, tmp_path, capsys):
    cam = tmp_path / "cam.json"
    cam.write_text(json.dumps({"fx": 500, "fy": 500, "cx": 319.5, "cy": 239.5, "width": 320, "height": 240}))
    image = nyu / "rgb" / "rgb_00000.jpg"
    assert main(["depth", str(image), "--model", f"hf:{da_dir}", "--camera-json", str(cam),
                 "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert f"{image}: image is 640x480 but the camera in {cam} is 320x240" in err
    assert not (tmp_path / "o").exists()


@pytest.mark.filterwarnings("ignore:.*anchors agree with the aligned prediction")
def test_relative_model_without_anchors_is_refused(tmp_path_factory, nyu, tmp_path, capsys):
    rel = cached_model_dir("depth_anything", tmp_path_factory, depth_estimation_type="relative")
    image = nyu / "rgb" / "rgb_00000.jpg"
    assert main(["depth", str(image), "--model", f"hf:{rel}", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "relative inverse depth, which has no metric scale: pass anchors" in err
    assert main(["eval", "depth", str(nyu), "--model", f"hf:{rel}", "--max-frames", "1"]) == 2
    assert "evaluate it with an alignment (--align lsq_inverse)" in capsys.readouterr().err
    # with sensor depth as anchors it works
    assert main(["depth", str(nyu), "--model", f"hf:{rel}", "--align-to-sensor", "--max-frames", "1",
                 "--out", str(tmp_path / "a")]) == 0
    assert "(aligned to sensor depth)" in capsys.readouterr().out


def test_eval_depth_bad_requests(nyu, capsys):
    assert main(["eval", "depth", str(nyu), "--fill", "map"]) == 2
    assert "needs a posed sequence" in capsys.readouterr().err
    assert main(["eval", "depth", str(nyu)]) == 2
    assert "give --pred DIR, --model SPEC or --fill guided|map" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # --pred and --fill are exclusive
        main(["eval", "depth", str(nyu), "--pred", "x", "--fill", "guided"])
