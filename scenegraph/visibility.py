"""Which surface nodes each stored view actually saw (projection + depth test).

A node is seen by a view when it projects inside the image, in front of the camera,
its depth agrees with the view's depth image at that pixel (within ``depth_tol_m`` +
``depth_tol_rel`` x depth), and its normal faces the camera (cosine above
``min_facing``). The result is kept sparse, per view.

Two uses: nodes no view saw are TSDF artefacts (the surfaces marching cubes closes
behind thin structures and under table edges, which no camera looked at) and are
dropped before segmentation; and the per-object view statistics choose the views that
embed each object (:mod:`scenegraph.embedding`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from scenegraph.views import View


@dataclass
class VisibilityConfig:
    """Depth-test settings."""

    depth_tol_m: float = 0.02
    """Absolute depth agreement, metres."""
    depth_tol_rel: float = 0.01
    """Relative depth agreement (fraction of the depth)."""
    min_facing: float = 0.05
    """Smallest cosine between a node's normal and its direction to the camera."""


@dataclass
class ViewHits:
    """The nodes one view saw.

    Attributes:
        nodes: (K,) int64 node indices.
        uv: (K, 2) int32 pixel (column, row) of each, in the view's stored image.
        depth_m: (K,) float32 node depth along the optical axis, metres.
    """

    nodes: np.ndarray
    uv: np.ndarray
    depth_m: np.ndarray


def project_nodes(
    points: np.ndarray, normals: np.ndarray | None, view: View, config: VisibilityConfig | None = None
) -> ViewHits:
    """Depth-tested projection of (N, 3) world points (with (N, 3) normals or None) into one view."""
    cfg = config or VisibilityConfig()
    T = view.T_world_cam
    R, t = T[:3, :3].astype(np.float32), T[:3, 3].astype(np.float32)
    p = np.asarray(points, np.float32) - t
    # p_cam = R^T (p - t), written out per axis: a (N, 3) x (3, 3) product is faster
    # elementwise and starts no BLAS threads on a shared CPU
    z = p[:, 0] * R[0, 2] + p[:, 1] * R[1, 2] + p[:, 2] * R[2, 2]
    cam = view.camera
    idx = np.flatnonzero(z > 1e-6)
    pi, zi = p[idx], z[idx]
    x = pi[:, 0] * R[0, 0] + pi[:, 1] * R[1, 0] + pi[:, 2] * R[2, 0]
    y = pi[:, 0] * R[0, 1] + pi[:, 1] * R[1, 1] + pi[:, 2] * R[2, 1]
    u = np.rint(cam.fx * x / zi + cam.cx)
    v = np.rint(cam.fy * y / zi + cam.cy)
    ok = (u >= 0) & (u < cam.width) & (v >= 0) & (v < cam.height)
    idx, zi, u, v = idx[ok], zi[ok], u[ok].astype(np.int64), v[ok].astype(np.int64)
    d = view.depth_m[v, u]
    agree = (d > 0) & (np.abs(d - zi) <= cfg.depth_tol_m + cfg.depth_tol_rel * zi)
    if normals is not None:
        # facing: n . (c - p) >= min_facing |c - p|, with c - p = -(p - t)
        q, n = -p[idx], np.asarray(normals[idx], np.float32)
        dot = q[:, 0] * n[:, 0] + q[:, 1] * n[:, 1] + q[:, 2] * n[:, 2]
        agree &= dot >= cfg.min_facing * np.sqrt(q[:, 0] ** 2 + q[:, 1] ** 2 + q[:, 2] ** 2)
    return ViewHits(idx[agree], np.stack([u[agree], v[agree]], axis=1).astype(np.int32), zi[agree].astype(np.float32))


def observe_nodes(
    points: np.ndarray, normals: np.ndarray | None, views: list[View], config: VisibilityConfig | None = None
) -> tuple[list[ViewHits], np.ndarray]:
    """Project the nodes into every view.

    Returns:
        per-view hits, and (N,) int64 number of views that saw each node.
    """
    hits = [project_nodes(points, normals, v, config) for v in views]
    count = np.zeros(len(points), np.int64)
    for h in hits:
        count[h.nodes] += 1
    return hits, count
