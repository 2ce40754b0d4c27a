"""Files for one answered query: JSON, a heat-coloured PLY, and a PNG with the top regions marked.

- ``query.json``: the query, ranked regions (centroid, box, score, voxel count), threshold,
  timings and the map's encoder;
- ``relevancy.ply``: the map's mesh, each vertex coloured by the relevancy of the semantic
  voxel it falls in (heat colour map from the map's median relevancy to its maximum;
  vertices outside any semantic voxel grey);
- ``query.png``: left, a top-down view of the coloured mesh vertices with region boxes and
  ranks; right, the mesh rendered (Open3D ray casting) from the trajectory camera that
  sees the best region nearest the image centre, with region boxes projected.

"Up" is the mean of the trajectory cameras' up vectors (-y of each camera in the world):
hand-held and robot cameras are held roughly level. Figures are drawn on a matplotlib
``Figure`` with its own Agg canvas (no pyplot state), files written via temp + rename.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from eval.report import _new_figure, _save_figure, write_json
from mapping.semantic_map import QueryResult, SemanticMap
from sensors.camera import Camera

GREY = np.array([0.6, 0.6, 0.6])
MAX_SCATTER_POINTS = 150_000


def heat_colours(values: np.ndarray, lo: float, hi: float, cmap: str = "turbo") -> np.ndarray:
    """(N,) values -> (N, 3) RGB in [0, 1], ``lo`` blue to ``hi`` red (clipped)."""
    from matplotlib import colormaps

    t = np.clip((np.asarray(values, np.float64) - lo) / max(hi - lo, 1e-9), 0.0, 1.0)
    return colormaps[cmap](t)[:, :3]


def vertex_relevancy(smap: SemanticMap, result: QueryResult, vertices: np.ndarray) -> np.ndarray:
    """(V,) relevancy of each mesh vertex's semantic voxel; NaN where the vertex has none."""
    rows = smap.grid.lookup(vertices)
    out = np.full(len(vertices), np.nan, np.float32)
    ok = rows >= 0
    out[ok] = result.relevancy[rows[ok]]
    out[ok & ~smap.usable[np.maximum(rows, 0)]] = np.nan
    return out


def colour_range(smap: SemanticMap, result: QueryResult) -> tuple[float, float]:
    """(lo, hi) relevancy of the colour map: the map's median and maximum."""
    rel = result.relevancy[smap.usable]
    if rel.size == 0:
        return 0.0, 1.0
    return float(np.median(rel)), float(rel.max())


def relevancy_colours(smap: SemanticMap, result: QueryResult, vertices: np.ndarray) -> np.ndarray:
    """(V, 3) RGB in [0, 1] of mesh ``vertices`` (world metres) for a query: the heat colour of
    each vertex's voxel relevancy over :func:`colour_range`, grey outside the semantic voxels
    (relevancy.ply, and the viewer of ``semmap serve``)."""
    rel = vertex_relevancy(smap, result, vertices)
    lo, hi = colour_range(smap, result)
    colours = np.tile(GREY, (len(vertices), 1))
    has = np.isfinite(rel)
    colours[has] = heat_colours(rel[has], lo, hi)
    return colours


def up_vector(T_world_cam: np.ndarray) -> np.ndarray:
    """(3,) unit world "up": the mean of the cameras' -y axes ((T, 4, 4) camera-to-world poses)."""
    up = -np.asarray(T_world_cam)[:, :3, 1].mean(axis=0)
    n = np.linalg.norm(up)
    return up / n if n > 1e-9 else np.array([0.0, 0.0, 1.0])


def plane_basis(up: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Two unit vectors (e1, e2) spanning the plane orthogonal to ``up``; (e1, e2, up) right-handed."""
    ref = np.eye(3)[int(np.argmin(np.abs(up)))]
    e1 = ref - up * (ref @ up)
    e1 /= np.linalg.norm(e1)
    return e1, np.cross(up, e1)


def box_corners(bmin: np.ndarray, bmax: np.ndarray) -> np.ndarray:
    """(8, 3) corners of an axis-aligned box; corner i has bit k set where axis k is at max."""
    return np.array([[(bmax if (i >> k) & 1 else bmin)[k] for k in range(3)] for i in range(8)])


BOX_EDGES = [(i, i ^ (1 << k)) for i in range(8) for k in range(3) if not (i >> k) & 1]


def choose_view(result: QueryResult, poses: np.ndarray, camera: Camera) -> int | None:
    """Index of the pose whose camera sees the best region's centroid nearest the image centre (<= 4 m)."""
    if not result.regions or len(poses) == 0:
        return None
    c = result.regions[0].centroid
    best, best_cost = None, np.inf
    for i, T in enumerate(poses):
        p = np.linalg.inv(T)[:3, :] @ np.r_[c, 1.0]
        if not 0.3 < p[2] < 4.0:
            continue
        uv, _ = camera.project(p[None])
        du = (uv[0, 0] - camera.cx) / camera.width
        dv = (uv[0, 1] - camera.cy) / camera.height
        cost = du * du + dv * dv + 0.01 * p[2]
        if abs(du) < 0.45 and abs(dv) < 0.45 and cost < best_cost:
            best, best_cost = i, cost
    return best


def render_view(mesh_path: Path, vertex_colours: np.ndarray, camera: Camera, T_world_cam: np.ndarray) -> np.ndarray:
    """(H, W, 3) float image of the mesh from a camera: faces take their vertices' mean colour,
    shaded by the angle between the view ray and the face normal (so shapes stay readable)."""
    import open3d as o3d

    legacy = o3d.io.read_triangle_mesh(str(mesh_path))
    tmesh = o3d.t.geometry.TriangleMesh.from_legacy(legacy)
    scene = o3d.t.geometry.RaycastingScene()
    scene.add_triangles(tmesh)
    rays = scene.create_rays_pinhole(
        o3d.core.Tensor(camera.K), o3d.core.Tensor(np.linalg.inv(T_world_cam)), camera.width, camera.height
    )
    hit = scene.cast_rays(rays)
    prim = hit["primitive_ids"].numpy().astype(np.int64)
    normals = hit["primitive_normals"].numpy()
    dirs = rays.numpy()[..., 3:]
    dirs = dirs / np.linalg.norm(dirs, axis=-1, keepdims=True)
    shade = 0.35 + 0.65 * np.abs(np.sum(normals * dirs, axis=-1))
    tris = np.asarray(legacy.triangles)
    img = np.ones((camera.height, camera.width, 3))
    ok = prim != scene.INVALID_ID
    img[ok] = vertex_colours[tris[prim[ok]]].mean(axis=1) * shade[ok, None]
    return img


def write_query_outputs(
    smap: SemanticMap, result: QueryResult, out_dir: Path | str, top: int | None = None
) -> dict[str, Path]:
    """Write query.json, relevancy.ply and query.png into ``out_dir``; returns their paths."""
    import open3d as o3d

    from sensors.trajectory_io import read_tum

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    regions = result.regions if top is None else result.regions[:top]
    paths: dict[str, Path] = {}
    doc = {
        **result.to_dict(),
        "regions": [r.to_dict() for r in regions],
        "map": str(smap.directory) if smap.directory else None,
        "encoder": smap.encoder_name,
        "negatives": list(smap.query_config.negatives),
        "reference_names": _reference_names_json(smap.query_config.reference_names),
        "voxel_size_m": smap.voxel_size_m,
    }
    paths["json"] = write_json(doc, out_dir / "query.json")
    if smap.directory is None or not smap.mesh_path.is_file():
        return paths
    mesh = o3d.io.read_triangle_mesh(str(smap.mesh_path))
    verts = np.asarray(mesh.vertices)
    colours = relevancy_colours(smap, result, verts)
    lo, hi = colour_range(smap, result)
    mesh.vertex_colors = o3d.utility.Vector3dVector(colours)
    ply = out_dir / "relevancy.ply"
    tmp = out_dir / ".relevancy.tmp.ply"
    if not o3d.io.write_triangle_mesh(str(tmp), mesh):
        raise OSError(f"could not write {tmp}")
    tmp.replace(ply)
    paths["ply"] = ply
    traj_path = smap.directory / "trajectory.tum"
    poses = read_tum(traj_path).T_world_cam if traj_path.is_file() else np.eye(4)[None]
    cam_dict = smap.metadata.get("map", {}).get("camera")
    camera = Camera.from_dict(cam_dict) if cam_dict else None
    paths["png"] = _plot(smap, result, regions, verts, colours, poses, camera, lo, hi, out_dir / "query.png")
    return paths


def _rank_label(ax, x: float, y: float, rank: int) -> None:
    """Write a region's rank (1 = best) at plot coordinates ``(x, y)`` of ``ax``: bold, on a white box."""
    ax.text(
        x,
        y,
        str(rank),
        color="black",
        fontsize=10,
        weight="bold",
        ha="center",
        va="center",
        bbox=dict(facecolor="white", alpha=0.8, pad=1, lw=0),
    )


def _plot(smap, result, regions, verts, colours, poses, camera, lo, hi, path: Path) -> Path:
    from matplotlib import cm
    from matplotlib.colors import Normalize

    fig = _new_figure((13, 5.6))
    axes = fig.subplots(1, 2)
    up = up_vector(poses)
    e1, e2 = plane_basis(up)
    rng = np.random.default_rng(0)
    idx = np.arange(len(verts))
    if len(idx) > MAX_SCATTER_POINTS:
        idx = np.sort(rng.choice(len(idx), MAX_SCATTER_POINTS, replace=False))
    h = verts[idx] @ up
    order = idx[np.argsort(h)]  # highest drawn last (seen from above)
    ax = axes[0]
    ax.scatter(verts[order] @ e1, verts[order] @ e2, c=colours[order], s=0.4, linewidths=0, rasterized=True)
    for r in regions:
        c = box_corners(r.bbox_min, r.bbox_max)
        x, y = c @ e1, c @ e2
        ax.plot(
            [x.min(), x.max(), x.max(), x.min(), x.min()],
            [y.min(), y.min(), y.max(), y.max(), y.min()],
            color="white" if r.rank > 1 else "magenta",
            lw=1.5,
        )
        _rank_label(ax, r.centroid @ e1, r.centroid @ e2, r.rank)
    cams = poses[:, :3, 3]
    ax.plot(cams @ e1, cams @ e2, color="k", lw=0.6, alpha=0.5, label="camera path")
    ax.set_aspect("equal", adjustable="datalim")
    ax.set_title(f"'{result.query}': top-down (up = mean camera up)", fontsize=10)
    ax.set_xlabel("m")
    ax.set_ylabel("m")
    ax.legend(loc="lower right", fontsize=7)
    fig.colorbar(cm.ScalarMappable(Normalize(lo, hi), "turbo"), ax=ax, label="relevancy", shrink=0.8)
    ax = axes[1]
    view = choose_view(result, poses, camera) if camera is not None else None
    if view is None:
        ax.text(0.5, 0.5, "no camera sees the top region", ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
    else:
        cam = camera.scaled(0.5) if camera.width > 400 else camera
        T = poses[view]
        ax.imshow(render_view(smap.mesh_path, colours, cam, T))
        T_cam_world = np.linalg.inv(T)
        for r in regions:
            c = box_corners(r.bbox_min, r.bbox_max) @ T_cam_world[:3, :3].T + T_cam_world[:3, 3]
            if (c[:, 2] <= 0.05).any():
                continue
            uv, _ = cam.project(c)
            for a, b in BOX_EDGES:
                ax.plot(uv[[a, b], 0], uv[[a, b], 1], color="magenta" if r.rank == 1 else "white", lw=1.2)
            cu, _ = cam.project((T_cam_world[:3, :3] @ r.centroid + T_cam_world[:3, 3])[None])
            if not cam.in_image(cu)[0]:
                continue
            _rank_label(ax, cu[0, 0], cu[0, 1], r.rank)
        ax.set_xlim(0, cam.width)
        ax.set_ylim(cam.height, 0)
        ax.set_title(f"camera view (trajectory pose {view}); 1 = best region", fontsize=10)
        ax.set_axis_off()
    return _save_figure(fig, path)


def _reference_names_json(names: str | tuple[str, ...] | None) -> str | list[str] | None:
    """``QueryConfig.reference_names`` as JSON: "imagenet", a list of names or null."""
    return list(names) if isinstance(names, tuple) else names
