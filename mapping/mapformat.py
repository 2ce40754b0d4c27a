"""Reading map-directory files defensively: every damaged file becomes one :class:`MapFormatError`.

A map directory (see ``semmap.pipeline``) is read by several loaders (``SemanticMap``,
``TSDFMap``, ``SceneGraph``, the views). Each of them reads its files through the helpers
here, so that a truncated or garbage archive, an array of the wrong dtype or shape, JSON
that does not parse, a field of the wrong type or a missing one, or a file from a newer
format version all end in the same kind of error, naming the file and the problem::

    MapFormatError: runs/kitchen/features.npz: array 'weights' has dtype float64, expected float32

instead of a ``zipfile.BadZipFile`` traceback or, worse, a map that loads with wrong content.

Schemas are plain data: a JSON file's fields are a ``{key: types}`` dict, an archive's arrays
an ``{name: ArraySpec}`` dict whose symbolic dimensions (``"N"``, ``"D"``) must agree across
the arrays of one file.
"""

from __future__ import annotations

import json
import zipfile
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

MAP_META_FILE = "map.json"
MAP_FORMAT_VERSION = 1
"""Version of ``map.json`` this semmap writes and reads."""

NUMBER = (int, float)
"""JSON numbers (``bool`` is excluded explicitly by :func:`check_fields`)."""


class MapFormatError(ValueError):
    """A file of a map directory is missing, damaged, of the wrong shape or of an unknown version.

    Attributes:
        path: the file.
        problem: what is wrong with it, in words.
    """

    def __init__(self, path: Path | str, problem: str) -> None:
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


# ---------------------------------------------------------------------------- JSON
def read_json_file(path: Path | str) -> dict:
    """The JSON object in ``path``.

    Raises:
        MapFormatError: the file is missing or unreadable, is not valid UTF-8 JSON, or holds
            something other than an object.
    """
    path = Path(path)
    if not path.is_file():
        raise MapFormatError(path, "file is missing")
    try:
        data = json.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as e:
        raise MapFormatError(path, f"not a text file ({e.reason} at byte {e.start})") from None
    except json.JSONDecodeError as e:
        raise MapFormatError(path, f"not valid JSON ({e.msg} at line {e.lineno} column {e.colno})") from None
    except OSError as e:
        raise MapFormatError(path, f"cannot be read ({e.strerror or e})") from None
    if not isinstance(data, dict):
        raise MapFormatError(path, f"expected a JSON object, found {type(data).__name__}")
    return data


def _type_names(types: type | tuple[type, ...]) -> str:
    ts = types if isinstance(types, tuple) else (types,)
    names = {int: "integer", float: "number", str: "string", bool: "true/false", list: "list", dict: "object",
             type(None): "null"}
    return " or ".join(dict.fromkeys(names.get(t, t.__name__) for t in ts))


def _is_instance(value: Any, types: type | tuple[type, ...]) -> bool:
    ts = types if isinstance(types, tuple) else (types,)
    if isinstance(value, bool) and bool not in ts:
        return False  # JSON true/false is not a number here
    return isinstance(value, ts)


def check_fields(
    data: Mapping, path: Path | str, fields: Mapping[str, type | tuple[type, ...]], where: str = ""
) -> Mapping:
    """Check that ``data`` has every key of ``fields`` with a value of its type(s).

    Args:
        data: a parsed JSON object.
        path: its file (for the message).
        fields: ``{key: type or tuple of types}``; ``type(None)`` in the tuple allows null.
        where: prefix for nested objects in the message, e.g. ``"views[3]."``.

    Returns:
        ``data`` itself.

    Raises:
        MapFormatError: a key is missing or has a value of another type.
    """
    if not isinstance(data, Mapping):
        raise MapFormatError(path, f"{where.rstrip('.') or 'content'} should be an object, found {type(data).__name__}")
    for key, types in fields.items():
        if key not in data:
            raise MapFormatError(path, f"field '{where}{key}' is missing")
        if not _is_instance(data[key], types):
            raise MapFormatError(
                path,
                f"field '{where}{key}' should be {_type_names(types)}, found {type(data[key]).__name__} "
                f"{_short(data[key])}",
            )
    return data


def check_list_of(values: Any, path: Path | str, key: str, types: type | tuple[type, ...]) -> list:
    """Check that ``values`` is a list whose items are all of ``types`` (message names ``key``)."""
    if not isinstance(values, list):
        raise MapFormatError(path, f"field '{key}' should be a list, found {type(values).__name__}")
    for i, v in enumerate(values):
        if not _is_instance(v, types):
            raise MapFormatError(path, f"field '{key}[{i}]' should be {_type_names(types)}, found {_short(v)}")
    return values


def check_format_version(data: Mapping, path: Path | str, supported: int, what: str, key: str = "format_version") -> int:
    """Check the file's format version against the one this semmap reads.

    Raises:
        MapFormatError: the version is missing, not an integer, newer than ``supported``
            (written by a newer semmap: upgrade) or older (no reader for it).
    """
    version = data.get(key)
    if version is None:
        raise MapFormatError(path, f"field '{key}' is missing (not a semmap {what} file?)")
    if not _is_instance(version, int):
        raise MapFormatError(path, f"field '{key}' should be an integer, found {_short(version)}")
    if version > supported:
        raise MapFormatError(
            path,
            f"{what} format version {version} is newer than this semmap reads ({supported}); "
            "upgrade semmap to read it",
        )
    if version != supported:
        raise MapFormatError(path, f"{what} format version {version} is not supported (this semmap reads {supported})")
    return version


def _short(value: Any, n: int = 40) -> str:
    s = json.dumps(value) if not isinstance(value, str) else repr(value)
    return s if len(s) <= n else s[: n - 3] + "..."


# ---------------------------------------------------------------------------- arrays
@dataclass(frozen=True)
class ArraySpec:
    """What one array of an ``.npz`` archive must look like.

    Attributes:
        dtypes: allowed dtypes (e.g. ``("float16",)``).
        shape: the shape, each entry an int (fixed), a str (a symbol that must have the same
            value in every array of the file that uses it) or None (any size).
    """

    dtypes: tuple[str, ...]
    shape: tuple[int | str | None, ...]


def _open_npz(path: Path) -> np.lib.npyio.NpzFile:
    if not path.is_file():
        raise MapFormatError(path, "file is missing")
    try:
        return np.load(path, allow_pickle=False)
    except (zipfile.BadZipFile, EOFError) as e:
        raise MapFormatError(path, f"not a readable .npz archive (truncated or corrupt: {e})") from None
    except (OSError, ValueError) as e:
        raise MapFormatError(path, f"not a readable .npz archive ({e})") from None


def read_npz(path: Path | str, spec: Mapping[str, ArraySpec], read_data: bool = True) -> dict[str, Any]:
    """Open an ``.npz`` archive and check its arrays against ``spec``.

    Args:
        path: the archive.
        spec: required arrays (other arrays in the file are allowed and not returned).
        read_data: read (decompress, CRC-check) every array and return them; False checks
            only the archive's directory and each array's header (dtype, shape), which is
            cheap for large volumes, and returns the headers as ``(shape, dtype)`` pairs.

    Returns:
        ``{name: array}`` (or ``{name: (shape, dtype)}`` with ``read_data=False``), plus the
        symbol sizes under ``"_dims"`` (e.g. ``{"N": 8778, "D": 384}``).

    Raises:
        MapFormatError: unreadable or truncated archive, missing array, wrong dtype or shape,
            or inconsistent sizes between arrays.
    """
    path = Path(path)
    out: dict[str, Any] = {}
    dims: dict[str, int] = {}
    with _open_npz(path) as z:
        missing = [k for k in spec if k not in z.files]
        if missing:
            raise MapFormatError(path, f"array {', '.join(repr(m) for m in missing)} missing "
                                       f"(found {', '.join(z.files) or 'none'})")
        for name, s in spec.items():
            try:
                if read_data:
                    arr = z[name]
                    shape, dtype = arr.shape, arr.dtype
                else:
                    shape, dtype = _npy_header(z, name)
                    arr = (shape, dtype)
            except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError) as e:
                raise MapFormatError(path, f"array '{name}' cannot be read (truncated or corrupt: {e})") from None
            if str(dtype) not in s.dtypes:
                raise MapFormatError(path, f"array '{name}' has dtype {dtype}, expected {' or '.join(s.dtypes)}")
            check_shape(path, name, tuple(shape), s.shape, dims)
            out[name] = arr
    out["_dims"] = dims
    return out


def npz_headers(path: Path | str) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """``{array name: (shape, dtype)}`` of every array in an ``.npz`` archive, from the headers only.

    Raises:
        MapFormatError: the archive is missing, truncated or corrupt.
    """
    path = Path(path)
    with _open_npz(path) as z:
        try:
            return {name: _npy_header(z, name) for name in z.files}
        except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError) as e:
            raise MapFormatError(path, f"not a readable .npz archive (truncated or corrupt: {e})") from None


def _npy_header(z: np.lib.npyio.NpzFile, name: str) -> tuple[tuple[int, ...], np.dtype]:
    """(shape, dtype) of one array of an open archive, from its .npy header only."""
    with z.zip.open(f"{name}.npy") as f:
        version = np.lib.format.read_magic(f)
        read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, _, dtype = read(f)
    return tuple(shape), dtype


def check_shape(path: Path, name: str, shape: tuple[int, ...], want: tuple, dims: dict[str, int]) -> None:
    """Check ``shape`` against ``want`` (ints, symbols, None), recording symbol sizes in ``dims``."""
    if len(shape) != len(want):
        raise MapFormatError(path, f"array '{name}' has shape {shape}, expected {len(want)} dimensions "
                                   f"{_shape_text(want)}")
    for i, (got, w) in enumerate(zip(shape, want)):
        if isinstance(w, int) and got != w:
            raise MapFormatError(path, f"array '{name}' has shape {shape}, expected {_shape_text(want)}")
        if isinstance(w, str):
            if w in dims and dims[w] != got:
                raise MapFormatError(
                    path, f"array '{name}' has {got} along axis {i} where the other arrays have {w} = {dims[w]}"
                )
            dims[w] = got


def _shape_text(shape: tuple) -> str:
    return "(" + ", ".join("*" if s is None else str(s) for s in shape) + ")"


def require_equal(path: Path | str, what: str, got: Any, expected: Any, other: str) -> None:
    """Raise a :class:`MapFormatError` when a count in ``path`` disagrees with another file's."""
    if got != expected:
        raise MapFormatError(path, f"{what} is {got} but {other} says {expected} (damaged, or files from different runs)")


# ---------------------------------------------------------------------------- map.json
MAP_FIELDS: dict[str, type | tuple[type, ...]] = {
    "format_version": int,
    "semmap_version": str,
    "source": str,
    "config": dict,
    "camera": (dict, type(None)),
    "frames_seen": int,
    "frames_integrated": int,
    "frames_skipped": list,
    "stopped_early": (str, type(None)),
    "timings_s": dict,
    "mesh_vertices": int,
    "mesh_triangles": int,
    "tsdf_blocks": int,
    "stages": dict,
}
"""The fields every ``map.json`` has, with their JSON types."""

CAMERA_FIELDS = {"fx": NUMBER, "fy": NUMBER, "cx": NUMBER, "cy": NUMBER, "width": int, "height": int}


def read_map_json(map_dir: Path | str) -> dict:
    """``map.json`` of a finished map, checked.

    Raises:
        FileNotFoundError: ``map_dir`` does not exist.
        MapFormatError: ``map.json`` is missing (the map was never finished: it is written
            last), does not parse, has an unknown ``format_version``, or a field is missing or
            of the wrong type.
    """
    map_dir = Path(map_dir)
    if not map_dir.is_dir():
        raise FileNotFoundError(f"map directory {map_dir} does not exist")
    path = map_dir / MAP_META_FILE
    if not path.is_file():
        raise MapFormatError(
            map_dir,
            f"not a complete map: {MAP_META_FILE} is missing (it is written last, so the map was never finished "
            "or its write was interrupted); build it again with semmap map",
        )
    data = read_json_file(path)
    check_format_version(data, path, MAP_FORMAT_VERSION, "map")
    check_fields(data, path, MAP_FIELDS)
    if data["camera"] is not None:
        check_fields(data["camera"], path, CAMERA_FIELDS, "camera.")
    for name, meta in data["stages"].items():
        if not isinstance(meta, dict):
            raise MapFormatError(path, f"field 'stages.{name}' should be an object, found {_short(meta)}")
    if data["frames_integrated"] < 0 or data["frames_integrated"] > data["frames_seen"]:
        raise MapFormatError(
            path, f"frames_integrated {data['frames_integrated']} is not within 0..frames_seen ({data['frames_seen']})"
        )
    return data


# ---------------------------------------------------------------------------- mesh and trajectory
MESH_FILE = "mesh.ply"
TRAJECTORY_FILE = "trajectory.tum"


@dataclass(frozen=True)
class MapMesh:
    """The map's marching-cubes mesh, checked against ``map.json``.

    Attributes:
        vertices: (V, 3) float64 world metres.
        triangles: (F, 3) int64 vertex indices.
        colors: (V, 3) float64 in [0, 1] (grey when the file has none).
        has_colors: whether the file has vertex colours.
    """

    vertices: np.ndarray
    triangles: np.ndarray
    colors: np.ndarray
    has_colors: bool = True


def read_map_mesh(map_dir: Path | str, map_meta: Mapping | None = None) -> MapMesh:
    """Read ``mesh.ply`` of a map directory and check it is the mesh ``map.json`` describes.

    Args:
        map_dir: the map directory.
        map_meta: its checked ``map.json`` (read when None).

    Raises:
        MapFormatError: the file is missing, does not parse as a PLY mesh, has other vertex or
            triangle counts than ``map.json`` records (truncated or replaced), non-finite
            vertices, or triangle indices out of range.
    """
    import open3d as o3d

    map_dir = Path(map_dir)
    meta = map_meta if map_meta is not None else read_map_json(map_dir)
    path = map_dir / MESH_FILE
    if not path.is_file():
        raise MapFormatError(path, "file is missing")
    with open(path, "rb") as f:
        if f.read(3) != b"ply":
            raise MapFormatError(path, "not a PLY file (no 'ply' header)")
    mesh = o3d.io.read_triangle_mesh(str(path))
    v = np.asarray(mesh.vertices)
    t = np.asarray(mesh.triangles).astype(np.int64)
    require_equal(path, "the vertex count", len(v), meta["mesh_vertices"], MAP_META_FILE)
    require_equal(path, "the triangle count", len(t), meta["mesh_triangles"], MAP_META_FILE)
    if not np.isfinite(v).all():
        raise MapFormatError(path, "vertices are not all finite")
    if len(t) and (t.min() < 0 or t.max() >= len(v)):
        raise MapFormatError(path, "triangle indices out of range")
    c = np.asarray(mesh.vertex_colors)
    has_colors = c.shape == v.shape
    return MapMesh(v, t, c if has_colors else np.full_like(v, 0.6), has_colors)


def read_map_trajectory(map_dir: Path | str, map_meta: Mapping | None = None):
    """``trajectory.tum`` of a map directory (a ``sensors.trajectory_io.Trajectory``), checked.

    Raises:
        MapFormatError: missing or unparsable file, non-finite or non-rigid poses, or a pose
            count other than ``map.json``'s ``frames_integrated``.
    """
    from sensors.trajectory_io import read_tum

    map_dir = Path(map_dir)
    meta = map_meta if map_meta is not None else read_map_json(map_dir)
    path = map_dir / TRAJECTORY_FILE
    if not path.is_file():
        raise MapFormatError(path, "file is missing")
    try:
        traj = read_tum(path)
    except (ValueError, OSError) as e:
        problem = str(e).removeprefix(str(path)).lstrip(": ") or type(e).__name__
        raise MapFormatError(path, f"not a TUM trajectory ({problem})") from None
    require_equal(path, "the pose count", len(traj), meta["frames_integrated"], f"{MAP_META_FILE} (frames_integrated)")
    if not np.isfinite(traj.T_world_cam).all():
        raise MapFormatError(path, "poses are not all finite")
    R = traj.T_world_cam[:, :3, :3]
    if len(R) and np.abs(R @ R.transpose(0, 2, 1) - np.eye(3)).max() > 1e-4:
        raise MapFormatError(path, "a pose is not a rotation (quaternion not of unit length?)")
    return traj
