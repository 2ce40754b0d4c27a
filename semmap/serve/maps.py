"""Served maps: consistent read-only snapshots, a thread-safe store, loading, answers.

A :class:`MapSnapshot` is one consistent state of one map: what a query, the viewer and
the mesh download read. It is never changed once published; a live map publishes a new
snapshot (a copy of its feature grid, a fresh mesh) and the :class:`MapStore` swaps it in
atomically, so a request that holds a snapshot sees one state throughout, never a
half-updated feature grid.

Encoders are loaded once per name (:class:`EncoderCache`) and shared by every map built
with that encoder (``SemanticMap.set_encoder``). A served map directory is only read.
"""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from scenegraph.answer import MissingLayer, answer_text

if TYPE_CHECKING:
    from mapping.encoders.base import Encoder
    from mapping.semantic_map import SemanticMap
    from scenegraph.graph import SceneGraph
    from sensors.camera import Camera

MAX_TEXT_CHARS = 500
"""Longest query text the service accepts."""
MAX_TOP = 100
"""Most results one query may ask for."""


@dataclass(frozen=True)
class MapSnapshot:
    """One consistent, read-only state of one map.

    Attributes:
        name: the map's name (its directory name; the ``{name}`` of the API).
        version: 1 for the first published state, +1 for each later one.
        semantic: the semantic layer (feature grid + query encoder), None for a map
            without features.
        graph: the scene graph, or None.
        mesh_vertices: (V, 3) float32 world frame, metres.
        mesh_triangles: (F, 3) int32 vertex indices.
        mesh_colors: (V, 3) float32 RGB in [0, 1].
        T_world_cam: (N, 4, 4) float64 camera-to-world poses of the integrated frames so far.
        camera: intrinsics of the frames, or None when unknown.
        frames: frames integrated.
        live: True while (and after) a live worker builds this map.
        encoder_name: the encoder of the feature layer (or of the graph), None without one.
        graph_encoder: text encoder for scene-graph queries (shared), or None.
        directory: the map directory it was read from (or a live map's output), or None.
        graph_updated: Unix time the scene graph was built (file time for a loaded graph), or None.
        graph_status: "idle", "building" or "error: <why>".
        frames_dropped: frames a live source dropped because mapping was busy.
        mapping: live-worker state ("running", "saving", "saved", "failed: ...") or "" for a loaded map.
        published: Unix time this snapshot was published.
    """

    name: str
    version: int
    semantic: SemanticMap | None
    graph: SceneGraph | None
    mesh_vertices: np.ndarray
    mesh_triangles: np.ndarray
    mesh_colors: np.ndarray
    T_world_cam: np.ndarray
    camera: Camera | None
    frames: int
    live: bool = False
    encoder_name: str | None = None
    graph_encoder: Encoder | None = field(default=None, repr=False)
    directory: Path | None = None
    graph_updated: float | None = None
    graph_status: str = "idle"
    frames_dropped: int = 0
    mapping: str = ""
    published: float = 0.0

    def __post_init__(self) -> None:
        for name, dtype, cols in (
            ("mesh_vertices", np.float32, 3),
            ("mesh_triangles", np.int32, 3),
            ("mesh_colors", np.float32, 3),
        ):
            a = np.ascontiguousarray(getattr(self, name), dtype).reshape(-1, cols)
            a.setflags(write=False)
            object.__setattr__(self, name, a)
        T = np.ascontiguousarray(self.T_world_cam, np.float64).reshape(-1, 4, 4)
        T.setflags(write=False)
        object.__setattr__(self, "T_world_cam", T)

    @property
    def objects(self) -> int:
        """Non-structure objects of the scene graph (0 without one)."""
        return 0 if self.graph is None else sum(1 for o in self.graph.objects if not o.is_structure)

    def summary(self) -> dict:
        """The entry of ``GET /maps``: name, frames, encoder, objects, and the live/graph state."""
        return {
            "name": self.name,
            "frames": int(self.frames),
            "encoder": self.encoder_name,
            "objects": self.objects,
            "features": self.semantic is not None,
            "graph": self.graph is not None,
            "graph_updated": _iso(self.graph_updated),
            "graph_status": self.graph_status,
            "version": int(self.version),
            "live": self.live,
            "mapping": self.mapping,
            "frames_dropped": int(self.frames_dropped),
            "mesh_vertices": int(len(self.mesh_vertices)),
            "updated": _iso(self.published),
        }


def _iso(t: float | None) -> str | None:
    if t is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


class MapStore:
    """The served maps by name; thread-safe. ``publish`` swaps a snapshot in atomically."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._maps: dict[str, MapSnapshot] = {}
        self._listeners: list[Callable[[MapSnapshot], None]] = []

    def names(self) -> list[str]:
        with self._lock:
            return list(self._maps)

    def get(self, name: str) -> MapSnapshot:
        """The current snapshot of ``name`` (KeyError naming the known maps when unknown)."""
        with self._lock:
            try:
                return self._maps[name]
            except KeyError:
                raise KeyError(f"no map named {name!r} (served: {', '.join(self._maps) or 'none'})") from None

    def publish(self, snapshot: MapSnapshot) -> MapSnapshot:
        """Make ``snapshot`` the current state of its map; returns it as stored.

        Its ``version`` becomes the previous one + 1 (1 for a new map) and ``published``
        the current time. Listeners are called after the swap, outside the lock; one that
        raises does not stop the others.
        """
        with self._lock:
            prev = self._maps.get(snapshot.name)
            stored = replace(snapshot, version=(prev.version + 1) if prev else 1, published=time.time())
            self._maps[snapshot.name] = stored
            listeners = list(self._listeners)
        for fn in listeners:
            try:
                fn(stored)
            except Exception as e:  # a broken viewer must not stop mapping or queries
                print(f"semmap serve: a map listener failed: {e}")
        return stored

    def update(self, name: str, change: Callable[[MapSnapshot], MapSnapshot]) -> MapSnapshot:
        """Publish ``change(current)`` with no other publish in between (read-modify-write)."""
        with self._lock:
            return self.publish(change(self.get(name)))

    def add_listener(self, fn: Callable[[MapSnapshot], None]) -> None:
        """Call ``fn(snapshot)`` after every publish (from the publishing thread)."""
        with self._lock:
            self._listeners.append(fn)


class EncoderCache:
    """Encoders loaded once per name on one device, shared by all maps (thread-safe).

    Args:
        device: torch device of the encoders.
        torch_threads: torch intra-op threads of the whole process (None: unchanged). The
            service runs requests in parallel threads; torch's thread count is process-wide,
            so per-request settings (``QueryConfig.torch_threads``) would race and a text's
            embedding, whose last bits depend on it, would vary between identical requests.
            1 (the queries' own setting) keeps every answer equal to ``semmap query``'s.
    """

    def __init__(self, device: str = "cpu", torch_threads: int | None = 1) -> None:
        if torch_threads is not None:
            import torch

            torch.set_num_threads(torch_threads)
        self.device = device
        self._lock = threading.Lock()
        self._encoders: dict[str, Encoder] = {}

    def get(self, name: str) -> Encoder:
        with self._lock:
            if name not in self._encoders:
                from mapping.encoders import load_encoder

                self._encoders[name] = load_encoder(name, device=self.device)
            return self._encoders[name]

    def add(self, encoder: Encoder) -> None:
        """Share an already loaded encoder (e.g. the live mapper's) under its name."""
        with self._lock:
            self._encoders.setdefault(encoder.name, encoder)

    def names(self) -> list[str]:
        with self._lock:
            return list(self._encoders)


def tsdf_mesh_arrays(tsdf: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Vertices (V, 3) float32, triangles (F, 3) int32, colours (V, 3) float32 of a ``TSDFMap``'s mesh."""
    mesh = tsdf.extract_mesh()
    v = mesh.vertex.positions.cpu().numpy().astype(np.float32)
    f = mesh.triangle.indices.cpu().numpy().astype(np.int32) if "indices" in mesh.triangle else np.zeros((0, 3), np.int32)
    c = mesh.vertex.colors.cpu().numpy().astype(np.float32) if "colors" in mesh.vertex else np.full_like(v, 0.7)
    return v, f, np.clip(c, 0.0, 1.0)


def load_map_snapshot(directory: Path | str, encoders: EncoderCache, name: str | None = None) -> MapSnapshot:
    """Read a map directory into a snapshot (read-only: nothing is written there).

    map.json, the mesh and the trajectory are read and checked by ``mapping.mapformat``; the
    feature layer (when map.json lists a semantic stage) with
    ``SemanticMap.load`` and given the shared encoder of its name, which then embeds the
    negatives and matches the voxels to the reference names (so the first query is warm);
    ``scene_graph.json``, when present, with ``SceneGraph.load``. Their errors (damaged or
    unfinished maps) pass through.

    Raises:
        FileNotFoundError: no such directory; ValueError (``mapping.mapformat.MapFormatError``):
        an unfinished or damaged map (map.json, mesh, trajectory, feature layer, scene graph).
    """
    from mapping.mapformat import read_map_json, read_map_mesh, read_map_trajectory
    from mapping.semantic_map import SemanticMap
    from scenegraph.graph import SCENE_GRAPH_FILE, SceneGraph
    from sensors.camera import Camera

    directory = Path(directory)
    meta = read_map_json(directory)
    semantic: SemanticMap | None = None
    if "semantic" in (meta.get("stages") or {}):
        semantic = SemanticMap.load(directory)
        semantic.set_encoder(encoders.get(semantic.encoder_name))
        semantic.prepare()
    graph = graph_updated = graph_encoder = None
    graph_path = directory / SCENE_GRAPH_FILE
    if graph_path.is_file():
        graph = SceneGraph.load(graph_path)
        graph_updated = graph_path.stat().st_mtime
        if graph.has_embeddings and graph.encoder:
            graph_encoder = encoders.get(graph.encoder)
    mesh = read_map_mesh(directory, meta)
    T = read_map_trajectory(directory, meta).T_world_cam
    cam = meta.get("camera")
    return MapSnapshot(
        name=name or directory.resolve().name,
        version=0,
        semantic=semantic,
        graph=graph,
        mesh_vertices=mesh.vertices,
        mesh_triangles=mesh.triangles,
        mesh_colors=np.clip(mesh.colors, 0.0, 1.0),
        T_world_cam=T,
        camera=Camera.from_dict(cam) if cam else None,
        frames=int(meta.get("frames_integrated", len(T))),
        encoder_name=semantic.encoder_name if semantic is not None else (graph.encoder if graph is not None else None),
        graph_encoder=graph_encoder,
        directory=directory,
        graph_updated=graph_updated,
    )


def answer_query(snapshot: MapSnapshot, text: str, top: int) -> dict:
    """The JSON ``POST /maps/{name}/query`` returns for ``text``.

    ``{"results": [...], "path": "graph" | "voxels", "notes": [...], "timings_ms": {...},
    "map": name, "version": snapshot version}``; each result is exactly what
    ``semmap query --json`` prints for the same map and text.

    Raises:
        ValueError: empty text, text over ``MAX_TEXT_CHARS``, top outside 1..``MAX_TOP``;
        MissingLayer: the voxels must answer and the map has no feature layer.
    """
    if not isinstance(text, str) or not text.strip():
        raise ValueError("text must be a non-empty string")
    if len(text) > MAX_TEXT_CHARS:
        raise ValueError(f"text is {len(text)} characters long; at most {MAX_TEXT_CHARS} are accepted")
    if not 1 <= int(top) <= MAX_TOP:
        raise ValueError(f"top must be between 1 and {MAX_TOP}, got {top}")
    t0 = time.perf_counter()
    ans = answer_text(text, int(top), snapshot.semantic, snapshot.graph, snapshot.graph_encoder, f"map {snapshot.name!r}")
    total = time.perf_counter() - t0
    timings = {k: round(1000 * v, 3) for k, v in ans.timings_s.items()}
    timings["total"] = round(1000 * total, 3)
    return {
        "results": ans.results,
        "path": ans.path,
        "notes": ans.notes,
        "timings_ms": timings,
        "map": snapshot.name,
        "version": int(snapshot.version),
    }


def graph_objects(snapshot: MapSnapshot) -> list[dict]:
    """``GET /maps/{name}/objects``: the scene graph's objects (labels with scores, boxes,
    centroids; no embeddings). MissingLayer without a scene graph."""
    return [o.to_json(with_embedding=False) for o in _graph(snapshot).objects]


def graph_relations(snapshot: MapSnapshot) -> list[dict]:
    """``GET /maps/{name}/relations``: every scored relation (subject, relation, object, score)
    with the subject's and object's names. MissingLayer without a scene graph."""
    g = _graph(snapshot)
    names = {o.id: o.name for o in g.objects}
    return [{**r.to_json(), "subject_name": names.get(r.subject), "object_name": names.get(r.object)} for r in g.relations()]


def _graph(snapshot: MapSnapshot) -> SceneGraph:
    if snapshot.graph is None:
        raise MissingLayer(
            f"map {snapshot.name!r} has no scene graph (POST /maps/{snapshot.name}/graph builds one, "
            f"or run semmap graph on the map directory)"
        )
    return snapshot.graph


def mesh_ply_bytes(snapshot: MapSnapshot) -> bytes:
    """The snapshot's mesh as a binary little-endian PLY (float xyz, uchar rgb, int faces)."""
    v, f, c = snapshot.mesh_vertices, snapshot.mesh_triangles, snapshot.mesh_colors
    header = (
        "ply\nformat binary_little_endian 1.0\ncomment semmap serve: world frame, metres\n"
        f"element vertex {len(v)}\nproperty float x\nproperty float y\nproperty float z\n"
        "property uchar red\nproperty uchar green\nproperty uchar blue\n"
        f"element face {len(f)}\nproperty list uchar int vertex_indices\nend_header\n"
    ).encode()
    vert = np.empty(len(v), dtype=[("p", "<f4", 3), ("c", "u1", 3)])
    vert["p"] = v
    vert["c"] = np.round(np.clip(c, 0, 1) * 255).astype(np.uint8)
    face = np.empty(len(f), dtype=[("n", "u1"), ("i", "<i4", 3)])
    face["n"] = 3
    face["i"] = f
    buf = io.BytesIO()
    buf.write(header)
    buf.write(vert.tobytes())
    buf.write(face.tobytes())
    return buf.getvalue()


__all__ = [
    "EncoderCache",
    "GraphBuilder",
    "MapSnapshot",
    "MapStore",
    "MissingLayer",
    "answer_query",
    "graph_objects",
    "graph_relations",
    "load_map_snapshot",
    "mesh_ply_bytes",
]


class GraphBuilder:
    """Rebuilds scene graphs on request, in a background thread, one build per map at a time.

    Args:
        store: the served maps; a build publishes the map's current snapshot with the new
            graph, ``graph_updated`` and ``graph_status``.
        encoders: the shared encoders (the graph embeds with the map's encoder).
        device: torch device of the graph build.

    A map's directory comes from ``directory(name)``: a context manager yielding a finished
    map directory to read (a loaded map's own directory, or a live map's temporary copy).
    """

    def __init__(self, store: MapStore, encoders: EncoderCache, device: str = "cpu") -> None:
        self.store = store
        self.encoders = encoders
        self.device = device
        self._lock = threading.Lock()
        self._running: dict[str, threading.Thread] = {}
        self.directories: dict[str, Callable[[], Any]] = {}

    def request(self, name: str) -> str:
        """Start rebuilding ``name``'s graph; "building", or "already building" when one runs.

        Raises:
            KeyError: unknown map; MissingLayer: the map has no directory to build from.
        """
        snap = self.store.get(name)
        if name not in self.directories and snap.directory is None:
            raise MissingLayer(f"map {name!r} has no map directory to build a scene graph from")
        with self._lock:
            t = self._running.get(name)
            if t is not None and t.is_alive():
                return "already building"
            self.store.update(name, lambda s: replace(s, graph_status="building"))
            t = threading.Thread(target=self._build, args=(name,), name=f"graph-{name}", daemon=True)
            self._running[name] = t
            t.start()
        return "building"

    def wait(self, name: str, timeout: float | None = None) -> None:
        """Block until the current build of ``name`` (if any) ends."""
        with self._lock:
            t = self._running.get(name)
        if t is not None:
            t.join(timeout)

    def _build(self, name: str) -> None:
        from contextlib import nullcontext

        from scenegraph.build import GraphConfig, build_scene_graph

        try:
            snap = self.store.get(name)
            provider = self.directories.get(name) or (lambda: nullcontext(snap.directory))
            encoder = self.encoders.get(snap.encoder_name) if snap.encoder_name else None
            with provider() as directory:
                graph = build_scene_graph(directory, GraphConfig(device=self.device), encoder=encoder)
            genc = self.encoders.get(graph.encoder) if graph.has_embeddings and graph.encoder else None
            done = time.time()
            self.store.update(
                name, lambda s: replace(s, graph=graph, graph_encoder=genc, graph_updated=done, graph_status="idle")
            )
        except Exception as e:  # reported through /maps, the service keeps running
            msg = f"error: {type(e).__name__}: {e}"
            self.store.update(name, lambda s: replace(s, graph_status=msg))
