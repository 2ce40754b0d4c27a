"""PLY files with arbitrary per-element properties (labels, instance ids), read and written with numpy.

Open3D reads positions, colours and normals but drops other vertex and face properties,
which is where labelled ground truth keeps its classes: ScanNet's ``*_vh_clean_2.labels.ply``
(vertex ``label``), Replica's ``habitat/mesh_semantic.ply`` (face ``object_id``) and the
meshes :func:`sensors.synthetic.write_labelled_mesh` writes (vertex ``instance`` and
``label``). Formats: ``ascii``, ``binary_little_endian``, ``binary_big_endian``; scalar
properties and list properties (face ``vertex_indices``; quads are split into triangles
by :func:`faces_as_triangles`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

_TYPES = {
    "char": "i1", "int8": "i1", "uchar": "u1", "uint8": "u1",
    "short": "i2", "int16": "i2", "ushort": "u2", "uint16": "u2",
    "int": "i4", "int32": "i4", "uint": "u4", "uint32": "u4",
    "float": "f4", "float32": "f4", "double": "f8", "float64": "f8",
}  # fmt: skip
_NAMES = {"i1": "char", "u1": "uchar", "i2": "short", "u2": "ushort", "i4": "int", "u4": "uint", "f4": "float", "f8": "double"}


def read_ply(path: Path | str) -> dict[str, dict[str, np.ndarray]]:
    """All elements of a PLY file: {element: {property: (N,) array, or (N, k) for fixed-length lists,
    or an object array of per-row arrays for ragged lists}}.

    Raises:
        FileNotFoundError: no such file; ValueError: not a PLY file or a malformed header / body.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"PLY file {path} does not exist")
    data = path.read_bytes()
    end = data.find(b"end_header")
    if not data.startswith(b"ply") or end < 0:
        raise ValueError(f"{path}: not a PLY file (no 'ply' magic or no end_header)")
    body_start = data.index(b"\n", end) + 1
    fmt, elements = None, []
    for line in data[:end].decode("ascii", "replace").splitlines()[1:]:
        w = line.split()
        if not w or w[0] in ("comment", "obj_info"):
            continue
        if w[0] == "format":
            fmt = w[1]
        elif w[0] == "element":
            elements.append((w[1], int(w[2]), []))
        elif w[0] == "property" and elements:
            if w[1] == "list":
                if w[2] not in _TYPES or w[3] not in _TYPES:
                    raise ValueError(f"{path}: unknown PLY type in {line!r}")
                elements[-1][2].append((w[4], _TYPES[w[2]], _TYPES[w[3]]))
            else:
                if w[1] not in _TYPES:
                    raise ValueError(f"{path}: unknown PLY type in {line!r}")
                elements[-1][2].append((w[2], None, _TYPES[w[1]]))
    if fmt not in ("ascii", "binary_little_endian", "binary_big_endian"):
        raise ValueError(f"{path}: unsupported PLY format {fmt!r}")
    if fmt == "ascii":
        return _read_ascii(path, data[body_start:], elements)
    order = "<" if fmt == "binary_little_endian" else ">"
    out: dict[str, dict[str, np.ndarray]] = {}
    pos = body_start
    for name, count, props in elements:
        if all(p[1] is None for p in props):
            dt = np.dtype([(p[0], order + p[2]) for p in props])
            n_bytes = dt.itemsize * count
            if pos + n_bytes > len(data):
                raise ValueError(f"{path}: file ends inside element {name!r}")
            arr = np.frombuffer(data, dt, count, pos)
            pos += n_bytes
            out[name] = {p[0]: np.array(arr[p[0]]) for p in props}
            continue
        out[name], pos = _read_binary_lists(path, data, pos, name, count, props, order)
    return out


def _read_binary_lists(path, data: bytes, pos: int, name: str, count: int, props, order: str):
    # Fast path: every row's lists have the same length as the first row's (triangle meshes).
    lengths, off = [], pos
    row = []
    for pname, ctype, vtype in props:
        if ctype is None:
            row.append((pname, np.dtype(order + vtype), None))
            off += np.dtype(vtype).itemsize
        else:
            n = int(np.frombuffer(data, order + ctype, 1, off)[0])
            lengths.append(n)
            row.append((pname, np.dtype(order + ctype), (n, np.dtype(order + vtype))))
            off += np.dtype(ctype).itemsize + n * np.dtype(vtype).itemsize
    fields = []
    for pname, dt, lst in row:
        if lst is None:
            fields.append((pname, dt))
        else:
            fields.append((f"__n_{pname}", dt))
            fields.append((pname, lst[1], (lst[0],)))
    dt = np.dtype(fields)
    if count and pos + dt.itemsize * count <= len(data):
        arr = np.frombuffer(data, dt, count, pos)
        if all(np.all(arr[f"__n_{p}"] == lst[0]) for p, _, lst in row if lst is not None):
            return {p: np.array(arr[p]) for p, _, _ in row}, pos + dt.itemsize * count
    # General path: row by row (ragged lists, e.g. polygon meshes).
    cols: dict[str, list] = {p[0]: [] for p in props}
    for _ in range(count):
        for pname, ctype, vtype in props:
            if ctype is None:
                cols[pname].append(np.frombuffer(data, order + vtype, 1, pos)[0])
                pos += np.dtype(vtype).itemsize
            else:
                n = int(np.frombuffer(data, order + ctype, 1, pos)[0])
                pos += np.dtype(ctype).itemsize
                cols[pname].append(np.frombuffer(data, order + vtype, n, pos).copy())
                pos += n * np.dtype(vtype).itemsize
            if pos > len(data):
                raise ValueError(f"{path}: file ends inside element {name!r}")
    return {k: _stack(v) for k, v in cols.items()}, pos


def _stack(values: list) -> np.ndarray:
    if values and isinstance(values[0], np.ndarray):
        if len({len(v) for v in values}) == 1:
            return np.stack(values)
        out = np.empty(len(values), object)
        out[:] = values
        return out
    return np.asarray(values)


def _read_ascii(path, body: bytes, elements) -> dict[str, dict[str, np.ndarray]]:
    lines = body.decode("ascii", "replace").splitlines()
    out, k = {}, 0
    for name, count, props in elements:
        cols: dict[str, list] = {p[0]: [] for p in props}
        for _ in range(count):
            if k >= len(lines):
                raise ValueError(f"{path}: file ends inside element {name!r}")
            w, i = lines[k].split(), 0
            k += 1
            for pname, ctype, vtype in props:
                if ctype is None:
                    cols[pname].append(np.dtype(vtype).type(w[i]))
                    i += 1
                else:
                    n = int(w[i])
                    cols[pname].append(np.array(w[i + 1 : i + 1 + n], dtype=vtype))
                    i += 1 + n
        out[name] = {p: _stack(v) if v else np.zeros(0, dtype=dict((q[0], q[2]) for q in props)[p]) for p, v in cols.items()}
    return out


def faces_as_triangles(faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(F, 3) int64 triangles and (F',) the face each came from, from a face ``vertex_indices``
    column ((F, k) array or ragged object array; k-gons fanned into k - 2 triangles)."""
    if faces.dtype != object:
        faces = np.asarray(faces, dtype=np.int64)
        k = faces.shape[1]
        tris = np.concatenate([faces[:, [0, j, j + 1]] for j in range(1, k - 1)])
        src = np.tile(np.arange(len(faces)), k - 2)
        return tris, src
    tris, src = [], []
    for f, poly in enumerate(faces):
        for j in range(1, len(poly) - 1):
            tris.append((poly[0], poly[j], poly[j + 1]))
            src.append(f)
    return np.asarray(tris, dtype=np.int64).reshape(-1, 3), np.asarray(src, dtype=np.int64)


def write_ply(path: Path | str, vertex: dict[str, np.ndarray], faces: np.ndarray | None = None) -> Path:
    """Write a binary little-endian PLY: vertex properties (N,) each (x, y, z first by convention,
    uchar red/green/blue for colours, any integer or float labels) and optional (F, 3) triangles."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    n = len(next(iter(vertex.values())))
    cols = {k: np.asarray(v) for k, v in vertex.items()}
    for k, v in cols.items():
        if v.shape != (n,):
            raise ValueError(f"vertex property {k!r} has shape {v.shape}, expected ({n},)")
        if v.dtype.str[1:] not in _NAMES:
            cols[k] = v.astype(np.float32 if v.dtype.kind == "f" else np.int32)
    header = ["ply", "format binary_little_endian 1.0", f"element vertex {n}"]
    header += [f"property {_NAMES[v.dtype.str[1:]]} {k}" for k, v in cols.items()]
    tri = None
    if faces is not None:
        tri = np.asarray(faces, dtype=np.int32).reshape(-1, 3)
        header += [f"element face {len(tri)}", "property list uchar int vertex_indices"]
    header.append("end_header")
    vdt = np.dtype([(k, "<" + v.dtype.str[1:]) for k, v in cols.items()])
    varr = np.empty(n, vdt)
    for k, v in cols.items():
        varr[k] = v
    with path.open("wb") as f:
        f.write(("\n".join(header) + "\n").encode("ascii"))
        f.write(varr.tobytes())
        if tri is not None:
            farr = np.empty(len(tri), np.dtype([("n", "u1"), ("v", "<i4", (3,))]))
            farr["n"], farr["v"] = 3, tri
            f.write(farr.tobytes())
    return path
