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

from mapping.poses import rotation_vector
from mapping.tracking.config import TrackerConfig
from mapping.tracking.images import AlignImage
from mapping.tracking.profile import StageTimes, null_section


@dataclass
class Alignment:
    """Result of aligning a source image to a target image.

    Attributes:
        T_target_source: (4, 4) float64, maps source-camera points into the target camera.
        fitness: inliers / valid source pixels, in [0, 1]; 0 when nothing matched.
        residual_m: RMS point-to-plane residual of the inliers, metres (inf when nothing matched).
        converged: False when Open3D found no correspondences at some iteration.
        overlap: fraction of the valid source pixels that land on a valid target pixel at
            ``T_target_source`` (1 when not computed). ``fitness / overlap`` is the inlier
            ratio where the target can confirm the alignment at all: a camera turning
            towards unmapped space lowers ``fitness`` but not this ratio.
    """

    T_target_source: np.ndarray
    fitness: float
    residual_m: float
    converged: bool
    overlap: float = 1.0

    @property
    def overlap_fitness(self) -> float:
        """Inliers / source pixels that project onto valid target pixels, in [0, 1]."""
        return min(self.fitness / self.overlap, 1.0) if self.overlap > 0 else 0.0


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


def se3_log(T: np.ndarray) -> np.ndarray:
    """(6,) twist [omega (rad), t (m)] of a (4, 4) rigid transform (first-order: t is the translation)."""
    return np.concatenate([rotation_vector(T[:3, :3]), T[:3, 3]])


def se3_exp(xi: np.ndarray) -> np.ndarray:
    """(4, 4) rigid transform of a (6,) twist [omega, t] (rotation by Rodrigues; t taken as the translation)."""
    omega, t = xi[:3], xi[3:]
    angle = float(np.linalg.norm(omega))
    K = np.array([[0, -omega[2], omega[1]], [omega[2], 0, -omega[0]], [-omega[1], omega[0], 0]])
    if angle < 1e-12:
        R = np.eye(3) + K
    else:
        R = np.eye(3) + np.sin(angle) / angle * K + (1 - np.cos(angle)) / angle**2 * K @ K
    T = np.eye(4)
    T[:3, :3] = R
    T[:3, 3] = t
    return T


def point_to_plane_information(target: AlignImage, length_m: float, stride: int = 2) -> np.ndarray:
    """(6, 6) normalised point-to-plane Gauss-Newton information of the target surface, twist [omega * L, t].

    Each valid target pixel with point p and normal n (target camera frame) contributes
    J^T J with J = [(p x n) / L, n]: the curvature of the summed squared point-to-plane
    residual with respect to a small motion. Rotation is scaled by ``length_m`` so both
    blocks are in metres. Divided by the number of points: a single plane has eigenvalue 1
    along its normal and 0 along the two sliding directions.
    """
    d = target.depth_m[::stride, ::stride]
    cam = target.camera
    h, w = target.depth_m.shape
    v, u = np.mgrid[0:h:stride, 0:w:stride]
    x = (u - cam.cx) / cam.fx * d
    y = (v - cam.cy) / cam.fy * d
    P = np.stack([x, y, d], -1)
    # normals from central differences of the point map
    dx = np.zeros_like(P)
    dy = np.zeros_like(P)
    dx[:, 1:-1] = P[:, 2:] - P[:, :-2]
    dy[1:-1] = P[2:] - P[:-2]
    n = np.cross(dx, dy)
    ok = (d > 0)
    ok[:, 1:-1] &= (d[:, 2:] > 0) & (d[:, :-2] > 0)
    ok[1:-1] &= (d[2:] > 0) & (d[:-2] > 0)
    ok[0] = ok[-1] = False
    ok[:, 0] = ok[:, -1] = False
    # reject normals across depth jumps
    jump = np.maximum(np.linalg.norm(dx, axis=-1), np.linalg.norm(dy, axis=-1))
    ok &= jump < 0.05 * d * stride + 1e-6
    nn = np.linalg.norm(n, axis=-1)
    ok &= nn > 1e-12
    if np.count_nonzero(ok) < 10:
        return np.zeros((6, 6))
    p = P[ok]
    nrm = n[ok] / nn[ok][:, None]
    J = np.concatenate([np.cross(p, nrm) / length_m, nrm], axis=1)
    return J.T @ J / len(J)


def fuse_degenerate(T_geom: np.ndarray, T_photo: np.ndarray, info: np.ndarray, length_m: float, prior: float) -> np.ndarray:
    """Combine a depth-only and a depth+intensity alignment along the depth term's weak directions.

    The point-to-plane estimate ``T_geom`` is kept where the surface constrains it
    (eigenvalues of ``info`` large); along weakly constrained directions (sliding along
    a wall or a row of cabinets) the photometric estimate ``T_photo`` takes over. This
    is the Bayesian fusion of the two estimates with information ``info`` and
    ``prior * I``: each eigen-direction i keeps the fraction prior / (lambda_i + prior)
    of the difference (Zhang et al., "On degeneracy of optimization-based state
    estimation problems", ICRA 2016, soft form).
    """
    xi = se3_log(T_photo @ np.linalg.inv(T_geom))
    xi_s = xi.copy()
    xi_s[:3] *= length_m
    lam, V = np.linalg.eigh(info)
    gain = prior / (np.maximum(lam, 0.0) + prior)
    xi_f = V @ (gain * (V.T @ xi_s))
    xi_f[:3] /= length_m
    return orthonormalize(se3_exp(xi_f) @ T_geom)


def overlap_fraction(source: AlignImage, target: AlignImage, T_target_source: np.ndarray, stride: int = 2) -> float:
    """Fraction of the valid source pixels (every ``stride``-th) that project onto a valid target pixel.

    Args:
        source, target: images of the same camera; depths in metres, 0 = invalid.
        T_target_source: (4, 4) source-camera to target-camera transform.
    """
    d = source.depth_m[::stride, ::stride]
    ok = d > 0
    if not np.any(ok):
        return 0.0
    cam = source.camera
    v, u = np.nonzero(ok)
    z = d[ok].astype(np.float64)
    pts = np.stack([(u * stride - cam.cx) / cam.fx * z, (v * stride - cam.cy) / cam.fy * z, z], -1)
    pts = pts @ T_target_source[:3, :3].T + T_target_source[:3, 3]
    uv, zt = target.camera.project(pts)
    h, w = target.depth_m.shape
    with np.errstate(invalid="ignore"):
        col = np.rint(uv[:, 0])
        row = np.rint(uv[:, 1])
        inside = (zt > 0) & (col >= 0) & (col < w) & (row >= 0) & (row < h)
    hit = np.zeros(len(z), bool)
    hit[inside] = target.depth_m[row[inside].astype(int), col[inside].astype(int)] > 0
    return float(np.count_nonzero(hit)) / len(z)


def score_alignment(source: AlignImage, target: AlignImage, T_target_source: np.ndarray, config: TrackerConfig) -> tuple[float, float]:
    """(fitness, residual_m) of ``T_target_source`` by projective point-to-plane association.

    Args:
        source, target: images of the same size and camera.
        T_target_source: (4, 4) candidate transform.
    """
    import open3d as o3d

    o3c = o3d.core
    K = o3c.Tensor(source.camera.K, dtype=o3c.float64)

    dev = o3c.Device(config.device)

    def vertex_map(img: AlignImage, smooth: bool):
        depth = o3d.t.geometry.Image(o3c.Tensor(np.ascontiguousarray(img.depth_m[..., None]), device=dev))
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
    timer: StageTimes | None = None,
) -> Alignment:
    """Multi-scale dense odometry of ``source`` onto ``target``.

    Args:
        source: the new frame (reduced), (h, w).
        target: the model raycast or a keyframe image, same camera and size as ``source``.
        T_target_source_init: (4, 4) initial guess.
        config: odometry loss, iterations and thresholds.
        method: overrides ``config.method`` (e.g. "point_to_plane" when the target has no colour).
            With "hybrid" the source brightness is first matched to the target (:func:`match_intensity`).
        timer: accumulates the wall time of each odometry loss, the fusion and the scoring.
    Returns:
        Alignment; ``converged`` False (fitness 0) when either image has no valid depth
        or Open3D found no correspondences.
    """
    if source.depth_m.shape != target.depth_m.shape:
        raise ValueError(f"source {source.depth_m.shape} and target {target.depth_m.shape} images differ in size")
    init = np.asarray(T_target_source_init, dtype=np.float64)
    failed = Alignment(init.copy(), 0.0, float("inf"), False)
    if source.valid_fraction == 0.0 or target.valid_fraction == 0.0:
        return failed
    method = method or config.method
    section = timer.section if timer is not None else null_section
    if method == "fused":
        with section("odometry:point_to_plane"):
            T = dense_odometry(source, target, init, config, "point_to_plane")
        if T is not None and target.color is not None and source.color is not None:
            with section("odometry:hybrid"):
                T_photo = dense_odometry(source, target, T, config, "hybrid", config.refine_schedule)
            if T_photo is not None:
                with section("odometry:fuse"):
                    length = float(np.median(target.depth_m[target.depth_m > 0]))
                    info = point_to_plane_information(target, length)
                    T = fuse_degenerate(T, T_photo, info, length, config.fusion_prior)
    else:
        with section(f"odometry:{method}"):
            T = dense_odometry(source, target, init, config, method)
    if T is None:
        return failed
    with section("odometry:score"):
        fitness, residual_m = score_alignment(source, target, T, config)
        overlap = overlap_fraction(source, target, T)
    return Alignment(T, fitness, residual_m, True, overlap)


def dense_odometry(
    source: AlignImage, target: AlignImage, init: np.ndarray, config: TrackerConfig, method: str,
    iterations: tuple[int, ...] | None = None,
) -> np.ndarray | None:
    """(4, 4) orthonormal ``T_target_source`` from Open3D's multi-scale RGB-D odometry, or None when it fails.

    ``method`` is "point_to_plane" or "hybrid" (the source brightness is first matched to the
    target, :func:`match_intensity`). ``iterations`` per pyramid level, coarsest first (default
    ``config.iterations``). Unscored: :func:`align` scores the final transform once.
    """
    import open3d as o3d

    if method == "hybrid":
        source = match_intensity(source, target)
    o3c = o3d.core
    odo = o3d.t.pipelines.odometry
    criteria = [odo.OdometryConvergenceCriteria(n) for n in (iterations or config.iterations)]
    params = odo.OdometryLossParams(config.depth_outlier_trunc_m, config.depth_huber_delta_m, config.intensity_huber_delta)
    try:
        res = odo.rgbd_odometry_multi_scale(
            source.o3d_rgbd(config.device),
            target.o3d_rgbd(config.device),
            o3c.Tensor(source.camera.K, dtype=o3c.float64),
            o3c.Tensor(init, dtype=o3c.float64),
            1.0,
            config.depth_max_m,
            criteria,
            _o3d_method(method),
            params,
        )
    except RuntimeError:  # "Invalid inlier_count value 0": no overlap at some pyramid level
        return None
    T = res.transformation.numpy().astype(np.float64)
    return orthonormalize(T) if np.all(np.isfinite(T)) else None
