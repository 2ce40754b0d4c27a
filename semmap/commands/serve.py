"""`semmap serve`: keep maps and encoders loaded and answer over HTTP (and in a browser viewer)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from semmap.commands.map import add_map_arguments

ORDER = 30


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "serve",
        help="serve maps over HTTP (JSON API + browser viewer), optionally while mapping live",
        description="Load each map directory once (read-only) and each distinct encoder once, and answer "
        "text queries, scene-graph and mesh requests over an HTTP JSON API (OpenAPI docs at /docs). "
        "With --live SOURCE --out DIR, map the source in the background (the options of `semmap map` "
        "apply) while the API answers against the growing map; the map is saved to DIR when the source "
        "ends or on Ctrl-C, as `semmap map` writes it.",
        epilog="examples:\n  semmap serve runs/kitchen runs/office\n"
        "  semmap serve --live ../shared/data/7scenes-redkitchen --out runs/live --encoder lite --fps 30\n"
        "  curl -s localhost:8000/maps/kitchen/query -d '{\"text\": \"coffee mug\", \"top\": 3}' "
        "-H 'content-type: application/json'",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("maps", nargs="*", type=Path, help="map directories written by `semmap map` (served by their names)")
    p.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000, help="HTTP port of the API (default 8000)")
    p.add_argument("--viewer", action=argparse.BooleanOptionalAction, default=True,
                   help="start the browser viewer too (default on)")
    p.add_argument("--viewer-port", type=int, default=8080, help="port of the browser viewer (default 8080)")
    live = p.add_argument_group("live mapping (--live)")
    live.add_argument("--live", metavar="SOURCE", default=None,
                      help="map this source in the background while serving (dataset, recording or 'realsense')")
    live.add_argument("--out", type=Path, default=None, help="with --live: the map directory to save (atomically)")
    live.add_argument("--fps", type=float, default=None,
                      help="with --live: replay the source at this rate, mapping the newest frame and dropping "
                      "the ones mapping had no time for (a live camera is always read this way)")
    live.add_argument("--publish-interval", type=float, default=3.0,
                      help="with --live: seconds between the snapshots queries see (default 3)")
    live.add_argument("--name", default=None, help="with --live: the live map's name (default: --out's name)")
    add_map_arguments(p)
    p.set_defaults(func=cmd_serve)


def cmd_serve(args: argparse.Namespace) -> int:
    from semmap.serve.app import create_app, make_server
    from semmap.serve.maps import EncoderCache, GraphBuilder, MapStore, load_map_snapshot

    if not args.maps and args.live is None:
        raise ValueError("give one or more map directories, or --live SOURCE --out DIR")
    if (args.live is None) != (args.out is None):
        raise ValueError("--live SOURCE and --out DIR go together")
    if args.fps is not None and args.live is None:
        raise ValueError("--fps applies to --live only")
    names = [d.resolve().name for d in args.maps] + ([args.name or args.out.resolve().name] if args.live else [])
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ValueError(f"two served maps would share the name {dup[0]!r}: serve maps from directories with distinct names")

    encoders = EncoderCache(device=args.device)
    store = MapStore()
    for d in args.maps:
        snap = store.publish(load_map_snapshot(d, encoders))
        print(f"loaded {d} as {snap.name!r}: {snap.frames} frames, encoder {snap.encoder_name}, "
              f"{snap.objects} objects{'' if snap.graph is not None else ' (no scene graph)'}")
    graphs = GraphBuilder(store, encoders, device=args.device)
    mapper = _start_live(args, store, encoders, graphs, names[-1]) if args.live else None
    viewer = _start_viewer(store, args) if args.viewer else None
    server = make_server(create_app(store, graphs), args.host, args.port)
    print(f"serving {len(names)} map(s) at http://{args.host}:{args.port} (API docs: /docs); Ctrl-C stops")
    try:
        server.run()
    except KeyboardInterrupt:  # uvicorn shut down gracefully, then re-raised Ctrl-C
        pass
    finally:
        if viewer is not None:
            viewer.stop()
        if mapper is not None and not mapper.finished.is_set():
            print("stopping the live mapper; saving the map ...", file=sys.stderr)
            mapper.stop()
    return _finish_live(mapper, args) if mapper is not None else 0


def _start_live(args: argparse.Namespace, store, encoders, graphs, name: str):
    from semmap.commands.map import map_config
    from semmap.serve.live import LiveMapper
    from semmap.stages import build_stages
    from sensors import open_source
    from sensors.live import LatestFrameSource

    cfg = map_config(args)
    stages = build_stages(args)
    source = open_source(args.live)
    dropped = None
    if args.fps is not None or _is_live_camera(args.live):
        source = LatestFrameSource(source, fps=args.fps)
        dropped = lambda: source.stats.dropped  # noqa: E731
    mapper = LiveMapper(store, name, source, args.live, cfg, stages, args.out, encoders,
                        interval_s=args.publish_interval, dropped=dropped)
    graphs.directories[name] = mapper.map_directory
    print(f"mapping {args.live} live as {name!r} (snapshots every {args.publish_interval:g} s); "
          f"the map is saved to {args.out}/ when the source ends or on Ctrl-C")
    return mapper.start()


def _is_live_camera(spec: str) -> bool:
    """A RealSense camera (not a recording): frames come at sensor rate whatever we do."""
    return spec.strip().lower() in ("realsense", "realsense:")


def _finish_live(mapper, args: argparse.Namespace) -> int:
    mapper.join()
    if mapper.error:
        print(f"semmap serve: error: live mapping failed: {mapper.error}", file=sys.stderr)
        return 2
    r = mapper.result
    print(f"integrated {r.frames_integrated} of {r.frames_seen} frames read "
          f"({int(mapper.dropped())} dropped by the frame reader); {mapper.published} snapshots published")
    print(f"wrote map to {args.out}/")
    for path in mapper.paths.values():
        print(f"  {path}")
    return 0


def _start_viewer(store, args: argparse.Namespace):
    """The browser viewer (semmap.serve.viewer), or None with a note when it cannot start."""
    try:
        from semmap.serve.viewer import start_viewer
    except Exception as e:
        print(f"note: the browser viewer is not available ({type(e).__name__}: {e}); serving the API only")
        return None
    try:
        handle = start_viewer(store, args.host, args.viewer_port)
    except Exception as e:
        print(f"note: the browser viewer did not start ({type(e).__name__}: {e}); serving the API only")
        return None
    print(f"viewer at http://{args.host}:{getattr(handle, 'port', args.viewer_port)}")
    return handle
