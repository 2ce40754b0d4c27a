"""Disjoint sets and Felzenszwalb-Huttenlocher segmentation of a weighted graph.

One implementation for every graph the project segments: the 4-neighbour pixel grid of a
frame (:mod:`mapping.image_segments`) and the surface graph of a map
(:mod:`scenegraph.segmentation`); :class:`UnionFind` also serves the object merging of
:mod:`scenegraph.objects`.

Felzenszwalb and Huttenlocher, "Efficient Graph-Based Image Segmentation" (IJCV 2004):
edges are visited in increasing weight (stable order); components ``A`` and ``B`` merge
when the edge weight ``w <= min(Int(A) + k / |A|, Int(B) + k / |B|)``, where ``Int`` is the
largest weight inside a component (the weight of the edge that last grew it) and ``|.|``
counts nodes. A second pass merges components smaller than ``min_size`` nodes across their
lightest edges. The loop is plain Python over lists: about 1 s per million edges.
"""

from __future__ import annotations

import numpy as np


class UnionFind:
    """Disjoint sets over 0..n-1 (path halving, union by size; on equal sizes ``a``'s root wins)."""

    def __init__(self, n: int) -> None:
        self.parent = list(range(n))
        self.size = [1] * n

    def find(self, x: int) -> int:
        p = self.parent
        while p[x] != x:
            p[x] = p[p[x]]
            x = p[x]
        return x

    def union(self, a: int, b: int) -> int:
        """Join the sets of ``a`` and ``b``; returns the root of the joined set."""
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return ra
        if self.size[ra] < self.size[rb]:
            ra, rb = rb, ra
        self.parent[rb] = ra
        self.size[ra] += self.size[rb]
        return ra

    def roots(self) -> np.ndarray:
        """(n,) int64 root of every element."""
        n = len(self.parent)
        return np.fromiter((self.find(x) for x in range(n)), dtype=np.int64, count=n)

    def labels(self) -> np.ndarray:
        """(n,) int64 component label per element, numbered 0..C-1 by first element."""
        return relabel(self.roots())


def relabel(labels: np.ndarray) -> np.ndarray:
    """(N,) int64 labels renumbered 0..K-1 in order of first appearance (-1 stays -1)."""
    labels = np.asarray(labels)
    out = np.full(len(labels), -1, np.int64)
    ok = labels >= 0
    if ok.any():
        _, first, inv = np.unique(labels[ok], return_index=True, return_inverse=True)
        rank = np.empty(len(first), np.int64)
        rank[np.argsort(first, kind="stable")] = np.arange(len(first))
        out[ok] = rank[inv.reshape(-1)]
    return out


def felzenszwalb_graph(n: int, edges: np.ndarray, weights: np.ndarray, k: float, min_size: int = 1) -> UnionFind:
    """Felzenszwalb-Huttenlocher segmentation of a weighted graph (see module docstring).

    Args:
        n: number of nodes.
        edges: (E, 2) int node pairs, indices in 0..n-1 (not checked here).
        weights: (E,) edge dissimilarities.
        k: scale parameter (larger: larger segments); a component of size s starts
            merging below ``k / s``, in units of the weights.
        min_size: components with fewer nodes are merged into a neighbour (second pass).

    Returns:
        the disjoint sets of the segments (``.labels()`` numbers them by first node,
        ``.roots()`` gives each node's root).
    """
    edges = np.asarray(edges, dtype=np.int64).reshape(-1, 2)
    order = np.argsort(np.asarray(weights, dtype=np.float64).reshape(-1), kind="stable")
    ea, eb = edges[order, 0].tolist(), edges[order, 1].tolist()
    ew = np.asarray(weights, dtype=np.float64).reshape(-1)[order].tolist()
    uf = UnionFind(n)
    find, size = uf.find, uf.size
    thresh = [float(k)] * n  # Int(C) + k / |C|
    for a, b, w in zip(ea, eb, ew):
        ra, rb = find(a), find(b)
        if ra != rb and w <= thresh[ra] and w <= thresh[rb]:
            r = uf.union(ra, rb)
            thresh[r] = w + k / size[r]  # edges come in increasing order: w is the largest so far
    if min_size > 1:
        for a, b in zip(ea, eb):
            ra, rb = find(a), find(b)
            if ra != rb and (size[ra] < min_size or size[rb] < min_size):
                uf.union(ra, rb)
    return uf


__all__ = ["UnionFind", "felzenszwalb_graph", "relabel"]
