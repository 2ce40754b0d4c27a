"""ATE / RPE: Umeyama recovers known transforms; numbers equal evo's on real 7-Scenes poses."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from eval import TrajectoryAlignment, associate, evaluate_trajectory, umeyama, write_traj_report
from sensors.trajectory_io import Trajectory, write_matrix_lines, write_o3d_log, write_tum
from tests.conftest import data_path

FPS = 30.0


@pytest.fixture(scope="module")
def redkitchen_poses() -> np.ndarray:
    """(1000, 4, 4) camera-to-world KinectFusion poses of 7-Scenes redkitchen (read with numpy)."""
    folder = data_path("7scenes-redkitchen")
    files = sorted(folder.glob("frame-*.pose.txt"))
    assert len(files) == 1000
    return np.stack([np.loadtxt(f) for f in files])


def random_similarity(rng: np.random.Generator, scale: float = 1.0) -> np.ndarray:
    S = np.eye(4)
    S[:3, :3] = scale * Rotation.random(random_state=rng).as_matrix()
    S[:3, 3] = rng.uniform(-3, 3, 3)
    return S


def moved_copy(T: np.ndarray, S: np.ndarray, rng: np.random.Generator, noise_m: float, noise_deg: float) -> np.ndarray:
    """Poses S @ T (S may carry a scale on its rotation block) with seeded position / rotation noise."""
    s = np.cbrt(np.linalg.det(S[:3, :3]))
    R_s = S[:3, :3] / s
    out = np.tile(np.eye(4), (len(T), 1, 1))
    noise_R = Rotation.from_rotvec(np.radians(noise_deg) * rng.normal(size=(len(T), 3))).as_matrix()
    out[:, :3, :3] = R_s @ T[:, :3, :3] @ noise_R
    out[:, :3, 3] = s * T[:, :3, 3] @ R_s.T + S[:3, 3] + noise_m * rng.normal(size=(len(T), 3))
    return out


def orthonormalise(T: np.ndarray) -> np.ndarray:
    """KinectFusion rotations are orthonormal to ~1e-8 only; snap them (as a TUM round trip would)."""
    out = T.copy()
    out[:, :3, :3] = Rotation.from_matrix(T[:, :3, :3]).as_matrix()
    return out


@pytest.fixture(scope="module")
def tum_pair(redkitchen_poses, tmp_path_factory):
    """GT and a moved, noisy estimate as TUM files; the estimate drops 10 % of frames and has
    timestamp jitter below the association tolerance."""
    rng = np.random.default_rng(42)
    d = tmp_path_factory.mktemp("traj")
    T_gt = orthonormalise(redkitchen_poses)
    t_gt = np.arange(len(T_gt)) / FPS
    keep = np.sort(rng.choice(len(T_gt), size=900, replace=False))
    S = random_similarity(rng)
    T_est = moved_copy(T_gt[keep], S, rng, noise_m=0.01, noise_deg=0.5)
    t_est = t_gt[keep] + rng.uniform(-0.004, 0.004, len(keep))
    gt_path = write_tum(d / "gt.tum", Trajectory(t_gt, T_gt))
    est_path = write_tum(d / "est.tum", Trajectory(t_est, T_est))
    S_sim = random_similarity(rng, scale=1.7)
    est_sim_path = write_tum(d / "est_sim.tum", Trajectory(t_est, moved_copy(T_gt[keep], S_sim, rng, 0.01, 0.5)))
    return {"gt": gt_path, "est": est_path, "est_sim": est_sim_path}


def evo_ape_rpe(gt_path, est_path, correct_scale: bool, max_diff: float = 0.01) -> dict[str, float]:
    evo = pytest.importorskip("evo", reason="evo (dev extra) is needed for the reference comparison")
    from evo.core import metrics, sync
    from evo.tools import file_interface

    del evo
    ref = file_interface.read_tum_trajectory_file(str(gt_path))
    est = file_interface.read_tum_trajectory_file(str(est_path))
    ref, est = sync.associate_trajectories(ref, est, max_diff=max_diff)
    out = {"matched": ref.num_poses}
    for rel, key in (
        (metrics.PoseRelation.translation_part, "rpe_t"),
        (metrics.PoseRelation.rotation_angle_deg, "rpe_r"),
    ):
        rpe = metrics.RPE(rel, delta=1, delta_unit=metrics.Unit.frames, all_pairs=False)
        rpe.process_data((ref, est))
        out[key] = rpe.get_statistic(metrics.StatisticsType.rmse)
    est.align(ref, correct_scale=correct_scale)
    ape = metrics.APE(metrics.PoseRelation.translation_part)
    ape.process_data((ref, est))
    out["ate"] = ape.get_statistic(metrics.StatisticsType.rmse)
    out["ate_max"] = ape.get_statistic(metrics.StatisticsType.max)
    rpe = metrics.RPE(metrics.PoseRelation.translation_part, delta=1, delta_unit=metrics.Unit.frames)
    rpe.process_data((ref, est))
    out["rpe_t_aligned"] = rpe.get_statistic(metrics.StatisticsType.rmse)
    return out


# ---------------------------------------------------------------------------- against evo
def test_ate_se3_and_rpe_equal_evo(tum_pair):
    ref = evo_ape_rpe(tum_pair["gt"], tum_pair["est"], correct_scale=False)
    m = evaluate_trajectory(tum_pair["est"], tum_pair["gt"], align="se3", max_time_diff=0.01)
    assert m.num_matched == ref["matched"] == 900
    assert abs(m.ate_m.rmse - ref["ate"]) < 1e-6, (m.ate_m.rmse, ref["ate"])
    assert abs(m.ate_m.max - ref["ate_max"]) < 1e-6
    assert abs(m.rpe_trans_m.rmse - ref["rpe_t"]) < 1e-6, (m.rpe_trans_m.rmse, ref["rpe_t"])
    assert abs(m.rpe_rot_deg.rmse - ref["rpe_r"]) < 1e-6, (m.rpe_rot_deg.rmse, ref["rpe_r"])
    # 1 cm isotropic noise on top of a rigid motion: ATE ~ sqrt(3) cm
    assert 0.015 < m.ate_m.rmse < 0.02


def test_ate_sim3_equals_evo(tum_pair):
    ref = evo_ape_rpe(tum_pair["gt"], tum_pair["est_sim"], correct_scale=True)
    m = evaluate_trajectory(tum_pair["est_sim"], tum_pair["gt"], align="sim3", max_time_diff=0.01)
    assert abs(m.ate_m.rmse - ref["ate"]) < 1e-6, (m.ate_m.rmse, ref["ate"])
    # our RPE uses the scale-corrected estimate: evo's RPE after its Sim(3) alignment
    assert abs(m.rpe_trans_m.rmse - ref["rpe_t_aligned"]) < 1e-6
    assert m.alignment.scale == pytest.approx(1 / 1.7, rel=1e-3)
    se3 = evaluate_trajectory(tum_pair["est_sim"], tum_pair["gt"], align="se3", max_time_diff=0.01)
    assert se3.ate_m.rmse > 10 * m.ate_m.rmse  # a scaled estimate cannot be fixed rigidly


# ---------------------------------------------------------------------------- known transforms
def test_se3_alignment_recovers_known_transform(redkitchen_poses):
    T_gt = redkitchen_poses
    S = random_similarity(np.random.default_rng(1))
    T_est = S @ T_gt
    m = evaluate_trajectory(T_est, T_gt, align="se3", associate_by="index")
    assert m.ate_m.rmse < 1e-9 and m.ate_m.max < 1e-9
    assert np.allclose(m.alignment.matrix, np.linalg.inv(S), atol=1e-9)
    assert m.ate_rot_deg.max < 1e-5 and m.rpe_trans_m.max < 1e-9
    assert evaluate_trajectory(T_est, T_gt, align="none", associate_by="index").ate_m.rmse > 0.1


def test_umeyama_recovers_sim3_exactly():
    rng = np.random.default_rng(3)
    src = rng.normal(size=(50, 3))
    R = Rotation.random(random_state=rng).as_matrix()
    t, s = np.array([1.0, -2.0, 0.5]), 0.37
    dst = s * src @ R.T + t
    a = umeyama(src, dst, with_scale=True)
    assert np.allclose(a.R, R, atol=1e-12) and np.allclose(a.t, t, atol=1e-12) and abs(a.scale - s) < 1e-12
    assert np.allclose(a.apply_points(src), dst, atol=1e-12)
    rigid = umeyama(src, dst, with_scale=False)
    assert rigid.scale == 1.0 and rigid.kind == "se3"


def test_umeyama_never_returns_a_reflection():
    rng = np.random.default_rng(4)
    src = rng.normal(size=(20, 3))
    dst = src * np.array([1.0, 1.0, -1.0])  # mirror image: best orthogonal map is a reflection
    a = umeyama(src, dst)
    assert np.linalg.det(a.R) == pytest.approx(1.0)


def test_umeyama_degenerate_raises():
    line = np.outer(np.arange(10.0), [1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="degenerate"):
        umeyama(line, line + 1.0)
    with pytest.raises(ValueError, match="at least 3"):
        umeyama(np.zeros((2, 3)), np.zeros((2, 3)))


# ---------------------------------------------------------------------------- association, RPE, formats
def test_associate_by_time_and_index():
    ref = Trajectory(np.arange(10) * 0.1, np.tile(np.eye(4), (10, 1, 1)))
    est = Trajectory(np.array([0.005, 0.21, 0.335, 0.449, 0.5, 2.0]), np.tile(np.eye(4), (6, 1, 1)))
    i_est, i_ref = associate(est, ref, max_time_diff=0.02)
    assert i_est.tolist() == [0, 1, 4] and i_ref.tolist() == [0, 2, 5]
    i_est, i_ref = associate(est, ref, max_time_diff=0.06)  # 0.449 is nearer 0.4 than 0.5
    assert i_est.tolist() == [0, 1, 2, 3, 4] and i_ref.tolist() == [0, 2, 3, 4, 5]
    i_ref2, i_est2 = associate(ref, est, max_time_diff=0.06)  # symmetric
    assert i_est2.tolist() == i_est.tolist() and i_ref2.tolist() == i_ref.tolist()
    i_est, i_ref = associate(est, ref, by="index")
    assert i_est.tolist() == i_ref.tolist() == [0, 1, 2, 3, 4, 5]
    with pytest.raises(ValueError, match="only 0 poses associated"):
        evaluate_trajectory(Trajectory(est.timestamps + 100, est.T_world_cam), ref)


def test_rpe_is_drift_per_step():
    """A constant 1 mm per-frame drift along x: every RPE translation error is 1 mm, ATE (no alignment) grows."""
    n = 50
    T_gt = np.tile(np.eye(4), (n, 1, 1))
    T_gt[:, 2, 3] = np.arange(n) * 0.05
    T_est = T_gt.copy()
    T_est[:, 0, 3] += np.arange(n) * 0.001
    m = evaluate_trajectory(T_est, T_gt, align="none", associate_by="index", delta=5)
    assert np.allclose(m.errors.rpe_trans_m, 0.005) and m.rpe_trans_m.count == 9
    assert m.errors.rpe_index[:3].tolist() == [[0, 5], [5, 10], [10, 15]]
    assert m.ate_m.max == pytest.approx(0.049)
    every = evaluate_trajectory(T_est, T_gt, align="none", associate_by="index", delta=5, all_pairs=True)
    assert every.rpe_trans_m.count == n - 5


def test_file_formats_and_report(tmp_path, redkitchen_poses):
    T = orthonormalise(redkitchen_poses[:200])
    traj = Trajectory(np.arange(200, dtype=float), T)
    lines = write_matrix_lines(tmp_path / "gt.txt", traj)
    log = write_o3d_log(
        tmp_path / "est.log", Trajectory(traj.timestamps, random_similarity(np.random.default_rng(5)) @ T)
    )
    m = evaluate_trajectory(log, lines, align="se3", max_time_diff=0.0)
    assert m.num_matched == 200 and m.ate_m.rmse < 1e-6
    paths = write_traj_report(m, tmp_path / "rep")
    assert [p.name for p in paths] == ["traj_metrics.json", "traj_errors.png"]
    d = json.loads(paths[0].read_text())
    assert d["ate_m"]["rmse"] == pytest.approx(m.ate_m.rmse) and d["alignment"]["kind"] == "se3"
    assert "errors" not in d and d["protocol"]["association"] == "time"
    assert paths[1].read_bytes()[:4] == b"\x89PNG"
    assert isinstance(m.alignment, TrajectoryAlignment)
    with pytest.raises(ValueError, match="unknown alignment"):
        evaluate_trajectory(log, lines, align="sim2")
