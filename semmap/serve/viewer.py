"""The browser viewer of ``semmap serve`` (viser: nerfstudio's web 3D viewer library).

One page (``http://HOST:PORT/``) shows one served map at a time (a drop-down picks it):

- the mesh with its vertex colours, the camera trajectory and the current (last) camera
  as a frustum;
- a query box: the text is answered by the same library call as ``POST /maps/{name}/query``
  and ``semmap query`` (``scenegraph.answer.answer_text``); the mesh is re-coloured by the
  voxel relevancy exactly like ``semmap query``'s ``relevancy.ply``
  (``semmap.query_report.relevancy_colours``: turbo from the map's median to its maximum
  relevancy, grey outside the semantic voxels), and the ranked
  boxes are drawn with "#rank score" labels and listed in the side panel;
- a scene-graph layer (toggle): object boxes with their labels, and relation edges
  between object centroids (second toggle, coloured by relation); clicking an object box
  lists its label candidates and relations in the side panel.

Viewer state (which map, the active query, the selected object, what was drawn) lives in
:class:`Viewer`, never in the map data: snapshots are only read. The scene is shared by
every connected browser (a second viewer sees the same query), like one screen on a wall.

Live maps: :func:`start_viewer` registers a ``MapStore`` listener that only marks the
viewer dirty (the mapping worker never waits on the viewer); a background thread redraws
the mesh, trajectory and camera at most every ``ViewerConfig.refresh_s`` seconds, and
re-runs the active query on the new snapshot. Queries typed in the viewer run in viser's
callback threads, never on the API's request path; while no browser is connected the
viewer draws nothing (a connecting browser gets the newest snapshot). Meshes above
``ViewerConfig.max_triangles`` are decimated for display (vertex clustering) once per
snapshot.
"""

from __future__ import annotations

import io
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from scenegraph.graph import SceneGraph
    from semmap.serve.maps import MapSnapshot, MapStore

ROOT = "/map"
"""Scene-tree root of everything the viewer draws for the shown map."""
RELATION_COLOURS = np.array(
    [[31, 119, 180], [255, 127, 14], [44, 160, 44], [214, 39, 40], [148, 103, 189],
     [140, 86, 75], [227, 119, 194], [127, 127, 127], [188, 189, 34], [23, 190, 207]], np.uint8)
"""(10, 3) RGB per relation kind, in ``scenegraph.graph.RELATIONS`` order (matplotlib tab10)."""
BOX_COLOURS = {"best": (255, 0, 255), "other": (255, 255, 255), "object": (255, 200, 0), "selected": (0, 255, 120)}


@dataclass
class ViewerConfig:
    """Settings of the browser viewer."""

    refresh_s: float = 3.0
    """A live map's mesh is redrawn at most this often, seconds."""
    max_triangles: int = 1_500_000
    """Meshes with more triangles are decimated for display (vertex clustering)."""
    top: int = 5
    """Initial number of query results."""
    frustum_scale_m: float = 0.15
    """Size of the current-camera frustum, metres."""
    line_px: float = 2.0
    """Width of trajectory, box and relation lines, screen pixels."""
    label: str = "semmap"
    """Title of the browser tab."""

    def __post_init__(self) -> None:
        if not self.refresh_s > 0:
            raise ValueError(f"viewer refresh_s must be positive, got {self.refresh_s}")
        if self.max_triangles < 1000:
            raise ValueError(f"viewer max_triangles must be >= 1000, got {self.max_triangles}")


@dataclass(frozen=True)
class DisplayMesh:
    """The mesh as drawn: the snapshot's, or a decimated copy of it.

    vertices (V, 3) float32 world metres; triangles (F, 3) int32; colours (V, 3) float32 [0, 1].
    """

    vertices: np.ndarray
    triangles: np.ndarray
    colours: np.ndarray


def display_mesh(snapshot: MapSnapshot, max_triangles: int) -> DisplayMesh:
    """The snapshot's mesh, decimated by Open3D vertex clustering when over ``max_triangles``."""
    v, f, c = snapshot.mesh_vertices, snapshot.mesh_triangles, snapshot.mesh_colors
    if len(f) <= max_triangles:
        return DisplayMesh(v, f, c)
    import open3d as o3d

    mesh = o3d.geometry.TriangleMesh(o3d.utility.Vector3dVector(v.astype(np.float64)),
                                     o3d.utility.Vector3iVector(np.array(f, np.int32)))
    mesh.vertex_colors = o3d.utility.Vector3dVector(c.astype(np.float64))
    extent = float(np.max(v.max(0) - v.min(0)))
    voxel = extent / 1000.0
    while len(mesh.triangles) > max_triangles:
        voxel *= 1.5
        small = mesh.simplify_vertex_clustering(voxel)
        if len(small.triangles) <= max_triangles:
            mesh = small
            break
    return DisplayMesh(np.asarray(mesh.vertices, np.float32), np.asarray(mesh.triangles, np.int32),
                       np.clip(np.asarray(mesh.vertex_colors, np.float32), 0, 1))


def glb_bytes(vertices: np.ndarray, triangles: np.ndarray, colours: np.ndarray) -> bytes:
    """A binary glTF of a vertex-coloured mesh.

    ``colours`` (V, 3) are sRGB in [0, 1] (as in mesh.ply); glTF vertex colours are linear,
    so they are converted here and three.js converts back on display.
    """
    import trimesh

    c = np.clip(np.asarray(colours, np.float64), 0.0, 1.0)
    linear = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    rgba = np.empty((len(c), 4), np.uint8)
    rgba[:, :3] = np.round(linear * 255)
    rgba[:, 3] = 255
    mesh = trimesh.Trimesh(vertices, triangles, vertex_colors=rgba, process=False)
    buf = io.BytesIO()
    mesh.export(buf, file_type="glb")
    return buf.getvalue()


def box_segments(bmin: np.ndarray, bmax: np.ndarray) -> np.ndarray:
    """(12, 2, 3) edges of the axis-aligned box [bmin, bmax] (world metres)."""
    from semmap.query_report import BOX_EDGES, box_corners

    c = box_corners(np.asarray(bmin, np.float64), np.asarray(bmax, np.float64))
    return np.array([[c[a], c[b]] for a, b in BOX_EDGES], np.float32)


def initial_view(snapshot: MapSnapshot) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(position, look_at, up) of a camera that sees the whole mesh from above at an angle.

    "Up" is the mean camera up of the trajectory (``semmap.query_report.up_vector``).
    """
    from semmap.query_report import plane_basis, up_vector

    v = snapshot.mesh_vertices
    up = up_vector(snapshot.T_world_cam) if len(snapshot.T_world_cam) else np.array([0.0, 0.0, 1.0])
    if len(v) == 0:
        return up * 3.0, np.zeros(3), up
    lo, hi = np.percentile(v, 2, axis=0), np.percentile(v, 98, axis=0)
    centre = (lo + hi) / 2.0
    extent = float(np.linalg.norm(hi - lo))
    e1, _ = plane_basis(up)
    if len(snapshot.T_world_cam):  # look from the side the cameras were on
        d = snapshot.T_world_cam[:, :3, 3].mean(0) - centre
        d -= up * (d @ up)
        if np.linalg.norm(d) > 1e-3:
            e1 = d / np.linalg.norm(d)
    position = centre + extent * (0.6 * up + 0.45 * e1)
    return position, centre, up


class Viewer:
    """The viewer's state and drawing for one viser server (see the module docstring).

    Args:
        store: the served maps (read only).
        server: a ``viser.ViserServer``.
        config: viewer settings.
    """

    def __init__(self, store: MapStore, server: Any, config: ViewerConfig) -> None:
        self.store = store
        self.server = server
        self.config = config
        self._lock = threading.RLock()
        self._dirty = threading.Event()
        self._stopping = threading.Event()
        self.name: str | None = None
        self.drawn_version = -1
        self.drawn_graph: object | None = None
        self.mesh: DisplayMesh | None = None
        self.mesh_version = -1
        self.query_text = ""
        self.selected: int | None = None
        self.last_draw = 0.0
        self.redraws = 0
        self._query_top = config.top
        self._pending = False
        self._object_nodes: dict[int, Any] = {}
        self._layer_nodes: dict[str, list[Any]] = {}
        self._build_gui()
        names = store.names()
        if names:
            self.show(names[0])

    # ------------------------------------------------------------------ GUI
    def _build_gui(self) -> None:
        gui = self.server.gui
        names = self.store.names()
        self.gui_map = gui.add_dropdown("map", tuple(names) or ("(none)",), initial_value=names[0] if names else "(none)")
        self.gui_map.on_update(lambda _: self._in_thread(self.show, self.gui_map.value))
        self.gui_status = gui.add_markdown("")
        with gui.add_folder("Query"):
            self.gui_text = gui.add_text("query", "", hint="what to look for, e.g. 'coffee mug' or 'the mug on the table'")
            self.gui_top = gui.add_number("top", self.config.top, min=1, max=20, step=1)
            self.gui_search = gui.add_button("Search", icon=None)
            self.gui_clear = gui.add_button("Clear")
            self.gui_results = gui.add_markdown("")
        self.gui_search.on_click(lambda _: self.run_query(self.gui_text.value, int(self.gui_top.value)))
        self.gui_clear.on_click(lambda _: self.run_query("", 0))
        with gui.add_folder("Layers"):
            self.gui_traj = gui.add_checkbox("trajectory", True)
            self.gui_graph = gui.add_checkbox("scene graph", True)
            self.gui_edges = gui.add_checkbox("relations", False)
        self.gui_traj.on_update(lambda _: self._set_visible("trajectory", self.gui_traj.value))
        self.gui_graph.on_update(lambda _: self._set_visible("graph/objects", self.gui_graph.value))
        self.gui_edges.on_update(lambda _: self._set_visible("graph/relations", self.gui_edges.value))
        with gui.add_folder("Selected object"):
            self.gui_object = gui.add_markdown("click an object box of the scene graph")

    def _in_thread(self, fn, *args) -> None:
        threading.Thread(target=fn, args=args, daemon=True).start()

    def _set_visible(self, layer: str, visible: bool) -> None:
        with self._lock:
            for node in self._layer_nodes.get(layer, []):
                node.visible = bool(visible)

    def _clear(self, layer: str) -> list[Any]:
        """Remove the scene nodes of ``layer``; returns its (now empty) node list."""
        for node in self._layer_nodes.get(layer, []):
            node.remove()
        self._layer_nodes[layer] = []
        return self._layer_nodes[layer]

    # ------------------------------------------------------------------ drawing
    def show(self, name: str) -> None:
        """Draw map ``name`` (replacing what was shown) and point the cameras at it."""
        if name not in self.store.names():
            return
        with self._lock:
            self.name = name
            self.selected = None
            self.query_text = ""
            self.server.scene.reset()
            self._layer_nodes = {}
            self._object_nodes = {}
            self.drawn_version = -1
            self.drawn_graph = None
            snap = self.store.get(name)
            self._draw(snap)
            pos, look, up = initial_view(snap)
            self.server.scene.set_up_direction(tuple(float(x) for x in up))
            self.server.initial_camera.position = pos
            self.server.initial_camera.look_at = look
            for client in self.server.get_clients().values():
                client.camera.position = pos
                client.camera.look_at = look
            self.gui_results.content = ""
            self.gui_object.content = "click an object box of the scene graph"

    def _draw(self, snap: MapSnapshot) -> None:
        """Draw (or redraw) mesh, trajectory, camera, graph and the active query for ``snap``."""
        if snap.version != self.mesh_version or self.mesh is None:
            self.mesh = display_mesh(snap, self.config.max_triangles)
            self.mesh_version = snap.version
        self._draw_path(snap)
        if snap.graph is not self.drawn_graph:
            self._draw_graph(snap.graph)
            self.drawn_graph = snap.graph
        if self.query_text:
            self._query_locked(snap, self.query_text, self._query_top)
        else:
            self._draw_mesh(self.mesh.colours)
        self.drawn_version = snap.version
        self.last_draw = time.monotonic()
        self.redraws += 1
        self._status(snap)

    def _draw_mesh(self, colours: np.ndarray) -> None:
        m = self.mesh
        if m is None or len(m.triangles) == 0:
            return
        self.server.scene.add_glb(f"{ROOT}/mesh", glb_bytes(m.vertices, m.triangles, colours))

    def _draw_path(self, snap: MapSnapshot) -> None:
        import viser.transforms as vtf

        scene = self.server.scene
        T = snap.T_world_cam
        if len(T) >= 2:
            p = T[:, :3, 3].astype(np.float32)
            seg = np.stack([p[:-1], p[1:]], axis=1)
            self._clear("trajectory").append(scene.add_line_segments(
                f"{ROOT}/trajectory", seg, (255, 140, 0), thickness=self.config.line_px,
                thickness_units="screen", visible=self.gui_traj.value))
        if len(T) and snap.camera is not None:
            cam = snap.camera
            fov = 2.0 * np.arctan2(cam.height / 2.0, cam.fy)
            scene.add_camera_frustum(
                f"{ROOT}/camera", fov=float(fov), aspect=cam.width / cam.height, scale=self.config.frustum_scale_m,
                color=(255, 60, 0), thickness=self.config.line_px, thickness_units="screen",
                wxyz=vtf.SO3.from_matrix(T[-1, :3, :3]).wxyz, position=T[-1, :3, 3],
            )

    def _draw_graph(self, graph: SceneGraph | None) -> None:
        scene = self.server.scene
        nodes = self._clear("graph/objects")
        edges = self._clear("graph/relations")
        self._object_nodes = {}
        if graph is None:
            return
        from scenegraph.graph import RELATIONS

        objects = [o for o in graph.objects if not o.is_structure]
        show = self.gui_graph.value
        if objects:
            seg = np.concatenate([box_segments(o.bbox_min, o.bbox_max) for o in objects])
            nodes.append(scene.add_line_segments(f"{ROOT}/graph/objects/outlines", seg, BOX_COLOURS["object"],
                                                 thickness=self.config.line_px, thickness_units="screen", visible=show))
        for o in objects:
            size = np.maximum(o.bbox_max - o.bbox_min, 1e-3)
            box = scene.add_box(f"{ROOT}/graph/objects/box_{o.id}", color=BOX_COLOURS["object"], dimensions=size,
                                opacity=0.08, position=(o.bbox_min + o.bbox_max) / 2.0, visible=show)
            box.on_click(lambda event, oid=o.id: self.select(oid))
            self._object_nodes[o.id] = box
            nodes.append(box)
            nodes.append(scene.add_label(f"{ROOT}/graph/objects/label_{o.id}", o.label or o.name,
                                         position=o.centroid, visible=show, anchor="bottom-center"))
        rels = graph.relations()
        if rels:
            cent = {o.id: o.centroid for o in graph.objects}
            seg = np.array([[cent[r.subject], cent[r.object]] for r in rels], np.float32)
            col = RELATION_COLOURS[[RELATIONS.index(r.relation) % len(RELATION_COLOURS) for r in rels]]
            edges.append(scene.add_line_segments(
                f"{ROOT}/graph/relations", seg, np.repeat(col[:, None], 2, axis=1), thickness=self.config.line_px,
                thickness_units="screen", visible=self.gui_edges.value))

    def _status(self, snap: MapSnapshot) -> None:
        m = self.mesh
        parts = [f"**{snap.name}** v{snap.version}: {snap.frames} frames, {len(m.vertices) if m else 0} mesh vertices"]
        if snap.encoder_name:
            parts.append(f"encoder `{snap.encoder_name}`")
        if snap.graph is not None:
            parts.append(f"{snap.objects} objects")
        if snap.live:
            parts.append(f"live: {snap.mapping or 'running'}, {snap.frames_dropped} frames dropped")
        self.gui_status.content = "; ".join(parts)

    # ------------------------------------------------------------------ query
    def run_query(self, text: str, top: int) -> None:
        """Answer ``text`` on the shown map and draw it (empty text: back to the mesh colours)."""
        with self._lock:
            if self.name is None:
                return
            snap = self.store.get(self.name)
            self.query_text = text.strip()
            self._query_top = max(1, int(top or 1))
            if not self.query_text:
                self._clear("query")
                self._draw_mesh(self.mesh.colours if self.mesh else np.zeros((0, 3)))
                self.gui_results.content = ""
                return
            try:
                self._query_locked(snap, self.query_text, self._query_top)
            except ValueError as e:  # bad text, or a layer the map lacks: say so in the panel
                self.gui_results.content = f"error: {e}"

    def _query_locked(self, snap: MapSnapshot, text: str, top: int) -> None:
        from scenegraph.answer import answer_text
        from semmap.serve.maps import MAX_TEXT_CHARS, MAX_TOP

        if len(text) > MAX_TEXT_CHARS:
            raise ValueError(f"the text is {len(text)} characters long; at most {MAX_TEXT_CHARS} are accepted")
        t0 = time.perf_counter()
        ans = answer_text(text, min(top, MAX_TOP), snap.semantic, snap.graph, snap.graph_encoder, f"map {snap.name!r}")
        voxels = ans.voxel_result
        if voxels is None and snap.semantic is not None:  # graph answer: the heat map still shows the phrase
            voxels = snap.semantic.query(text, top=1)
        t_answer = time.perf_counter() - t0
        if voxels is not None and self.mesh is not None:
            from semmap.query_report import relevancy_colours

            self._draw_mesh(relevancy_colours(snap.semantic, voxels, self.mesh.vertices))
        self._draw_results(ans.results)
        lines = [f"'{text}': {len(ans.results)} result(s) from the {ans.path} ({1000 * t_answer:.0f} ms)"]
        lines += [f"- note: {n}" for n in ans.notes]
        for r in ans.results:
            what = f" {r['name']}" if "name" in r else ""
            rel = f" {r['relation']} {r.get('partner_name', '')}" if "relation" in r else ""
            c = ", ".join(f"{x:.2f}" for x in r["centroid"])
            lines.append(f"- **#{r['rank']}** score {r['score']:.3f}{what}{rel} at ({c})")
        self.gui_results.content = "\n".join(lines)

    def _draw_results(self, results: list[dict]) -> None:
        scene = self.server.scene
        nodes = self._clear("query")
        for r in results:
            best = r["rank"] == 1
            seg = box_segments(np.array(r["bbox_min"]), np.array(r["bbox_max"]))
            nodes.append(scene.add_line_segments(
                f"{ROOT}/query/box_{r['rank']}", seg, BOX_COLOURS["best" if best else "other"],
                thickness=self.config.line_px * (2 if best else 1), thickness_units="screen"))
            nodes.append(scene.add_label(f"{ROOT}/query/label_{r['rank']}", f"#{r['rank']} {r['score']:.2f}",
                                         position=np.array(r["bbox_max"], np.float64), anchor="bottom-left"))

    # ------------------------------------------------------------------ selection
    def select(self, object_id: int) -> None:
        """Show object ``object_id``'s label candidates and relations; highlight its box."""
        with self._lock:
            snap = self.store.get(self.name) if self.name else None
            if snap is None or snap.graph is None:
                return
            self.selected = object_id
            for oid, node in self._object_nodes.items():
                node.color = BOX_COLOURS["selected" if oid == object_id else "object"]
                node.opacity = 0.3 if oid == object_id else 0.08
            self.gui_object.content = object_markdown(snap.graph, object_id)

    # ------------------------------------------------------------------ live
    def mark_dirty(self, snapshot: MapSnapshot) -> None:
        """``MapStore`` listener: note that a map changed (cheap; the refresh thread redraws)."""
        if snapshot.name == self.name or self.name is None or snapshot.version == 1:
            self._dirty.set()

    def client_connected(self, client: Any) -> None:
        """viser connect callback: a browser joined; draw what changed while nobody watched."""
        if self._pending:
            self._dirty.set()

    def refresh_loop(self) -> None:
        """Redraw the shown map when it changed, at most every ``refresh_s`` seconds.

        While no browser is connected nothing is drawn (the change is kept pending until
        one connects), so an unwatched viewer costs the service nothing.
        """
        while not self._stopping.is_set():
            if not self._dirty.wait(timeout=0.5):
                continue
            wait = self.config.refresh_s - (time.monotonic() - self.last_draw)
            if wait > 0 and self._stopping.wait(timeout=wait):
                return
            self._dirty.clear()
            if not self.server.get_clients():
                self._pending = True
                continue
            self._pending = False
            try:
                with self._lock:
                    names = self.store.names()
                    if list(self.gui_map.options) != names and names:
                        self.gui_map.options = tuple(names)
                    if self.name is None:
                        if names:
                            self.show(names[0])
                        continue
                    snap = self.store.get(self.name)
                    if snap.version != self.drawn_version:
                        self._draw(snap)
            except Exception as e:  # the viewer must never take the service down
                print(f"semmap serve: viewer refresh failed: {e}")

    def stop(self) -> None:
        self._stopping.set()


def object_markdown(graph: SceneGraph, object_id: int) -> str:
    """Side-panel text of one scene-graph object: name, label candidates, relations both ways."""
    o = graph.object(object_id)
    names = {x.id: x.name for x in graph.objects}
    size = ", ".join(f"{s:.2f}" for s in (o.bbox_max - o.bbox_min))
    lines = [f"**{o.name}** (id {o.id}): {o.label or 'no label'}, box {size} m"]
    lines += ["", "label candidates:"] + [f"- {lab}: {s:.3f}" for lab, s in o.label_scores[:8]]
    out = sorted(graph.iter_relations_from(o.id), key=lambda r: -r.score)
    inc = sorted((r for r in graph.relations() if r.object == o.id), key=lambda r: -r.score)
    lines += ["", "relations:"]
    lines += [f"- {o.name} {r.relation} {names.get(r.object, r.object)}: {r.score:.2f}" for r in out[:12]]
    lines += [f"- {names.get(r.subject, r.subject)} {r.relation} {o.name}: {r.score:.2f}" for r in inc[:12]]
    if not out and not inc:
        lines.append("- none")
    return "\n".join(lines)


@dataclass
class ViewerHandle:
    """A running viewer: ``url`` to open, ``stop()`` to shut it down."""

    server: Any
    viewer: Viewer
    thread: threading.Thread
    host: str
    port: int

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/"

    def stop(self) -> None:
        self.viewer.stop()
        self.thread.join(timeout=5.0)
        self.server.stop()


def start_viewer(store: MapStore, host: str = "127.0.0.1", port: int = 8080,
                 config: ViewerConfig | None = None) -> ViewerHandle:
    """Start the browser viewer on ``host:port`` (the next free port if taken) for the maps of ``store``.

    Draws the first map, registers a listener on ``store`` (live maps refresh every
    ``config.refresh_s`` seconds) and returns at once; the viewer runs in viser's threads.
    """
    import viser

    config = config or ViewerConfig()
    server = viser.ViserServer(host=host, port=port, label=config.label, verbose=False)
    viewer = Viewer(store, server, config)
    store.add_listener(viewer.mark_dirty)
    server.on_client_connect(viewer.client_connected)
    thread = threading.Thread(target=viewer.refresh_loop, name="semmap-viewer-refresh", daemon=True)
    thread.start()
    return ViewerHandle(server, viewer, thread, host, server.get_port())
