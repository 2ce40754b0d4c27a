"""`semmap batch` on a real local Ray instance (no mock) with tiny rendered scenes.

One Ray instance for the module (2 CPUs). Scenes are a 6-frame 160x120 render of a
generated room, so each task is dominated by its worker's start-up (a few seconds).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import open3d as o3d
import pytest
import yaml

from semmap.batch import BatchConfig, load_manifest, option_groups, run_batch
from semmap.cli import main
from sensors.scenes import make_room, orbit_trajectory
from sensors.trajectory_io import Trajectory, write_tum

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module")
def room(tmp_path_factory) -> dict[str, Path]:
    """A generated room mesh, the first 6 poses of a dense orbit (1.5 deg apart, TUM) and their rendered folder sequence."""
    root = tmp_path_factory.mktemp("batch_room")
    scene = make_room(seed=5)
    mesh = root / "room.ply"
    o3d.io.write_triangle_mesh(str(mesh), scene.mesh)
    orbit = orbit_trajectory(scene, 240)
    traj = write_tum(root / "orbit.tum", Trajectory(orbit.timestamps[:6], orbit.T_world_cam[:6]))
    seq = root / "seq"
    assert main(["render", str(mesh), "--traj", str(traj), "--out", str(seq), "--width", "160", "--height", "120",
                 "--noise", "none"]) == 0
    return {"mesh": mesh, "traj": traj, "seq": seq, "root": root}


@pytest.fixture(scope="module")
def ray_instance():
    """One local Ray instance for the module."""
    import logging

    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=80 * 2**20, log_to_driver=False,
             logging_level=logging.WARNING)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


def write_manifest(path: Path, doc: dict) -> Path:
    path.write_text(yaml.safe_dump(doc))
    return path


# ---------------------------------------------------------------------- the manifest (no Ray)
def test_manifest_keys_are_the_map_options_by_config_name(tmp_path, room):
    opts = option_groups()
    from semmap.commands.map import map_config
    from semmap.pipeline import MapConfig

    # every `semmap map` option the batch does not set itself is a manifest key
    # (the manifest is itself the config file: --config / --dump-config are not keys)
    settable = set(opts.map_actions) - {"source", "out", "no_progress", "config", "dump_config"}
    assert set(opts.map_keys.values()) == settable
    assert {"voxel_size_m", "depth_max_m", "stride", "max_frames", "device", "encoder", "poses"} <= set(opts.map_keys)
    m = load_manifest(write_manifest(tmp_path / "m.yaml", {
        "defaults": {"voxel_size_m": 0.05, "trunc_voxels": 3, "recon": {"samples": 1000}},
        "scenes": [{"name": "a", "source": str(room["seq"]), "stride": 2, "recon": {"cull": True}},
                   {"name": "b", "source": str(room["seq"]), "voxel_size_m": 0.03, "graph": False}],
    }))
    a, b = m.scenes
    cfg = map_config(a.map_namespace(tmp_path / "x"))
    assert (cfg.voxel_size_m, cfg.trunc_voxels, cfg.stride, cfg.progress) == (0.05, 3.0, 2, False)
    assert cfg.depth_max_m == MapConfig.depth_max_m  # not given: the `semmap map` default
    assert a.groups["recon"] == {"samples": 1000, "cull": True} and a.groups["graph"] == {"device": "cpu"}
    assert b.groups["graph"] is None and b.map_options["voxel_size_m"] == 0.03
    assert a.settings_hash() != b.settings_hash()

    def error(scene: dict, defaults: dict | None = None) -> str:
        doc = {"defaults": defaults or {}, "scenes": [{"name": "s1", "source": "x", **scene}]}
        with pytest.raises(ValueError) as e:
            load_manifest(write_manifest(tmp_path / "bad.yaml", doc))
        return str(e.value)

    msg = error({"voxel_size": 0.02})
    assert "scene 's1'" in msg and "'voxel_size'" in msg and "voxel_size_m" in msg
    assert "'encodr'" in error({}, {"encodr": "lite"})
    assert "poses" in error({"poses": "guess"}) and "estimate" in error({"poses": "guess"})
    assert "recon" in error({"recon": {"cul": True}}) and "cull" in error({"recon": {"cul": True}})
    assert "not a valid float" in error({"voxel_size_m": "fine"})
    assert "annotations need" in error({"annotations": "objects.json"})
    with pytest.raises(ValueError, match="duplicate name"):
        load_manifest(write_manifest(tmp_path / "dup.yaml", {"scenes": [{"name": "a", "source": "x"}] * 2}))


# ---------------------------------------------------------------------- on Ray
def _blocks(npz: Path) -> dict[str, np.ndarray]:
    """The arrays of a VoxelBlockGrid archive with its blocks sorted by block coordinate."""
    with np.load(npz) as z:
        order = np.lexsort(z["key"].T[::-1])
        return {k: (z[k][order] if z[k].ndim and len(z[k]) == len(order) else z[k]) for k in z.files}


def _without_timings(doc):
    """map.json without what naturally differs between runs: timings (``timings_s``, ``*seconds``)."""
    if isinstance(doc, dict):
        return {k: _without_timings(v) for k, v in doc.items() if k != "timings_s" and not k.endswith("seconds")}
    return [_without_timings(v) for v in doc] if isinstance(doc, list) else doc


def _attempt_pids(out: Path, name: str) -> list[int]:
    f = out / "logs" / f"{name}.attempts"
    if not f.is_file():
        return []
    return [json.loads(line)["pid"] for line in f.read_text().splitlines() if line.strip()]


def test_batch_on_ray_retries_killed_workers_and_matches_the_commands(tmp_path, room, ray_instance):
    out = tmp_path / "out"
    seq = str(room["seq"])
    manifest = write_manifest(tmp_path / "scenes.yaml", {
        "defaults": {"voxel_size_m": 0.04, "depth_max_m": 6.0, "graph": False},
        "scenes": [
            {"name": "full", "source": seq, "poses": "estimate", "gt_trajectory": str(room["traj"]),
             "traj": {"max_time_diff": 0.001}, "graph": True},
            {"name": "victim", "source": seq, "gt_mesh": str(room["mesh"]), "gt_trajectory": str(room["traj"]),
             "recon": {"cull": True, "samples": 5000}},
            {"name": "doomed", "source": seq, "stride": 2},
            {"name": "missing", "source": f"folder:{room['root'] / 'no_such_folder'}"},
        ],
    })
    result: dict = {}
    runner = threading.Thread(target=lambda: result.update(s=run_batch(
        manifest, out, BatchConfig(max_retries=1, progress=False))))
    runner.start()
    kills = {"victim": 1, "doomed": 2}  # victim: killed once, retried, ok; doomed: every attempt killed
    killed: dict[str, set[int]] = {k: set() for k in kills}
    deadline = time.monotonic() + 90
    while runner.is_alive() and time.monotonic() < deadline:
        for name, n in kills.items():
            for pid in _attempt_pids(out, name)[:n]:
                if pid not in killed[name]:
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                    killed[name].add(pid)
        time.sleep(0.05)
    runner.join(timeout=5)
    assert not runner.is_alive(), "batch did not finish"
    summary = result["s"]
    doc = json.loads((out / "batch.json").read_text())
    rec = {r["name"]: r for r in doc["scenes"]}
    assert summary.counts == {"ok": 2, "failed": 2, "skipped": 0} == doc["counts"]
    assert [r["name"] for r in doc["scenes"]] == ["full", "victim", "doomed", "missing"]

    # a killed worker: Ray ran the scene again and it finished
    assert rec["victim"]["status"] == "ok" and rec["victim"]["attempts"] == 2, rec["victim"]
    # every step of the scene with poses estimated: map, graph, trajectory against the rendering poses
    full = rec["full"]
    assert full["status"] == "ok" and full["metrics"]["frames_integrated"] == 6, full
    assert full["metrics"]["traj_ate_rmse_m"] < 0.02 and full["metrics"]["traj_matched"] == 6
    assert full["metrics"]["graph_objects"] >= 1 and (out / "full" / "scene_graph.json").is_file()
    assert (out / "full" / "traj_metrics.json").is_file() and "recon_accuracy_m" not in full["metrics"]
    # killed on every attempt (1 + max_retries): failed, saying so
    assert rec["doomed"]["status"] == "failed" and "died" in rec["doomed"]["error"], rec["doomed"]
    assert rec["doomed"]["attempts"] == 2
    # a missing folder fails alone, with a message naming it
    assert rec["missing"]["status"] == "failed" and "no_such_folder" in rec["missing"]["error"]
    assert "does not exist" in rec["missing"]["error"] and rec["missing"]["attempts"] == 1
    for name in ("full", "victim"):
        assert 100 < rec[name]["peak_rss_mb"] < 4000 and rec[name]["timings_s"]["map"] > 0
    assert any("no poses were estimated" in n for n in rec["victim"]["notes"])

    # the (retried) map directory is what `semmap map` writes with the same options
    ref = tmp_path / "ref"
    assert main(["map", seq, "--out", str(ref), "--voxel-size", "0.04", "--depth-max", "6", "--no-progress"]) == 0
    for f in ("tsdf.json", "trajectory.tum"):
        assert (out / "victim" / f).read_bytes() == (ref / f).read_bytes(), f
    # tsdf.npz and mesh.ply: the same blocks and vertices, in an order that differs from run to run
    # (Open3D's hash map), in `semmap map` too
    grid_a, grid_b = (_blocks(d / "tsdf.npz") for d in (out / "victim", ref))
    assert grid_a.keys() == grid_b.keys() and all(np.array_equal(grid_a[k], grid_b[k]) for k in grid_a)
    mesh_a, mesh_b = (o3d.io.read_triangle_mesh(str(d / "mesh.ply")) for d in (out / "victim", ref))
    va, vb = (np.asarray(m.vertices) for m in (mesh_a, mesh_b))
    assert va.shape == vb.shape and np.array_equal(np.unique(va, axis=0), np.unique(vb, axis=0))
    meta_a, meta_b = (json.loads((d / "map.json").read_text()) for d in (out / "victim", ref))
    assert meta_a.pop("batch")["settings_hash"] == rec["victim"]["settings_hash"]
    assert _without_timings(meta_a) == _without_timings(meta_b)
    # ... and its evaluation is what `semmap eval recon` gives (exactly: same settings, same surface)
    assert main(["eval", "recon", str(ref), str(room["mesh"]), "--cull", "--samples", "5000"]) == 0
    cli = json.loads((ref / "recon_metrics.json").read_text())
    assert rec["victim"]["metrics"]["recon_accuracy_m"] == cli["accuracy_m"] < 0.02
    assert rec["victim"]["metrics"]["recon_completion_m"] == cli["completion_m"]

    rows = (out / "batch.csv").read_text().splitlines()
    assert rows[0].startswith("name,status,attempts") and len(rows) == 5
    assert (out / "batch.png").read_bytes()[:4] == b"\x89PNG"


def test_ctrl_c_writes_what_finished_and_resume_runs_only_the_rest(tmp_path, room, ray_instance):
    out = tmp_path / "out"
    scenes = [{"name": f"s{i}", "source": str(room["seq"]), "max_frames": 4 + i} for i in range(3)]
    manifest = write_manifest(tmp_path / "m.yaml", {"defaults": {"voxel_size_m": 0.06, "graph": False},
                                                     "scenes": scenes})
    # 2 CPUs per scene on a 2-CPU instance: one scene at a time
    cmd = [sys.executable, "-m", "semmap", "batch", str(manifest), "--out", str(out), "--address", ray_instance,
           "--cpus-per-scene", "2", "--no-progress"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    first = out / "s0" / "batch_scene.json"
    deadline = time.monotonic() + 60
    while not first.is_file() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert first.is_file(), "first scene did not finish"
    proc.send_signal(signal.SIGINT)
    output, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130, output
    doc = json.loads((out / "batch.json").read_text())
    assert doc["interrupted"] and [r["name"] for r in doc["scenes"]] == ["s0"] and doc["scenes"][0]["status"] == "ok"
    assert set(doc["not_run"]) == {"s1", "s2"}
    assert not (out / "s2" / "map.json").exists()  # nothing half-done left behind
    s0_mtime = (out / "s0" / "map.json").stat().st_mtime_ns

    summary = run_batch(manifest, out, BatchConfig(resume=True, progress=False))
    assert summary.counts == {"ok": 2, "failed": 0, "skipped": 1}
    doc = json.loads((out / "batch.json").read_text())
    status = {r["name"]: r["status"] for r in doc["scenes"]}
    assert status == {"s0": "skipped", "s1": "ok", "s2": "ok"} and not doc["interrupted"]
    assert (out / "s0" / "map.json").stat().st_mtime_ns == s0_mtime and len(_attempt_pids(out, "s0")) == 1
    assert doc["scenes"][0]["metrics"]["frames_integrated"] == 4  # the earlier run's record
    assert [doc["scenes"][i]["metrics"]["frames_integrated"] for i in (1, 2)] == [5, 6]

    # a changed setting is a different scene: resume runs it again
    changed = load_manifest(write_manifest(tmp_path / "m2.yaml", {
        "defaults": {"voxel_size_m": 0.05, "graph": False}, "scenes": scenes[:1]}))
    from semmap.batch import finished_record

    assert finished_record(load_manifest(manifest).scenes[0], out) is not None
    assert finished_record(changed.scenes[0], out) is None


def test_a_scene_that_wrote_its_record_before_ctrl_c_counts_as_finished(tmp_path, room, monkeypatch):
    """Ctrl-C can reach the driver after a scene wrote its record but before its result
    arrived (the race CI met on Ray); the record on disk is the result."""
    import semmap.batch as batch

    scenes = [{"name": f"s{i}", "source": str(room["seq"]), "max_frames": 3} for i in range(2)]
    manifest = write_manifest(tmp_path / "m.yaml", {"defaults": {"voxel_size_m": 0.06, "graph": False},
                                                     "scenes": scenes})
    real = batch.run_scene

    def finishes_then_interrupted(scene, out_root, *a, **k):
        real(scene, out_root, *a, **k)
        raise KeyboardInterrupt  # the record is written; its return value is lost

    out = tmp_path / "out"
    # a stale record of an earlier run must not count
    (out / "s1").mkdir(parents=True)
    stale = {"name": "s1", "status": "ok", "settings_hash": load_manifest(manifest).scenes[1].settings_hash()}
    (out / "s1" / batch.RECORD_FILE).write_text(json.dumps(stale))
    os.utime(out / "s1" / batch.RECORD_FILE, (1e9, 1e9))
    monkeypatch.setattr(batch, "run_scene", finishes_then_interrupted)
    summary = run_batch(manifest, out, BatchConfig(serial=True, progress=False))
    assert summary.interrupted and summary.not_run == ["s1"]
    doc = json.loads((out / "batch.json").read_text())
    assert [(r["name"], r["status"]) for r in doc["scenes"]] == [("s0", "ok")]
    assert doc["scenes"][0]["metrics"]["frames_integrated"] == 3
