"""The map service: maps loaded once, answered over HTTP, optionally grown live.

- ``maps``: :class:`MapSnapshot` (one consistent read-only state of a map), the
  thread-safe :class:`MapStore`, loading a map directory, and :func:`answer_query`
  (the JSON the API returns for a text query);
- ``app``: the FastAPI application (``/health``, ``/maps``, ``/maps/{name}/...``) and
  the uvicorn server handle;
- ``live``: the mapping worker of ``semmap serve --live`` (a pipeline stage that
  publishes snapshots while ``semmap.pipeline.build_map`` runs);
- ``viewer``: the browser viewer (viser), started by ``semmap serve`` when available.

Nothing here is imported by ``semmap`` at start-up; FastAPI, uvicorn, torch and Open3D
are imported where they are used.
"""
