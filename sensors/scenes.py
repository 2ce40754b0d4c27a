"""Procedural indoor scenes with ground truth (instances, boxes, relations) and camera paths.

World frame of the generated scenes: metres, z up, the floor is the plane z = 0 and the
room spans ``[0, X] x [0, Y] x [0, Z]``. Camera poses are ``T_world_cam`` in OpenCV axes
(x right, y down, z forward), see docs/conventions.md.

Ground-truth relation vocabulary (all on axis-aligned boxes, metres):

- ``(a, "on", b)``: a's bottom lies on b's top (|a.min_z - b.max_z| <= 1 cm) and a's
  footprint (x, y extent) lies inside b's.
- ``(a, "inside", b)``: a's box lies inside b's box.
- ``(a, "next_to", b)``: the footprints are disjoint, at most 0.5 m apart, and the
  boxes overlap in height.
- ``(a, "against", wall)``: a's box is within 2 cm of the wall plane.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from sensors.trajectory_io import Trajectory

ColorFn = Callable[[np.ndarray], np.ndarray]
"""Maps (N, 3) vertex positions to (N, 3) RGB in [0, 1]."""


@dataclass
class InstanceInfo:
    """One object or structural element of a synthetic scene.

    Attributes:
        id: instance id, equal to its index in ``SyntheticScene.instances`` and to the
            values of ``SyntheticScene.triangle_instance`` / rendered instance ids.
        name: unique name ("wall_north", "mug_1", ...).
        label: class label ("floor", "wall", "table", "chair", "mug", ...).
        is_structure: True for floor, walls and ceiling.
        bbox_min, bbox_max: (3,) float64 axis-aligned bounds of its vertices, world frame, metres.
        color_name: dominant colour in words ("red", "wood", ...), for text-query ground truth.
        rgb: dominant colour, uint8 RGB.
    """

    id: int
    name: str
    label: str
    is_structure: bool
    bbox_min: np.ndarray
    bbox_max: np.ndarray
    color_name: str
    rgb: tuple[int, int, int]

    @property
    def center(self) -> np.ndarray:
        """(3,) centre of the bounding box."""
        return (self.bbox_min + self.bbox_max) / 2.0


@dataclass
class SyntheticScene:
    """A generated scene with its ground truth.

    Attributes:
        mesh: ``open3d.geometry.TriangleMesh`` (legacy) with vertex colours and vertex normals;
            each instance's triangles form one contiguous block.
        triangle_instance: (T,) int64 instance id of each triangle.
        instances: one :class:`InstanceInfo` per id.
        relations: ground-truth ``(subject_id, relation, object_id)`` triples (see the module
            docstring for the vocabulary).
        room_size_m: (3,) the room's extent (X, Y, Z).
        seed: the seed it was generated from.
    """

    mesh: Any
    triangle_instance: np.ndarray
    instances: list[InstanceInfo]
    relations: list[tuple[int, str, int]]
    room_size_m: np.ndarray
    seed: int = 0

    def instance(self, name: str) -> InstanceInfo:
        """The instance with this unique name; KeyError lists the names."""
        for inst in self.instances:
            if inst.name == name:
                return inst
        raise KeyError(f"no instance {name!r}; known: {', '.join(i.name for i in self.instances)}")

    def by_label(self, label: str) -> list[InstanceInfo]:
        """All instances with this class label."""
        return [inst for inst in self.instances if inst.label == label]

    @property
    def objects(self) -> list[InstanceInfo]:
        """The non-structural instances."""
        return [inst for inst in self.instances if not inst.is_structure]

    def relations_named(self) -> list[tuple[str, str, str]]:
        """The relations with instance names instead of ids."""
        return [(self.instances[s].name, r, self.instances[o].name) for s, r, o in self.relations]


# --------------------------------------------------------------------------- mesh pieces
def grid_surface(
    origin: np.ndarray, edge_u: np.ndarray, edge_v: np.ndarray, cell_m: float, tiles: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """A planar parallelogram ``origin + a edge_u + b edge_v`` (a, b in [0, 1]) cut into cells.

    The front side (counter-clockwise winding) faces ``edge_u x edge_v``.

    Args:
        origin, edge_u, edge_v: (3,) metres.
        cell_m: target cell edge length (at least one cell per direction).
        tiles: True gives each cell its own 4 vertices (so colours change sharply between
            cells); False shares vertices between neighbouring cells.
    Returns:
        vertices (N, 3) float64 and triangles (M, 3) int64.
    """
    origin, edge_u, edge_v = (np.asarray(a, dtype=np.float64) for a in (origin, edge_u, edge_v))
    nu = max(1, int(math.ceil(np.linalg.norm(edge_u) / cell_m - 1e-9)))
    nv = max(1, int(math.ceil(np.linalg.norm(edge_v) / cell_m - 1e-9)))
    if tiles:
        a, b = np.meshgrid(np.arange(nu), np.arange(nv), indexing="ij")
        a, b = a.reshape(-1), b.reshape(-1)
        corners = np.array([[0, 0], [1, 0], [1, 1], [0, 1]])
        ca = (a[:, None] + corners[None, :, 0]) / nu
        cb = (b[:, None] + corners[None, :, 1]) / nv
        verts = origin + ca.reshape(-1, 1) * edge_u + cb.reshape(-1, 1) * edge_v
        base = 4 * np.arange(nu * nv)[:, None]
        tris = np.concatenate([base + [0, 1, 2], base + [0, 2, 3]], axis=0)
        return verts, tris
    a, b = np.meshgrid(np.arange(nu + 1) / nu, np.arange(nv + 1) / nv, indexing="ij")
    verts = origin + a.reshape(-1, 1) * edge_u + b.reshape(-1, 1) * edge_v
    i, j = np.meshgrid(np.arange(nu), np.arange(nv), indexing="ij")
    v00 = (i * (nv + 1) + j).reshape(-1)
    v10, v01 = v00 + (nv + 1), v00 + 1
    v11 = v10 + 1
    tris = np.concatenate([np.stack([v00, v10, v11], 1), np.stack([v00, v11, v01], 1)], axis=0)
    return verts, tris


def box_surface(lo: np.ndarray, hi: np.ndarray, cell_m: float) -> tuple[np.ndarray, np.ndarray]:
    """Closed axis-aligned box ``[lo, hi]`` with outward-facing, subdivided faces.

    Returns vertices (N, 3) float64 and triangles (M, 3) int64.
    """
    lo, hi = np.asarray(lo, dtype=np.float64), np.asarray(hi, dtype=np.float64)
    s = hi - lo
    ex, ey, ez = np.diag(s)
    faces = [
        (lo, ey, ex),  # -z
        (lo + ez, ex, ey),  # +z
        (lo, ex, ez),  # -y
        (lo + ey, ez, ex),  # +y
        (lo, ez, ey),  # -x
        (lo + ex, ey, ez),  # +x
    ]
    return merge_parts([grid_surface(o, u, v, cell_m) for o, u, v in faces])


def cylinder_surface(center_bottom: np.ndarray, radius_m: float, height_m: float) -> tuple[np.ndarray, np.ndarray]:
    """Closed vertical (z-axis) cylinder standing on ``center_bottom`` (from Open3D's primitive)."""
    import open3d as o3d

    cyl = o3d.geometry.TriangleMesh.create_cylinder(radius=radius_m, height=height_m, resolution=32, split=6)
    verts = np.asarray(cyl.vertices) + np.asarray(center_bottom, dtype=np.float64) + [0.0, 0.0, height_m / 2]
    return verts, np.asarray(cyl.triangles, dtype=np.int64)


def merge_parts(parts: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """Concatenate (vertices, triangles) pieces, re-indexing the triangles."""
    verts, tris, n = [], [], 0
    for v, t in parts:
        verts.append(v)
        tris.append(t + n)
        n += len(v)
    return np.concatenate(verts, axis=0), np.concatenate(tris, axis=0)


def jitter_color(rgb: tuple[int, int, int], rng: np.random.Generator, amount: float = 0.05) -> ColorFn:
    """Colour function: ``rgb`` with multiplicative per-vertex brightness noise of std ``amount``."""
    base = np.asarray(rgb, dtype=np.float64) / 255.0

    def fn(points: np.ndarray) -> np.ndarray:
        k = 1.0 + amount * rng.standard_normal((len(points), 1))
        return np.clip(base * k, 0.0, 1.0)

    return fn


class _SceneBuilder:
    """Accumulates instances (contiguous triangle blocks) into one coloured mesh."""

    def __init__(self) -> None:
        self.vertices: list[np.ndarray] = []
        self.triangles: list[np.ndarray] = []
        self.colors: list[np.ndarray] = []
        self.tri_instance: list[np.ndarray] = []
        self.meta: list[dict] = []
        self.n_vertices = 0

    def add(
        self,
        name: str,
        label: str,
        parts: list[tuple[np.ndarray, np.ndarray]],
        color: ColorFn | list[ColorFn],
        color_name: str,
        rgb: tuple[int, int, int],
        is_structure: bool = False,
    ) -> int:
        """Add one instance made of ``parts``; ``color`` is one function or one per part."""
        iid = len(self.meta)
        fns = color if isinstance(color, list) else [color] * len(parts)
        for (v, t), fn in zip(parts, fns, strict=True):
            self.vertices.append(v)
            self.triangles.append(t + self.n_vertices)
            self.colors.append(fn(v))
            self.tri_instance.append(np.full(len(t), iid, np.int64))
            self.n_vertices += len(v)
        verts = np.concatenate([v for v, _ in parts])
        self.meta.append(
            dict(
                id=iid,
                name=name,
                label=label,
                is_structure=is_structure,
                bbox_min=verts.min(axis=0),
                bbox_max=verts.max(axis=0),
                color_name=color_name,
                rgb=tuple(int(c) for c in rgb),
            )
        )
        return iid

    def build(self):
        import open3d as o3d

        mesh = o3d.geometry.TriangleMesh(
            o3d.utility.Vector3dVector(np.concatenate(self.vertices)),
            o3d.utility.Vector3iVector(np.concatenate(self.triangles).astype(np.int32)),
        )
        mesh.vertex_colors = o3d.utility.Vector3dVector(np.concatenate(self.colors))
        mesh.compute_vertex_normals()
        return mesh, np.concatenate(self.tri_instance), [InstanceInfo(**m) for m in self.meta]


# --------------------------------------------------------------------------- the room
_WALL_COLORS = [
    ("beige", (222, 205, 170)),
    ("light blue", (170, 195, 220)),
    ("pale green", (185, 212, 180)),
    ("light grey", (200, 200, 200)),
    ("cream", (238, 230, 205)),
    ("salmon", (225, 170, 150)),
]
_MUG_COLORS = [
    ("red", (200, 30, 35)),
    ("blue", (35, 70, 200)),
    ("yellow", (235, 200, 40)),
    ("white", (240, 240, 240)),
    ("green", (40, 160, 70)),
]
_CHAIR_COLORS = [
    ("black", (40, 40, 45)),
    ("red", (170, 40, 40)),
    ("blue", (50, 80, 160)),
    ("grey", (120, 120, 125)),
    ("green", (60, 120, 70)),
]
_BOOK_COLORS = [("green", (30, 120, 60)), ("red", (160, 30, 40)), ("blue", (30, 50, 140)), ("purple", (100, 40, 130))]


def make_room(
    seed: int = 0,
    size_m: tuple[float, float, float] = (5.0, 4.0, 2.6),
    ceiling: bool = True,
    n_chairs: int | None = None,
    structure_cell_m: float = 0.1,
    object_cell_m: float = 0.05,
) -> SyntheticScene:
    """A furnished room: floor, 4 walls, optional ceiling, a table with 2 mugs, a book and a
    monitor on it, 2-4 chairs beside it, and a shelf in a corner with a box inside.

    Deterministic for a given ``seed`` (layout, sizes, colours, texture noise).

    Args:
        seed: random seed.
        size_m: room extent (X, Y, Z) in metres; the room spans [0, X] x [0, Y] x [0, Z].
        ceiling: add a ceiling (cameras are inside the room; leave it off to look in from above).
        n_chairs: number of chairs (2-4; random when None).
        structure_cell_m: cell size of floor, wall and ceiling tiles (vertex-colour texture).
        object_cell_m: cell size of furniture faces.
    Returns:
        the scene with its ground truth.
    """
    rng = np.random.default_rng(seed)
    X, Y, Z = (float(s) for s in size_m)
    if X < 3.5 or Y < 3.0 or Z < 2.0:
        raise ValueError(f"room too small for the furniture: {size_m} (need at least 3.5 x 3.0 x 2.0 m)")
    if n_chairs is None:
        n_chairs = int(rng.integers(2, 5))
    if not 1 <= n_chairs <= 6:
        raise ValueError(f"n_chairs must be in 1..6, got {n_chairs}")
    b = _SceneBuilder()
    rel: list[tuple[int, str, int]] = []

    # ---- structure: floor (wooden planks), walls (painted, darker skirting), ceiling
    plank_w = 0.2
    plank_gain = 0.8 + 0.35 * rng.random(int(math.ceil(X / plank_w)) + 1)
    wood = np.array([150, 105, 65]) / 255.0

    def floor_color(p: np.ndarray) -> np.ndarray:
        # tiles share no vertices, so every cell is one plank colour; the 4 vertices of a
        # cell sit on its corners, so use the cell's x index from the centre of each quad
        cell_x = np.floor((p[:, 0].reshape(-1, 4).mean(axis=1)) / plank_w).astype(int)
        gain = np.repeat(plank_gain[np.clip(cell_x, 0, len(plank_gain) - 1)], 4)
        k = gain * (1.0 + 0.03 * rng.standard_normal(len(p)))
        return np.clip(wood[None, :] * k[:, None], 0.0, 1.0)

    floor = b.add(
        "floor",
        "floor",
        [grid_surface([0, 0, 0], [X, 0, 0], [0, Y, 0], structure_cell_m, tiles=True)],
        floor_color,
        "wood",
        (150, 105, 65),
        is_structure=True,
    )
    wall_colors = [_WALL_COLORS[i] for i in rng.permutation(len(_WALL_COLORS))[:4]]
    walls = {
        "wall_south": ([0, 0, 0], [0, 0, Z], [X, 0, 0]),
        "wall_north": ([0, Y, 0], [X, 0, 0], [0, 0, Z]),
        "wall_west": ([0, 0, 0], [0, Y, 0], [0, 0, Z]),
        "wall_east": ([X, 0, 0], [0, 0, Z], [0, Y, 0]),
    }
    wall_ids: dict[str, int] = {}
    for (name, (o, u, v)), (cname, rgb) in zip(walls.items(), wall_colors, strict=True):
        paint = np.asarray(rgb) / 255.0
        phase = rng.random(2) * 2 * math.pi

        def wall_color(p: np.ndarray, paint=paint, phase=phase) -> np.ndarray:
            zc = np.repeat(p[:, 2].reshape(-1, 4).mean(axis=1), 4)
            along = p[:, 0] + p[:, 1]
            shade = 1.0 + 0.05 * np.sin(2.1 * along + phase[0]) * np.cos(1.3 * p[:, 2] + phase[1])
            c = paint[None, :] * (shade * (1.0 + 0.02 * rng.standard_normal(len(p))))[:, None]
            c[zc < 0.1] = np.array([235, 235, 230]) / 255.0  # skirting board
            return np.clip(c, 0.0, 1.0)

        wall_ids[name] = b.add(
            name, "wall", [grid_surface(o, u, v, structure_cell_m, tiles=True)], wall_color, cname, rgb, True
        )
    if ceiling:
        b.add(
            "ceiling",
            "ceiling",
            [grid_surface([0, 0, Z], [0, Y, 0], [X, 0, 0], structure_cell_m * 2)],
            jitter_color((245, 245, 245), rng, 0.02),
            "white",
            (245, 245, 245),
            True,
        )

    # ---- table with legs
    tw, td = rng.uniform(1.2, 1.6), rng.uniform(0.7, 0.9)
    th = rng.uniform(0.72, 0.78)
    tc = np.array([X / 2 + rng.uniform(-0.3, 0.3), Y / 2 + rng.uniform(-0.2, 0.1)])
    t_lo, t_hi = tc - [tw / 2, td / 2], tc + [tw / 2, td / 2]
    top_t, leg = 0.04, 0.05
    parts = [box_surface([*t_lo, th - top_t], [*t_hi, th], object_cell_m)]
    for cx in (t_lo[0] + 0.05, t_hi[0] - 0.05 - leg):
        for cy in (t_lo[1] + 0.05, t_hi[1] - 0.05 - leg):
            parts.append(box_surface([cx, cy, 0.0], [cx + leg, cy + leg, th - top_t], object_cell_m))
    table_rgb = (120, 80, 45)
    table = b.add("table", "table", parts, jitter_color(table_rgb, rng, 0.06), "wood", table_rgb)
    rel.append((table, "on", floor))

    # ---- things on the table: monitor near the north edge, book and two mugs elsewhere
    placed: list[tuple[np.ndarray, np.ndarray]] = []

    def place(size_xy: np.ndarray, y_range: tuple[float, float] | None = None) -> np.ndarray:
        """Lower-left corner of a free footprint of ``size_xy`` on the table top (5 cm margin)."""
        lo_ok, hi_ok = t_lo + 0.05, t_hi - 0.05 - size_xy
        if y_range is not None:
            lo_ok = np.array([lo_ok[0], max(lo_ok[1], y_range[0])])
            hi_ok = np.array([hi_ok[0], min(hi_ok[1], y_range[1] - size_xy[1])])
        for _ in range(500):
            c = rng.uniform(lo_ok, hi_ok)
            if all(np.any(c + size_xy + 0.03 < plo) or np.any(c - 0.03 > phi) for plo, phi in placed):
                placed.append((c, c + size_xy))
                return c
        raise RuntimeError(f"make_room(seed={seed}): no free place on the table for a {size_xy} footprint")

    mon_c = place(np.array([0.5, 0.16]), y_range=(t_hi[1] - 0.25, t_hi[1]))
    base_lo = np.array([mon_c[0] + 0.15, mon_c[1]])
    mon_parts = [
        box_surface([*base_lo, th], [*(base_lo + [0.2, 0.16]), th + 0.015], object_cell_m),
        box_surface(
            [base_lo[0] + 0.08, base_lo[1] + 0.1, th + 0.015],
            [base_lo[0] + 0.12, base_lo[1] + 0.13, th + 0.12],
            object_cell_m,
        ),
        box_surface([mon_c[0], mon_c[1] + 0.07, th + 0.1], [mon_c[0] + 0.5, mon_c[1] + 0.1, th + 0.4], object_cell_m),
    ]
    mon_rgb = (30, 30, 35)
    monitor = b.add("monitor", "monitor", mon_parts, jitter_color(mon_rgb, rng, 0.1), "black", mon_rgb)
    rel.append((monitor, "on", table))

    bname, brgb = _BOOK_COLORS[int(rng.integers(len(_BOOK_COLORS)))]
    bsize = np.array([0.22, 0.16]) if rng.random() < 0.5 else np.array([0.16, 0.22])
    bc = place(bsize)
    book = b.add(
        "book",
        "book",
        [box_surface([*bc, th], [*(bc + bsize), th + 0.035], 0.02)],
        jitter_color(brgb, rng, 0.05),
        bname,
        brgb,
    )
    rel.append((book, "on", table))

    mug_r, mug_h = 0.04, 0.1
    for k, ci in enumerate(rng.permutation(len(_MUG_COLORS))[:2], start=1):
        cname, mrgb = _MUG_COLORS[int(ci)]
        mc = place(np.array([2 * mug_r + 0.03, 2 * mug_r]))
        centre = np.array([mc[0] + mug_r, mc[1] + mug_r, th])
        handle = box_surface(
            [centre[0] + mug_r - 0.003, centre[1] - 0.008, th + 0.02],
            [centre[0] + mug_r + 0.027, centre[1] + 0.008, th + 0.08],
            0.01,
        )
        mug = b.add(
            f"mug_{k}",
            "mug",
            [cylinder_surface(centre, mug_r, mug_h), handle],
            jitter_color(mrgb, rng, 0.04),
            cname,
            mrgb,
        )
        rel.append((mug, "on", table))

    # ---- chairs beside the table, facing it, 8-15 cm away from its edge
    seat, seat_h, back_h = 0.44, 0.45, 0.45
    slots = ["south_a", "north_a", "south_b", "west", "east", "north_b"]
    chosen = [slots[i] for i in sorted(rng.permutation(len(slots))[:n_chairs])]
    for k, slot in enumerate(chosen, start=1):
        gap = rng.uniform(0.08, 0.15)
        if slot.startswith(("south", "north")):
            x0 = tc[0] - seat - 0.05 if slot.endswith("a") else tc[0] + 0.05
            y0 = t_lo[1] - gap - seat if slot.startswith("south") else t_hi[1] + gap
            back_side = "-y" if slot.startswith("south") else "+y"
        else:
            y0 = tc[1] - seat / 2
            x0 = t_lo[0] - gap - seat if slot == "west" else t_hi[0] + gap
            back_side = "-x" if slot == "west" else "+x"
        lo = np.array([x0, y0])
        hi = lo + seat
        cparts = [box_surface([*lo, seat_h - 0.04], [*hi, seat_h], object_cell_m)]
        for lx in (lo[0], hi[0] - 0.04):
            for ly in (lo[1], hi[1] - 0.04):
                cparts.append(box_surface([lx, ly, 0.0], [lx + 0.04, ly + 0.04, seat_h - 0.04], object_cell_m))
        bl, bh = lo.copy(), hi.copy()
        axis, far = (1, back_side[0] == "+") if back_side[1] == "y" else (0, back_side[0] == "+")
        if far:
            bl[axis] = hi[axis] - 0.04
        else:
            bh[axis] = lo[axis] + 0.04
        cparts.append(box_surface([*bl, seat_h], [*bh, seat_h + back_h], object_cell_m))
        cname, crgb = _CHAIR_COLORS[int(rng.integers(len(_CHAIR_COLORS)))]
        chair = b.add(f"chair_{k}", "chair", cparts, jitter_color(crgb, rng, 0.05), cname, crgb)
        rel.append((chair, "on", floor))
        rel.append((chair, "next_to", table))

    # ---- shelf in the north-west corner, open towards the room, with a box inside
    sw, sd, sh, pt = rng.uniform(0.8, 1.0), 0.35, rng.uniform(1.5, 1.8), 0.02
    s_lo = np.array([rng.uniform(0.1, 0.3), Y - 0.005 - sd, 0.0])
    s_hi = np.array([s_lo[0] + sw, Y - 0.005, sh])
    boards_z = [0.05, 0.05 + (sh - 0.05) / 3, 0.05 + 2 * (sh - 0.05) / 3, sh - pt]
    sparts = [
        box_surface(s_lo, [s_lo[0] + pt, s_hi[1], sh], object_cell_m),  # left side
        box_surface([s_hi[0] - pt, s_lo[1], 0.0], s_hi, object_cell_m),  # right side
        box_surface([s_lo[0] + pt, s_hi[1] - pt, 0.0], [s_hi[0] - pt, s_hi[1], sh], object_cell_m),  # back
    ]
    for z in boards_z:
        sparts.append(box_surface([s_lo[0] + pt, s_lo[1], z], [s_hi[0] - pt, s_hi[1] - pt, z + pt], object_cell_m))
    shelf_rgb = (205, 180, 140)
    shelf = b.add("shelf", "shelf", sparts, jitter_color(shelf_rgb, rng, 0.04), "light wood", shelf_rgb)
    rel.append((shelf, "on", floor))
    rel.append((shelf, "against", wall_ids["wall_north"]))

    board = boards_z[int(rng.integers(1, 3))] + pt
    bx_size = np.array([0.28, 0.22, 0.18])
    bx_lo = np.array([rng.uniform(s_lo[0] + pt + 0.03, s_hi[0] - pt - 0.03 - bx_size[0]), s_lo[1] + 0.05, board])
    box_rgb = (190, 135, 75)
    box = b.add(
        "box", "box", [box_surface(bx_lo, bx_lo + bx_size, 0.03)], jitter_color(box_rgb, rng, 0.05), "brown", box_rgb
    )
    rel.append((box, "inside", shelf))

    mesh, tri_inst, instances = b.build()
    return SyntheticScene(mesh, tri_inst, instances, rel, np.array([X, Y, Z]), seed)


# --------------------------------------------------------------------------- camera paths
def look_at_pose(eye: np.ndarray, target: np.ndarray, up: np.ndarray = (0.0, 0.0, 1.0)) -> np.ndarray:
    """``T_world_cam`` (4x4) of a camera at ``eye`` looking at ``target`` (OpenCV axes).

    The camera z axis points from eye to target, x = z cross up (right in the image),
    y = z cross x (down in the image). Raises ValueError if the view is along ``up``.
    """
    eye, target, up = (np.asarray(a, dtype=np.float64) for a in (eye, target, up))
    z = target - eye
    n = np.linalg.norm(z)
    if n < 1e-9:
        raise ValueError("look_at_pose: eye and target coincide")
    z /= n
    x = np.cross(z, up)
    if np.linalg.norm(x) < 1e-6:
        raise ValueError("look_at_pose: viewing direction is parallel to the up vector")
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    T = np.eye(4)
    T[:3, 0], T[:3, 1], T[:3, 2], T[:3, 3] = x, y, z, eye
    return T


def orbit_trajectory(
    scene: SyntheticScene,
    n_frames: int = 120,
    height_m: float = 1.5,
    radius_m: float | tuple[float, float] | None = None,
    look_at: np.ndarray | None = None,
    height_wave_m: float = 0.15,
    fps: float = 30.0,
) -> Trajectory:
    """A closed elliptical camera path inside the room, always looking at a point.

    Camera i is at ``centre + (rx cos a_i, ry sin a_i, 0)``, a_i = 2 pi i / n_frames, at
    height ``height_m + height_wave_m * sin(2 a_i)`` (a gentle bob, so views differ in
    height too), with the room's centre (x, y) as ``centre``.

    Args:
        scene: the room (its size sets the default radii).
        n_frames: number of poses.
        height_m: mean camera height, metres above the floor.
        radius_m: ellipse semi-axes (rx, ry) or one radius; default ``(X/2 - 0.6, Y/2 - 0.6)``.
        look_at: (3,) world point every camera looks at; default the top centre of the
            table (or the room centre at 0.75 m when there is no table).
        height_wave_m: amplitude of the height bob, metres.
        fps: timestamps are ``i / fps`` seconds.
    Returns:
        the trajectory (``T_world_cam``, OpenCV camera axes).
    """
    if n_frames < 1:
        raise ValueError(f"n_frames must be >= 1, got {n_frames}")
    X, Y, _ = scene.room_size_m
    if radius_m is None:
        rx, ry = X / 2 - 0.6, Y / 2 - 0.6
    elif np.isscalar(radius_m):
        rx = ry = float(radius_m)
    else:
        rx, ry = (float(r) for r in radius_m)
    if look_at is None:
        tables = scene.by_label("table")
        if tables:
            t = tables[0]
            look_at = np.array([*t.center[:2], t.bbox_max[2]])
        else:
            look_at = np.array([X / 2, Y / 2, 0.75])
    a = 2 * np.pi * np.arange(n_frames) / n_frames
    eyes = np.stack([X / 2 + rx * np.cos(a), Y / 2 + ry * np.sin(a), height_m + height_wave_m * np.sin(2 * a)], axis=1)
    poses = np.stack([look_at_pose(e, look_at) for e in eyes])
    return Trajectory(np.arange(n_frames) / fps, poses)
