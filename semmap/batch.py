"""``semmap batch``: map and evaluate a list of scenes, one Ray task per scene.

A manifest (YAML or JSON) lists the scenes; ``defaults`` apply to every scene::

    defaults: {voxel_size_m: 0.02, encoder: lite, recon: {cull: true}}
    scenes:
      - {name: kitchen, source: 7scenes:/data/redkitchen, gt_trajectory: /data/kitchen.tum,
         annotations: /data/kitchen_objects.json, poses: estimate}
      - {name: office0, source: replica:/data/office0, gt_mesh: /data/office0_mesh.ply}

Scene keys (:data:`SCENE_KEYS`): ``name`` (the output folder), ``source`` (a ``semmap map``
source spec), ``gt_mesh`` / ``gt_trajectory`` / ``annotations`` (ground truth; each turns
on its evaluation) and every ``semmap map`` option by its config name: the
:class:`~semmap.pipeline.MapConfig` fields (``voxel_size_m``, ``depth_max_m``, ``stride``,
``max_frames``, ``device``, ...) and the stage options by their ``semmap map`` argument
names (``encoder``, ``poses``, ``semantic_voxel_size``, ...). Nested mappings give the
options of the later steps by their argument names: ``graph`` (``semmap graph``; ``false``
turns it off), ``recon`` (``semmap eval recon``), ``traj`` (``semmap eval traj``),
``queries`` (``semmap eval queries``). The accepted names are read from those commands'
parsers (:func:`option_groups`), so a new option needs no edit here; an unknown key is an
error naming the key and the scene.

Each scene task (:func:`run_scene`) makes the same library calls as the commands, in
order: ``semmap map`` (``build_map`` / ``save_map`` with the stages of ``build_stages``)
into ``OUT/<name>/``, ``semmap graph`` into the map directory, then every evaluation the
scene has ground truth for: ``eval recon`` against ``gt_mesh``, ``eval traj`` against
``gt_trajectory`` when the tracking stage estimated poses, ``eval queries`` against
``annotations``. The map files are those ``semmap map --no-progress`` writes for the same
settings; map.json differs only in its timings and a ``batch`` entry (the settings hash
that ``--resume`` compares). ``OUT/<name>/batch_scene.json`` (written last) holds the
scene's record; ``OUT/logs/<name>.log`` its output and ``OUT/logs/<name>.attempts`` one
line per attempt (process id, host, start time).

Records (:class:`SceneRecord`) stream into ``OUT/batch.jsonl`` as scenes finish, so the
driver keeps no results in memory; at the end (also after Ctrl-C) they become
``OUT/batch.json``, ``OUT/batch.csv`` and ``OUT/batch.png`` (:func:`write_reports`).

Faults: a scene with bad input fails alone with its message; a worker process that dies
(killed, out of memory) is retried by Ray ``max_retries`` times, then recorded as
failed; ``resume`` skips scenes whose map and record carry the same settings hash;
Ctrl-C cancels the running tasks and writes the reports of what finished.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import re
import socket
import sys
import threading
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from functools import lru_cache
from pathlib import Path
from typing import Any

from semmap.config_args import coerce_option as _coerce
from semmap.config_args import unknown_key_error as _unknown_key

SCENE_KEYS = ("name", "source", "gt_mesh", "gt_trajectory", "annotations")
"""Scene keys besides the option groups; ``name`` and ``source`` are required."""
STATUSES = ("ok", "failed", "skipped")
RECORD_FILE = "batch_scene.json"
LOG_DIR = "logs"
MAP_EXCLUDED = ("source", "out", "no_progress", "config", "dump_config")
"""``semmap map`` arguments a manifest does not set: the scene gives the source, the batch
the output folder, and tasks show no progress bar (``progress`` is False in map.json); the
manifest is itself the config file."""
GROUP_EXCLUDED = {
    "graph": ("map", "out"),
    "recon": ("recon", "gt", "out"),
    "traj": ("estimate", "reference", "out"),
    "queries": ("map", "annotations", "json", "out", "no_files"),
}
"""Per option group: the arguments the batch fills in itself (inputs and outputs)."""
GROUP_COMMANDS = {"graph": ("graph",), "recon": ("eval", "recon"), "traj": ("eval", "traj"), "queries": ("eval", "queries")}
"""Option group -> the ``semmap`` command whose parser defines its options."""
INHERIT_DEVICE = ("graph", "queries")
"""Groups whose ``device`` defaults to the scene's ``device`` (one device per scene)."""
EXPECTED_ERRORS = (FileNotFoundError, ValueError, KeyError, RuntimeError, OSError)
"""Errors that are bad input: recorded with their message only (no traceback)."""


# ---------------------------------------------------------------------- options from the commands' parsers
def _command_parser(path: tuple[str, ...]) -> argparse.ArgumentParser:
    """The parser of ``semmap <path...>`` exactly as ``semmap.cli`` builds it."""
    from semmap.cli import build_parser

    parser = build_parser()
    for name in path:
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        parser = sub.choices[name]
    return parser


def _optionals(parser: argparse.ArgumentParser, excluded: tuple[str, ...]) -> dict[str, argparse.Action]:
    """dest -> action of a parser's arguments, without help and ``excluded``."""
    return {
        a.dest: a
        for a in parser._actions
        if not isinstance(a, (argparse._HelpAction, argparse._SubParsersAction)) and a.dest not in excluded
    }


@dataclass(frozen=True)
class OptionGroups:
    """What a manifest may set, derived from the command parsers.

    Attributes:
        map_actions: ``semmap map`` dest -> action (all of them, for defaults).
        map_keys: manifest key -> ``semmap map`` dest: MapConfig fields by their field
            name, the other (stage) options by their dest.
        groups: option group ("graph", "recon", ...) -> dest -> action.
    """

    map_actions: dict[str, argparse.Action]
    map_keys: dict[str, str]
    groups: dict[str, dict[str, argparse.Action]]


@lru_cache(maxsize=1)
def option_groups() -> OptionGroups:
    """The manifest's option names, read from ``semmap map`` (with its stage options), the
    :class:`~semmap.pipeline.MapConfig` fields and the graph / eval parsers.

    A MapConfig field maps to the ``semmap map`` argument of the same name, without its
    ``_m`` unit suffix (``voxel_size_m`` -> ``--voxel-size``); each scene checks the
    correspondence against ``semmap.commands.map.map_config``. Fields ``semmap map`` has no
    option for (nested configs) are not manifest keys: they keep their defaults, as in
    ``semmap map``.
    """
    from semmap.pipeline import MapConfig

    map_actions = _optionals(_command_parser(("map",)), ())
    settable = {d: a for d, a in map_actions.items() if d not in MAP_EXCLUDED}
    keys: dict[str, str] = {}
    for f in fields(MapConfig):
        if f.name == "progress":
            continue
        dest = next((d for d in (f.name, f.name.removesuffix("_m")) if d in settable), None)
        if dest is not None:  # a field `semmap map` cannot set keeps its default here too
            keys[f.name] = dest
    taken = set(keys.values())
    keys.update({d: d for d in settable if d not in taken})
    groups = {g: _optionals(_command_parser(cmd), GROUP_EXCLUDED[g]) for g, cmd in GROUP_COMMANDS.items()}
    return OptionGroups(map_actions, keys, groups)


# ---------------------------------------------------------------------- the manifest
@dataclass
class SceneSpec:
    """One scene of a manifest, every option resolved (defaults filled in).

    Attributes:
        name: output folder name under the batch's output directory.
        source: ``semmap map`` source spec (a path every node can read).
        map_options: manifest key -> value of every ``semmap map`` option (config names).
        gt_mesh, gt_trajectory, annotations: ground-truth files, or None.
        groups: option group -> {dest: value} of the later steps; ``graph`` is None when off.
    """

    name: str
    source: str
    map_options: dict[str, Any]
    gt_mesh: str | None = None
    gt_trajectory: str | None = None
    annotations: str | None = None
    groups: dict[str, dict[str, Any] | None] = field(default_factory=dict)

    def settings_hash(self) -> str:
        """sha256 (16 hex digits) of everything that decides the scene's outputs."""
        doc = json.dumps(asdict(self), sort_keys=True, default=str)
        return hashlib.sha256(doc.encode()).hexdigest()[:16]

    def map_namespace(self, out_dir: Path) -> argparse.Namespace:
        """The parsed ``semmap map`` arguments of this scene (writing to ``out_dir``)."""
        opts = option_groups()
        ns = argparse.Namespace(**{d: a.default for d, a in opts.map_actions.items()})
        ns.source, ns.out, ns.no_progress = self.source, out_dir, True
        for key, value in self.map_options.items():
            setattr(ns, opts.map_keys[key], value)
        return ns

    def group_namespace(self, group: str, **inputs: Any) -> argparse.Namespace:
        """The parsed arguments of a later step (``inputs``: its positionals and ``out``)."""
        actions = option_groups().groups[group]
        values = {d: a.default for d, a in actions.items()}
        values.update(self.groups.get(group) or {})
        return argparse.Namespace(**values, **inputs)


@dataclass
class Manifest:
    """The scenes of a manifest file."""

    path: Path
    scenes: list[SceneSpec]


_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def _resolve_scene(raw: dict, defaults: dict, where: str) -> SceneSpec:
    opts = option_groups()
    merged: dict[str, Any] = {}
    for src in (defaults, raw):
        for key, value in src.items():
            if key in opts.groups and isinstance(value, dict) and isinstance(merged.get(key), dict):
                merged[key] = {**merged[key], **value}
            else:
                merged[key] = value
    known = [*SCENE_KEYS, *opts.map_keys, *opts.groups]
    for key in merged:
        if key not in known:
            raise _unknown_key(key, known, where)
    for key in ("name", "source"):
        if not isinstance(merged.get(key), str) or not merged[key]:
            raise ValueError(f"{where}: needs a {key!r} (a string)")
    name = merged["name"]
    if not _NAME_RE.match(name):
        raise ValueError(f"{where}: name {name!r} must be a folder name (letters, digits, . _ -)")
    map_options = {}
    for key, dest in opts.map_keys.items():
        action = opts.map_actions[dest]
        value = _coerce(action, merged[key], f"{where}: {key}") if key in merged else action.default
        map_options[key] = value
    groups: dict[str, dict[str, Any] | None] = {}
    for g, actions in opts.groups.items():
        value = merged.get(g, {})
        if g == "graph" and isinstance(value, bool):
            value = {} if value else None
        if value is None:
            groups[g] = None
            continue
        if not isinstance(value, dict):
            raise ValueError(f"{where}: {g} must be a mapping of `semmap {' '.join(GROUP_COMMANDS[g])}` options")
        resolved = {}
        for key, v in value.items():
            if key not in actions:
                raise _unknown_key(key, list(actions), f"{where}: {g}")
            resolved[key] = _coerce(actions[key], v, f"{where}: {g}.{key}")
        if g in INHERIT_DEVICE and "device" in actions and "device" not in resolved:
            resolved["device"] = map_options["device"]
        groups[g] = resolved
    gt = {k: merged.get(k) for k in ("gt_mesh", "gt_trajectory", "annotations")}
    for k, v in gt.items():
        if v is not None and not isinstance(v, str):
            raise ValueError(f"{where}: {k} must be a path (a string), got {v!r}")
    if gt["annotations"] and not map_options["encoder"]:
        raise ValueError(f"{where}: annotations need a semantic map: give an encoder (e.g. encoder: lite)")
    return SceneSpec(name, merged["source"], map_options, groups=groups, **gt)


def load_manifest(path: Path | str) -> Manifest:
    """Read and check a manifest (YAML or JSON; see the module docstring).

    Raises:
        FileNotFoundError: no such file.
        ValueError: not YAML/JSON, no scenes, a duplicate or bad name, an unknown key or a
            bad value (the message names the key and the scene).
    """
    from sensors.io import read_yaml

    path = Path(path)
    doc = read_yaml(path, "manifest")
    if not isinstance(doc, dict) or not isinstance(doc.get("scenes"), list) or not doc["scenes"]:
        raise ValueError(f"{path}: needs a non-empty 'scenes' list")
    extra = set(doc) - {"defaults", "scenes"}
    if extra:
        raise ValueError(f"{path}: unknown top-level key(s) {sorted(extra)}; a manifest has 'defaults' and 'scenes'")
    defaults = doc.get("defaults") or {}
    if not isinstance(defaults, dict) or {"name", "source"} & set(defaults):
        raise ValueError(f"{path}: 'defaults' must be a mapping of options (not name or source)")
    scenes, seen = [], set()
    for i, raw in enumerate(doc["scenes"]):
        label = raw.get("name") if isinstance(raw, dict) else None
        where = f"{path}: scene {label!r}" if label else f"{path}: scenes[{i}]"
        if not isinstance(raw, dict):
            raise ValueError(f"{where}: must be a mapping")
        scene = _resolve_scene(raw, defaults, where)
        if scene.name in seen:
            raise ValueError(f"{where}: duplicate name {scene.name!r}")
        seen.add(scene.name)
        scenes.append(scene)
    return Manifest(path, scenes)


# ---------------------------------------------------------------------- one scene
@dataclass
class SceneRecord:
    """The outcome of one scene (a row of batch.json / batch.csv).

    Attributes:
        name: the scene.
        status: "ok", "failed" or "skipped" (resumed: output with the same settings existed).
        error: the message, for a failed scene.
        metrics: flat name -> number (distances in metres, ratios in [0, 1]).
        timings_s: step -> seconds (map, save, graph, recon, traj, queries, total).
        peak_rss_mb: peak resident memory of the process that ran the scene, MiB.
        attempts: how many times a worker started it (> 1: Ray retried a dead worker).
        node: host name of the node that ran it.
        settings_hash: :meth:`SceneSpec.settings_hash`.
        output: the scene's map directory.
        notes: what was left out and why (e.g. no trajectory evaluation without tracking).
    """

    name: str
    status: str
    error: str | None = None
    metrics: dict[str, float | int | None] = field(default_factory=dict)
    timings_s: dict[str, float] = field(default_factory=dict)
    peak_rss_mb: float | None = None
    attempts: int = 1
    node: str | None = None
    settings_hash: str = ""
    output: str = ""
    notes: list[str] = field(default_factory=list)


def _current_rss_bytes() -> int:
    try:
        import psutil

        return int(psutil.Process().memory_info().rss)
    except ImportError:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class PeakRSS:
    """Peak resident memory of this process while the block runs, sampled every ``interval_s``.

    ``fresh_process=True`` (a worker that runs one scene and exits) also takes the OS's own
    peak (``ru_maxrss``), which no sample can miss.
    """

    def __init__(self, interval_s: float = 0.05, fresh_process: bool = False) -> None:
        self.interval_s = interval_s
        self.fresh_process = fresh_process
        self.peak_bytes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.peak_bytes = max(self.peak_bytes, _current_rss_bytes())

    def __enter__(self) -> PeakRSS:
        self.peak_bytes = _current_rss_bytes()
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()
        self.peak_bytes = max(self.peak_bytes, _current_rss_bytes())
        if self.fresh_process:
            import resource

            scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux
            self.peak_bytes = max(self.peak_bytes, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale)

    @property
    def peak_mb(self) -> float:
        return self.peak_bytes / 2**20


@contextmanager
def _output_to(log_path: Path) -> Iterator[None]:
    """Send this process's stdout and stderr (Python and C++ writes, file descriptors 1 and 2) to ``log_path``."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    with open(log_path, "a") as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)


def _note_attempt(path: Path) -> int:
    """Append this attempt (pid, host, time) to the scene's attempts file; returns the attempt number."""
    with open(path, "a") as f:
        f.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "start": time.time()}) + "\n")
    with open(path) as f:
        return sum(1 for line in f if line.strip())


def _source_path(spec: str) -> str | None:
    """The file-system path in a source spec ("7scenes:/data/x", "synthetic:/m.ply?traj=..."), if it names one."""
    from sensors import SOURCES

    name, sep, rest = spec.partition(":")
    location = rest if sep and name in SOURCES else spec
    location = location.partition("?")[0]
    return location if ("/" in location or os.sep in location) else None


def check_inputs(scene: SceneSpec) -> None:
    """Fail early, on the node that runs the scene, when a source or ground-truth path is missing.

    Raises FileNotFoundError naming the scene, the path and the node.
    """
    host = socket.gethostname()
    paths = [("source", _source_path(scene.source))]
    paths += [(k, getattr(scene, k)) for k in ("gt_mesh", "gt_trajectory", "annotations")]
    for what, p in paths:
        if p is not None and not os.access(p, os.R_OK):
            raise FileNotFoundError(
                f"scene {scene.name!r}: {what} {p} does not exist or is not readable on node {host} "
                f"(every node must see the same paths, e.g. shared storage)"
            )


def _map_scene(scene: SceneSpec, out: Path, record: SceneRecord) -> dict:
    """``semmap map`` of the scene into ``out``; returns map.json's stage metadata."""
    from semmap.commands.map import map_config
    from semmap.pipeline import build_map, save_map
    from semmap.stages import build_stages
    from sensors import open_source

    args = scene.map_namespace(out)
    cfg = map_config(args)
    for key, dest in option_groups().map_keys.items():
        if hasattr(cfg, key) and getattr(cfg, key) != scene.map_options[key]:
            raise RuntimeError(f"semmap batch: option {key} does not reach MapConfig (through --{dest})")
    stages = build_stages(args)
    t0 = time.perf_counter()
    with open_source(args.source) as source:
        result = build_map(source, cfg, stages)
    if result.stopped_early and result.stopped_early.startswith("interrupted"):
        raise KeyboardInterrupt  # a cancelled scene leaves no (partial) map behind
    record.timings_s["map"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    extra = {"batch": {"scene": scene.name, "settings_hash": record.settings_hash}}
    save_map(result, out, args.source, cfg, stages, extra_metadata=extra)
    record.timings_s["save"] = time.perf_counter() - t0
    m = record.metrics
    m["frames_seen"] = result.frames_seen
    m["frames_integrated"] = result.frames_integrated
    m["tsdf_blocks"] = result.tsdf.num_blocks
    if result.stopped_early:
        record.notes.append(f"mapping stopped early: {result.stopped_early}")
    meta = json.loads((out / "map.json").read_text())
    m["mesh_triangles"] = meta["mesh_triangles"]
    return meta.get("stages", {})


def _graph_scene(scene: SceneSpec, out: Path, record: SceneRecord) -> None:
    from scenegraph.build import build_scene_graph
    from scenegraph.report import write_outputs
    from semmap.commands.graph import graph_config

    t0 = time.perf_counter()
    graph = build_scene_graph(out, graph_config(scene.group_namespace("graph", map=out, out=None)))
    write_outputs(graph, out)
    record.timings_s["graph"] = time.perf_counter() - t0
    record.metrics["graph_objects"] = len(graph.objects)
    record.metrics["graph_relations"] = len(graph.relations())


def _recon_scene(scene: SceneSpec, out: Path, record: SceneRecord) -> None:
    from eval.report import write_recon_report
    from semmap.commands.eval import recon_metrics

    t0 = time.perf_counter()
    metrics = recon_metrics(scene.group_namespace("recon", recon=out, gt=Path(scene.gt_mesh), out=None))
    write_recon_report(metrics, out)
    record.timings_s["recon"] = time.perf_counter() - t0
    m = record.metrics
    m["recon_accuracy_m"] = metrics.accuracy_m
    m["recon_completion_m"] = metrics.completion_m
    m["recon_completion_ratio"] = metrics.completion_ratio
    m["recon_chamfer_l1_m"] = metrics.chamfer_l1_m
    for t, f in zip(metrics.thresholds_m, metrics.fscore):
        m[f"recon_fscore_{100 * t:g}cm"] = f


def _traj_scene(scene: SceneSpec, out: Path, record: SceneRecord) -> None:
    from eval.report import write_traj_report
    from eval.traj import evaluate_trajectory

    t0 = time.perf_counter()
    a = scene.group_namespace("traj")
    metrics = evaluate_trajectory(
        out / "trajectory.tum", Path(scene.gt_trajectory), align=a.align, delta=a.delta, max_time_diff=a.max_time_diff
    )
    write_traj_report(metrics, out)
    record.timings_s["traj"] = time.perf_counter() - t0
    record.metrics["traj_ate_rmse_m"] = metrics.ate_m.rmse
    record.metrics["traj_rpe_trans_rmse_m"] = metrics.rpe_trans_m.rmse
    record.metrics["traj_rpe_rot_rmse_deg"] = metrics.rpe_rot_deg.rmse
    record.metrics["traj_matched"] = metrics.num_matched


def _queries_scene(scene: SceneSpec, out: Path, record: SceneRecord) -> None:
    from eval.queries import evaluate_queries
    from eval.report import write_json

    t0 = time.perf_counter()
    a = scene.group_namespace("queries")
    result = evaluate_queries(
        out, Path(scene.annotations), top=a.top, tolerance_m=a.tolerance, margin_m=a.margin, device=a.device
    )
    write_json(result.to_dict(), out / "query_metrics.json")
    record.timings_s["queries"] = time.perf_counter() - t0
    for kind in (None, "plain", "relational"):
        rates = result.rates(kind)
        if not rates["queries"]:
            continue
        prefix = "queries" if kind is None else f"queries_{kind}"
        record.metrics[f"{prefix}_top1"] = rates["top1"]
        record.metrics[f"{prefix}_top{a.top}"] = rates[f"top{a.top}"]


def _map_and_evaluate(scene: SceneSpec, out: Path, record: SceneRecord) -> None:
    """Map, graph and every evaluation the scene has ground truth for (records into ``record``)."""
    check_inputs(scene)
    stages = _map_scene(scene, out, record)
    if scene.groups.get("graph") is not None:
        _graph_scene(scene, out, record)
    if scene.gt_mesh:
        _recon_scene(scene, out, record)
    if scene.gt_trajectory:
        if stages.get("tracking", {}).get("tracked_frames", 0) > 0:
            _traj_scene(scene, out, record)
        else:
            record.notes.append("trajectory not evaluated: no poses were estimated (set poses: estimate)")
    if scene.annotations:
        _queries_scene(scene, out, record)


def _failure_message(e: BaseException, log: Path) -> str:
    if isinstance(e, EXPECTED_ERRORS):
        return str(e.args[0]) if isinstance(e, KeyError) and e.args else str(e)
    return f"{type(e).__name__}: {e} (traceback in {log})"


def run_scene(scene: SceneSpec, out_root: Path | str, fresh_process: bool = False, capture_output: bool = True) -> dict:
    """Map and evaluate one scene into ``out_root/<name>/``; returns its record (as a dict).

    Bad input (a missing path, an unreadable file, a bad option value) gives a "failed"
    record with the message; nothing is raised except KeyboardInterrupt. The output goes
    to ``out_root/logs/<name>.log`` when ``capture_output``. ``fresh_process``: the
    process runs only this scene (a Ray worker with ``max_calls=1``), so its OS peak
    memory is the scene's.
    """
    out_root = Path(out_root)
    out = out_root / scene.name
    logs = out_root / LOG_DIR
    logs.mkdir(parents=True, exist_ok=True)
    log = logs / f"{scene.name}.log"
    record = SceneRecord(scene.name, "ok", settings_hash=scene.settings_hash(), output=str(out))
    record.attempts = _note_attempt(logs / f"{scene.name}.attempts")
    record.node = socket.gethostname()
    t0 = time.perf_counter()
    with PeakRSS(fresh_process=fresh_process) as rss:
        ctx = _output_to(log) if capture_output else _nothing()
        with ctx:
            print(f"# semmap batch: scene {scene.name}, attempt {record.attempts}, pid {os.getpid()}", flush=True)
            try:
                _map_and_evaluate(scene, out, record)
            except KeyboardInterrupt:
                raise
            except Exception as e:  # noqa: BLE001 - every failure becomes the scene's record
                traceback.print_exc()
                record.status, record.error = "failed", _failure_message(e, log)
    record.timings_s["total"] = time.perf_counter() - t0
    record.peak_rss_mb = rss.peak_mb
    if record.status == "ok":
        from eval.report import write_json

        write_json(asdict(record), out / RECORD_FILE)
    return asdict(record)


@contextmanager
def _nothing() -> Iterator[None]:
    yield


def finished_record(scene: SceneSpec, out_root: Path) -> dict | None:
    """The stored record of a scene already done with the same settings (for resume), else None."""
    out = Path(out_root) / scene.name
    h = scene.settings_hash()
    try:
        meta = json.loads((out / "map.json").read_text())
        rec = json.loads((out / RECORD_FILE).read_text())
    except (OSError, ValueError):
        return None
    if meta.get("batch", {}).get("settings_hash") != h or rec.get("settings_hash") != h or rec.get("status") != "ok":
        return None
    return rec


def recorded_since(scene: SceneSpec, out_root: Path, since: float) -> dict | None:
    """The "ok" record a scene wrote at or after ``since`` (seconds, epoch) with its current
    settings, else None: the scene finished in this run even if its result never reached us."""
    path = Path(out_root) / scene.name / RECORD_FILE
    try:
        if path.stat().st_mtime < since:
            return None
        rec = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return rec if rec.get("status") == "ok" and rec.get("settings_hash") == scene.settings_hash() else None


# ---------------------------------------------------------------------- many scenes
@dataclass
class BatchConfig:
    """How ``semmap batch`` runs a manifest."""

    address: str | None = None
    """Ray cluster to join ("auto", "ray://HOST:PORT", "HOST:PORT"); None: start a local
    instance sized to this machine (or use the one this process already started)."""
    cpus_per_scene: float = 1.0
    """CPUs each scene task reserves (Ray also sets its OMP_NUM_THREADS to this)."""
    gpus_per_scene: float = 0.0
    """GPUs each scene task reserves (give ``device: cuda`` in the manifest to use them)."""
    max_retries: int = 2
    """How often Ray restarts a scene whose worker process died (killed, out of memory)."""
    resume: bool = False
    """Skip scenes whose output exists with the same settings."""
    serial: bool = False
    """Run the scenes one after another in this process, without Ray (debugging, reference timings)."""
    progress: bool = True
    """Show a progress bar over the scenes."""
    num_cpus: int | None = None
    """Local instance only: CPUs to give it (default: all of this machine's)."""
    object_store_mb: int = 128
    """Local instance only: object store size, MiB (tasks return only small records)."""

    def __post_init__(self) -> None:
        if self.cpus_per_scene <= 0 and self.gpus_per_scene <= 0:
            raise ValueError("a scene must reserve some CPUs or GPUs (cpus_per_scene > 0 or gpus_per_scene > 0)")
        if self.cpus_per_scene < 0 or self.gpus_per_scene < 0:
            raise ValueError("cpus_per_scene and gpus_per_scene must be >= 0")
        if self.max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {self.max_retries}")


@dataclass
class BatchSummary:
    """What :func:`run_batch` did (the records themselves are in the files)."""

    out_dir: Path
    counts: dict[str, int]
    wall_s: float
    interrupted: bool
    not_run: list[str]
    paths: dict[str, Path]
    cluster: dict[str, Any]


def _init_ray(cfg: BatchConfig) -> dict[str, Any]:
    """Connect to (or start) Ray; returns a description of the cluster."""
    import logging

    import ray

    if not ray.is_initialized():
        if cfg.address:
            ray.init(address=cfg.address, log_to_driver=False, logging_level=logging.WARNING)
        else:
            ray.init(
                num_cpus=cfg.num_cpus,
                include_dashboard=False,
                object_store_memory=cfg.object_store_mb * 2**20,
                log_to_driver=False,
                logging_level=logging.WARNING,
            )
    res = ray.cluster_resources()
    return {
        "address": cfg.address or "local",
        "nodes": len([n for n in ray.nodes() if n.get("Alive")]),
        "cpus": res.get("CPU", 0.0),
        "gpus": res.get("GPU", 0.0),
    }


def _capacity(cfg: BatchConfig) -> int:
    """Scenes the cluster runs at once with these per-scene resources (at least 1)."""
    import ray

    res = ray.cluster_resources()
    bounds = []
    if cfg.cpus_per_scene > 0:
        bounds.append(res.get("CPU", 0.0) / cfg.cpus_per_scene)
    if cfg.gpus_per_scene > 0:
        bounds.append(res.get("GPU", 0.0) / cfg.gpus_per_scene)
    return max(1, int(min(bounds)))


@lru_cache(maxsize=1)
def _remote_run_scene():
    import ray

    # max_calls=1: a fresh worker per scene, so peak memory is the scene's and nothing leaks into the next
    return ray.remote(max_calls=1)(run_scene)


def _crash_record(scene: SceneSpec, out_root: Path, e: BaseException, cfg: BatchConfig) -> dict:
    """The record of a scene whose task raised in Ray (its worker died, usually)."""
    import ray.exceptions as rex

    attempts_file = out_root / LOG_DIR / f"{scene.name}.attempts"
    attempts = sum(1 for line in attempts_file.open() if line.strip()) if attempts_file.is_file() else 0
    if isinstance(e, rex.OutOfMemoryError):
        why = "killed by Ray's memory monitor (the node ran out of memory)"
    elif isinstance(e, (rex.WorkerCrashedError, rex.NodeDiedError, rex.ActorDiedError)) or "died" in str(e).lower():
        why = "its worker process died (killed or out of memory)"
    else:
        why = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
    msg = f"{why}; {attempts} attempt(s), max_retries {cfg.max_retries}"
    rec = SceneRecord(scene.name, "failed", msg, attempts=attempts, settings_hash=scene.settings_hash(),
                      output=str(out_root / scene.name))
    return asdict(rec)


def _status_text(c: dict[str, int], running: int, queued: int) -> dict[str, int]:
    return {"running": running, "queued": queued, "ok": c["ok"], "failed": c["failed"], "skipped": c["skipped"]}


def run_batch(manifest: Manifest | Path | str, out_dir: Path | str, cfg: BatchConfig | None = None) -> BatchSummary:
    """Map and evaluate every scene of ``manifest`` into ``out_dir`` (see the module docstring).

    Returns a :class:`BatchSummary`; raises only for a bad manifest or output folder (before
    any scene runs). Ctrl-C cancels the running scenes and still writes the reports.
    """
    from tqdm import tqdm

    cfg = cfg or BatchConfig()
    if not isinstance(manifest, Manifest):
        manifest = load_manifest(manifest)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / LOG_DIR).mkdir(exist_ok=True)
    jsonl = out_dir / "batch.jsonl"
    jsonl.write_text("")
    t_start, t_wall = time.perf_counter(), time.time()
    counts = dict.fromkeys(STATUSES, 0)
    todo: list[int] = []
    with jsonl.open("a") as sink:

        def finish(rec: dict) -> None:
            counts[rec["status"]] += 1
            sink.write(json.dumps(rec) + "\n")
            sink.flush()

        for i, scene in enumerate(manifest.scenes):
            rec = finished_record(scene, out_dir) if cfg.resume else None
            if rec is not None:
                finish({**rec, "status": "skipped"})
            else:
                todo.append(i)
        for i in todo:
            (out_dir / LOG_DIR / f"{manifest.scenes[i].name}.attempts").unlink(missing_ok=True)
        bar = tqdm(total=len(manifest.scenes), initial=counts["skipped"], desc="scenes", unit="scene",
                   disable=not cfg.progress)
        interrupted, not_run, cluster = False, [], {"address": "serial (this process)"}
        try:
            if cfg.serial:
                not_run = _run_serial(manifest, todo, out_dir, finish, bar, counts)
            else:
                cluster = _init_ray(cfg)
                not_run = _run_on_ray(manifest, todo, out_dir, cfg, finish, bar, counts)
        except KeyboardInterrupt as e:
            interrupted = True
            not_run = list(e.args[0]) if e.args and isinstance(e.args[0], list) else []
            # a scene may have written its record just before Ctrl-C reached this process
            by_name = {s.name: s for s in manifest.scenes}
            for name in list(not_run):
                rec = recorded_since(by_name[name], out_dir, t_wall)
                if rec is not None:
                    finish(rec)
                    not_run.remove(name)
        finally:
            bar.close()
    wall = time.perf_counter() - t_start
    meta = {
        "manifest": str(manifest.path),
        "out": str(out_dir),
        "wall_s": wall,
        "interrupted": interrupted,
        "not_run": not_run,
        "cluster": cluster,
        "settings": {k: v for k, v in asdict(cfg).items() if k != "progress"},
        "counts": counts,
    }
    paths = write_reports(out_dir, meta, [s.name for s in manifest.scenes])
    return BatchSummary(out_dir, counts, wall, interrupted, not_run, paths, cluster)


def _run_serial(manifest: Manifest, todo: list[int], out_dir: Path, finish, bar, counts) -> list[str]:
    for k, i in enumerate(todo):
        try:
            rec = run_scene(manifest.scenes[i], out_dir)
        except KeyboardInterrupt:
            raise KeyboardInterrupt([manifest.scenes[j].name for j in todo[k:]]) from None
        finish(rec)
        bar.update(1)
        bar.set_postfix(_status_text(counts, 0, 0), refresh=False)
    return []


def _run_on_ray(manifest: Manifest, todo: list[int], out_dir: Path, cfg: BatchConfig, finish, bar, counts) -> list[str]:
    """Submit the scenes, at most the cluster's capacity in flight (re-read as nodes come and
    go) plus as many queued (so an autoscaler sees the demand); record each as it finishes."""
    import ray

    task = _remote_run_scene().options(
        num_cpus=cfg.cpus_per_scene, num_gpus=cfg.gpus_per_scene, max_retries=cfg.max_retries, retry_exceptions=False
    )
    pending = list(reversed(todo))
    in_flight: dict[Any, int] = {}
    capacity = _capacity(cfg)
    last_check = time.monotonic()
    try:
        while pending or in_flight:
            if time.monotonic() - last_check > 10.0:
                capacity, last_check = _capacity(cfg), time.monotonic()
            while pending and len(in_flight) < 2 * capacity:
                i = pending.pop()
                in_flight[task.remote(manifest.scenes[i], str(out_dir), True)] = i
            running = min(len(in_flight), capacity)
            bar.set_postfix(_status_text(counts, running, len(in_flight) - running), refresh=True)
            done, _ = ray.wait(list(in_flight), num_returns=1, timeout=1.0)
            for ref in done:
                i = in_flight.pop(ref)
                try:
                    rec = ray.get(ref)
                except (ray.exceptions.RayError, OSError) as e:
                    rec = _crash_record(manifest.scenes[i], out_dir, e, cfg)
                finish(rec)
                bar.update(1)
    except KeyboardInterrupt:
        for ref in in_flight:
            ray.cancel(ref, force=True)
        names = [manifest.scenes[i].name for i in [*in_flight.values(), *reversed(pending)]]
        raise KeyboardInterrupt(names) from None
    return []


# ---------------------------------------------------------------------- reports
CSV_FIRST = ("name", "status", "attempts", "peak_rss_mb", "node")


def read_records(out_dir: Path, order: list[str] | None = None) -> list[dict]:
    """The records of ``out_dir/batch.jsonl`` (the last one per scene), in ``order`` when given."""
    by_name: dict[str, dict] = {}
    with (Path(out_dir) / "batch.jsonl").open() as f:
        for line in f:
            if line.strip():
                rec = json.loads(line)
                by_name[rec["name"]] = rec
    if order is None:
        return list(by_name.values())
    return [by_name[n] for n in order if n in by_name]


def write_reports(out_dir: Path, meta: dict, order: list[str]) -> dict[str, Path]:
    """batch.json (``meta`` + the records), batch.csv (one row per scene) and batch.png; returns their paths."""
    from eval.report import write_json

    out_dir = Path(out_dir)
    records = read_records(out_dir, order)
    paths = {"json": write_json({**meta, "scenes": records}, out_dir / "batch.json")}
    paths["csv"] = _write_csv(records, out_dir / "batch.csv")
    if records:
        paths["png"] = plot_batch(records, out_dir / "batch.png")
    return paths


def _write_csv(records: list[dict], path: Path) -> Path:
    timing_keys = sorted({k for r in records for k in r["timings_s"]})
    metric_keys = sorted({k for r in records for k in r["metrics"]})
    header = [*CSV_FIRST, *(f"time_{k}_s" for k in timing_keys), *metric_keys, "error"]
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        for r in records:
            w.writerow(
                [r.get(k) for k in CSV_FIRST]
                + [r["timings_s"].get(k) for k in timing_keys]
                + [r["metrics"].get(k) for k in metric_keys]
                + [r.get("error") or ""]
            )
    os.replace(tmp, path)
    return path


TIME_STEPS = ("map", "save", "graph", "recon", "traj", "queries")
METRIC_PANELS = (
    # (title, [(metric, label, scale)])
    ("reconstruction (cm)", [("recon_accuracy_m", "accuracy", 100.0), ("recon_completion_m", "completion", 100.0)]),
    ("trajectory (cm)", [("traj_ate_rmse_m", "ATE RMSE", 100.0), ("traj_rpe_trans_rmse_m", "RPE RMSE", 100.0)]),
    ("queries (%)", [("queries_top1", "top-1", 100.0), ("queries_top3", "top-3", 100.0)]),
    ("scene graph", [("graph_objects", "objects", 1.0)]),
)


def plot_batch(records: list[dict], path: Path) -> Path:
    """batch.png: per scene, time by step and peak memory, then each metric group present
    (reconstruction, trajectory, queries, scene graph); failed scenes marked in red."""
    import numpy as np

    from eval.report import _new_figure, _save_figure

    names = [r["name"] for r in records]
    x = np.arange(len(records))
    panels = [(t, [s for s in series if any(r["metrics"].get(s[0]) is not None for r in records)])
              for t, series in METRIC_PANELS]
    panels = [(t, s) for t, s in panels if s]
    rows = 2 + len(panels)
    fig = _new_figure((max(8.0, min(24.0, 0.5 * len(records) + 4)), 2.4 * rows))
    axes = np.atleast_1d(fig.subplots(rows, 1, sharex=True))
    failed = [i for i, r in enumerate(records) if r["status"] == "failed"]
    bottom = np.zeros(len(records))
    for k, step in enumerate(TIME_STEPS):
        v = np.array([r["timings_s"].get(step, 0.0) for r in records])
        if v.any():
            axes[0].bar(x, v, bottom=bottom, color=f"C{k}", label=step)
            bottom += v
    axes[0].set_ylabel("time (s)")
    skipped = sum(r["status"] == "skipped" for r in records)
    axes[0].set_title(
        f"{len(records)} scenes: {sum(r['status'] == 'ok' for r in records)} ok, {len(failed)} failed (red), "
        f"{skipped} skipped" + (" (resumed: times and metrics of their earlier run)" if skipped else ""), fontsize=10)
    axes[0].legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=7)
    rss = np.array([r.get("peak_rss_mb") or 0.0 for r in records])
    axes[1].bar(x, rss, color="0.5")
    axes[1].set_ylabel("peak RSS (MiB)")
    width = 0.8
    for ax, (title, series) in zip(axes[2:], panels):
        w = width / len(series)
        for k, (key, label, scale) in enumerate(series):
            v = np.array([np.nan if r["metrics"].get(key) is None else scale * r["metrics"][key] for r in records])
            ax.bar(x - width / 2 + (k + 0.5) * w, v, w, color=f"C{k}", label=label)
        ax.set_ylabel(title, fontsize=9)
        ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=7)
    for ax in axes:
        ax.grid(axis="y", alpha=0.3)
        for i in failed:
            ax.axvspan(i - 0.5, i + 0.5, color="red", alpha=0.12, lw=0)
    if failed:
        lines = []
        for i in failed[:6]:
            why = (records[i].get("error") or "failed").replace(f"scene {names[i]!r}: ", "")
            lines.append(f"{names[i]}: {why[:120] + '...' if len(why) > 120 else why}")
        more = f"\n... and {len(failed) - 6} more failed (batch.json)" if len(failed) > 6 else ""
        fig.supxlabel("failed: " + "\n".join(lines) + more, fontsize=7, color="darkred", x=0.01, ha="left")
    if len(records) <= 60:
        axes[-1].set_xticks(x, names, rotation=45, ha="right", fontsize=8)
    return _save_figure(fig, Path(path))
