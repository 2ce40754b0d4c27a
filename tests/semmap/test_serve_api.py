"""The HTTP API of `semmap serve` on small real maps: same answers as `semmap query --json`,
every error case, the mesh download, graph rebuilds, and a map directory left untouched."""

from __future__ import annotations

import concurrent.futures as cf
import json
import shutil
from pathlib import Path

import numpy as np
import open3d as o3d
import pytest

from semmap.cli import main
from tests.conftest import data_path
from tests.semmap.serve_fixtures import _restore_torch_threads  # noqa: F401 (autouse fixture)

QUERIES = ("coffee mug", "chair", "the mug on the table", "a chair next to the table", "something by")




@pytest.fixture(scope="module")
def maps(tmp_path_factory) -> dict[str, Path]:
    """Three maps of redkitchen frames: lite features + scene graph, the same without the
    graph, and a geometry-only map."""
    root = data_path("7scenes-redkitchen")
    base = tmp_path_factory.mktemp("serve")
    common = ["--stride", "40", "--max-frames", "5", "--voxel-size", "0.04", "--no-progress"]
    sem = ["--encoder", "lite", "--crop-scales", "0.4", "--semantic-voxel-size", "0.06"]
    out = {"kitchen": base / "kitchen", "plain": base / "plain", "geometry": base / "geometry"}
    assert main(["map", f"7scenes:{root}", "--out", str(out["kitchen"]), *common, *sem]) == 0
    shutil.copytree(out["kitchen"], out["plain"])  # the same map, without a scene graph
    assert main(["graph", str(out["kitchen"])]) == 0
    assert main(["map", f"7scenes:{root}", "--out", str(out["geometry"]), *common[:-1], "--max-frames", "3",
                 "--no-progress"]) == 0
    return out


def _tree(d: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(d)): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(d.rglob("*"))}


@pytest.fixture(scope="module")
def service(maps):
    """(TestClient, store, graph builder, the map directories' listings before serving)."""
    from fastapi.testclient import TestClient

    from semmap.serve.app import create_app
    from semmap.serve.maps import EncoderCache, GraphBuilder, MapStore, load_map_snapshot

    before = {n: _tree(d) for n, d in maps.items()}
    encoders = EncoderCache()
    store = MapStore()
    for d in maps.values():
        store.publish(load_map_snapshot(d, encoders))
    graphs = GraphBuilder(store, encoders)
    with TestClient(create_app(store, graphs)) as client:
        yield client, store, graphs, before


def _cli_json(map_dir: Path, text: str, top: int, capsys) -> list[dict]:
    capsys.readouterr()
    assert main(["query", str(map_dir), text, "--top", str(top), "--json", "--no-files"]) == 0
    return json.loads(capsys.readouterr().out)


def test_health_and_maps(service):
    client, store, _, _ = service
    assert client.get("/health").json() == {"status": "ok"}
    listed = {m["name"]: m for m in client.get("/maps").json()}
    assert set(listed) == {"kitchen", "plain", "geometry"}
    for m in listed.values():
        assert {"name", "frames", "encoder", "objects"} <= set(m)
    assert listed["kitchen"]["frames"] == 5 and listed["geometry"]["frames"] == 3
    assert listed["kitchen"]["encoder"] == "lite" and listed["geometry"]["encoder"] is None
    assert listed["kitchen"]["objects"] == store.get("kitchen").objects > 0
    assert listed["kitchen"]["graph_updated"] is not None and listed["plain"]["graph_updated"] is None
    assert client.get("/docs").status_code == 200


def test_one_encoder_shared_between_maps(service):
    _, store, _, _ = service
    assert store.get("kitchen").semantic.encoder is store.get("plain").semantic.encoder
    assert store.get("kitchen").graph_encoder is store.get("kitchen").semantic.encoder


@pytest.mark.parametrize("name", ["kitchen", "plain"])
def test_answers_equal_the_cli(service, maps, name, capsys):
    """Each result equals `semmap query --json`'s; relational phrases go to the graph when there is one."""
    client = service[0]
    for text in QUERIES:
        for top in (1, 4) if text == "coffee mug" else (3,):
            r = client.post(f"/maps/{name}/query", json={"text": text, "top": top})
            assert r.status_code == 200, r.text
            doc = r.json()
            assert doc["results"] == _cli_json(maps[name], text, top, capsys), (name, text, top)
            relational = text.startswith(("the mug", "a chair"))
            assert doc["path"] == ("graph" if relational and name == "kitchen" else "voxels"), (name, text)
            assert len(doc["results"]) <= top and doc["timings_ms"]["total"] > 0
            if doc["path"] == "voxels":
                assert {"encode", "relevancy", "regions"} <= set(doc["timings_ms"])
            if relational and name == "plain":
                assert any("no scene graph" in n for n in doc["notes"])
            for res in doc["results"]:
                assert {"centroid", "bbox_min", "bbox_max", "score", "rank"} <= set(res)
                assert all(lo <= c <= hi for lo, c, hi in zip(res["bbox_min"], res["centroid"], res["bbox_max"]))


def test_objects_and_relations(service):
    client, store, _, _ = service
    objs = client.get("/maps/kitchen/objects").json()["objects"]
    graph = store.get("kitchen").graph
    assert len(objs) == len(graph.objects)
    for o in objs:
        assert {"id", "name", "label", "labels", "centroid", "bbox_min", "bbox_max"} <= set(o)
        assert o["embedding"] is None  # not shipped
        assert all(lo <= c + 1e-6 and c <= hi + 1e-6 for lo, c, hi in zip(o["bbox_min"], o["centroid"], o["bbox_max"]))
    rels = client.get("/maps/kitchen/relations").json()["relations"]
    assert len(rels) == len(graph.relations()) > 0
    ids = {o["id"]: o["name"] for o in objs}
    for r in rels:
        assert 0 < r["score"] <= 1 and ids[r["subject"]] == r["subject_name"] and ids[r["object"]] == r["object_name"]


def test_mesh_ply_is_the_maps_mesh(service, maps, tmp_path):
    client = service[0]
    r = client.get("/maps/kitchen/mesh.ply")
    assert r.status_code == 200
    (tmp_path / "m.ply").write_bytes(r.content)
    got = o3d.io.read_triangle_mesh(str(tmp_path / "m.ply"))
    ref = o3d.io.read_triangle_mesh(str(maps["kitchen"] / "mesh.ply"))
    assert len(got.vertices) == len(ref.vertices) > 1000 and len(got.triangles) == len(ref.triangles)
    assert np.abs(np.asarray(got.vertices) - np.asarray(ref.vertices)).max() < 1e-6
    assert np.abs(np.asarray(got.vertex_colors) - np.asarray(ref.vertex_colors)).max() <= 0.5 / 255 + 1e-6
    assert client.get("/maps/kitchen/mesh.ply").content == r.content  # cached per version


@pytest.mark.parametrize(
    "body, field",
    [
        ({"text": ""}, "text"),
        ({"text": "   "}, "text"),
        ({"text": "x" * 501}, "500"),
        ({"text": "mug", "top": 0}, "top"),
        ({"text": "mug", "top": 101}, "top"),
        ({"text": "mug", "top": "many"}, "top"),
        ({"text": 5}, "text"),
        ({"top": 3}, "text"),
        ([1, 2], "body"),
    ],
)
def test_bad_bodies_are_400(service, body, field):
    r = service[0].post("/maps/kitchen/query", json=body)
    assert r.status_code == 400 and set(r.json()) == {"error"} and field in r.json()["error"], r.text


def test_not_json_is_400(service):
    r = service[0].post("/maps/kitchen/query", content=b"{text: mug", headers={"content-type": "application/json"})
    assert r.status_code == 400 and "error" in r.json()


def test_exactly_500_characters_is_accepted(service):
    assert service[0].post("/maps/plain/query", json={"text": "mug " * 125, "top": 1}).status_code == 200


@pytest.mark.parametrize("method, path", [
    ("post", "/maps/nope/query"), ("get", "/maps/nope/objects"), ("get", "/maps/nope/relations"),
    ("get", "/maps/nope/mesh.ply"), ("post", "/maps/nope/graph"), ("get", "/maps/..%2F..%2Fetc/objects"),
    ("get", "/maps/kitchen/map.json"), ("get", "/nothing"),
])
def test_unknown_maps_and_paths_are_404(service, method, path):
    r = getattr(service[0], method)(path, **({"json": {"text": "mug"}} if method == "post" else {}))
    assert r.status_code == 404 and set(r.json()) == {"error"}, r.text


def test_missing_layers_are_409(service):
    client = service[0]
    r = client.post("/maps/geometry/query", json={"text": "mug"})
    assert r.status_code == 409 and "feature layer" in r.json()["error"]
    for what in ("objects", "relations"):
        r = client.get(f"/maps/plain/{what}")
        assert r.status_code == 409 and "scene graph" in r.json()["error"]


def test_concurrent_clients_over_http(service, maps, capsys):
    """A real uvicorn server on 127.0.0.1: 8 clients, 32 requests, all 200 and all equal."""
    import httpx

    from semmap.serve.app import create_app, start_server

    _, store, graphs, _ = service
    handle = start_server(create_app(store, graphs), "127.0.0.1", 0)
    try:
        expected = _cli_json(maps["kitchen"], "coffee mug", 3, capsys)

        def ask(_: int) -> tuple[int, list]:
            with httpx.Client(base_url=handle.url, timeout=60) as c:
                r = c.post("/maps/kitchen/query", json={"text": "coffee mug", "top": 3})
                return r.status_code, r.json()["results"]

        with cf.ThreadPoolExecutor(8) as pool:
            got = list(pool.map(ask, range(32)))
    finally:
        handle.stop()
    assert all(code == 200 for code, _ in got)
    assert all(res == expected for _, res in got)


def test_graph_rebuild_on_request(service):
    """POST /graph builds a scene graph in the background (in memory); /maps says when it ran."""
    client, store, graphs, _ = service
    assert client.get("/maps/geometry/objects").status_code == 409
    r = client.post("/maps/geometry/graph")
    assert r.status_code == 202 and r.json()["status"] in ("building", "already building")
    graphs.wait("geometry", timeout=300)
    m = {x["name"]: x for x in client.get("/maps").json()}["geometry"]
    assert m["graph_status"] == "idle" and m["graph_updated"] is not None and m["graph"]
    objs = client.get("/maps/geometry/objects").json()["objects"]
    assert len(objs) == len(store.get("geometry").graph.objects) > 0
    # a plain text on a map without features still needs the voxels -> 409
    assert client.post("/maps/geometry/query", json={"text": "chair"}).status_code == 409


def test_served_maps_are_never_written(service, maps):
    """Run last in this module: every request above left the map directories as they were."""
    _, _, graphs, before = service
    for name in maps:
        graphs.wait(name, timeout=300)
    assert {n: _tree(d) for n, d in maps.items()} == before


def test_serve_command_bad_arguments(maps, tmp_path, capsys):
    """Clear one-line errors, before anything is loaded or bound."""
    cases = [
        ([], "give one or more map directories"),
        (["--live", "x"], "--live SOURCE and --out DIR go together"),
        ([str(maps["kitchen"]), "--fps", "30"], "--fps applies to --live only"),
        ([str(maps["kitchen"]), str(tmp_path / "x" / "kitchen")], "share the name 'kitchen'"),
        ([str(tmp_path / "missing")], "does not exist"),
    ]
    (tmp_path / "unfinished").mkdir()
    cases.append(([str(tmp_path / "unfinished")], "map.json is missing"))
    for argv, msg in cases:
        capsys.readouterr()
        assert main(["serve", *argv, "--no-viewer", "--port", "1"]) == 2, argv
        err = capsys.readouterr().err
        assert msg in err and "Traceback" not in err, (argv, err)


def test_serve_command_end_to_end(maps, capsys):
    """`semmap serve MAP` in its own process answers what `semmap query --json` prints; Ctrl-C ends it."""
    import signal
    import socket
    import subprocess
    import sys
    import time

    import httpx

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "semmap", "serve", str(maps["kitchen"]), "--no-viewer",
                             "--port", str(port)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        t0 = time.perf_counter()
        while True:
            assert proc.poll() is None, proc.stdout.read()
            assert time.perf_counter() - t0 < 180, "semmap serve did not start"
            try:
                r = httpx.post(f"http://127.0.0.1:{port}/maps/kitchen/query", json={"text": "the mug on the table"})
                break
            except httpx.HTTPError:
                time.sleep(0.2)
        assert r.status_code == 200 and r.json()["path"] == "graph"
        assert r.json()["results"] == _cli_json(maps["kitchen"], "the mug on the table", 5, capsys)
    finally:
        proc.send_signal(signal.SIGINT)
        out = proc.communicate(timeout=60)[0]
    assert "loaded" in out and f"127.0.0.1:{port}" in out and "Traceback" not in out
