"""Every CLI command runs once, end to end, on small generated or real data."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import open3d as o3d
import pytest

from semmap.cli import main
from sensors.scenes import make_room, orbit_trajectory
from sensors.trajectory_io import read_tum, write_tum


@pytest.fixture(scope="module")
def room_sequence(tmp_path_factory) -> dict[str, Path]:
    """A generated room mesh, an orbit trajectory (TUM) and its rendered folder sequence."""
    root = tmp_path_factory.mktemp("room")
    scene = make_room(seed=3)
    mesh_path = root / "room.ply"
    o3d.io.write_triangle_mesh(str(mesh_path), scene.mesh)
    traj_path = write_tum(root / "orbit.tum", orbit_trajectory(scene, 24))
    seq = root / "seq"
    rc = main(["render", str(mesh_path), "--traj", str(traj_path), "--out", str(seq),
               "--width", "160", "--height", "120", "--noise", "none"])
    assert rc == 0
    return {"mesh": mesh_path, "traj": traj_path, "seq": seq}


def test_help_lists_commands():
    out = subprocess.run([sys.executable, "-m", "semmap", "--help"], capture_output=True, text=True, check=True).stdout
    for cmd in ("map", "eval", "render", "demo"):
        assert cmd in out
    out = subprocess.run([sys.executable, "-m", "semmap", "map", "--help"], capture_output=True, text=True,
                         check=True).stdout
    assert "--voxel-size" in out and "7scenes" in out


def test_render_map_eval_roundtrip(room_sequence, tmp_path, capsys):
    seq = room_sequence["seq"]
    assert (seq / "semmap.json").is_file()
    map_dir = tmp_path / "map"
    assert main(["map", str(seq), "--out", str(map_dir), "--voxel-size", "0.03", "--no-progress",
                 "--depth-max", "6"]) == 0
    out = capsys.readouterr().out
    assert f"wrote map to {map_dir}" in out
    meta = json.loads((map_dir / "map.json").read_text())
    assert meta["frames_integrated"] == 24 and meta["mesh_triangles"] > 1000
    assert meta["camera"]["width"] == 160

    # The integrated poses are the rendered ones: ATE ~ 0.
    assert main(["eval", "traj", str(map_dir / "trajectory.tum"), str(room_sequence["traj"]),
                 "--max-time-diff", "1e-3"]) == 0
    report = json.loads((map_dir / "traj_metrics.json").read_text())
    assert report["ate_m"]["rmse"] < 1e-6

    # Reconstruction against the generating mesh, GT culled to what the cameras saw.
    assert main(["eval", "recon", str(map_dir), str(room_sequence["mesh"]), "--cull", "--samples", "20000"]) == 0
    rec = json.loads((map_dir / "recon_metrics.json").read_text())
    assert rec["accuracy_m"] < 0.015, rec["accuracy_m"]
    assert rec["completion_m"] < 0.02, rec["completion_m"]
    assert rec["protocol"]["culling"]["method"] == "frustum+depth"
    assert (map_dir / "recon_errors.png").stat().st_size > 10_000


def test_map_on_real_7scenes(redkitchen, tmp_path):
    map_dir = tmp_path / "kitchen"
    assert main(["map", f"7scenes:{redkitchen}", "--out", str(map_dir), "--stride", "100", "--voxel-size", "0.04",
                 "--no-progress"]) == 0
    traj = read_tum(map_dir / "trajectory.tum")
    assert len(traj) == 10
    gt0 = np.loadtxt(redkitchen / "frame-000000.pose.txt")
    # 7-Scenes rotations are orthonormal only to ~5e-5; TUM quaternions snap them.
    np.testing.assert_allclose(traj.T_world_cam[0], gt0, atol=2e-4)
    mesh = o3d.io.read_triangle_mesh(str(map_dir / "mesh.ply"))
    assert len(mesh.triangles) > 10_000


def test_demo_runs(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path / "demo"), "--frames", "12", "--voxel-size", "0.04"]) == 0
    out = capsys.readouterr().out
    assert "acc" in out and "wrote demo outputs" in out
    rec = json.loads((tmp_path / "demo" / "map" / "recon_metrics.json").read_text())
    assert rec["completion_ratio"] > 0.9
    assert (tmp_path / "demo" / "scene" / "instances.json").is_file()


def test_bad_source_is_a_clear_error(tmp_path, capsys):
    missing = tmp_path / "nowhere"
    assert main(["map", str(missing), "--out", str(tmp_path / "m")]) == 2
    err = capsys.readouterr().err
    assert str(missing) in err and "does not exist" in err
    (tmp_path / "junk").mkdir()
    assert main(["map", str(tmp_path / "junk"), "--out", str(tmp_path / "m")]) == 2
    assert "unknown layout" in capsys.readouterr().err
    assert not (tmp_path / "m").exists()


def test_eval_recon_cull_needs_map_dir(room_sequence, capsys):
    with pytest.raises(SystemExit):
        main(["eval", "recon", str(room_sequence["mesh"]), str(room_sequence["mesh"]), "--cull"])
