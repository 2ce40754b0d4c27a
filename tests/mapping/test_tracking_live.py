"""Tracking a live source that falls behind: frames arrive with gaps in ``Frame.index``.

A live source that keeps only the newest frame (``sensors.live``) hands the tracker frames
whose indices jump by the number of frames it dropped. The tracker scales its
constant-velocity prior by the index gap and counts the skipped frames. Real redkitchen
frames (depth camera, depth-only loss, as in ``test_tracking.py``), with their dataset
indices kept so the gaps are visible.
"""

from __future__ import annotations

import numpy as np
import pytest

from mapping import TSDFConfig, TSDFMap
from mapping.tracking import Tracker, TrackerConfig
from sensors import Frame
from tests.mapping.test_tracking import KINECT_DEPTH, RAW, ate_rmse, kitchen_frame

EVERY_OTHER = list(range(0, 40, 2))
"""Frames 0, 2, ..., 38: the source drops every other frame."""
BURSTS = [i for start in range(44, 140, 8) for i in range(start, start + 3)]
"""Then three consecutive frames, a burst of 5 dropped, three frames, ... (44-46, 52-54, ... 132-134)."""
SEQUENCE = EVERY_OTHER + BURSTS


def live_frame(i: int, first: bool) -> Frame:
    rgb, depth, T = kitchen_frame(i)
    return Frame(rgb, depth, KINECT_DEPTH, T if first else None, timestamp=i / 30.0, index=i)


def track_sequence(config: TrackerConfig, sequence: list[int]) -> Tracker:
    tracker = Tracker(config, KINECT_DEPTH)
    tsdf_map = TSDFMap(TSDFConfig(voxel_size_m=0.02))
    for k, i in enumerate(sequence):
        frame = live_frame(i, first=k == 0)
        r = tracker.track(frame, tsdf_map)
        if r.ok:
            tsdf_map.integrate(frame.with_(T_world_cam=r.T_world_cam))
    return tracker


@pytest.fixture(scope="module")
def skipping_run() -> Tracker:
    return track_sequence(RAW, SEQUENCE)


def test_tracks_through_dropped_frames_within_3_cm(skipping_run):
    tracker = skipping_run
    results = tracker.results
    assert [r.index for r in results] == SEQUENCE
    assert all(r.ok for r in results), [(r.index, r.status, r.reason) for r in results if not r.ok]
    # the scaled prior is good enough that no frame needs the fallback without velocity
    assert all(r.status == "ok" and r.reason == "" for r in results[1:]), [
        (r.index, r.status, r.reason) for r in results if r.reason
    ]
    traj = tracker.trajectory()
    gt = np.stack([kitchen_frame(i)[2] for i in SEQUENCE])
    np.testing.assert_allclose(traj.timestamps, np.array(SEQUENCE) / 30.0)
    ate = ate_rmse(traj.T_world_cam[:, :3, 3], gt[:, :3, 3])
    assert ate < 0.03, f"ATE {100 * ate:.2f} cm"


def test_summary_counts_the_frames_the_source_skipped(skipping_run):
    summary = skipping_run.summary()
    expected = int(np.sum(np.diff(SEQUENCE) - 1))
    assert expected == 19 + 5 + 5 * (len(BURSTS) // 3 - 1)  # every other, the step 38 -> 44, the bursts
    assert summary.source_frames_skipped == expected
    assert summary.max_index_gap == 6
    assert any("source frames skipped" in line for line in summary.lines())


@pytest.mark.parametrize("sequence, target", [([90, 95, 100], 110), ([96, 98, 100, 101], 106)])
def test_velocity_prior_is_scaled_by_the_index_gap(sequence, target):
    """The prior for a frame after a gap repeats the last motion per index step, as often as the gap says.

    Measured (cm, distance to the dataset pose): 90, 95, 100 -> 110: camera moved 8.5, scaled prior 3.7,
    unscaled 5.2; 96, 98, 100, 101 -> 106: moved 4.0, scaled 2.2, unscaled 3.1.
    """
    tracker = track_sequence(RAW, sequence)
    T_true = kitchen_frame(target)[2][:3, 3]
    T_last = tracker.poses_by_index()[sequence[-1]]
    T_pred = tracker._velocity_prediction(target)
    unscaled = T_last @ (np.linalg.inv(tracker.poses_by_index()[sequence[-2]]) @ T_last)
    moved = np.linalg.norm(T_true - T_last[:3, 3])
    error = np.linalg.norm(T_pred[:3, 3] - T_true)
    assert error < 0.75 * moved, f"prior {100 * error:.1f} cm off, camera moved {100 * moved:.1f} cm"
    assert error < 0.9 * np.linalg.norm(unscaled[:3, 3] - T_true)
    assert tracker._velocity_prediction(sequence[-1] + TrackerConfig().velocity_max_gap_frames + 1) is None
