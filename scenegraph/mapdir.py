"""A whole map directory, checked file by file, and what it holds (``semmap info``).

:func:`inspect_map` reads every file that ``semmap map`` and ``semmap graph`` write,
through the same checked readers the loaders use (``mapping.mapformat``), and returns a
:class:`MapSummary`. A damaged file raises one :class:`~mapping.mapformat.MapFormatError`
naming it. Files are checked against each other too (vertex and pose counts against
``map.json``, block counts against ``tsdf.json``), so a truncated file that still parses
does not pass for a smaller map.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from mapping.mapformat import (
    MAP_META_FILE,
    NUMBER,
    MapFormatError,
    check_fields,
    read_json_file,
    read_map_json,
    read_map_mesh,
    read_map_trajectory,
    require_equal,
)
from mapping.semantic_map import FEATURES_FILE, read_feature_layer
from mapping.tsdf import TSDF_META_FILE, check_tsdf_files
from scenegraph.graph import SCENE_GRAPH_FILE, SCENE_GRAPH_VERSION, SceneGraph
from scenegraph.views import VIEWS_DIR, VIEWS_FILE, VIEWS_FORMAT_VERSION, check_view_images, load_views

TRACKING_FILE = "tracking.json"
TRACKING_FIELDS = {"frames": int, "status_counts": dict, "events": list, "keyframes": list, "loops": (list, int),
                   "mean_ms": (dict, *NUMBER), "loop_closure_applied": bool}
"""The fields of ``tracking.json`` (written when poses were estimated)."""

GRAPHML_FILE = "scene_graph.graphml"
GRAPH_PNG_FILE = "scene_graph.png"


@dataclass
class MapSummary:
    """What a map directory holds (all lengths in metres, sizes in bytes).

    Attributes:
        directory: the map directory.
        source: the source spec it was built from.
        semmap_version: the semmap that wrote it.
        format_versions: {file: format version} of the versioned files present.
        frames_seen, frames_integrated: frame counts.
        tsdf_voxel_size_m: TSDF voxel edge; tsdf_blocks: allocated blocks.
        bounds_min, bounds_max: (3,) axis-aligned bounds of the mesh, world frame.
        mesh_vertices, mesh_triangles, mesh_bytes: mesh size.
        encoder, feature_dim, semantic_voxel_size_m, semantic_voxels, feature_bytes: the
            semantic layer (None without one).
        poses_estimated: whether the poses came from tracking; tracking_status: its
            per-status frame counts; loop_closure_applied.
        scene_graph_objects, scene_graph_relations: counts (None before ``semmap graph``).
        views: stored keyframe views.
        files: every file checked, relative to the directory.
    """

    directory: str
    source: str
    semmap_version: str
    format_versions: dict[str, int]
    frames_seen: int
    frames_integrated: int
    tsdf_voxel_size_m: float
    tsdf_blocks: int
    bounds_min: list[float]
    bounds_max: list[float]
    mesh_vertices: int
    mesh_triangles: int
    mesh_bytes: int
    encoder: str | None = None
    feature_dim: int | None = None
    semantic_voxel_size_m: float | None = None
    semantic_voxels: int | None = None
    feature_bytes: int | None = None
    poses_estimated: bool = False
    tracking_status: dict[str, int] = field(default_factory=dict)
    loop_closure_applied: bool = False
    scene_graph_objects: int | None = None
    scene_graph_relations: int | None = None
    views: int = 0
    files: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)

    def lines(self) -> list[str]:
        """The summary as text, one screen."""
        size = np.subtract(self.bounds_max, self.bounds_min)
        out = [
            f"map {self.directory}",
            f"  source            {self.source}",
            f"  written by        semmap {self.semmap_version}; formats "
            + ", ".join(f"{k} v{v}" for k, v in self.format_versions.items()),
            f"  frames            {self.frames_integrated} integrated of {self.frames_seen} read",
            f"  poses             {'estimated (tracking)' if self.poses_estimated else 'given by the source'}"
            + (f"; status {', '.join(f'{k} {v}' for k, v in self.tracking_status.items())}" if self.tracking_status else "")
            + ("; loop closure applied" if self.loop_closure_applied else ""),
            f"  TSDF              {100 * self.tsdf_voxel_size_m:.1f} cm voxels, {self.tsdf_blocks} blocks",
            f"  bounds (m)        min {_vec(self.bounds_min)}  max {_vec(self.bounds_max)}  size {_vec(size)}",
            f"  mesh              {self.mesh_vertices:,} vertices, {self.mesh_triangles:,} triangles "
            f"({self.mesh_bytes / 2**20:.1f} MiB)",
        ]
        if self.encoder is not None:
            out.append(
                f"  semantic layer    encoder {self.encoder} (dim {self.feature_dim}), "
                f"{100 * self.semantic_voxel_size_m:.1f} cm voxels, {self.semantic_voxels:,} voxels, "
                f"{self.feature_bytes / 2**20:.1f} MiB of features"
            )
        else:
            out.append("  semantic layer    none (built without --encoder)")
        out.append(f"  views             {self.views}")
        if self.scene_graph_objects is not None:
            out.append(f"  scene graph       {self.scene_graph_objects} objects, {self.scene_graph_relations} relations")
        else:
            out.append("  scene graph       none (run semmap graph)")
        out.append(f"  checked           {len(self.files)} files: all load")
        return out


def _vec(v) -> str:
    return "(" + ", ".join(f"{x:.2f}" for x in v) + ")"


def inspect_map(map_dir: Path | str) -> MapSummary:
    """Check every file of a map directory and summarise it.

    Raises:
        FileNotFoundError: ``map_dir`` does not exist.
        MapFormatError: a file is missing, damaged or inconsistent with the others (the
            message names the file and the problem).
    """
    d = Path(map_dir)
    meta = read_map_json(d)
    stages = meta["stages"]
    files = [MAP_META_FILE]
    versions = {MAP_META_FILE: meta["format_version"]}

    tsdf_meta, tsdf_cfg = check_tsdf_files(d)
    require_equal(d / TSDF_META_FILE, "num_blocks", tsdf_meta["num_blocks"], meta["tsdf_blocks"], MAP_META_FILE)
    files += [TSDF_META_FILE, "tsdf.npz"]
    versions[TSDF_META_FILE] = tsdf_meta["format_version"]

    mesh = read_map_mesh(d, meta)
    read_map_trajectory(d, meta)
    files += ["mesh.ply", "trajectory.tum"]
    lo = mesh.vertices.min(axis=0) if len(mesh.vertices) else np.zeros(3)
    hi = mesh.vertices.max(axis=0) if len(mesh.vertices) else np.zeros(3)
    summary = MapSummary(
        directory=str(d), source=meta["source"], semmap_version=meta["semmap_version"], format_versions=versions,
        frames_seen=meta["frames_seen"], frames_integrated=meta["frames_integrated"],
        tsdf_voxel_size_m=tsdf_cfg.voxel_size_m, tsdf_blocks=tsdf_meta["num_blocks"],
        bounds_min=lo.tolist(), bounds_max=hi.tolist(), mesh_vertices=len(mesh.vertices),
        mesh_triangles=len(mesh.triangles), mesh_bytes=(d / "mesh.ply").stat().st_size, files=files,
    )
    if "semantic" in stages:
        fmeta, grid = read_feature_layer(d, meta)
        files += ["features.json", FEATURES_FILE]
        versions["features.json"] = fmeta["format_version"]
        summary.encoder, summary.feature_dim = fmeta["encoder"], grid.dim
        summary.semantic_voxel_size_m, summary.semantic_voxels = grid.voxel_size_m, len(grid)
        summary.feature_bytes = int(grid.memory_bytes())
    _check_views(d, stages, summary)
    _check_tracking(d, stages, summary)
    _check_scene_graph(d, summary)
    return summary


def _check_views(d: Path, stages: dict, summary: MapSummary) -> None:
    path = d / VIEWS_DIR / VIEWS_FILE
    if "views" in stages and not path.is_file():
        raise MapFormatError(path, f"file is missing ({MAP_META_FILE} lists a views stage)")
    views = load_views(d)
    check_view_images(views)
    if path.is_file():
        summary.views = len(views)
        summary.format_versions[f"{VIEWS_DIR}/{VIEWS_FILE}"] = VIEWS_FORMAT_VERSION  # load_views checked it
        summary.files += [f"{VIEWS_DIR}/{VIEWS_FILE}"] + [
            f"{VIEWS_DIR}/{p.name}" for v in views for p in (v.rgb_path, v.depth_path)
        ]


def _check_tracking(d: Path, stages: dict, summary: MapSummary) -> None:
    tracked = int((stages.get("tracking") or {}).get("tracked_frames", 0) or 0)
    path = d / TRACKING_FILE
    if tracked == 0 and not path.is_file():
        return
    data = check_fields(read_json_file(path), path, TRACKING_FIELDS)
    for k, v in data["status_counts"].items():
        if not isinstance(v, int) or isinstance(v, bool):
            raise MapFormatError(path, f"field 'status_counts.{k}' should be an integer, found {v!r}")
    require_equal(path, "frames", data["frames"], tracked, f"{MAP_META_FILE} (stages.tracking.tracked_frames)")
    summary.poses_estimated = tracked > 0
    summary.tracking_status = dict(data["status_counts"])
    summary.loop_closure_applied = data["loop_closure_applied"]
    summary.files.append(TRACKING_FILE)


def _check_scene_graph(d: Path, summary: MapSummary) -> None:
    path = d / SCENE_GRAPH_FILE
    if not path.is_file():
        for other in (GRAPHML_FILE, GRAPH_PNG_FILE):
            if (d / other).is_file():
                raise MapFormatError(d / SCENE_GRAPH_FILE, f"file is missing but {other} is there")
        return
    graph = SceneGraph.load(path)
    summary.scene_graph_objects, summary.scene_graph_relations = len(graph), len(graph.relations())
    summary.format_versions[SCENE_GRAPH_FILE] = SCENE_GRAPH_VERSION  # SceneGraph.load checked it
    summary.files.append(SCENE_GRAPH_FILE)
    if (d / GRAPHML_FILE).is_file():
        _check_graphml(d / GRAPHML_FILE, len(graph), len(graph.relations()))
        summary.files.append(GRAPHML_FILE)
    if (d / GRAPH_PNG_FILE).is_file():
        _check_png(d / GRAPH_PNG_FILE)
        summary.files.append(GRAPH_PNG_FILE)


def _check_graphml(path: Path, nodes: int, edges: int) -> None:
    import networkx as nx

    try:
        g = nx.read_graphml(path)
    except Exception as e:  # networkx raises ParseError, KeyError, ValueError, NetworkXError ... on bad files
        raise MapFormatError(path, f"not a readable GraphML file ({type(e).__name__}: {e})") from None
    require_equal(path, "the node count", g.number_of_nodes(), nodes, SCENE_GRAPH_FILE)
    require_equal(path, "the edge count", g.number_of_edges(), edges, SCENE_GRAPH_FILE)


def _check_png(path: Path) -> None:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im.load()
    except (UnidentifiedImageError, OSError, SyntaxError) as e:
        raise MapFormatError(path, f"not a readable image ({e})") from None
