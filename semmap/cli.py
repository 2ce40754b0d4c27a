"""The ``semmap`` command line: thin commands over library functions.

Each command lives in its own module in ``semmap.commands`` with ``register(subparsers)``
(adds its parser and sets ``func``) and an ``ORDER`` for ``--help``. A command parses its
arguments, loads inputs, calls a library function, saves/prints the result and says
where it wrote things.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

import semmap.commands

EPILOG = """examples:
  semmap demo                                    # synthetic room: render, map, evaluate
  semmap map ../shared/data/7scenes-redkitchen --out runs/kitchen --voxel-size 0.02
  semmap eval recon runs/kitchen gt_mesh.ply --cull
  semmap eval traj estimated.tum groundtruth.tum --align se3
  semmap render mesh.ply --traj traj.txt --out runs/rendered
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="semmap",
        description="Open-vocabulary 3D semantic mapping: RGB-D frames in, metric TSDF map, "
        "scene graph and 3D text queries out.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    modules = [
        importlib.import_module(f"semmap.commands.{m.name}") for m in pkgutil.iter_modules(semmap.commands.__path__)
    ]
    for module in sorted(modules, key=lambda m: (getattr(m, "ORDER", 100), m.__name__)):
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
    except (ImportError, OSError) as e:
        return _missing_library_or_raise(e, "semmap")
    try:
        return args.func(args)
    except (ImportError, OSError) as e:
        if isinstance(e, FileNotFoundError):
            return _error(args.command, e)
        return _missing_library_or_raise(e, f"semmap {args.command}")
    except (ValueError, KeyError, RuntimeError) as e:
        return _error(args.command, e)


def _error(command: str, e: Exception) -> int:
    msg = e.args[0] if isinstance(e, KeyError) and e.args else e
    print(f"semmap {command}: error: {msg}", file=sys.stderr)
    return 2


def _missing_library_or_raise(e: BaseException, prog: str) -> int:
    """Print what to install when ``e`` is a missing system library (exit 3); re-raise anything else."""
    from semmap.syslibs import missing_library_message

    msg = missing_library_message(e)
    if msg is None:
        raise e
    print(f"{prog}: error: {msg}", file=sys.stderr)
    return 3


if __name__ == "__main__":
    sys.exit(main())
