"""2D instance masks from a mask model, lifted to the surface and associated across views.

The optional mask path of the scene graph (ConceptGraphs-style): a user who has a mask
model (SAM) gets object proposals from it, merged with the geometric ones.

1. **Masks per stored view** (:class:`MaskGenerator`, chosen by a spec in
   :data:`MASK_MODELS`): ``sam:<hf-name-or-local-path>`` runs transformers' ``SamModel``
   in automatic mask generation, as SAM's own generator does: a ``points_per_side`` grid
   of single-point prompts, three mask hypotheses per point, kept when the predicted IoU
   reaches ``pred_iou_thresh`` and the mask is stable (its area barely changes when the
   logit threshold moves by +-``stability_offset``), then greedy non-maximum suppression
   on mask IoU. Written on torch alone (transformers' own mask-generation post-processing
   needs torchvision).
2. **Lifting** (:func:`lift_masks`): a mask takes the surface nodes the view saw
   (depth-tested projections of :mod:`scenegraph.visibility`) whose pixel lies inside it
   (its *full* nodes), and those inside it eroded by ``erode_px`` (its *core*: a mask's
   outline bleeds onto whatever touches the object). Each keeps its largest group of
   nodes linked within ``overlap_radius_m`` (ConceptGraphs' DBSCAN clean-up). Masks
   mostly on structure (floor, walls) or on fewer than ``min_nodes`` nodes are dropped.
3. **Association across views** (:func:`associate`), view by view: a lifted mask joins
   the instance it matches best. The overlap (shared cores over the smaller core, or
   their Dice within ``overlap_radius_m``, see ``_Instance.overlap``) must reach
   ``min_overlap``; when the masks were embedded with the map's encoder, the overlap plus
   the cosine of the mask's crop embedding with the instance's mean embedding must reach
   ``join_score`` instead (ConceptGraphs' sum of spatial and visual similarity);
   otherwise it starts a new instance. Each instance counts, per node, the masks that put
   the node in it. Then instances join while one overlaps another, or one is a part of
   another: wherever a view gave the other a mask and saw the part's nodes, the other's
   mask covers ``part_share`` of them (a chair's seat, seen alone from beyond the table,
   lies inside the chair's mask wherever the whole chair is seen; a mug never lies inside
   the table's).
4. **Nodes to instances**: a node belongs to the instance with the most votes for it,
   when those votes are at least ``min_node_share`` of the views that saw the node (a
   mask that bleeds onto the table around a mug in one view does not take the table).
   Instances seen in fewer than ``min_views`` views or left with fewer than
   ``min_nodes`` nodes are dropped.
5. **Merge with the geometric proposals** (:func:`merge_with_proposals`): instance nodes
   take the instance's object. The other nodes of a geometric object that one instance
   took at least half of join that instance (the parts of it the masks missed); those of
   any other geometric object stay an object of their own (what the mask model did not
   see), unless fewer than ``min_nodes`` are left.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

import numpy as np

from mapping.graph_segments import relabel
from scenegraph.embedding import EmbeddingConfig
from scenegraph.views import View
from scenegraph.visibility import ViewHits
from sensors.registry import Registry

MASK_MODELS = Registry("mask model", entry_point_group="semmap.mask_models")
MASK_MODELS.register("sam", "scenegraph.masks:SamMaskGenerator", "transformers SamModel: sam:<hf-name-or-path>")


@dataclass
class MaskConfig:
    """The mask model and how its masks become 3D instances."""

    model: str = ""
    """Mask model spec, e.g. ``sam:/models/sam-vit-base`` ("" : no masks)."""
    points_per_side: int = 16
    """Point prompts per image side (SAM's generator uses 32; 16 is 4x cheaper on a CPU)."""
    points_per_batch: int = 64
    """Point prompts decoded per forward pass."""
    pred_iou_thresh: float = 0.86
    """Smallest predicted mask IoU kept (SAM: 0.88)."""
    stability_thresh: float = 0.9
    """Smallest stability score kept (SAM: 0.95)."""
    stability_offset: float = 1.0
    """Logit offset of the stability score."""
    nms_iou: float = 0.7
    """Masks overlapping a better one by more than this IoU are dropped."""
    min_area_frac: float = 0.002
    """Smallest mask, fraction of the image."""
    max_area_frac: float = 0.5
    """Largest mask, fraction of the image (a wall, the floor, the whole scene)."""
    embed: bool = True
    """Embed each mask's crop with the map's encoder and use it in the association (``join_score``)."""
    min_nodes: int = 10
    """Smallest lifted mask and smallest instance, surface nodes."""
    erode_px: int = 2
    """Masks eroded by this many pixels decide the association (see :func:`lift_masks`)."""
    max_structure_frac: float = 0.5
    """Masks with more of their nodes on structure (floor, walls, ceiling) are dropped."""
    overlap_radius_m: float = 0.05
    """Nodes this close count as overlapping (two views of a chair see its two faces)."""
    min_overlap: float = 0.4
    """Smallest overlap between a mask and an instance to associate them (shared-core
    containment or Dice within ``overlap_radius_m``, see ``_Instance.overlap``)."""
    part_share: float = 0.5
    """An instance joins another whose masks cover at least this share of its nodes in the
    views that saw them (see :func:`associate`)."""
    join_score: float = 1.2
    """With crop embeddings: a mask joins an instance when overlap + cosine of its crop
    embedding with the instance's mean embedding reaches this (ConceptGraphs' default
    ``sim_threshold``); without, the overlap must reach ``min_overlap``."""
    min_node_share: float = 0.3
    """A node joins an instance when the instance's votes are at least this share of the
    views that saw the node."""
    min_views: int = 2
    """Instances seen in fewer views are dropped."""
    device: str = "cpu"
    """torch device of the mask model."""

    def __post_init__(self) -> None:
        if self.points_per_side < 1 or self.points_per_batch < 1:
            raise ValueError("points_per_side and points_per_batch must be >= 1")
        if not 0 <= self.min_area_frac < self.max_area_frac <= 1:
            raise ValueError("need 0 <= min_area_frac < max_area_frac <= 1")
        if not 0 < self.min_overlap <= 1 or not 0 <= self.min_node_share <= 1:
            raise ValueError("min_overlap must be in (0, 1], min_node_share in [0, 1]")


@dataclass
class MaskSet:
    """The masks of one image.

    Attributes:
        masks: (M, H, W) bool, best first.
        scores: (M,) float32 quality (SAM: predicted IoU), descending.
    """

    masks: np.ndarray
    scores: np.ndarray

    def __len__(self) -> int:
        return len(self.masks)


class MaskGenerator(ABC):
    """Instance masks of an image (whatever it shows: no class, no prompt from the user)."""

    name: str = ""

    @abstractmethod
    def generate(self, rgb: np.ndarray) -> MaskSet:
        """Masks of an (H, W, 3) uint8 RGB image."""

    def masks_of_view(self, view: View) -> MaskSet:
        """Masks of a stored view's image (tests override this to use the view's pose)."""
        return self.generate(view.rgb)


def load_mask_generator(spec: str, config: MaskConfig | None = None) -> MaskGenerator:
    """The mask model named by ``spec`` ("sam:<path-or-hub-name>").

    Raises:
        ValueError: empty spec or unknown kind (the message lists the known ones);
        FileNotFoundError: the model is not there (see ``resolve_model_source``).
    """
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"mask model spec must be like 'sam:/path/to/sam', got {spec!r}")
    kind, _, argument = spec.strip().partition(":")
    if kind not in MASK_MODELS:
        raise ValueError(f"unknown mask model {kind!r} in {spec!r}; known: {', '.join(MASK_MODELS.names())}")
    return MASK_MODELS.get(kind)(argument.strip(), config or MaskConfig(model=spec))


def mask_iou(masks: np.ndarray, max_side: int = 160) -> np.ndarray:
    """(M, M) IoU of (M, H, W) bool masks, on a grid of at most ``max_side`` pixels a side."""
    step = max(1, int(np.ceil(max(masks.shape[1:]) / max_side)))
    flat = masks[:, ::step, ::step].reshape(len(masks), -1).astype(np.float32)
    inter = flat @ flat.T
    area = np.diag(inter)
    return inter / np.maximum(area[:, None] + area[None, :] - inter, 1.0)


def nms_masks(masks: np.ndarray, scores: np.ndarray, iou: float) -> np.ndarray:
    """Indices of the masks kept by greedy non-maximum suppression, best score first."""
    order = np.argsort(-scores, kind="stable")
    if len(order) == 0:
        return order
    ious = mask_iou(masks[order])
    keep: list[int] = []
    for i in range(len(order)):
        if not keep or ious[i, keep].max() <= iou:
            keep.append(i)
    return order[keep]


class SamMaskGenerator(MaskGenerator):
    """Automatic mask generation with transformers' ``SamModel`` (see the module docstring).

    Args:
        model: local folder or hub name (offline first, as ``clip:``).
        config: thresholds and device.
    """

    def __init__(self, model: str, config: MaskConfig) -> None:
        from transformers import SamModel, SamProcessor

        from mapping.encoders.base import resolve_device
        from mapping.encoders.clip import resolve_model_source

        source, local_only = resolve_model_source(model, kind="sam")
        self.name = f"sam:{model}"
        self.config = config
        self.device = resolve_device(config.device)
        self.model = SamModel.from_pretrained(source, local_files_only=local_only).to(self.device).eval()
        self.processor = SamProcessor.from_pretrained(source, local_files_only=local_only)

    def generate(self, rgb: np.ndarray) -> MaskSet:
        import torch

        cfg = self.config
        rgb = np.asarray(rgb)
        if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
            raise ValueError(f"expected an (H, W, 3) uint8 image, got {rgb.shape} {rgb.dtype}")
        h, w = rgb.shape[:2]
        inputs = self.processor(images=rgb, return_tensors="pt")
        rh, rw = (int(x) for x in inputs["reshaped_input_sizes"][0])
        n = cfg.points_per_side
        grid = (np.arange(n) + 0.5) / n
        pts = np.stack(np.meshgrid(grid * w, grid * h), axis=-1).reshape(-1, 2)  # (P, 2) x, y in pixels
        pts_in = torch.as_tensor(pts * [rw / w, rh / h], dtype=torch.float32, device=self.device)
        logits, quality = [], []
        with torch.inference_mode():
            emb = self.model.get_image_embeddings(inputs["pixel_values"].to(self.device))
            for s in range(0, len(pts_in), cfg.points_per_batch):
                p = pts_in[s : s + cfg.points_per_batch]
                out = self.model(
                    image_embeddings=emb,
                    input_points=p[None, :, None, :],
                    input_labels=torch.ones((1, len(p), 1), dtype=torch.long, device=self.device),
                    multimask_output=True,
                )
                lo = out.pred_masks[0].flatten(0, 1)  # (3B, h', w') logits
                iou = out.iou_scores[0].flatten()
                inter = (lo > cfg.stability_offset).sum(dim=(1, 2)).float()
                union = (lo > -cfg.stability_offset).sum(dim=(1, 2)).float().clamp(min=1)
                ok = (iou >= cfg.pred_iou_thresh) & (inter / union >= cfg.stability_thresh) & (inter > 0)
                logits.append(lo[ok].float().cpu())
                quality.append(iou[ok].float().cpu())
        empty = MaskSet(np.zeros((0, h, w), bool), np.zeros(0, np.float32))
        if not logits or sum(len(x) for x in logits) == 0:
            return empty
        lo, quality = torch.cat(logits), torch.cat(quality)
        kept_masks, kept_scores = [], []
        for s in range(0, len(lo), 32):  # upsampled in chunks: a 1024 x 1024 float map is 4 MB
            full = self.processor.image_processor.post_process_masks(
                [lo[s : s + 32, None]], inputs["original_sizes"], inputs["reshaped_input_sizes"], binarize=True
            )[0][:, 0].numpy().astype(bool)
            area = full.reshape(len(full), -1).mean(axis=1)
            ok = (area >= cfg.min_area_frac) & (area <= cfg.max_area_frac)
            kept_masks.append(full[ok])
            kept_scores.append(quality[s : s + 32].numpy()[ok])
        masks, scores = np.concatenate(kept_masks), np.concatenate(kept_scores).astype(np.float32)
        keep = nms_masks(masks, scores, cfg.nms_iou)
        return MaskSet(masks[keep], scores[keep]) if len(keep) else empty


def lift_masks(
    masks: MaskSet, hits: ViewHits, points: np.ndarray, candidate: np.ndarray, config: MaskConfig
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Surface nodes of each mask: (core, full) int64 node indices per kept mask.

    ``full`` holds the nodes whose pixel lies in the mask, ``core`` those whose pixel lies
    in the mask eroded by ``erode_px`` (``full`` when that leaves fewer than ``min_nodes``):
    a mask's outline bleeds a pixel or two onto whatever touches the object (the table
    under a mug, the mug in front of the table), so only cores decide which masks show
    one object, while every pixel votes (step 4 outvotes the bleed). Each keeps only its
    largest spatially connected group of nodes (links up to ``overlap_radius_m``), as
    ConceptGraphs cleans each detection with DBSCAN: pixels past an object's outline can
    land on a surface far behind it.

    Args:
        masks: the view's masks, at the stored view's resolution.
        hits: the nodes the view saw, with their pixels.
        points: (N, 3) node positions, metres.
        candidate: (N,) bool, nodes that may belong to objects (False: structure, unseen).
    """
    from scipy.ndimage import binary_erosion

    out = []
    if len(masks) == 0 or len(hits.nodes) == 0:
        return out
    u, v = hits.uv[:, 0], hits.uv[:, 1]
    for mask in masks.masks:
        inside = mask[v, u]
        if not inside.any() or 1.0 - candidate[hits.nodes[inside]].mean() > config.max_structure_frac:
            continue
        full = largest_cluster(hits.nodes[inside & candidate[hits.nodes]], points, config.overlap_radius_m)
        if len(full) < config.min_nodes:
            continue
        core = full
        if config.erode_px > 0:
            eroded = binary_erosion(mask, iterations=config.erode_px)[v, u]
            c = np.intersect1d(hits.nodes[eroded], full)
            if len(c) >= config.min_nodes:
                core = largest_cluster(c, points, config.overlap_radius_m)
        out.append((core, full))
    return out


def largest_cluster(nodes: np.ndarray, points: np.ndarray, radius_m: float) -> np.ndarray:
    """The nodes of the largest group of ``nodes`` linked by distances up to ``radius_m``."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components
    from scipy.spatial import cKDTree

    if len(nodes) < 2:
        return nodes
    pairs = cKDTree(points[nodes]).query_pairs(radius_m, output_type="ndarray")
    graph = coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(len(nodes),) * 2)
    _, comp = connected_components(graph, directed=False)
    return nodes[comp == np.bincount(comp).argmax()]


def associate(
    lifted: list[list[tuple[np.ndarray, np.ndarray]]],
    points: np.ndarray,
    seen_by: list[np.ndarray],
    config: MaskConfig,
    embeddings: list[np.ndarray | None] | None = None,
) -> np.ndarray:
    """Instances from the lifted masks of all views (steps 3-4 of the module docstring).

    Args:
        lifted: per view, (core, full) node indices of each of its masks (:func:`lift_masks`).
        points: (N, 3) node positions, metres.
        seen_by: per view, the (K,) nodes it saw.
        embeddings: per view, (M, D) unit crop embeddings of its masks (or None).
    Returns:
        (N,) int64 instance per node (-1: none), instances numbered 0..I-1.
    """
    from scipy.spatial import cKDTree

    n = len(points)
    out = np.full(n, -1, np.int64)
    seen = np.zeros(n, np.int64)
    for nodes in seen_by:
        seen[nodes] += 1
    if not any(lifted):
        return out
    used = np.unique(np.concatenate([core for masks in lifted for core, _ in masks]))
    tree = cKDTree(points[used])
    near_lists = tree.query_ball_point(points[used], config.overlap_radius_m)

    def grow(nodes: np.ndarray) -> np.ndarray:
        """(N,) bool: the nodes within ``overlap_radius_m`` of ``nodes`` (all in ``used``)."""
        g = np.zeros(n, bool)
        rows = np.searchsorted(used, nodes)
        g[used[np.concatenate([near_lists[r] for r in rows])]] = True
        return g

    inst: list[_Instance] = []
    for v, masks in enumerate(lifted):
        existing = len(inst)
        for m, (core, full) in enumerate(masks):
            e = None if embeddings is None or embeddings[v] is None else embeddings[v][m]
            near_core = grow(core)
            lo, hi = points[core].min(axis=0), points[core].max(axis=0)
            best, best_score = -1, -np.inf
            for i in range(existing):
                if np.any(lo > inst[i].hi + config.overlap_radius_m) or np.any(hi < inst[i].lo - config.overlap_radius_m):
                    continue  # boxes apart: no shared or near node
                score = inst[i].join_score(inst[i].overlap(core, near_core), e, config)
                if score is not None and score > best_score:
                    best, best_score = i, score
            if best < 0:
                inst.append(_Instance(n))
                best = len(inst) - 1
            inst[best].add(v, core, near_core, full, e, lo, hi)
    # Instances that ended up overlapping (views in another order would have joined them),
    # and part and whole: B joins A when, in the views that gave A a mask and saw B's
    # nodes, A's masks cover most of those nodes (a chair's seat, seen alone from beyond
    # the table, lies inside the chair's mask wherever the whole chair is seen); a mug
    # does not join the table (wherever both are seen, the table's mask leaves the mug
    # out). Repeated until nothing joins.
    merged = True
    while merged:
        merged = False
        V = np.stack([x.votes for x in inst])  # (I, N)
        near = np.stack([x.near for x in inst])  # (I, N)
        owner = V.argmax(axis=0)
        for b, B in enumerate(inst):
            own = (owner == b) & (B.votes > 0)
            if not B.count or not own.any():
                continue
            # candidates: instances whose masks reach B's nodes or lie near B's core
            cand = np.flatnonzero((V[:, own].sum(axis=1) > 0) | near[:, B.core].any(axis=1))
            for a in cand:
                A = inst[a]
                if a == b or not A.count:
                    continue
                joined = A.join_score(A.overlap(B.core_nodes(), B.near), B.mean_embedding(), config) is not None
                if joined or A.covers(own, seen_by, config):
                    A.absorb(B)
                    merged = True
                    break
    inst = [x for x in inst if x.count and len(x.views) >= config.min_views]
    if not inst:
        return out
    V = np.stack([x.votes for x in inst])  # (I, N)
    best = V.argmax(axis=0)
    top = V[best, np.arange(n)]
    ok = (top > 0) & (top >= config.min_node_share * np.maximum(seen, 1))
    out[ok] = best[ok]
    ids, counts = np.unique(out[out >= 0], return_counts=True)
    out[np.isin(out, ids[counts < config.min_nodes])] = -1
    return relabel(out)


class _Instance:
    """A 3D instance being associated: its core nodes and the nodes near them (they decide
    which masks join it), votes per node (every pixel of its masks), views, embedding."""

    def __init__(self, n: int) -> None:
        self.core = np.zeros(n, bool)
        self.near = np.zeros(n, bool)
        self.votes = np.zeros(n, np.int32)
        self.views: dict[int, np.ndarray] = {}  # view -> full nodes of its masks there
        self.emb_sum: np.ndarray | None = None
        self.lo = np.full(3, np.inf)  # box of the core nodes, metres
        self.hi = np.full(3, -np.inf)

    @property
    def count(self) -> int:
        return int(self.core.sum())

    def core_nodes(self) -> np.ndarray:
        return np.flatnonzero(self.core)

    def overlap(self, core: np.ndarray, near_core: np.ndarray) -> float:
        """How much a mask's ``core`` nodes (``near_core``: them grown by the radius) and
        this instance are one object: the larger of two measures.

        - Shared core nodes over the smaller core (containment): a view that sees only a
          chair's seat is part of the chair seen whole from another view.
        - Dice with a distance tolerance: (core nodes near this instance + this instance's
          core nodes near ``core``) / (both counts): the front and back of a backrest, seen
          from opposite sides, share no node but lie within the radius.

        A book and the table it lies on share no core node (the cores are eroded past the
        outlines' bleed), and only the table's ring around the book is near it: both
        measures stay small.
        """
        mine = self.core_nodes()
        if len(mine) == 0 or len(core) == 0:
            return 0.0
        shared = int(self.core[core].sum()) / min(len(core), len(mine))
        both = int(self.near[core].sum()) + int(near_core[mine].sum())
        return max(shared, both / (len(core) + len(mine)))

    def covers(self, nodes: np.ndarray, seen_by: list[np.ndarray], config: MaskConfig) -> bool:
        """Whether this instance's masks cover ``part_share`` of the ``nodes`` ((N,) bool)
        that their views saw, pooled over the views that saw at least ``min_nodes`` of them."""
        covered = total = 0
        for v, full in self.views.items():
            seen_here = seen_by[v][nodes[seen_by[v]]]
            if len(seen_here) >= config.min_nodes:
                covered += len(np.intersect1d(seen_here, full, assume_unique=True))
                total += len(seen_here)
        return total > 0 and covered >= config.part_share * total

    def mean_embedding(self) -> np.ndarray | None:
        if self.emb_sum is None:
            return None
        return self.emb_sum / max(float(np.linalg.norm(self.emb_sum)), 1e-12)

    def join_score(self, overlap: float, e: np.ndarray | None, config: MaskConfig) -> float | None:
        """Whether a mask (or instance) with this ``overlap`` and crop embedding ``e`` joins
        this instance: ConceptGraphs' sum of spatial and visual similarity,
        ``overlap + cosine``, must reach ``join_score``; without embeddings ``overlap``
        must reach ``min_overlap``. Returns the score (higher: better match) or None."""
        mean = self.mean_embedding()
        if e is None or mean is None:
            return overlap if overlap >= config.min_overlap else None
        score = overlap + float(mean @ e)
        return score if overlap > 0 and score >= config.join_score else None

    def add(
        self,
        view: int,
        core: np.ndarray,
        near_core: np.ndarray,
        full: np.ndarray,
        e: np.ndarray | None,
        lo: np.ndarray,
        hi: np.ndarray,
    ) -> None:
        """Count one mask: its core nodes (``lo``, ``hi``: their box), core grown by the
        radius, full nodes and crop embedding."""
        self.lo, self.hi = np.minimum(self.lo, lo), np.maximum(self.hi, hi)
        self.core[core] = True
        self.near |= near_core
        self.votes[full] += 1
        self.views[view] = np.union1d(self.views[view], full) if view in self.views else full
        if e is not None:
            self.emb_sum = e.astype(np.float64) if self.emb_sum is None else self.emb_sum + e

    def absorb(self, other: _Instance) -> None:
        """Take over ``other`` (left empty)."""
        self.lo, self.hi = np.minimum(self.lo, other.lo), np.maximum(self.hi, other.hi)
        self.core |= other.core
        self.near |= other.near
        self.votes += other.votes
        for v, nodes in other.views.items():
            self.views[v] = np.union1d(self.views[v], nodes) if v in self.views else nodes
        if other.emb_sum is not None:
            self.emb_sum = other.emb_sum.copy() if self.emb_sum is None else self.emb_sum + other.emb_sum
        other.core[:] = False
        other.votes[:] = 0


def merge_with_proposals(object_of: np.ndarray, instance_of: np.ndarray, min_nodes: int) -> np.ndarray:
    """Instances over geometric proposals (step 5 of the module docstring).

    Args:
        object_of: (N,) geometric object per node (-1: none); instance_of: (N,) mask instance (-1: none).
        min_nodes: smallest geometric remainder kept as an object of its own.
    Returns:
        (N,) int64 object per node, 0..O-1 (-1: none).
    """
    n_inst = int(instance_of.max()) + 1
    out = np.where(instance_of >= 0, instance_of, -1).astype(np.int64)
    rest = (instance_of < 0) & (object_of >= 0)
    next_id = n_inst
    for g in np.unique(object_of[object_of >= 0]):
        members = object_of == g
        left = members & rest
        if not left.any():
            continue
        taken = instance_of[members & (instance_of >= 0)]
        if len(taken):
            top = np.bincount(taken).argmax()
            if (taken == top).sum() >= 0.5 * members.sum():
                out[left] = top  # the rest of an object an instance took most of
                continue
        if left.sum() >= min_nodes:
            out[left] = next_id
            next_id += 1
    return relabel(out)


def mask_instances(
    points: np.ndarray,
    views: list[View],
    hits: list[ViewHits],
    candidate: np.ndarray,
    generator: MaskGenerator,
    config: MaskConfig,
    encoder: Any = None,
    crop: EmbeddingConfig | None = None,
    progress: bool = False,
) -> tuple[np.ndarray, dict]:
    """Masks of every view, lifted and associated: (N,) instance per node and statistics.

    Args:
        points: (N, 3) surface node positions, metres.
        views, hits: the stored views and the nodes each saw.
        candidate: (N,) bool, nodes that may belong to objects.
        encoder: embeds the mask crops when ``config.embed`` (None: overlap only).
        crop: margin and background masking of the crops (the graph's object-crop settings; default ``EmbeddingConfig()``).
    """
    from tqdm import tqdm

    from scenegraph.embedding import crop_box, object_crop

    crop = crop or EmbeddingConfig()
    lifted, embeddings = [], []
    n_masks = 0
    t0 = time.perf_counter()
    for view, h in tqdm(list(zip(views, hits)), desc="masks", unit="view", disable=not progress):
        ms = generator.masks_of_view(view)
        n_masks += len(ms)
        nodes = lift_masks(ms, h, points, candidate, config)
        lifted.append(nodes)
        if encoder is None or not config.embed or not nodes:
            embeddings.append(None)
            continue
        rgb, crops = view.rgb, []
        for _, full in nodes:
            sel = np.isin(h.nodes, full)
            uv = h.uv[sel]
            box = crop_box(*uv.min(axis=0), *(uv.max(axis=0) + 1), rgb.shape[1], rgb.shape[0], crop)
            crops.append(object_crop(rgb, box, uv, crop))
        embeddings.append(np.asarray(encoder.encode_images(crops), np.float32))
    t1 = time.perf_counter()
    embedded = embeddings if any(e is not None for e in embeddings) else None
    seen_by = [h.nodes[candidate[h.nodes]] for h in hits]
    instance_of = associate(lifted, points, seen_by, config, embedded)
    stats = {
        "masks": n_masks,
        "lifted": sum(len(x) for x in lifted),
        "instances": int(instance_of.max()) + 1,
        "masks_s": round(t1 - t0, 3),
        "associate_s": round(time.perf_counter() - t1, 3),
    }
    return instance_of, stats
