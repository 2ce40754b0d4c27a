"""The HTTP JSON API of ``semmap serve`` (FastAPI; OpenAPI docs at ``/docs``) and its server.

Endpoints (``{name}`` is a served map's directory name; it only selects a loaded map,
it never becomes a path):

| method | path | answer |
|---|---|---|
| GET | /health | ``{"status": "ok"}`` |
| GET | /maps | ``[{"name", "frames", "encoder", "objects", ...}]`` |
| POST | /maps/{name}/query | body ``{"text": "...", "top": 5}`` -> ``{"results", "path", "notes", "timings_ms", ...}`` |
| GET | /maps/{name}/objects | ``{"objects": [...]}`` (labels, boxes, centroids) |
| GET | /maps/{name}/relations | ``{"relations": [...]}`` (subject, relation, object, score) |
| GET | /maps/{name}/mesh.ply | the current mesh, binary PLY |
| POST | /maps/{name}/graph | 202 ``{"status": "building"}``: rebuild the scene graph in the background |

Errors are ``{"error": "..."}``: 400 bad body (empty text, text over 500 characters, top
outside 1-100, not JSON), 404 unknown map or path, 409 the map lacks the layer asked for
(no feature layer, no scene graph). An unexpected failure is a 500 with the error's one-line
message, never a traceback.
"""

import sys
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from semmap.serve.maps import (
    MAX_TEXT_CHARS,
    MAX_TOP,
    GraphBuilder,
    MapSnapshot,
    MapStore,
    MissingLayer,
    answer_query,
    graph_objects,
    graph_relations,
    mesh_ply_bytes,
)

if TYPE_CHECKING:
    from fastapi import FastAPI


def create_app(store: MapStore, graphs: GraphBuilder | None = None) -> "FastAPI":
    """The FastAPI application serving ``store`` (``graphs`` enables POST /maps/{name}/graph)."""
    from fastapi import Body, FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse, Response
    from pydantic import BaseModel, Field
    from starlette.exceptions import HTTPException as StarletteHTTPException

    class QueryBody(BaseModel):
        text: str = Field(description="what to look for, e.g. 'coffee mug' or 'the mug on the table'",
                          max_length=MAX_TEXT_CHARS)
        top: int = Field(5, ge=1, le=MAX_TOP, description="results to return")

    app = FastAPI(
        title="semmap",
        summary="Open-vocabulary 3D semantic maps: text queries, scene graphs, meshes.",
        version=_version(),
    )
    mesh_cache = _MeshCache()

    def error(status: int, message: str) -> JSONResponse:
        return JSONResponse({"error": message}, status_code=status)

    @app.exception_handler(RequestValidationError)
    async def _bad_body(request: Request, exc: RequestValidationError) -> JSONResponse:
        parts = []
        for e in exc.errors():
            where = ".".join(str(x) for x in e.get("loc", ()) if x != "body") or "body"
            parts.append(f"{where}: {e.get('msg', 'invalid')}")
        return error(400, "bad request: " + "; ".join(parts))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return error(exc.status_code, str(exc.detail))

    @app.middleware("http")
    async def _unexpected(request: Request, call_next):
        try:
            return await call_next(request)
        except Exception as e:  # a one-line JSON error, never a traceback
            return unexpected(e)

    def unexpected(e: Exception) -> JSONResponse:
        print(f"semmap serve: internal error: {type(e).__name__}: {e}", file=sys.stderr)
        return error(500, f"internal error: {type(e).__name__}: {e}")

    def snapshot(name: str) -> MapSnapshot | JSONResponse:
        try:
            return store.get(name)
        except KeyError as e:
            return error(404, str(e.args[0]))

    def call(name: str, fn) -> Any:
        """``fn(snapshot)``; its ValueError -> 400, MissingLayer -> 409, unknown map -> 404,
        anything else -> 500 with a one-line message."""
        snap = snapshot(name)
        if isinstance(snap, JSONResponse):
            return snap
        try:
            return fn(snap)
        except MissingLayer as e:
            return error(409, str(e))
        except ValueError as e:
            return error(400, str(e))
        except Exception as e:
            return unexpected(e)

    @app.get("/health")
    def health() -> dict:
        return {"status": "ok"}

    @app.get("/maps")
    def maps() -> list[dict]:
        return [store.get(n).summary() for n in store.names()]

    @app.post("/maps/{name}/query")
    def query(name: str, body: QueryBody = Body(...)) -> Any:
        return call(name, lambda s: answer_query(s, body.text, body.top))

    @app.get("/maps/{name}/objects")
    def objects(name: str) -> Any:
        return call(name, lambda s: {"map": s.name, "version": s.version, "objects": graph_objects(s)})

    @app.get("/maps/{name}/relations")
    def relations(name: str) -> Any:
        return call(name, lambda s: {"map": s.name, "version": s.version, "relations": graph_relations(s)})

    @app.get("/maps/{name}/mesh.ply")
    def mesh(name: str) -> Any:
        def ply(s: MapSnapshot) -> Response:
            return Response(
                mesh_cache.get(s),
                media_type="application/octet-stream",
                headers={"Content-Disposition": f'attachment; filename="{s.name}.ply"', "X-Map-Version": str(s.version)},
            )

        return call(name, ply)

    @app.post("/maps/{name}/graph", status_code=202)
    def graph(name: str) -> Any:
        if graphs is None:
            return error(409, "this service does not rebuild scene graphs")
        return call(name, lambda s: {"map": s.name, "status": graphs.request(s.name)})

    return app


class _MeshCache:
    """The PLY bytes of the latest snapshot of each map (rebuilt when its version changes)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._bytes: dict[str, tuple[int, bytes]] = {}

    def get(self, snap: MapSnapshot) -> bytes:
        with self._lock:
            hit = self._bytes.get(snap.name)
            if hit is not None and hit[0] == snap.version:
                return hit[1]
        data = mesh_ply_bytes(snap)
        with self._lock:
            self._bytes[snap.name] = (snap.version, data)
        return data


@dataclass
class ServerHandle:
    """A running uvicorn server (in a thread, or the caller's own with :meth:`run`)."""

    server: Any
    thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        """The bound port (useful with port 0)."""
        return int(self.server.servers[0].sockets[0].getsockname()[1])

    @property
    def url(self) -> str:
        return f"http://{self.server.config.host}:{self.port}"

    def stop(self, timeout: float = 10.0) -> None:
        self.server.should_exit = True
        if self.thread is not None:
            self.thread.join(timeout)


def make_server(app: "FastAPI", host: str = "127.0.0.1", port: int = 8000) -> Any:
    """A uvicorn server for ``app`` (warnings only in its log)."""
    import uvicorn

    return uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False))


def start_server(app: "FastAPI", host: str = "127.0.0.1", port: int = 0, timeout_s: float = 30.0) -> ServerHandle:
    """Run ``app`` in a background thread; returns once it accepts connections.

    Raises:
        RuntimeError: it did not start within ``timeout_s`` (e.g. the port is taken).
    """
    server = make_server(app, host, port)
    thread = threading.Thread(target=server.run, name="semmap-http", daemon=True)
    thread.start()
    t0 = time.perf_counter()
    while not server.started:
        if not thread.is_alive() or time.perf_counter() - t0 > timeout_s:
            server.should_exit = True
            raise RuntimeError(f"the HTTP server did not start on {host}:{port}")
        time.sleep(0.02)
    return ServerHandle(server, thread)


def _version() -> str:
    from semmap.pipeline import _version as v

    return v()
