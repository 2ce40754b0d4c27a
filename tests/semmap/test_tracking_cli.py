"""`semmap map` tracks frames without poses: ICL-NUIM with --poses estimate, a RealSense recording."""

from __future__ import annotations

import json

import numpy as np
import pytest

from eval.traj import evaluate_trajectory
from semmap.cli import main
from sensors import open_source
from sensors.trajectory_io import read_o3d_log, read_tum
from tests.conftest import data_path


def test_estimate_poses_on_icl_nuim(tmp_path):
    rgbd = data_path("open3d-rgbd", "RGBD")
    out = tmp_path / "icl"
    assert main(["map", f"o3dlog:{rgbd}", "--out", str(out), "--poses", "estimate", "--no-progress"]) == 0
    est = read_tum(out / "trajectory.tum")
    assert len(est) == 5
    m = evaluate_trajectory(est, read_o3d_log(rgbd / "trajectory.log"), associate_by="index")
    assert m.ate_rmse_m < 0.01, m.summary()
    report = json.loads((out / "tracking.json").read_text())
    assert report["status_counts"]["ok"] >= 4


def test_realsense_recording_without_poses_maps_end_to_end(tmp_path):
    pytest.importorskip("pyrealsense2")
    from sensors.realsense_record import record_frames

    kitchen = data_path("7scenes-redkitchen")
    src = open_source(f"7scenes:{kitchen}")
    frames = [src[i] for i in range(0, 40, 4)]
    rec = record_frames(frames, tmp_path / "kitchen.db3")
    out = tmp_path / "live"
    assert main(["map", f"realsense:{rec}", "--out", str(out), "--no-progress", "--no-loop-closure"]) == 0
    meta = json.loads((out / "map.json").read_text())
    assert meta["frames_integrated"] == len(frames)
    est = read_tum(out / "trajectory.tum")
    gt = np.stack([f.T_world_cam for f in frames])
    # Tracked poses start at identity: compare after SE(3) alignment.
    m = evaluate_trajectory(est.T_world_cam, gt, associate_by="index")
    assert m.ate_rmse_m < 0.02, m.summary()


def test_tracking_stage_never_reopens_the_source():
    """Loop closure re-integrates the frames the pipeline kept: the source is read once (issue 19)."""
    from mapping.tracking import TrackerConfig
    from semmap.pipeline import MapConfig, build_map
    from semmap.stages.tracking import TrackingStage

    src = open_source(f"o3dlog:{data_path('open3d-rgbd', 'RGBD')}")
    stage = TrackingStage(TrackerConfig(), force=True)
    result = build_map(src, MapConfig(progress=False), [stage])
    assert result.retention is not None and result.retention["frames"] == result.frames_integrated
    assert stage.tracker.summary().frames == len(src) == result.frames_integrated, result.frames_skipped
    gt = np.stack([src[i].T_world_cam for i in range(len(src))])
    err = np.linalg.norm(result.trajectory.T_world_cam[:, :3, 3] - gt[:, :3, 3], axis=1)
    assert err.max() < 0.01, err  # anchored to the first given pose: compared without alignment
