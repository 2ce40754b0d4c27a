"""The browser viewer (semmap.serve.viewer) in a real headless Chromium with software WebGL.

A small lite map of real redkitchen frames (plus a three-object scene graph made from its
query regions) is served by ``start_viewer`` on 127.0.0.1; Chromium (Debian's ``chromium``,
SwiftShader WebGL) loads the page and is driven over the DevTools protocol (plain
websockets, no extra driver): an object box is clicked, a query is typed into the page's
text box and the Search button clicked, and the live map grows. Screenshots (before and
after the query, after the growth) are kept in ``$SEMMAP_TEST_ARTIFACTS/viewer`` (default
``tests/artifacts/viewer``) and checked on pixels: the mesh covers the view, the heat map
changed the colours, the grown mesh covers more of it.
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
import shutil
import socket
import subprocess
import time
import urllib.request
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from semmap.cli import main
from tests.conftest import REPO_ROOT, data_path

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytest.importorskip("viser", reason="viser is not installed (pip install -e '.[serve]')")

WIDTH, HEIGHT = 960, 640
"""Browser viewport, CSS pixels (small: SwiftShader renders every frame on the CPU)."""
ARTIFACTS = Path(os.environ.get("SEMMAP_TEST_ARTIFACTS", REPO_ROOT / "tests" / "artifacts")) / "viewer"
QUERY = "chair"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Browser:
    """Headless Chromium on one page, driven over the DevTools protocol (CDP)."""

    def __init__(self, user_data_dir: Path) -> None:
        from websockets.sync.client import connect

        self.proc = subprocess.Popen(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--use-angle=swiftshader",
             "--enable-unsafe-swiftshader", "--disable-background-networking", "--disable-component-update",
             "--disable-sync", "--no-first-run", "--disable-extensions", f"--user-data-dir={user_data_dir}",
             "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0",
             f"--window-size={WIDTH},{HEIGHT}", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )
        port = self._devtools_port(deadline=time.monotonic() + 30)
        pages = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10).read())
        page = next(p for p in pages if p["type"] == "page")
        self.ws = connect(page["webSocketDebuggerUrl"], max_size=None, open_timeout=10)
        self._id = 0
        self.call("Page.enable")
        self.call("Emulation.setDeviceMetricsOverride", width=WIDTH, height=HEIGHT, deviceScaleFactor=1, mobile=False)

    def _devtools_port(self, deadline: float) -> int:
        for line in self.proc.stderr:
            m = re.search(r"DevTools listening on ws://[^:]+:(\d+)/", line)
            if m:
                return int(m.group(1))
            if time.monotonic() > deadline:
                break
        raise RuntimeError("chromium did not open its DevTools port")

    def call(self, method: str, **params) -> dict:
        self._id += 1
        self.ws.send(json.dumps({"id": self._id, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv(timeout=30))
            if msg.get("id") == self._id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})

    def js(self, expression: str):
        r = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        return r.get("result", {}).get("value")

    def screenshot(self) -> np.ndarray:
        data = self.call("Page.captureScreenshot", format="png")["data"]
        return np.asarray(Image.open(io.BytesIO(base64.b64decode(data))).convert("RGB"))

    def click(self, x: float, y: float) -> None:
        for kind in ("mouseMoved", "mousePressed", "mouseReleased"):
            self.call("Input.dispatchMouseEvent", type=kind, x=float(x), y=float(y), button="left", clickCount=1)

    def wait_for(self, predicate, what: str, timeout_s: float = 60.0, every_s: float = 0.3):
        """Poll ``predicate()`` until it returns something other than None; return that."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            value = predicate()
            if value is not None:
                return value
            time.sleep(every_s)
        raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")

    def close(self) -> None:
        try:
            self.ws.close()
        finally:
            self.proc.kill()
            self.proc.wait(timeout=10)


def scene_pixels(img: np.ndarray) -> np.ndarray:
    """The 3D view left of the GUI panel (340 px) and below viser's software-WebGL notice (160 px): (h, w, 3)."""
    return img[160:, : img.shape[1] - 340]


def drawn_share(img: np.ndarray) -> float:
    """Share of the scene pixels that are not the white background."""
    return float((np.abs(scene_pixels(img).astype(int) - 255).max(axis=2) > 30).mean())


def histogram(img: np.ndarray, bins: int = 4) -> np.ndarray:
    """Normalised (bins**3,) colour histogram of the drawn (non-background) scene pixels."""
    px = scene_pixels(img).reshape(-1, 3).astype(int)
    px = px[np.abs(px - 255).max(axis=1) > 30]
    idx = (px // (256 // bins)) @ np.array([bins * bins, bins, 1])
    h = np.bincount(idx, minlength=bins**3).astype(float)
    return h / max(h.sum(), 1.0)


def blue_share(img: np.ndarray) -> float:
    """Share of the drawn scene pixels that are clearly blue (the low end of the turbo heat map)."""
    px = scene_pixels(img).reshape(-1, 3).astype(int)
    px = px[np.abs(px - 255).max(axis=1) > 30]
    return float(((px[:, 2] > px[:, 0] + 50) & (px[:, 2] > px[:, 1] + 20)).mean()) if len(px) else 0.0


def small_graph(snapshot):
    """Three scene-graph objects on the map's best regions for three phrases, with relations."""
    from scenegraph.graph import Relation, SceneGraph, SceneObject

    graph = SceneGraph(up=np.array([0.0, -1.0, 0.0]), R_g_world=np.eye(3), encoder=None)
    for i, phrase in enumerate(("chair", "computer monitor", "coffee mug")):
        r = snapshot.semantic.query(phrase, top=1).regions[0]
        graph.add_object(SceneObject(
            id=i, kind="object", name=f"{phrase.split()[-1]}_{i}", label=phrase, centroid=r.centroid,
            bbox_min=r.bbox_min, bbox_max=r.bbox_max, gbox_min=r.bbox_min, gbox_max=r.bbox_max,
            label_scores=[(phrase, 0.6), ("table", 0.25), ("box", 0.15)]))
    graph.add_relation(Relation(0, "near", 1, 0.8))
    graph.add_relation(Relation(2, "near", 0, 0.55))
    return graph


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A lite map of 5 redkitchen frames with a small graph, served by the viewer on 127.0.0.1.

    The store first holds a live map with half of the mesh's triangles (a map still being
    built); ``full`` is the whole map, published by the test as the live map grows.
    """
    from semmap.serve.maps import EncoderCache, MapStore, load_map_snapshot
    from semmap.serve.viewer import ViewerConfig, start_viewer

    root = data_path("7scenes-redkitchen")
    out = tmp_path_factory.mktemp("viewer") / "kitchen"
    assert main(["map", f"7scenes:{root}", "--out", str(out), "--stride", "40", "--max-frames", "5",
                 "--voxel-size", "0.04", "--no-progress", "--encoder", "lite", "--crop-scales", "0.4",
                 "--semantic-voxel-size", "0.06", "--kf-translation", "0.1", "--kf-rotation-deg", "8"]) == 0
    snap = load_map_snapshot(out, EncoderCache())
    full = replace(snap, graph=small_graph(snap), live=True, mapping="running", frames_dropped=7)
    half = replace(full, mesh_triangles=snap.mesh_triangles[: len(snap.mesh_triangles) // 2], frames=snap.frames - 1)
    store = MapStore()
    store.publish(half)
    handle = start_viewer(store, host="127.0.0.1", port=free_port(), config=ViewerConfig(refresh_s=1.0))
    yield store, handle, full
    handle.stop()


@pytest.fixture
def browser(tmp_path):
    if CHROMIUM is None:
        pytest.skip("chromium is not installed (apt-get install chromium)")
    b = Browser(tmp_path / "chromium-profile")
    yield b
    b.close()


def project(client_camera, point: np.ndarray) -> tuple[float, float]:
    """Pixel of a world point in the browser's view (viser cameras: OpenCV axes, vertical fov)."""
    import viser.transforms as vtf

    R = vtf.SO3(np.asarray(client_camera.wxyz)).as_matrix()
    p = R.T @ (np.asarray(point) - np.asarray(client_camera.position))
    f = (HEIGHT / 2.0) / np.tan(client_camera.fov / 2.0)
    return WIDTH / 2.0 + f * p[0] / p[2], HEIGHT / 2.0 + f * p[1] / p[2]


def wait_drawn(viewer, version: int) -> None:
    deadline = time.monotonic() + 3 * viewer.config.refresh_s + 30
    while viewer.drawn_version != version and time.monotonic() < deadline:
        time.sleep(0.1)
    assert viewer.drawn_version == version, f"the viewer did not draw snapshot v{version} (drew v{viewer.drawn_version})"


def page_text(browser: Browser, needle: str) -> str | None:
    text = browser.js("document.body.innerText") or ""
    return text if needle in text else None


def test_one_session_live_map_object_click_query_heat_map_and_growth(served, browser):
    """A browser session on a live map: what it draws, clicks, queries and refreshes, on pixels."""
    from semmap.serve.maps import answer_query

    store, handle, full = served
    viewer = handle.viewer
    ARTIFACTS.mkdir(parents=True, exist_ok=True)

    # nobody watching: a publish is not drawn (it waits for a browser)
    assert not handle.server.get_clients()
    pending = store.publish(replace(store.get("kitchen"), frames=full.frames - 1)).version
    time.sleep(2 * viewer.config.refresh_s + 0.5)
    assert viewer.drawn_version < pending
    # a browser connects: the newest snapshot is drawn, and the page shows it
    browser.call("Page.navigate", url=handle.url)
    wait_drawn(viewer, pending)
    browser.wait_for(lambda: page_text(browser, f"kitchen v{pending}"), "the status line")
    browser.wait_for(lambda: (lambda im: im if drawn_share(im) > 0.05 else None)(browser.screenshot()),
                     "the mesh to be drawn")
    time.sleep(1.0)  # let the labels and the last GLB chunk settle

    # click the chair object's box: its label candidates and relations appear in the panel
    client = browser.wait_for(lambda: next(iter(handle.server.get_clients().values()), None), "the viewer client")
    graph = store.get("kitchen").graph
    x, y = project(client.camera, graph.object(0).centroid)
    assert 0 < x < WIDTH and 0 < y < HEIGHT, f"the chair box centre projects off screen at ({x:.0f}, {y:.0f})"
    browser.click(x, y)
    panel = browser.wait_for(lambda: page_text(browser, "label candidates"), "the selected object's panel")
    assert re.search(r"(chair_0|monitor_1|mug_2) \(id \d\)", panel), panel
    assert "near" in panel and "table: 0.250" in panel
    time.sleep(0.5)
    before = browser.screenshot()
    Image.fromarray(before).save(ARTIFACTS / "before_query.png")

    # type the query into the page's text box and press Search
    box = browser.js("""(() => {
        const l = [...document.querySelectorAll('label')].find(e => e.innerText.trim() === 'query');
        let row = l.parentElement, el = row.querySelector('input');
        while (!el) { row = row.parentElement; el = row.querySelector('input'); }
        const r = el.getBoundingClientRect(); return [r.x + r.width / 2, r.y + r.height / 2]; })()""")
    browser.click(*box)
    browser.call("Input.insertText", text=QUERY)
    button = browser.js("""(() => { const b = [...document.querySelectorAll('button')].find(e => e.innerText.trim() === 'Search');
        const r = b.getBoundingClientRect(); return [r.x + r.width / 2, r.y + r.height / 2]; })()""")
    browser.click(*button)
    text = browser.wait_for(lambda: page_text(browser, f"'{QUERY}':"), "the query's results in the panel")
    ref = answer_query(store.get("kitchen"), QUERY, 5)  # the API's answer: the panel lists the same ranks and scores
    assert ref["results"]
    for r in ref["results"]:
        assert f"#{r['rank']} score {r['score']:.3f}" in text, text

    def changed_from(ref_img: np.ndarray):
        img = browser.screenshot()
        return img if np.abs(histogram(img) - histogram(ref_img)).sum() > 0.3 else None

    browser.wait_for(lambda: changed_from(before), "the heat map to replace the mesh colours")
    time.sleep(1.0)
    after = browser.screenshot()
    Image.fromarray(after).save(ARTIFACTS / "after_query.png")
    assert drawn_share(before) > 0.05 and drawn_share(after) > 0.05, (drawn_share(before), drawn_share(after))
    assert abs(drawn_share(after) - drawn_share(before)) < 0.05  # same mesh, same view: only colours changed
    assert np.abs(histogram(after) - histogram(before)).sum() > 0.3
    assert blue_share(after) > blue_share(before) + 0.1, (blue_share(before), blue_share(after))

    # the live map grows while watched: five publishes, at most one redraw per refresh period after the first
    redraws = viewer.redraws
    for _ in range(5):
        last = store.publish(full).version
        time.sleep(0.05)
    wait_drawn(viewer, last)
    assert 1 <= viewer.redraws - redraws <= 2
    assert len(viewer.mesh.triangles) == len(full.mesh_triangles)
    assert "live: running, 7 frames dropped" in viewer.gui_status.content
    assert viewer.gui_results.content.startswith(f"'{QUERY}':")  # the active query was answered on the new snapshot
    grown = browser.wait_for(
        lambda: (lambda im: im if drawn_share(im) > drawn_share(after) + 0.01 else None)(browser.screenshot()),
        "the grown mesh on the page")
    time.sleep(0.5)
    grown = browser.screenshot()
    Image.fromarray(grown).save(ARTIFACTS / "live_grown.png")
    assert drawn_share(grown) > drawn_share(after) + 0.01, (drawn_share(after), drawn_share(grown))
    assert full.mesh_triangles.flags.writeable is False  # the viewer only read the map data


def test_large_meshes_are_decimated_for_display(served):
    from semmap.serve.viewer import display_mesh

    snap = served[2]
    small = display_mesh(snap, 1000)
    assert 100 < len(small.triangles) <= 1000 < len(snap.mesh_triangles)
    lo, hi = snap.mesh_vertices.min(0), snap.mesh_vertices.max(0)
    assert np.all(small.vertices >= lo - 1e-4) and np.all(small.vertices <= hi + 1e-4)
    assert small.colours.shape == small.vertices.shape and 0 <= small.colours.min() <= small.colours.max() <= 1
    assert display_mesh(snap, len(snap.mesh_triangles)).triangles is snap.mesh_triangles  # small enough: as is
