"""Dense RGB-D alignment of a frame to a target image (a model raycast or a keyframe).

Wraps ``open3d.t.pipelines.odometry.rgbd_odometry_multi_scale`` and scores its result
with one point-to-plane evaluation at the final transform, so that fitness and
residual mean the same thing for every loss:

- fitness: inlier correspondences / valid source pixels (Open3D divides by all
  pixels, which confuses "little valid depth" with "bad alignment");
- residual_m: RMS point-to-plane distance of the inliers, metres (Open3D's
  ``inlier_rmse`` is the mean Huber loss, r^2 / 2 for small r).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mapping.tracking.config import TrackerConfig
from mapping.tracking.images import AlignImage


@dataclass
class Alignment:
    """Result of aligning a source image to a target image.

    Attributes:
        T_target_source: (4, 4) float64, maps source-camera points into the target camera.
        fitness: inliers / valid source pixels, in [0, 1]; 0 when nothing matched.
        residual_m: RMS point-to-plane residual of the inliers, metres (inf when nothing matched).
        converged: False when Open3D found no correspondences at some iteration.
    """

    T_target_source: np.ndarray
    fitness: float
    residual_m: float
    converged: bool


def orthonormalize(T: np.ndarray) -> np.ndarray:
    """(4, 4) rigid transform with its rotation projected onto SO(3) (nearest in Frobenius norm).

    Open3D's odometry runs in float32; without this, composed poses drift off SO(3)
    and strict consumers (evo, ``check_pose``) reject them.
    """
    T = np.array(T, dtype=np.float64)
    U, _, Vt = np.linalg.svd(T[:3, :3])
    R = U @ Vt
    if np.linalg.det(R) < 0:
        R = U @ np.diag([1.0, 1.0, -1.0]) @ Vt
    T[:3, :3] = R
    T[3] = [0.0, 0.0, 0.0, 1.0]
    return T


GREY_WEIGHTS = np.array([0.299, 0.587, 0.114], np.float32)


def match_intensity(source: AlignImage, target: AlignImage) -> AlignImage:
    """``source`` with its colour scaled and offset so its grey levels match ``target``'s.

    Auto-exposure changes the brightness of a frame while the model keeps the average of
    past frames; the intensity term of the "hybrid" loss then pulls the pose towards a
    wrong alignment (on redkitchen frames 64-77 it drifted 0.2 deg per frame). Gain and
    bias are fitted by matching the mean and standard deviation of the grey values over
    the pixels where both images have depth (the images are roughly aligned at the
    predicted pose). Returns ``source`` unchanged when either has no colour or too
    little overlap.
    """
    if source.color is None or target.color is None:
        return source
    both = (source.depth_m > 0) & (target.depth_m > 0)
    if np.count_nonzero(both) < 100:
        return source
    g_src = source.color[both] @ GREY_WEIGHTS
    g_tgt = target.color[both] @ GREY_WEIGHTS
    std_src = float(g_src.std())
    if std_src < 1e-3:
        return source
    gain = float(g_tgt.std()) / std_src
    bias = float(g_tgt.mean()) - gain * float(g_src.mean())
    color = np.clip(gain * source.color + bias, 0.0, 1.0).astype(np.float32)
    return AlignImage(source.depth_m, source.camera, color)


def _o3d_method(name: str):
    import open3d as o3d

    odo = o3d.t.pipelines.odometry
    return {"point_to_plane": odo.Method.PointToPlane, "hybrid": odo.Method.Hybrid}[name]


def score_alignment(source: AlignImage, target: AlignImage, T_target_source: np.ndarray, config: TrackerConfig) -> tuple[float, float]:
    """(fitness, residual_m) of ``T_target_source`` by projective point-to-plane association.

    Args:
        source, target: images of the same size and camera.
        T_target_source: (4, 4) candidate transform.
    """
    import open3d as o3d

    o3c = o3d.core
    K = o3c.Tensor(source.camera.K, dtype=o3c.float64)

    def vertex_map(img: AlignImage, smooth: bool):
        depth = o3d.t.geometry.Image(o3c.Tensor(np.ascontiguousarray(img.depth_m[..., None])))
        depth = depth.clip_transform(1.0, config.depth_min_m, config.depth_max_m, float("nan"))
        if smooth:
            depth = depth.filter_bilateral(5, 5.0, 10.0)
        return depth.create_vertex_map(K, float("nan"))

    src_v = vertex_map(source, False)
    tgt_v = vertex_map(target, False)
    tgt_n = vertex_map(target, True).create_normal_map(float("nan"))
    try:
        res = o3d.t.pipelines.odometry.compute_odometry_result_point_to_plane(
            src_v.as_tensor(),
            tgt_v.as_tensor(),
            tgt_n.as_tensor(),
            K,
            o3c.Tensor(T_target_source, dtype=o3c.float64),
            config.depth_outlier_trunc_m,
            config.depth_huber_delta_m,
        )
    except RuntimeError:  # Open3D raises when no pixel has a correspondence
        return 0.0, float("inf")
    valid = max(source.valid_fraction, 1e-9)
    fitness = min(float(res.fitness) / valid, 1.0)
    residual_m = float(np.sqrt(2.0 * max(float(res.inlier_rmse), 0.0)))
    return fitness, residual_m


def align(
    source: AlignImage,
    target: AlignImage,
    T_target_source_init: np.ndarray,
    config: TrackerConfig,
    method: str | None = None,
) -> Alignment:
    """Multi-scale dense odometry of ``source`` onto ``target``.

    Args:
        source: the new frame (reduced), (h, w).
        target: the model raycast or a keyframe image, same camera and size as ``source``.
        T_target_source_init: (4, 4) initial guess.
        config: odometry loss, iterations and thresholds.
        method: overrides ``config.method`` (e.g. "point_to_plane" when the target has no colour).
            With "hybrid" the source brightness is first matched to the target (:func:`match_intensity`).
    Returns:
        Alignment; ``converged`` False (fitness 0) when either image has no valid depth
        or Open3D found no correspondences.
    """
    import open3d as o3d

    if source.depth_m.shape != target.depth_m.shape:
        raise ValueError(f"source {source.depth_m.shape} and target {target.depth_m.shape} images differ in size")
    init = np.asarray(T_target_source_init, dtype=np.float64)
    failed = Alignment(init.copy(), 0.0, float("inf"), False)
    if source.valid_fraction == 0.0 or target.valid_fraction == 0.0:
        return failed
    method = method or config.method
    if method == "hybrid":
        source = match_intensity(source, target)
    o3c = o3d.core
    odo = o3d.t.pipelines.odometry
    criteria = [odo.OdometryConvergenceCriteria(n) for n in config.iterations]
    params = odo.OdometryLossParams(config.depth_outlier_trunc_m, config.depth_huber_delta_m, config.intensity_huber_delta)
    try:
        res = odo.rgbd_odometry_multi_scale(
            source.o3d_rgbd(),
            target.o3d_rgbd(),
            o3c.Tensor(source.camera.K, dtype=o3c.float64),
            o3c.Tensor(init, dtype=o3c.float64),
            1.0,
            config.depth_max_m,
            criteria,
            _o3d_method(method),
            params,
        )
    except RuntimeError:  # "Invalid inlier_count value 0": no overlap at some pyramid level
        return failed
    T = res.transformation.numpy().astype(np.float64)
    if not np.all(np.isfinite(T)):
        return failed
    T = orthonormalize(T)
    fitness, residual_m = score_alignment(source, target, T, config)
    return Alignment(T, fitness, residual_m, True)
