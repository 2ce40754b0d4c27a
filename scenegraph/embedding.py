"""Per-object embeddings from their best views, and label candidates from a vocabulary.

View choice (per object, from the depth-tested projections of :mod:`scenegraph.visibility`):
a view scores ``visible fraction x min(1, projected side / (min_side_frac x image side))``
where the visible fraction is the share of the object's surface nodes that the view sees
unoccluded and the projected side is the square root of the pixel box of those nodes.
The best ``k_views`` views with at least ``min_visible`` of the object are used.

Crops: the pixel box of the visible nodes grown by ``context`` of its size on every side
(at least ``min_context_px``), squared, clipped to the image. With ``mask_background``
(default) the crop's pixels away from the object are set to mid grey: the object's
visible nodes are splatted, grown by ``mask_grow_px``, closed and hole-filled into a
mask, and only the masked pixels keep their colour (the mask-prompted crops of OVSeg /
OpenMask3D-style pipelines). A crop of a chair then shows the chair, not the table
behind it: on the redkitchen ``lite`` map, relational queries 5/10 -> 7/10 top-1 and the
mean reciprocal rank of the annotated instances for their names 0.43 -> 0.49
(``benchmarks/bench_scenegraph.py``); with the query kinds of :mod:`scenegraph.query`
7/10 -> 8/10; on a second map from every other frame 6/10 and 7/10 with or without it.
Blurring the background instead did not help (5/10, 0.41).

Aggregation of the K crop embeddings (ablations in ConceptGraphs / OpenMask3D style
pipelines show a plain mean is pulled off by occluded or cut-off views): ``dominant``
takes the largest cluster of mutually similar views (cosine >= ``cluster_similarity``
to the view with the most such neighbours) and averages it; ``medoid`` takes the view
most similar to all others; ``mean`` averages all.

When the map has a semantic feature layer, the fused voxel features under the object's
surface give a second embedding (the mean of the unit features of the distinct voxels
under its nodes, each voxel once); the two are blended with ``feature_weight``. The
feature layer fuses every keyframe at full resolution and several crop scales, a few
downscaled view crops do not: on the redkitchen ``lite`` map the mean reciprocal rank of
the annotated instances for their names was 0.36 from views alone, 0.45 blended half
and half, 0.61 at weight 0.9 (``benchmarks/bench_scenegraph.py``), hence the default.

Labels: cosine similarity of the object embedding with the text embedding of each
vocabulary name (prompt ``"a photo of a {}."``), less that name's mean similarity over
all the scene's objects (``scene_prior``: a name that every object resembles, as
"picture" does for the lite encoder, carries no information), turned into
probabilities by a softmax with ``temperature``; the best ``top_labels`` are kept.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from scenegraph.views import View
from scenegraph.visibility import ViewHits


@dataclass
class EmbeddingConfig:
    """Settings of view selection, cropping, aggregation and labelling."""

    k_views: int = 5
    """Views per object."""
    min_visible: float = 0.05
    """A view must see at least this fraction of the object's nodes."""
    min_side_frac: float = 0.25
    """A projection of this fraction of the image's shorter side counts as full size."""
    context: float = 0.25
    """Crop margin on every side, as a fraction of the object's pixel box."""
    min_context_px: int = 8
    """Smallest crop margin, pixels."""
    aggregate: str = "dominant"
    """"dominant" (largest cluster of similar views), "medoid" or "mean"."""
    mask_background: bool = True
    """Grey out the crop's pixels away from the object's visible nodes."""
    mask_grow_px: int = 2
    """Growth of the splatted node pixels before closing the mask, pixels."""
    background_value: int = 127
    """Grey level of the masked-out pixels."""
    cluster_similarity: float = 0.8
    """Cosine similarity that puts two views in one cluster ("dominant")."""
    feature_weight: float = 0.9
    """Weight of the feature-layer embedding when both it and views are available."""
    template: str = "a photo of a {}."
    """Prompt of the label texts."""
    temperature: float = 0.05
    """Softmax temperature of the label probabilities."""
    top_labels: int = 5
    """Label candidates kept per object."""
    scene_prior: bool = True
    """Subtract each name's mean similarity over the scene's objects before the softmax."""
    scene_prior_min_objects: int = 5
    """... when at least this many objects have embeddings."""

    def __post_init__(self) -> None:
        if self.aggregate not in ("dominant", "medoid", "mean"):
            raise ValueError(f"aggregate must be dominant, medoid or mean, got {self.aggregate!r}")
        if self.k_views < 1:
            raise ValueError(f"k_views must be >= 1, got {self.k_views}")


@dataclass
class ViewChoice:
    """One chosen view of one object: view index, score, the crop box (u0, v0, u1, v1),
    exclusive end, and the (K, 2) int pixels (column, row) of the object's visible nodes."""

    view: int
    score: float
    crop: tuple[int, int, int, int]
    pixels: np.ndarray | None = None


def choose_views(
    hits: list[ViewHits], views: list[View], node_object: np.ndarray, n_objects: int, cfg: EmbeddingConfig
) -> list[list[ViewChoice]]:
    """The best views of every object (see the module docstring).

    Args:
        hits: per-view depth-tested projections of the surface nodes.
        views: the views (for image sizes).
        node_object: (N,) object index per surface node (-1: none).
        n_objects: number of objects O.
    Returns:
        O lists of :class:`ViewChoice`, best first (empty when no view sees the object).
    """
    total = np.bincount(node_object[node_object >= 0], minlength=n_objects).astype(np.float64)
    cands: list[list[ViewChoice]] = [[] for _ in range(n_objects)]
    for vi, (h, view) in enumerate(zip(hits, views)):
        obj = node_object[h.nodes]
        keep = obj >= 0
        if not keep.any():
            continue
        obj, uv = obj[keep], h.uv[keep]
        order = np.argsort(obj, kind="stable")
        obj, uv = obj[order], uv[order]
        starts = np.flatnonzero(np.r_[True, obj[1:] != obj[:-1]])
        ends = np.r_[starts[1:], len(obj)]
        W, H = view.camera.width, view.camera.height
        full = cfg.min_side_frac * min(W, H)
        for s, e in zip(starts, ends):
            o = int(obj[s])
            frac = (e - s) / max(total[o], 1.0)
            if frac < cfg.min_visible:
                continue
            u0, v0 = uv[s:e].min(axis=0)
            u1, v1 = uv[s:e].max(axis=0) + 1
            side = float(np.sqrt((u1 - u0) * (v1 - v0)))
            score = frac * min(1.0, side / full)
            cands[o].append(ViewChoice(vi, score, crop_box(u0, v0, u1, v1, W, H, cfg), uv[s:e]))
    return [sorted(c, key=lambda x: -x.score)[: cfg.k_views] for c in cands]


def crop_box(u0: int, v0: int, u1: int, v1: int, width: int, height: int, cfg: EmbeddingConfig) -> tuple[int, int, int, int]:
    """Grow a pixel box by the context margin, make it square, clip to the image (end exclusive)."""
    w, h = u1 - u0, v1 - v0
    mu = max(cfg.min_context_px, cfg.context * w)
    mv = max(cfg.min_context_px, cfg.context * h)
    cu, cv = (u0 + u1) / 2.0, (v0 + v1) / 2.0
    half = max(w + 2 * mu, h + 2 * mv) / 2.0
    a0, b0 = int(np.floor(cu - half)), int(np.floor(cv - half))
    a1, b1 = int(np.ceil(cu + half)), int(np.ceil(cv + half))
    return max(0, a0), max(0, b0), min(width, a1), min(height, b1)


def object_mask(pixels: np.ndarray, height: int, width: int, grow_px: int = 2) -> np.ndarray:
    """(H, W) bool mask of an object from the (K, 2) pixels (column, row) of its visible nodes.

    The node pixels (sparse: one per surface node) are grown by ``grow_px``, closed with
    the same radius plus one, and their holes filled.
    """
    from scipy import ndimage

    m = np.zeros((height, width), bool)
    uv = np.asarray(pixels, np.int64).reshape(-1, 2)
    ok = (uv[:, 0] >= 0) & (uv[:, 0] < width) & (uv[:, 1] >= 0) & (uv[:, 1] < height)
    m[uv[ok, 1], uv[ok, 0]] = True
    if grow_px > 0:
        m = ndimage.binary_dilation(m, iterations=int(grow_px))
    m = ndimage.binary_closing(m, iterations=int(grow_px) + 1)
    return ndimage.binary_fill_holes(m)


def object_crop(rgb: np.ndarray, box: tuple[int, int, int, int], pixels: np.ndarray | None, cfg: EmbeddingConfig) -> np.ndarray:
    """The (h, w, 3) uint8 crop ``box`` (u0, v0, u1, v1) of an (H, W, 3) image; with
    ``cfg.mask_background`` and the object's node ``pixels`` (K, 2), pixels outside
    :func:`object_mask` are set to ``cfg.background_value``."""
    u0, v0, u1, v1 = box
    crop = rgb[v0:v1, u0:u1]
    if not cfg.mask_background or pixels is None or len(pixels) == 0:
        return np.ascontiguousarray(crop)
    local = np.asarray(pixels, np.int64).reshape(-1, 2) - [u0, v0]
    keep = object_mask(local, crop.shape[0], crop.shape[1], cfg.mask_grow_px)
    return np.where(keep[..., None], crop, np.uint8(cfg.background_value)).astype(np.uint8)


def aggregate_embeddings(emb: np.ndarray, method: str = "dominant", cluster_similarity: float = 0.8) -> np.ndarray:
    """One unit embedding from (K, D) unit view embeddings (see the module docstring)."""
    emb = np.asarray(emb, dtype=np.float32)
    if emb.ndim != 2 or len(emb) == 0:
        raise ValueError(f"expected (K, D) embeddings with K >= 1, got {emb.shape}")
    if len(emb) == 1 or method == "mean":
        m = emb.mean(axis=0)
    else:
        sim = emb @ emb.T
        if method == "medoid":
            m = emb[int(np.argmax(sim.sum(axis=1)))]
        else:
            close = sim >= cluster_similarity
            count = close.sum(axis=1)
            seed = int(np.lexsort((-sim.sum(axis=1), -count))[0])
            m = emb[close[seed]].mean(axis=0)
    n = float(np.linalg.norm(m))
    return (m / n if n > 1e-8 else emb[0]).astype(np.float32)


def embed_objects(
    choices: list[list[ViewChoice]], views: list[View], encoder, cfg: EmbeddingConfig
) -> list[np.ndarray | None]:
    """Embed every object from its chosen views' crops (one batched encoder call).

    Returns O entries: (D,) float32 unit embedding, or None for objects without views.
    """
    crops, owner = [], []
    for o, ch in enumerate(choices):
        for c in ch:
            u0, v0, u1, v1 = c.crop
            if v1 - v0 >= 2 and u1 - u0 >= 2:
                crops.append(object_crop(views[c.view].rgb, c.crop, c.pixels, cfg))
                owner.append(o)
    out: list[np.ndarray | None] = [None] * len(choices)
    if not crops:
        return out
    emb = encoder.encode_images(crops)
    owner_a = np.asarray(owner)
    for o in np.unique(owner_a):
        out[int(o)] = aggregate_embeddings(emb[owner_a == o], cfg.aggregate, cfg.cluster_similarity)
    return out


def feature_embeddings(semantic_map, node_points: np.ndarray, node_object: np.ndarray, n_objects: int) -> list[np.ndarray | None]:
    """Per-object embeddings from a semantic map's fused voxel features.

    Args:
        semantic_map: a ``mapping.semantic_map.SemanticMap`` (its ``grid``, ``unit_embeddings``, ``usable``).
        node_points: (N, 3) world-frame surface nodes; node_object: (N,) object per node.
    Returns:
        O entries: the normalised mean of the unit embeddings of the distinct usable
        voxels under the object's nodes (each voxel once, so a voxel that many nodes fall
        in does not outweigh the rest), or None where no usable voxel lies under it.
    """
    rows = np.asarray(semantic_map.grid.lookup(node_points), np.int64)
    ok = (rows >= 0) & (node_object >= 0)
    ok[ok] &= np.asarray(semantic_map.usable, bool)[rows[ok]]
    out: list[np.ndarray | None] = [None] * n_objects
    if not ok.any():
        return out
    pairs = np.unique(np.stack([node_object[ok], rows[ok]], axis=1), axis=0)  # (P, 2) distinct (object, voxel)
    e = np.asarray(semantic_map.unit_embeddings[pairs[:, 1]], np.float64)
    sums = np.zeros((n_objects, e.shape[1]), np.float64)
    np.add.at(sums, pairs[:, 0], e)
    norms = np.linalg.norm(sums, axis=1)
    for o in range(n_objects):
        if norms[o] > 1e-8:
            out[o] = (sums[o] / norms[o]).astype(np.float32)
    return out


def contrast_features(semantic_map, node_points: np.ndarray, labels: np.ndarray, n_labels: int) -> np.ndarray:
    """(S, D) float32 per-segment feature embeddings with the map's common part removed.

    Each segment's :func:`feature_embeddings` loses its component along the map's mean
    embedding (``SemanticMap.mean_embedding``) and is renormalised; rows of zeros where a
    segment has no usable voxel. A weak encoder describes every voxel of a room mostly by
    the room ("bookstore", "desk" for a ``lite`` kitchen: adjacent segments have cosine
    0.98-1.0); what is left after removing that shared part tells a mug from the paper
    it stands on (cosine 0.18 on redkitchen, median 0.90 over adjacent segments).

    Args:
        semantic_map: a ``mapping.semantic_map.SemanticMap``.
        node_points: (N, 3) world-frame surface nodes; labels: (N,) segment per node (-1: none).
    """
    out = np.zeros((n_labels, semantic_map.dim), np.float32)
    mean = semantic_map.mean_embedding()
    if mean is None:
        return out
    for k, e in enumerate(feature_embeddings(semantic_map, node_points, labels, n_labels)):
        if e is None:
            continue
        c = e - float(e @ mean) * mean
        n = float(np.linalg.norm(c))
        if n > 1e-6:
            out[k] = c / n
    return out


def blend(a: np.ndarray | None, b: np.ndarray | None, weight_b: float) -> tuple[np.ndarray | None, str]:
    """Blend a views embedding ``a`` with a feature embedding ``b``; returns (embedding, source)."""
    if a is None and b is None:
        return None, ""
    if b is None:
        return a, "views"
    if a is None:
        return b, "features"
    m = (1.0 - weight_b) * a + weight_b * b
    n = float(np.linalg.norm(m))
    return (m / n).astype(np.float32) if n > 1e-8 else a, "views+features"


def label_candidates(
    embeddings: list[np.ndarray | None], vocabulary: list[str], encoder, cfg: EmbeddingConfig
) -> list[list[tuple[str, float]]]:
    """Top label candidates (name, probability) per object; [] for objects without an embedding."""
    if not vocabulary:
        raise ValueError("empty label vocabulary")
    have = [i for i, e in enumerate(embeddings) if e is not None]
    out: list[list[tuple[str, float]]] = [[] for _ in embeddings]
    if not have:
        return out
    text = encoder.encode_text([cfg.template.format(v) for v in vocabulary])  # (V, D)
    E = np.stack([embeddings[i] for i in have])
    sims = E @ text.T  # (O, V)
    if cfg.scene_prior and len(have) >= cfg.scene_prior_min_objects:
        # a name every object resembles (weak encoders have such: "picture") says nothing
        sims = sims - sims.mean(axis=0, keepdims=True)
    logits = sims / cfg.temperature
    logits -= logits.max(axis=1, keepdims=True)
    p = np.exp(logits)
    p /= p.sum(axis=1, keepdims=True)
    for row, i in enumerate(have):
        top = np.argsort(-p[row], kind="stable")[: cfg.top_labels]
        out[i] = [(vocabulary[j], float(p[row, j])) for j in top]
    return out
