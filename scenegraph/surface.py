"""The reconstructed surface as a graph of small surface patches ("nodes").

The map's marching-cubes mesh (``mesh.ply``) is clustered on a regular grid of
``node_size_m`` cells: every occupied cell becomes one node with the mean position,
the area-weighted mean normal and the mean colour of its vertices; two nodes are
connected when a mesh edge joins their cells. This keeps the mesh's connectivity (two
surfaces that only come close are not joined, unlike a radius graph on points) while
shrinking a ~1M-vertex mesh several-fold, so the segmentation loop stays fast.

Frames and units: world frame of the map, metres; colours RGB in [0, 1].
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class SurfaceGraph:
    """Surface nodes and their mesh adjacency.

    Attributes:
        points: (N, 3) float64 node positions (mean of the cell's vertices), world frame, metres.
        normals: (N, 3) float64 unit normals (area-weighted vertex normals, summed per cell).
        colors: (N, 3) float64 mean vertex colour, RGB in [0, 1].
        area_m2: (N,) float64 surface area of the node (a third of each incident triangle).
        edges: (E, 2) int64 node pairs ``i < j`` joined by at least one mesh edge, unique.
        node_size_m: grid cell edge used to build the nodes, metres.
    """

    points: np.ndarray
    normals: np.ndarray
    colors: np.ndarray
    area_m2: np.ndarray
    edges: np.ndarray
    node_size_m: float

    def __len__(self) -> int:
        return int(self.points.shape[0])

    def subset(self, keep: np.ndarray) -> tuple[SurfaceGraph, np.ndarray]:
        """The graph restricted to the nodes where ``keep`` (N,) bool is True.

        Returns the new graph and (N,) int64 ``old -> new`` index (-1 for dropped nodes).
        """
        keep = np.asarray(keep, dtype=bool)
        remap = np.full(len(self), -1, np.int64)
        remap[keep] = np.arange(int(keep.sum()))
        e = remap[self.edges]
        e = e[(e >= 0).all(axis=1)]
        g = SurfaceGraph(
            self.points[keep], self.normals[keep], self.colors[keep], self.area_m2[keep], e, self.node_size_m
        )
        return g, remap


def surface_graph(
    vertices: np.ndarray,
    triangles: np.ndarray,
    colors: np.ndarray | None,
    node_size_m: float,
) -> SurfaceGraph:
    """Cluster a triangle mesh into grid-cell nodes joined by the mesh's edges.

    Args:
        vertices: (V, 3) float vertex positions, metres.
        triangles: (T, 3) int vertex indices.
        colors: (V, 3) float RGB in [0, 1], or None (grey).
        node_size_m: grid cell edge, metres (typically the TSDF voxel size or a bit more).
    Returns:
        the :class:`SurfaceGraph`. Unreferenced vertices are ignored; degenerate triangles
        contribute no area and no normal.
    Raises:
        ValueError: no triangles, bad shapes or a non-positive cell size.
    """
    v = np.asarray(vertices, dtype=np.float64)
    t = np.asarray(triangles, dtype=np.int64)
    if v.ndim != 2 or v.shape[1] != 3:
        raise ValueError(f"vertices must be (V, 3), got {v.shape}")
    if t.ndim != 2 or t.shape[1] != 3 or len(t) == 0:
        raise ValueError(f"triangles must be (T, 3) with T >= 1, got {t.shape}")
    if not node_size_m > 0:
        raise ValueError(f"node_size_m must be positive, got {node_size_m}")
    c = np.full((len(v), 3), 0.5) if colors is None else np.asarray(colors, dtype=np.float64)

    # per-triangle area vectors -> per-vertex area-weighted normals and areas
    cross = np.cross(v[t[:, 1]] - v[t[:, 0]], v[t[:, 2]] - v[t[:, 0]])  # (T, 3), |.| = 2 area
    tri_area = 0.5 * np.linalg.norm(cross, axis=1)
    nv = len(v)
    flat_t = t.reshape(-1)  # corner k of triangle i is flat_t[3 i + k]
    vn = np.stack([np.bincount(flat_t, np.repeat(cross[:, i], 3), nv) for i in range(3)], axis=1)
    va = np.bincount(flat_t, np.repeat(tri_area / 3.0, 3), nv)
    used = np.zeros(len(v), bool)
    used[t.reshape(-1)] = True

    # vertex -> grid cell -> node
    keys = np.floor(v / node_size_m).astype(np.int64)
    keys -= keys[used].min(axis=0) if used.any() else 0
    dims = keys[used].max(axis=0) + 1 if used.any() else np.ones(3, np.int64)
    flat = (keys[:, 0] * dims[1] + keys[:, 1]) * dims[2] + keys[:, 2]
    flat[~used] = -1
    uniq, node_of = np.unique(flat[used], return_inverse=True)
    vnode = np.full(len(v), -1, np.int64)
    vnode[used] = node_of
    n = len(uniq)
    cnt = np.bincount(node_of, minlength=n).astype(np.float64)
    pts = np.stack([np.bincount(node_of, v[used, i], n) for i in range(3)], axis=1) / cnt[:, None]
    col = np.stack([np.bincount(node_of, c[used, i], n) for i in range(3)], axis=1) / cnt[:, None]
    nrm = np.stack([np.bincount(node_of, vn[used, i], n) for i in range(3)], axis=1)
    norm = np.linalg.norm(nrm, axis=1, keepdims=True)
    nrm = np.where(norm > 1e-12, nrm / np.maximum(norm, 1e-12), 0.0)
    area = np.bincount(node_of, va[used], n)

    # mesh edges between different nodes, unique and ordered
    e = vnode[np.concatenate([t[:, [0, 1]], t[:, [1, 2]], t[:, [2, 0]]])]
    e = e[e[:, 0] != e[:, 1]]
    e.sort(axis=1)
    e = np.unique(e[:, 0] * n + e[:, 1])
    edges = np.stack([e // n, e % n], axis=1)
    return SurfaceGraph(pts, nrm, np.clip(col, 0.0, 1.0), area, edges, float(node_size_m))
