"""Loop closure over keyframes: candidates, dense verification, pose-graph optimisation.

Pose-graph conventions (Open3D legacy ``pipelines.registration``): node k holds
``T_world_kf`` of keyframe k; an edge (source s, target t) holds ``T_t_s``, which
maps points of keyframe s into keyframe t, so that ``T_t_s ~ inv(T_world_t) @ T_world_s``.
Consecutive keyframes are joined by certain odometry edges (tracked relative
poses), verified loops by uncertain edges that the line process may prune.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from mapping.tracking.config import LoopClosureConfig, TrackerConfig
from mapping.tracking.failure import pose_difference
from mapping.tracking.keyframes import Keyframe
from mapping.tracking.odometry import align, orthonormalize


@dataclass
class LoopEdge:
    """A verified loop between two keyframes.

    Attributes:
        source, target: keyframe positions (indices into the keyframe list), target < source.
        T_target_source: (4, 4) float64 alignment mapping source-camera points into the target camera.
        fitness: fraction of the source keyframe's valid pixels with a correspondence.
        residual_m: RMS point-to-plane residual of those correspondences, metres.
        information: (6, 6) float64 information matrix of the edge.
    """

    source: int
    target: int
    T_target_source: np.ndarray
    fitness: float
    residual_m: float
    information: np.ndarray


def _optical_axis_angle_deg(T_world_a: np.ndarray, T_world_b: np.ndarray) -> float:
    za, zb = T_world_a[:3, 2], T_world_b[:3, 2]
    return float(np.degrees(np.arccos(np.clip(float(za @ zb), -1.0, 1.0))))


def loop_candidates(keyframes: list[Keyframe], config: LoopClosureConfig) -> list[tuple[int, int, float]]:
    """Keyframe pairs worth verifying, most similar first.

    A pair (source s, target t < s) qualifies when the frames are at least
    ``min_frame_gap`` apart, their current camera centres are within ``max_distance_m``,
    their optical axes within ``max_view_angle_deg``, and their descriptors have cosine
    similarity >= ``min_descriptor_similarity``. Each source keeps its
    ``max_candidates_per_keyframe`` best targets; at most ``max_candidates`` pairs overall.

    Returns:
        [(source, target, similarity)] sorted by decreasing similarity.
    """
    if len(keyframes) < 2:
        return []
    desc = np.stack([k.descriptor for k in keyframes])
    sim = desc @ desc.T
    centres = np.stack([k.T_world_cam[:3, 3] for k in keyframes])
    frames = np.array([k.frame_index for k in keyframes])
    pairs: list[tuple[int, int, float]] = []
    for s in range(len(keyframes)):
        close = (
            (frames[s] - frames >= config.min_frame_gap)
            & (np.linalg.norm(centres - centres[s], axis=1) <= config.max_distance_m)
            & (sim[s] >= config.min_descriptor_similarity)
        )
        targets = [
            t
            for t in np.flatnonzero(close)
            if _optical_axis_angle_deg(keyframes[s].T_world_cam, keyframes[t].T_world_cam) <= config.max_view_angle_deg
        ]
        targets.sort(key=lambda t: -sim[s, t])
        pairs.extend((s, int(t), float(sim[s, t])) for t in targets[: config.max_candidates_per_keyframe])
    pairs.sort(key=lambda p: -p[2])
    return pairs[: config.max_candidates]


def information_matrix(source: Keyframe, target: Keyframe, T_target_source: np.ndarray, max_distance_m: float) -> np.ndarray:
    """(6, 6) float64 information of the constraint ``T_target_source`` from the keyframe depth images.

    Open3D's ``compute_odometry_information_matrix``: sum of J^T J over projective
    correspondences closer than ``max_distance_m``.
    """
    import open3d as o3d

    o3c = o3d.core

    def depth_image(kf: Keyframe):
        return o3d.t.geometry.Image(o3c.Tensor(np.ascontiguousarray(kf.loop_image.depth_m[..., None])))

    try:
        info = o3d.t.pipelines.odometry.compute_odometry_information_matrix(
            depth_image(source),
            depth_image(target),
            o3c.Tensor(source.loop_image.camera.K, dtype=o3c.float64),
            o3c.Tensor(T_target_source, dtype=o3c.float64),
            max_distance_m,
            1.0,
            float(max(source.loop_image.depth_m.max(), target.loop_image.depth_m.max()) + 1.0),
        )
    except RuntimeError:
        return np.eye(6)
    info = info.numpy().astype(np.float64)
    return info if np.all(np.isfinite(info)) and info[5, 5] > 0 else np.eye(6)


def verify_loop(
    source: Keyframe, target: Keyframe, s: int, t: int, config: LoopClosureConfig, tracker_config: TrackerConfig
) -> LoopEdge | None:
    """Dense RGB-D alignment of two keyframes started from their tracked relative pose.

    Accepted when fitness >= ``min_fitness``, the point-to-plane residual <= ``max_residual_m``
    and the result stays within ``max_correction_m`` / ``max_correction_deg`` of the tracked
    estimate (a loop that "corrects" more than drift could have built up is a false match).
    """
    T_init = np.linalg.inv(target.T_world_cam) @ source.T_world_cam
    odometry_config = replace(tracker_config, iterations=config.iterations, refine_iterations=None)
    # the tracker's own loss where both keyframes kept colour: depth alone slides along
    # degenerate surfaces (rows of cabinets) and would bias the loop edge the same way
    with_color = source.loop_image.color is not None and target.loop_image.color is not None
    method = tracker_config.method if with_color else "point_to_plane"
    a = align(source.loop_image, target.loop_image, T_init, odometry_config, method)
    if not a.converged or a.fitness < config.min_fitness or a.residual_m > config.max_residual_m:
        return None
    dt, dr = pose_difference(T_init, a.T_target_source)
    if dt > config.max_correction_m or dr > config.max_correction_deg:
        return None
    info = information_matrix(source, target, a.T_target_source, config.max_correspondence_m)
    return LoopEdge(s, t, a.T_target_source, a.fitness, a.residual_m, info)


def loop_disagreement_m(keyframes: list[Keyframe], loops: list[LoopEdge]) -> float:
    """Median translation (metres) between each verified loop and the tracked relative pose of its keyframes."""
    if not loops:
        return 0.0
    return float(
        np.median(
            [
                pose_difference(
                    np.linalg.inv(keyframes[e.target].T_world_cam) @ keyframes[e.source].T_world_cam, e.T_target_source
                )[0]
                for e in loops
            ]
        )
    )


def build_pose_graph(keyframes: list[Keyframe], loops: list[LoopEdge], config: LoopClosureConfig):
    """Open3D ``PoseGraph`` with one node per keyframe, odometry edges k -> k-1 and the loop edges."""
    import open3d as o3d

    pgr = o3d.pipelines.registration
    graph = pgr.PoseGraph()
    for kf in keyframes:
        graph.nodes.append(pgr.PoseGraphNode(np.array(kf.T_world_cam)))
    for k in range(1, len(keyframes)):
        T_prev_k = np.linalg.inv(keyframes[k - 1].T_world_cam) @ keyframes[k].T_world_cam
        info = information_matrix(keyframes[k], keyframes[k - 1], T_prev_k, config.max_correspondence_m)
        graph.edges.append(pgr.PoseGraphEdge(k, k - 1, T_prev_k, info, uncertain=False))
    for e in loops:
        graph.edges.append(pgr.PoseGraphEdge(e.source, e.target, e.T_target_source, e.information, uncertain=True))
    return graph


def optimise_pose_graph(graph, config: LoopClosureConfig) -> np.ndarray:
    """Levenberg-Marquardt global optimisation (first keyframe fixed); returns (N, 4, 4) ``T_world_kf``."""
    import open3d as o3d

    pgr = o3d.pipelines.registration
    option = pgr.GlobalOptimizationOption(
        max_correspondence_distance=config.max_correspondence_m,
        edge_prune_threshold=config.edge_prune_threshold,
        preference_loop_closure=config.preference_loop_closure,
        reference_node=0,
    )
    with o3d.utility.VerbosityContextManager(o3d.utility.VerbosityLevel.Error):
        pgr.global_optimization(
            graph, pgr.GlobalOptimizationLevenbergMarquardt(), pgr.GlobalOptimizationConvergenceCriteria(), option
        )
    return np.stack([orthonormalize(np.asarray(n.pose, dtype=np.float64)) for n in graph.nodes])


def correct_poses(
    T_world_cam: dict[int, np.ndarray],
    anchor_of: dict[int, int],
    kf_before: np.ndarray,
    kf_after: np.ndarray,
) -> dict[int, np.ndarray]:
    """Move every tracked pose rigidly with its anchor keyframe.

    ``T_new = T_world_kf_after @ inv(T_world_kf_before) @ T_old`` keeps each frame's
    pose relative to the keyframe it was tracked after.

    Args:
        T_world_cam: seq -> (4, 4) tracked pose.
        anchor_of: seq -> keyframe position the frame is anchored to.
        kf_before, kf_after: (K, 4, 4) keyframe poses before / after optimisation.
    """
    corrections = kf_after @ np.linalg.inv(kf_before)
    return {s: corrections[anchor_of[s]] @ T for s, T in T_world_cam.items()}
