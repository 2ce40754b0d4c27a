"""Build a :class:`~scenegraph.graph.SceneGraph` from a map directory.

Steps (timed in ``metadata["timings_s"]``):

1. ``mesh.ply`` -> surface nodes on a ``node_size_m`` grid (:mod:`scenegraph.surface`).
2. Dominant planes; gravity up = the normal of the largest plane near the cameras' mean
   up axis (normally the floor); floor / walls / ceiling regions (:mod:`scenegraph.planes`).
3. Stored views (``views/``, :mod:`scenegraph.views`): nodes no view saw (TSDF artefacts)
   are dropped (:mod:`scenegraph.visibility`).
4. Object proposals: FH segments merged (not across a change of the semantic features, when
   the map has a feature layer), oversized objects split, cleaned (:mod:`scenegraph.objects`);
   with a mask model (``GraphConfig.masks``), its 2D instance masks lifted to the surface,
   associated across views and merged over the geometric proposals (:mod:`scenegraph.masks`).
5. Embeddings from the best views (and the semantic feature layer when the map has one),
   label candidates from the vocabulary (:mod:`scenegraph.embedding`).
6. Relations (:mod:`scenegraph.relations`).

A map without views and without a feature layer still gives objects and relations, but
no embeddings or labels (``metadata["warnings"]`` says so, and text queries refuse it).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from mapping.mapformat import MapFormatError, read_map_json, read_map_mesh
from scenegraph.embedding import (
    EmbeddingConfig,
    blend,
    choose_views,
    contrast_features,
    embed_objects,
    feature_embeddings,
    label_candidates,
)
from scenegraph.geometry import gravity_rotation
from scenegraph.graph import SceneGraph, SceneObject
from scenegraph.masks import (
    MaskConfig,
    MaskGenerator,
    load_mask_generator,
    mask_instances,
    merge_with_proposals,
)
from scenegraph.objects import (
    ProposalConfig,
    clean_objects,
    merge_segments,
    split_oversized,
)
from scenegraph.planes import (
    PlaneConfig,
    classify_planes,
    detect_planes,
    estimate_up,
    structure_regions,
)
from scenegraph.relations import Body, RelationConfig, compute_relations
from scenegraph.segmentation import segment_surface
from scenegraph.surface import SurfaceGraph, surface_graph
from scenegraph.views import View, load_views
from scenegraph.visibility import VisibilityConfig, observe_nodes
from scenegraph.vocabulary import DEFAULT_VOCABULARY


@dataclass
class GraphConfig:
    """How a map becomes a scene graph."""

    node_size_m: float | None = None
    """Surface node grid, metres; default the map's TSDF voxel size, at least 2 cm."""
    planes: PlaneConfig = field(default_factory=PlaneConfig)
    proposals: ProposalConfig = field(default_factory=ProposalConfig)
    visibility: VisibilityConfig = field(default_factory=VisibilityConfig)
    embedding: EmbeddingConfig = field(default_factory=EmbeddingConfig)
    relations: RelationConfig = field(default_factory=RelationConfig)
    vocabulary: list[str] = field(default_factory=lambda: list(DEFAULT_VOCABULARY))
    """Label candidates."""
    embed: bool = True
    """Compute object embeddings and labels (False: geometry and relations only)."""
    use_features: bool = True
    """When the map has a semantic feature layer: segments whose features differ are not
    merged (``ProposalConfig.feature_min_similarity``) and object embeddings blend them in."""
    min_views_seen: int = 1
    """Nodes seen by fewer stored views are dropped (when the map has views)."""
    masks: MaskConfig = field(default_factory=MaskConfig)
    """Optional 2D instance masks (``masks.model``, e.g. "sam:/path"), lifted to the surface
    and merged with the geometric proposals (:mod:`scenegraph.masks`)."""
    mask_generator: MaskGenerator | None = None
    """A ready mask generator (instead of loading ``masks.model``)."""
    device: str = "cpu"
    """torch device for the encoder."""


def map_up_hint(map_dir: Path, views: list[View]) -> np.ndarray:
    """The cameras' mean up axis (-y of OpenCV cameras), from the views or ``trajectory.tum``."""
    if views:
        ys = np.stack([v.T_world_cam[:3, 1] for v in views])
    else:
        from sensors.trajectory_io import read_tum

        traj_path = map_dir / "trajectory.tum"
        if not traj_path.is_file():
            return np.array([0.0, 0.0, 1.0])
        ys = read_tum(traj_path).T_world_cam[:, :3, 1]
    up = -ys.mean(axis=0)
    n = np.linalg.norm(up)
    return up / n if n > 1e-6 else np.array([0.0, 0.0, 1.0])


def read_map_info(map_dir: Path) -> dict:
    """map.json of a finished map with a mesh (FileNotFoundError / MapFormatError naming the problem)."""
    info = read_map_json(map_dir)
    if not (map_dir / "mesh.ply").is_file():
        raise MapFormatError(map_dir / "mesh.ply", "file is missing")
    return info


def _load_semantic_map(map_dir: Path, info: dict):
    """The map's SemanticMap, or None when it has no feature layer."""
    if "semantic" not in (info.get("stages") or {}):
        return None
    from mapping.semantic_map import SemanticMap

    return SemanticMap.load(map_dir)


def build_scene_graph(map_dir: Path | str, config: GraphConfig | None = None, encoder=None) -> SceneGraph:
    """Objects, embeddings, labels and relations of the map in ``map_dir``.

    Args:
        map_dir: a directory written by ``semmap map``.
        config: settings (defaults: :class:`GraphConfig`).
        encoder: encoder for the view crops and label texts; default the map's encoder
            (from the feature layer, or ``map.json``'s ``stages.semantic.encoder``), else "lite".
    Raises:
        FileNotFoundError, ValueError: missing or unfinished map, empty mesh, bad views.
    """
    cfg = config or GraphConfig()
    map_dir = Path(map_dir)
    t: dict[str, float] = {}
    t0 = time.perf_counter()
    info = read_map_info(map_dir)
    mesh = read_map_mesh(map_dir, info)  # the mesh map.json describes (not truncated or replaced), read once
    voxel = float(((info.get("config") or {}).get("voxel_size_m")) or 0.02)
    node = cfg.node_size_m or max(0.02, voxel)
    warnings: list[str] = []

    if len(mesh.triangles) == 0:
        raise ValueError(f"{map_dir / 'mesh.ply'}: no triangles in the mesh (empty map?)")
    surf = surface_graph(mesh.vertices, mesh.triangles, mesh.colors if mesh.has_colors else None, node)
    if len(surf) < 10:
        raise ValueError(f"{map_dir}: the map's surface is empty or tiny ({len(surf)} nodes)")
    t["surface"] = time.perf_counter() - t0

    t1 = time.perf_counter()
    views = load_views(map_dir)
    planes = detect_planes(surf, cfg.planes)
    up = estimate_up(planes, map_up_hint(map_dir, views))
    classify_planes(planes, surf, up, cfg.planes)
    owner = structure_regions(planes, surf)
    t["planes"] = time.perf_counter() - t1

    t1 = time.perf_counter()
    if views:
        hits, seen = observe_nodes(surf.points, surf.normals, views, cfg.visibility)
        keep = seen >= cfg.min_views_seen
    else:
        hits, seen = [], np.zeros(len(surf), np.int64)
        keep = np.ones(len(surf), bool)
        warnings.append("the map has no stored views: TSDF artefacts are not filtered and objects get no view embeddings")
    t["visibility"] = time.perf_counter() - t1

    t1 = time.perf_counter()
    R = gravity_rotation(up)
    sub, remap = surf.subset(keep & (owner < 0))
    object_of = np.full(len(surf), -1, np.int64)
    sem = _load_semantic_map(map_dir, info) if cfg.use_features else None
    if len(sub):
        pc = cfg.proposals.resolved(node)
        pg, ng = sub.points @ R.T, sub.normals @ R.T
        seg = segment_surface(sub, pc.fh_k, pc.fh_min_size, pc.fh_color_weight)
        seg_feat = None
        if sem is not None and pc.feature_min_similarity is not None:
            seg_feat = contrast_features(sem, sub.points, seg, int(seg.max()) + 1)
        obj = merge_segments(pg, ng, sub.colors, sub.area_m2, sub.edges, seg, pc, seg_feat)
        obj = split_oversized(pg, ng, sub.colors, sub.area_m2, sub.edges, seg, obj, pc)
        floors = [p.nodes for p in planes if p.is_structure and p.kind == "floor" and len(p.nodes)]
        floor_z = float(np.median((surf.points[np.concatenate(floors)] @ R.T)[:, 2])) if floors else None
        obj = clean_objects(pg, sub.colors, sub.area_m2, obj, pc, floor_z)
        object_of[remap >= 0] = obj[remap[remap >= 0]]
    t["proposals"] = time.perf_counter() - t1

    generator = cfg.mask_generator
    if generator is None and cfg.masks.model:
        generator = load_mask_generator(cfg.masks.model, cfg.masks)
    mask_stats = None
    if generator is not None and not views:
        warnings.append("the map has no stored views: the mask model was not used")
    elif generator is not None and len(sub):
        t1 = time.perf_counter()
        if cfg.masks.embed and cfg.embed:
            encoder = _map_encoder(encoder, sem, info, cfg.device)
        instance_of, mask_stats = mask_instances(
            surf.points,
            views,
            hits,
            keep & (owner < 0),
            generator,
            cfg.masks,
            encoder if cfg.masks.embed else None,
            crop=cfg.embedding,
            progress=True,
        )
        object_of = merge_with_proposals(object_of, instance_of, cfg.masks.min_nodes)
        t["masks"] = time.perf_counter() - t1
    n_obj = int(object_of.max()) + 1

    # ---- nodes of the graph: structure first, then objects
    graph = SceneGraph(up, R, None, {})
    node_object = np.full(len(surf), -1, np.int64)
    next_id = 0
    counts = {"floor": 0, "wall": 0, "ceiling": 0}
    struct_ids: dict[int, int] = {}
    for k, p in enumerate(planes):
        if not p.is_structure or len(p.nodes) == 0:
            continue
        counts[p.kind] += 1
        name = p.kind if p.kind != "wall" else f"wall_{counts['wall']}"
        graph.add_object(_make_object(next_id, p.kind, name, surf, p.nodes, R, plane=np.r_[p.normal, p.offset]))
        node_object[p.nodes] = next_id
        struct_ids[k] = next_id
        next_id += 1
    obj_ids = np.arange(n_obj) + next_id
    objects = []
    for o in range(n_obj):
        nodes = np.flatnonzero(object_of == o)
        objects.append(_make_object(int(obj_ids[o]), "object", f"object_{obj_ids[o]}", surf, nodes, R))
        node_object[nodes] = obj_ids[o]

    # ---- embeddings and labels
    t1 = time.perf_counter()
    sem = sem if cfg.embed else None
    view_emb: list[np.ndarray | None] = [None] * n_obj
    feat_emb: list[np.ndarray | None] = [None] * n_obj
    choices = [[] for _ in range(n_obj)]
    if n_obj and cfg.embed and (views or sem is not None):
        encoder = _map_encoder(encoder, sem, info, cfg.device)
        if views:
            choices = choose_views(hits, views, object_of, n_obj, cfg.embedding)
            view_emb = embed_objects(choices, views, encoder, cfg.embedding)
        if sem is not None:
            feat_emb = feature_embeddings(sem, surf.points, object_of, n_obj)
        embs = []
        for o, obj in enumerate(objects):
            e, src = blend(view_emb[o], feat_emb[o], cfg.embedding.feature_weight)
            obj.embedding, obj.embedding_source = e, src
            obj.views = [c.view for c in choices[o]]
            embs.append(e)
        labels = label_candidates(embs, cfg.vocabulary, encoder, cfg.embedding)
        for obj, lab in zip(objects, labels):
            obj.label_scores = lab
            obj.label = lab[0][0] if lab else ""
            if obj.label:
                obj.name = f"{obj.label.replace(' ', '_')}_{obj.id}"
        graph.encoder = encoder.name
    elif n_obj and cfg.embed:
        warnings.append("no views and no feature layer: objects have no embeddings or labels (text queries need them)")
    for obj in objects:
        graph.add_object(obj)
    t["embedding"] = time.perf_counter() - t1

    # ---- relations
    t1 = time.perf_counter()
    bodies = []
    for k, p in enumerate(planes):
        if k in struct_ids and p.kind in ("floor", "wall"):
            bodies.append(Body.from_plane(struct_ids[k], p.kind, np.r_[R @ p.normal, p.offset]))
    for obj in objects:
        pts = surf.points[node_object == obj.id] @ R.T
        bodies.append(Body.from_points(obj.id, pts, cfg.relations.max_points, low_points=cfg.relations.low_points))
    band = max(0.015, 0.6 * node)  # structure_regions' default band
    for rel in compute_relations(bodies, node, cfg.relations, band, cfg.proposals.resolved(node).bump_m):
        graph.add_relation(rel)
    t["relations"] = time.perf_counter() - t1
    t["total"] = time.perf_counter() - t0

    graph.node_points = surf.points
    graph.node_object = node_object
    graph.metadata = {
        "map_dir": str(map_dir),
        "node_size_m": node,
        "surface_nodes": len(surf),
        "nodes_unseen": int((~keep).sum()),
        "views": len(views),
        "feature_layer": sem is not None,
        "planes": [p.to_json() for p in planes],
        "objects": n_obj,
        "structure": len(struct_ids),
        "relations": graph.graph.number_of_edges(),
        "vocabulary_size": len(cfg.vocabulary),
        "masks": mask_stats,
        "config": _config_json(cfg),
        "timings_s": {k: round(v, 3) for k, v in t.items()},
        "warnings": warnings,
    }
    return graph


def _make_object(
    node_id: int, kind: str, name: str, surf: SurfaceGraph, nodes: np.ndarray, R: np.ndarray, plane: np.ndarray | None = None
) -> SceneObject:
    p = surf.points[nodes]
    a = surf.area_m2[nodes]
    g = p @ R.T
    return SceneObject(
        id=int(node_id),
        kind=kind,
        name=name,
        label=kind if kind != "object" else "",
        centroid=np.average(p, axis=0, weights=np.maximum(a, 1e-12)),
        bbox_min=p.min(axis=0),
        bbox_max=p.max(axis=0),
        gbox_min=g.min(axis=0),
        gbox_max=g.max(axis=0),
        n_points=len(nodes),
        area_m2=float(a.sum()),
        plane=plane,
    )


def _map_encoder(encoder, sem, info: dict, device: str):
    """``encoder`` when given, else the map's encoder loaded on ``device``: its feature
    layer's, else ``map.json``'s semantic stage's, else "lite"."""
    if encoder is not None:
        return encoder
    from mapping.encoders import load_encoder

    name = sem.encoder_name if sem is not None else ((info.get("stages") or {}).get("semantic") or {}).get("encoder")
    return load_encoder(name or "lite", device=device)


def _config_json(cfg: GraphConfig) -> dict:
    d = asdict(replace(cfg, mask_generator=None))
    if cfg.mask_generator is not None:
        d["mask_generator"] = getattr(cfg.mask_generator, "name", type(cfg.mask_generator).__name__)
    d["vocabulary"] = f"{len(cfg.vocabulary)} names"
    return d
