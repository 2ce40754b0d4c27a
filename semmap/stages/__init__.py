"""Optional mapping-loop stages (depth filling, tracking, semantic fusion, ...).

Each module here defines:

- ``ORDER``: position in the loop (lower runs first: depth filling before tracking
  before semantic fusion);
- ``add_arguments(parser)``: its ``semmap map`` options;
- ``from_args(args) -> Stage | None``: the configured stage, or None when not requested.

``semmap map`` discovers them, so a new stage needs no edit elsewhere.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
from types import ModuleType

from semmap.pipeline import Stage


def stage_modules() -> list[ModuleType]:
    """The stage modules of this package, in loop order."""
    mods = [importlib.import_module(f"{__name__}.{m.name}") for m in pkgutil.iter_modules(__path__)]
    return sorted(mods, key=lambda m: (getattr(m, "ORDER", 100), m.__name__))


def add_stage_arguments(parser: argparse.ArgumentParser) -> None:
    for mod in stage_modules():
        mod.add_arguments(parser)


def build_stages(args: argparse.Namespace) -> list[Stage]:
    stages = []
    for mod in stage_modules():
        st = mod.from_args(args)
        if st is not None:
            stages.append(st)
    return stages
