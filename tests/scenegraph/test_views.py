"""The views stage of `semmap map` and the stored-view format."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest

from scenegraph.views import (
    DEPTH_SCALE,
    VIEWS_DIR,
    VIEWS_FILE,
    downscale_frame,
    load_views,
)
from semmap.stages import views as views_stage
from sensors import Camera, Frame
from sensors.scenes import look_at_pose


def frame(i: int, eye, width: int = 64, height: int = 48) -> Frame:
    cam = Camera(50.0, 50.0, (width - 1) / 2, (height - 1) / 2, width, height)
    rgb = np.zeros((height, width, 3), np.uint8)
    rgb[..., 0] = np.arange(width, dtype=np.uint8)[None, :] * 3
    depth = np.full((height, width), 1.0 + 0.1 * i, np.float32)
    depth[:, : width // 4] = 0.0  # invalid band
    T = look_at_pose(np.asarray(eye, float), np.array([0.0, 5.0, 0.0]))
    return Frame(rgb=rgb, depth=depth, camera=cam, T_world_cam=T, timestamp=0.1 * i, index=i)


def test_downscale_keeps_geometry():
    f = frame(0, [0, 0, 0], 64, 48)
    rgb, depth, cam = downscale_frame(f.rgb, f.depth, f.camera, 32)
    assert rgb.shape == (24, 32, 3) and depth.shape == (24, 32)
    assert cam == f.camera.resized(32, 24)
    # depth is sampled, never blended: only values of the original image appear
    assert set(np.unique(depth)) <= set(np.unique(f.depth))
    assert (depth[:, :8] == 0).all() and (depth[:, 8:] == pytest.approx(1.0))
    same, _, same_c = downscale_frame(f.rgb, f.depth, f.camera, 640)  # never enlarged
    assert same_c == f.camera and same.shape == f.rgb.shape


def test_stage_selects_by_pose_change_and_round_trips(tmp_path):
    stage = views_stage.ViewsStage(views_stage.ViewsConfig(translation_m=0.15, rotation_deg=15.0, width=32))
    eyes = [[0, 0, 0], [0.05, 0, 0], [0.1, 0, 0], [0.2, 0, 0], [0.21, 0, 0], [0.6, 0, 0]]
    frames = [frame(i, e) for i, e in enumerate(eyes)]
    for f in frames:
        stage.after_integrate(f, None)
    assert [v.frame_index for v in stage.views] == [0, 3, 5]
    names = stage.save_into(tmp_path)
    assert f"{VIEWS_DIR}/{VIEWS_FILE}" in names and len(names) == 1 + 2 * 3
    views = load_views(tmp_path)
    assert [v.frame_index for v in views] == [0, 3, 5]
    v = views[1]
    np.testing.assert_allclose(v.T_world_cam, frames[3].T_world_cam, atol=1e-12)
    assert v.camera == frames[3].camera.resized(32, 24)
    assert v.rgb.shape == (24, 32, 3)
    d = v.depth_m
    assert d.dtype == np.float32 and np.abs(d[:, 8:] - 1.3).max() <= 0.5 / DEPTH_SCALE
    assert stage.metadata()["count"] == 3


def test_stage_thins_when_full():
    stage = views_stage.ViewsStage(views_stage.ViewsConfig(translation_m=0.1, width=16, max_views=4))
    for i in range(9):
        stage.after_integrate(frame(i, [0.2 * i, 0, 0], 32, 24), None)
    assert len(stage.views) <= 4 and stage.thinned >= 1
    idx = [v.frame_index for v in stage.views]
    assert idx == sorted(idx) and idx[0] == 0


def test_stage_options():
    p = argparse.ArgumentParser()
    views_stage.add_arguments(p)
    assert views_stage.from_args(p.parse_args([])) is None
    assert isinstance(views_stage.from_args(p.parse_args(["--save-views"])), views_stage.ViewsStage)
    on = p.parse_args([])
    on.encoder = "lite"
    assert views_stage.from_args(on) is not None
    off = p.parse_args(["--no-views"])
    off.encoder = "lite"
    assert views_stage.from_args(off) is None


def test_load_views_errors(tmp_path):
    assert load_views(tmp_path) == []
    (tmp_path / VIEWS_DIR).mkdir()
    (tmp_path / VIEWS_DIR / VIEWS_FILE).write_text(json.dumps({"format_version": 1, "views": [
        {"index": 0, "rgb": "a.jpg", "depth": "a.depth.png", "camera": Camera(1, 1, 0, 0, 2, 2).to_dict(),
         "T_world_cam": np.eye(4).tolist()}]}))
    with pytest.raises(ValueError, match="missing"):
        load_views(tmp_path)
    (tmp_path / VIEWS_DIR / VIEWS_FILE).write_text(json.dumps({"format_version": 7, "views": []}))
    with pytest.raises(ValueError, match="version"):
        load_views(tmp_path)
