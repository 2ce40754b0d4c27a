"""Every file of a real map directory either loads or raises one MapFormatError naming it.

A map is written by ``semmap map --encoder lite`` and ``semmap graph`` (redkitchen slice);
each of its files is then damaged in each applicable way (truncated, garbage, wrong dtype,
wrong shape, missing key / field, wrong type, future format version), one at a time, and
the directory is checked with ``semmap info``'s reader (the loaders' own checked readers)
and with the loader that serves that file. The file is restored after each case.
"""

from __future__ import annotations

import io
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mapping.mapformat import MapFormatError
from mapping.semantic_map import SemanticMap
from mapping.tsdf import TSDFMap
from scenegraph.graph import SceneGraph
from scenegraph.mapdir import inspect_map
from scenegraph.views import check_view_images, load_views
from semmap.cli import main
from tests.conftest import data_path

Damage = Callable[[Path], None]


@pytest.fixture(scope="module")
def real_map(tmp_path_factory) -> Path:
    """A lite semantic map of a redkitchen slice with its scene graph, built through the CLI."""
    root = data_path("7scenes-redkitchen")
    out = tmp_path_factory.mktemp("format") / "kitchen"
    assert main(["map", f"7scenes:{root}", "--encoder", "lite", "--stride", "40", "--max-frames", "10",
                 "--voxel-size", "0.04", "--out", str(out), "--no-progress"]) == 0
    assert main(["graph", str(out)]) == 0
    return out


# ---------------------------------------------------------------- damage kinds
def truncate(p: Path) -> None:
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])


def garbage(p: Path) -> None:
    p.write_bytes(np.random.default_rng(0).integers(0, 256, max(p.stat().st_size, 64), dtype=np.uint8).tobytes())


def npz_edit(edit: Callable[[dict], None]) -> Damage:
    def damage(p: Path) -> None:
        with np.load(p, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        edit(arrays)
        buf = io.BytesIO()
        np.savez_compressed(buf, **arrays)
        p.write_bytes(buf.getvalue())
    return damage


def json_edit(edit: Callable[[dict], None]) -> Damage:
    def damage(p: Path) -> None:
        data = json.loads(p.read_text())
        edit(data)
        p.write_text(json.dumps(data))
    return damage


def text_edit(edit: Callable[[list[str]], list[str]]) -> Damage:
    def damage(p: Path) -> None:
        p.write_text("\n".join(edit(p.read_text().splitlines())) + "\n")
    return damage


def image_edit(edit: Callable[[np.ndarray], np.ndarray]) -> Damage:
    def damage(p: Path) -> None:
        with Image.open(p) as im:
            a = np.asarray(im)
        Image.fromarray(edit(a)).save(p, format=Image.registered_extensions()[p.suffix.lower()])
    return damage


def first_array(arrays: dict, prefix: str) -> str:
    return sorted(k for k in arrays if k.startswith(prefix))[0]


def _set(path: list, value) -> Damage:
    """Set the JSON field at ``path`` (keys and list indices) to ``value``."""
    def edit(d: dict) -> None:
        for k in path[:-1]:
            d = d[k]
        d[path[-1]] = value
    return json_edit(edit)


def _del(path: list) -> Damage:
    """Delete the JSON field at ``path``."""
    def edit(d: dict) -> None:
        for k in path[:-1]:
            d = d[k]
        del d[path[-1]]
    return json_edit(edit)


def _ply_fewer_vertices(p: Path) -> None:
    """A well-formed PLY that holds only part of the mesh (a file replaced by another)."""
    import open3d as o3d

    mesh = o3d.io.read_triangle_mesh(str(p))
    keep = np.asarray(mesh.triangles)[: len(mesh.triangles) // 2]
    small = o3d.geometry.TriangleMesh(mesh.vertices, o3d.utility.Vector3iVector(keep))
    small.remove_unreferenced_vertices()
    p.unlink()
    assert o3d.io.write_triangle_mesh(str(p.with_suffix(".tmp.ply")), small)
    os.replace(p.with_suffix(".tmp.ply"), p)


DAMAGES: dict[str, dict[str, Damage]] = {
    "map.json": {
        "truncated": truncate, "garbage": garbage,
        "wrong type": _set(["frames_integrated"], "ten"),
        "missing key": _del(["stages"]),
        "future version": _set(["format_version"], 99),
        "wrong shape": _set(["camera"], [525.0, 525.0]),
    },
    "tsdf.json": {
        "truncated": truncate, "garbage": garbage,
        "wrong type": _set(["num_blocks"], "many"),
        "missing key": _del(["config"]),
        "future version": _set(["format_version"], 2),
        "wrong shape": _set(["config"], {"voxel_size_m": 0.04, "no_such_setting": 1}),
    },
    "tsdf.npz": {
        "truncated": truncate, "garbage": garbage,
        "wrong dtype": npz_edit(lambda a: a.__setitem__("key", a["key"].astype(np.float64))),
        "wrong shape": npz_edit(lambda a: a.__setitem__(first_array(a, "value_"), a[first_array(a, "value_")][:-1])),
        "missing key": npz_edit(lambda a: a.pop("key")),
    },
    "features.npz": {
        "truncated": truncate, "garbage": garbage,
        "wrong dtype": npz_edit(lambda a: a.__setitem__("embeddings", a["embeddings"].astype(np.float64))),
        "wrong shape": npz_edit(lambda a: a.__setitem__("weights", a["weights"][:-1])),
        "missing key": npz_edit(lambda a: a.pop("counts")),
        "wrong type": npz_edit(lambda a: a.__setitem__("keys", a["keys"].astype(np.float32))),
    },
    "features.json": {
        "truncated": truncate, "garbage": garbage,
        "wrong type": _set(["dim"], "384"),
        "missing key": _del(["encoder"]),
        "future version": _set(["format_version"], 2),
        "wrong shape": _set(["keyframes"], {"0": 1}),
    },
    "mesh.ply": {"truncated": truncate, "garbage": garbage, "wrong shape": _ply_fewer_vertices},
    "trajectory.tum": {
        "truncated": text_edit(lambda lines: lines[:-2]), "garbage": garbage,
        "wrong shape": text_edit(lambda lines: [ln.rsplit(" ", 1)[0] if not ln.startswith("#") else ln for ln in lines]),
        "wrong type": text_edit(lambda lines: [ln.replace(" ", " x", 1) if not ln.startswith("#") else ln for ln in lines]),
    },
    "views/views.json": {
        "truncated": truncate, "garbage": garbage,
        "wrong type": _set(["views", 0, "index"], "first"),
        "missing key": _del(["views", 0, "T_world_cam"]),
        "future version": _set(["format_version"], 2),
        "wrong shape": _set(["views", 0, "T_world_cam"], [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]),
    },
    "views/view_0000.jpg": {
        "truncated": truncate, "garbage": garbage,
        "wrong shape": image_edit(lambda a: a[: a.shape[0] // 2]),
    },
    "views/view_0000.depth.png": {
        "truncated": truncate, "garbage": garbage,
        "wrong shape": image_edit(lambda a: a[:, : a.shape[1] // 2]),
        "wrong dtype": image_edit(lambda a: (a // 256).astype(np.uint8)),
    },
    "scene_graph.json": {
        "truncated": truncate, "garbage": garbage,
        "wrong type": _set(["objects", 0, "id"], "zero"),
        "missing key": _del(["relations"]),
        "future version": _set(["format_version"], 2),
        "wrong shape": _set(["objects", 0, "centroid"], [0.0, 1.0]),
    },
    "scene_graph.graphml": {"truncated": truncate, "garbage": garbage},
    "scene_graph.png": {"truncated": truncate, "garbage": garbage},
}

LOADERS: dict[str, Callable[[Path], object]] = {
    "features.npz": SemanticMap.load, "features.json": SemanticMap.load, "map.json": SemanticMap.load,
    "tsdf.npz": TSDFMap.load, "tsdf.json": TSDFMap.load,
    "scene_graph.json": SceneGraph.load,
    "views/views.json": lambda d: check_view_images(load_views(d)),
    "views/view_0000.jpg": lambda d: check_view_images(load_views(d)),
    "views/view_0000.depth.png": lambda d: check_view_images(load_views(d)),
}
"""The loader that serves each file (beside inspect_map, which checks them all)."""

CASES = [(f, kind) for f, kinds in DAMAGES.items() for kind in kinds]


def test_every_file_of_the_map_is_covered(real_map):
    """The damage table names every file the two commands wrote (no file goes unchecked)."""
    written = {str(p.relative_to(real_map)) for p in real_map.rglob("*") if p.is_file()}
    views = {w for w in written if w.startswith("views/view_")}
    assert written - views == set(DAMAGES) - {f for f in DAMAGES if f.startswith("views/view_")}
    assert "views/view_0000.jpg" in views and "views/view_0000.depth.png" in views
    summary = inspect_map(real_map)
    assert set(summary.files) == written
    assert summary.encoder == "lite" and summary.scene_graph_objects and summary.frames_integrated == 10


def test_the_six_damage_kinds_are_covered_on_every_file():
    kinds = {k for ks in DAMAGES.values() for k in ks}
    assert {"truncated", "garbage", "wrong dtype", "wrong shape", "missing key", "wrong type", "future version"} <= kinds
    assert all({"truncated", "garbage"} <= set(ks) for ks in DAMAGES.values())


@pytest.mark.parametrize("name,kind", CASES, ids=[f"{f}-{k}" for f, k in CASES])
def test_damaged_file_raises_an_error_naming_it(real_map, name, kind, capsys):
    path = real_map / name
    backup = path.read_bytes()
    try:
        DAMAGES[name][kind](path)
        assert path.read_bytes() != backup, "the damage changed nothing"
        with pytest.raises(MapFormatError) as err:
            inspect_map(real_map)
        assert Path(name).name in str(err.value), str(err.value)
        if name in LOADERS:
            with pytest.raises(MapFormatError) as err:
                LOADERS[name](real_map)
            assert Path(name).name in str(err.value), str(err.value)
        capsys.readouterr()
        assert main(["info", str(real_map)]) == 2
        out = capsys.readouterr().err
        assert out.startswith("semmap info: error: ") and Path(name).name in out and "Traceback" not in out
    finally:
        path.write_bytes(backup)
    inspect_map(real_map)  # restored: loads again


def test_future_map_version_is_not_reported_as_missing_features(real_map, tmp_path, capsys):
    d = shutil.copytree(real_map, tmp_path / "future")
    _set(["format_version"], 99)(d / "map.json")
    assert main(["query", str(d), "mug", "--no-files"]) == 2
    err = capsys.readouterr().err
    assert "map format version 99 is newer than this semmap reads (1)" in err and "feature layer" not in err


def test_info_prints_what_the_map_holds(real_map, capsys):
    assert main(["info", str(real_map), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    meta = json.loads((real_map / "map.json").read_text())
    assert info["frames_integrated"] == meta["frames_integrated"] == 10
    assert info["mesh_vertices"] == meta["mesh_vertices"] and info["feature_dim"] == 384
    assert info["semantic_voxels"] == meta["stages"]["semantic"]["voxels"]
    assert info["format_versions"]["map.json"] == 1 and info["poses_estimated"] is False
    lo, hi = np.array(info["bounds_min"]), np.array(info["bounds_max"])
    assert (hi - lo > 0.5).all() and (hi - lo < 10).all()  # a kitchen, in metres
    assert main(["info", str(real_map)]) == 0
    text = capsys.readouterr().out
    assert "encoder lite (dim 384)" in text and "all load" in text
