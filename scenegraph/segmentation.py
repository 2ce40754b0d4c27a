"""Felzenszwalb-Huttenlocher graph segmentation of a surface graph (ScanNet's segmentator).

Felzenszwalb & Huttenlocher, "Efficient graph-based image segmentation", IJCV 2004,
applied to mesh edges as in ScanNet's ``Segmentator``:

- edge weight from the normals: ``w = 1 - n_i . n_j``, squared (i.e. made much smaller)
  when the edge is convex (``n_j . (p_j - p_i) > 0``), so object boundaries, which are
  mostly concave creases, weigh more than the rounded convex edges of one object; plus
  ``color_weight * |c_i - c_j|`` (RGB distance in [0, sqrt 3]);
- edges visited in ascending weight; components ``A`` and ``B`` merge when
  ``w <= min(Int(A) + k / |A|, Int(B) + k / |B|)``, where ``Int`` is the largest weight
  inside a component (the weight of the edge that last grew it, in Kruskal order) and
  ``|.|`` counts nodes;
- a second pass merges components smaller than ``min_size`` nodes across their lightest
  edges.

The graph algorithm is :func:`mapping.graph_segments.felzenszwalb_graph` (plain Python,
about 1 s per million edges), which is why it runs on the grid-clustered
:class:`SurfaceGraph` rather than on the raw mesh.
"""

from __future__ import annotations

import numpy as np

from mapping.graph_segments import felzenszwalb_graph
from scenegraph.surface import SurfaceGraph


def edge_weights(
    points: np.ndarray, normals: np.ndarray, colors: np.ndarray | None, edges: np.ndarray, color_weight: float = 0.0
) -> np.ndarray:
    """ScanNet-style dissimilarity of each edge.

    Args:
        points: (N, 3) positions; normals: (N, 3) unit normals; colors: (N, 3) RGB in [0, 1] or None.
        edges: (E, 2) int node pairs.
        color_weight: multiplier of the RGB distance term (0 = normals only).
    Returns:
        (E,) float64 weights >= 0.
    """
    i, j = edges[:, 0], edges[:, 1]
    dot = np.clip(np.einsum("ij,ij->i", normals[i], normals[j]), -1.0, 1.0)
    w = 1.0 - dot
    d = points[j] - points[i]
    convex = np.einsum("ij,ij->i", normals[j], d) > 0
    w = np.where(convex, w * w, w)
    if colors is not None and color_weight > 0:
        w = w + color_weight * np.linalg.norm(colors[i] - colors[j], axis=1)
    return w


def felzenszwalb(n: int, edges: np.ndarray, weights: np.ndarray, k: float, min_size: int = 1) -> np.ndarray:
    """Felzenszwalb-Huttenlocher segmentation of a weighted graph.

    Args:
        n: number of nodes.
        edges: (E, 2) int node pairs.
        weights: (E,) edge dissimilarities.
        k: scale parameter (larger -> larger segments); the threshold of a component of
            size s starts at ``k / s``.
        min_size: components with fewer nodes are merged into a neighbour (second pass).
    Returns:
        (n,) int64 segment label per node, labels ``0..S-1`` numbered by first node.
    """
    edges = np.asarray(edges, dtype=np.int64).reshape(-1, 2)
    weights = np.asarray(weights, dtype=np.float64).reshape(-1)
    if len(edges) != len(weights):
        raise ValueError(f"{len(edges)} edges but {len(weights)} weights")
    if len(edges) and (edges.min() < 0 or edges.max() >= n):
        raise ValueError(f"edge node index out of range 0..{n - 1}")
    return felzenszwalb_graph(n, edges, weights, k, min_size).labels()


def segment_surface(
    graph: SurfaceGraph, k: float = 0.02, min_size: int = 6, color_weight: float = 0.5
) -> np.ndarray:
    """FH segments of a surface graph (normal + colour affinity).

    Args:
        graph: the surface nodes and edges.
        k: FH scale parameter (ScanNet uses 0.01 on raw meshes; nodes here are coarser).
        min_size: minimum segment size in nodes.
        color_weight: weight of the RGB distance relative to ``1 - cos`` of the normals.
    Returns:
        (N,) int64 segment label per node.
    """
    w = edge_weights(graph.points, graph.normals, graph.colors, graph.edges, color_weight)
    return felzenszwalb(len(graph), graph.edges, w, k, min_size)
