"""`semmap map ... --rerun FILE.rrd` on real 7-Scenes frames, read back with rerun's chunk reader."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import open3d as o3d
import pytest
from PIL import Image
from scipy.spatial.transform import Rotation

from semmap.cli import main
from sensors import open_source
from sensors.trajectory_io import read_tum
from tests.conftest import data_path

rr_chunk = pytest.importorskip("rerun.chunk", reason="rerun-sdk is not installed (pip install -e '.[rerun]')")

FRAMES = 6
STRIDE = 50
WIDTH = 160


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> dict:
    """Map 6 redkitchen frames with a recording; returns the paths and the recording's columns."""
    root = data_path("7scenes-redkitchen")
    tmp = tmp_path_factory.mktemp("rerun")
    rrd = tmp / "rec" / "run.rrd"  # the folder does not exist yet: the stage makes it
    out = tmp / "map"
    rc = main(["map", f"7scenes:{root}", "--out", str(out), "--stride", str(STRIDE), "--max-frames", str(FRAMES),
               "--voxel-size", "0.04", "--no-progress", "--rerun", str(rrd), "--rerun-width", str(WIDTH),
               "--rerun-image-every", "2"])
    assert rc == 0
    return {"root": root, "rrd": rrd, "map": out, "columns": read_columns(rrd)}


def read_columns(path: Path) -> dict[str, dict[str, list]]:
    """entity path -> column name -> values over all chunks of that entity (rows in frame order)."""
    cols: dict[str, dict[str, list]] = {}
    for chunk in rr_chunk.RrdReader(path).stream().to_chunks():
        d = chunk.to_record_batch().to_pydict()
        ent = cols.setdefault(chunk.entity_path, {})
        for k, v in d.items():
            ent.setdefault(k, []).extend(v)
    for ent in cols.values():
        if "frame" in ent:
            order = np.argsort(ent["frame"], kind="stable")
            for k in ent:
                ent[k] = [ent[k][i] for i in order]
    return cols


def test_recording_has_the_entity_tree(run):
    assert set(run["columns"]) == {
        "/world/camera", "/world/camera/image", "/world/camera/image/rgb", "/world/camera/image/depth",
        "/world/mesh", "/world/trajectory",
    }
    assert [p.name for p in run["rrd"].parent.iterdir()] == ["run.rrd"]  # temp file renamed, nothing left


def test_one_pose_per_integrated_frame_equal_to_the_trajectory(run):
    cam = run["columns"]["/world/camera"]
    traj = read_tum(run["map"] / "trajectory.tum")
    meta = json.loads((run["map"] / "map.json").read_text())
    assert len(cam["frame"]) == meta["frames_integrated"] == FRAMES == len(traj)
    assert cam["frame"] == [STRIDE * i for i in range(FRAMES)]
    t_s = np.array([v.total_seconds() for v in cam["time"]])
    np.testing.assert_allclose(t_s, traj.timestamps, atol=1e-6)
    trans = np.array([v[0] for v in cam["Transform3D:translation"]])
    np.testing.assert_allclose(trans, traj.T_world_cam[:, :3, 3], atol=1e-5)
    R = Rotation.from_quat(np.array([v[0] for v in cam["Transform3D:quaternion"]])).as_matrix()
    np.testing.assert_allclose(R, traj.T_world_cam[:, :3, :3], atol=1e-5)
    assert meta["stages"]["rerun"]["frames"] == FRAMES and meta["stages"]["rerun"]["file"] == str(run["rrd"])


def test_images_every_second_frame_downscaled_with_their_pinhole(run):
    cols = run["columns"]
    rgb, depth = cols["/world/camera/image/rgb"], cols["/world/camera/image/depth"]
    expected = [STRIDE * i for i in range(0, FRAMES, 2)]
    assert rgb["frame"] == expected and depth["frame"] == expected
    with open_source(f"7scenes:{run['root']}") as src:
        frame = next(iter(src.frames(1, 1)))
    K = np.asarray(cols["/world/camera/image"]["Pinhole:image_from_camera"][0][0]).reshape(3, 3).T  # column-major
    s = WIDTH / frame.camera.width
    np.testing.assert_allclose(K[0, 0], frame.camera.fx * s, rtol=1e-5)
    np.testing.assert_allclose(K[1, 1], frame.camera.fy * s, rtol=1e-5)
    assert cols["/world/camera/image"]["Pinhole:resolution"][0][0] == [WIDTH, frame.camera.height * s]
    img = np.asarray(Image.open(io.BytesIO(bytes(rgb["EncodedImage:blob"][0][0]))))
    assert img.shape == (frame.camera.height * s, WIDTH, 3)
    d = np.asarray(Image.open(io.BytesIO(bytes(depth["EncodedDepthImage:blob"][0][0])))).astype(np.float64)
    assert depth["EncodedDepthImage:meter"][0] == [1000.0]
    d_m, src_m = d[d > 0] / 1000.0, frame.depth[frame.depth > 0]
    # nearest-pixel downscaling keeps the depth distribution: valid share and median
    assert abs(d_m.size / d.size - src_m.size / frame.depth.size) < 0.02
    assert abs(np.median(d_m) - np.median(src_m)) < 0.02


def test_mesh_and_trajectory_at_the_end(run):
    cols = run["columns"]
    mesh = o3d.io.read_triangle_mesh(str(run["map"] / "mesh.ply"))
    pos = np.asarray(cols["/world/mesh"]["Mesh3D:vertex_positions"][0])
    tri = np.asarray(cols["/world/mesh"]["Mesh3D:triangle_indices"][0])
    assert pos.shape == np.asarray(mesh.vertices).shape and tri.shape == np.asarray(mesh.triangles).shape
    np.testing.assert_allclose(np.sort(pos, axis=0), np.sort(np.asarray(mesh.vertices), axis=0), atol=1e-5)
    assert len(cols["/world/mesh"]["Mesh3D:vertex_colors"][0]) == len(pos)
    strip = np.asarray(cols["/world/trajectory"]["LineStrips3D:strips"][0][0])
    np.testing.assert_allclose(strip, read_tum(run["map"] / "trajectory.tum").T_world_cam[:, :3, 3], atol=1e-5)


def test_bad_recording_name_is_a_clear_error(tmp_path, capsys):
    rc = main(["map", f"7scenes:{data_path('7scenes-redkitchen')}", "--out", str(tmp_path / "m"),
               "--max-frames", "1", "--no-progress", "--rerun", str(tmp_path / "run.txt")])
    assert rc == 2
    assert "must end in .rrd" in capsys.readouterr().err
    assert not (tmp_path / "m").exists()
