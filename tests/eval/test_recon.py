"""Reconstruction metrics against analytic answers: concentric spheres, an occluded plane, real Replica floor."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.spatial import ConvexHull

from eval import (
    Culling,
    Surface,
    evaluate_reconstruction,
    load_surface,
    metrics_from_errors,
    sample_surface,
    visibility,
    write_recon_report,
)
from sensors import Camera
from tests.conftest import data_path


# ---------------------------------------------------------------------------- helpers
def fibonacci_directions(n: int) -> np.ndarray:
    """(n, 3) unit vectors spread evenly over the sphere."""
    i = np.arange(n) + 0.5
    z = 1.0 - 2.0 * i / n
    phi = np.pi * (1.0 + 5**0.5) * i
    r = np.sqrt(1.0 - z * z)
    return np.stack([r * np.cos(phi), r * np.sin(phi), z], axis=1)


def hull_sphere(n: int = 2000) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Unit polyhedral sphere: vertices (n, 3), triangles (F, 3), facet planes (F, 4) with n.x + off = 0."""
    dirs = fibonacci_directions(n)
    hull = ConvexHull(dirs)
    return dirs, hull.simplices.astype(np.int64), hull.equations


def interior_distance(points: np.ndarray, planes: np.ndarray, scale: float) -> np.ndarray:
    """Exact distance from points inside a convex polytope (unit planes scaled by ``scale``) to its
    boundary: min over facets of the plane distance. Independent of Open3D (naive reference)."""
    out = np.empty(len(points))
    for s in range(0, len(points), 500):
        signed = points[s : s + 500] @ planes[:, :3].T + scale * planes[:, 3]
        out[s : s + 500] = np.min(-signed, axis=1)
    return out


def grid_mesh(x0: float, x1: float, y0: float, y1: float, z: float, cell: float) -> tuple[np.ndarray, np.ndarray]:
    """A z = const rectangle triangulated on a grid: vertices (V, 3), triangles (T, 3)."""
    xs = np.linspace(x0, x1, round((x1 - x0) / cell) + 1)
    ys = np.linspace(y0, y1, round((y1 - y0) / cell) + 1)
    X, Y = np.meshgrid(xs, ys, indexing="ij")
    v = np.stack([X.ravel(), Y.ravel(), np.full(X.size, z)], axis=1)
    idx = np.arange(X.size).reshape(X.shape)
    a, b, c, d = idx[:-1, :-1].ravel(), idx[1:, :-1].ravel(), idx[1:, 1:].ravel(), idx[:-1, 1:].ravel()
    t = np.concatenate([np.stack([a, b, c], 1), np.stack([a, c, d], 1)])
    return v, t


def merge(*meshes: tuple[np.ndarray, np.ndarray]) -> Surface:
    vs, ts, off = [], [], 0
    for v, t in meshes:
        vs.append(v)
        ts.append(t + off)
        off += len(v)
    return Surface(np.concatenate(vs), np.concatenate(ts), "merged")


R_IN, GAP = 1.0, 0.02


@pytest.fixture(scope="module")
def spheres() -> dict:
    dirs, tris, planes = hull_sphere(2000)
    return {
        "inner": Surface(dirs * R_IN, tris, "inner"),
        "outer": Surface(dirs * (R_IN + GAP), tris, "outer"),
        "planes": planes,
        "h_min": float(-planes[:, 3].max()),  # smallest facet distance of the unit hull
    }


# ---------------------------------------------------------------------------- exact mode
def test_exact_accuracy_matches_polytope_distance(spheres):
    m = evaluate_reconstruction(spheres["inner"], spheres["outer"], mode="exact", num_samples=4000, seed=1)
    e = m.errors
    ref = interior_distance(e.recon_points, spheres["planes"], R_IN + GAP)
    assert np.abs(e.accuracy_m - ref).max() < 2e-6, "Open3D point-to-mesh distance disagrees with plane distances"
    # Tessellation bounds: every distance lies in [GAP * h_min, GAP].
    assert e.accuracy_m.min() > GAP * spheres["h_min"] - 2e-6 and e.accuracy_m.max() < GAP + 2e-6
    assert abs(m.accuracy_m - GAP) < 1e-4


def test_exact_completion_matches_polytope_distance(spheres):
    # GT inside the reconstruction: completion queries are interior points of the recon polytope.
    m = evaluate_reconstruction(spheres["outer"], spheres["inner"], mode="exact", num_samples=4000, seed=2)
    e = m.errors
    ref = interior_distance(e.gt_points, spheres["planes"], R_IN + GAP)
    assert np.abs(e.completion_m - ref).max() < 2e-6
    assert abs(m.completion_m - GAP) < 1e-4
    assert m.completion_ratio == 1.0
    assert m.chamfer_l1_m == pytest.approx(0.5 * (m.accuracy_m + m.completion_m))


def test_exact_mesh_against_itself_is_zero(spheres):
    m = evaluate_reconstruction(spheres["inner"], spheres["inner"], mode="exact", num_samples=5000)
    assert m.accuracy_m < 1e-6 and m.completion_m < 1e-6
    assert m.fscore == (1.0, 1.0, 1.0)


def test_fscore_steps_at_the_gap(spheres):
    m = evaluate_reconstruction(
        spheres["inner"], spheres["outer"], mode="exact", num_samples=3000, thresholds_m=(0.9 * GAP, 1.1 * GAP)
    )
    assert m.precision == (0.0, 1.0) and m.recall == (0.0, 1.0) and m.fscore == (0.0, 1.0)
    assert m.at(1.1 * GAP) == (1.0, 1.0, 1.0)
    with pytest.raises(KeyError):
        m.at(0.05)


# ---------------------------------------------------------------------------- samples mode
def test_samples_mode_on_exact_spheres():
    """Point sets exactly on spheres r and r + d: every NN distance >= d; the excess is the
    lateral sample spacing, E[rho^2] / (2 d) with E[rho^2] = 1 / (pi * density)."""
    rng = np.random.default_rng(0)
    n, d = 50_000, 0.05
    u = rng.normal(size=(2, n, 3))
    u /= np.linalg.norm(u, axis=2, keepdims=True)
    recon, gt = u[0] * R_IN, u[1] * (R_IN + d)
    m = evaluate_reconstruction(recon, gt, mode="samples", num_samples=n, thresholds_m=(0.5 * d, 1.5 * d))
    excess = 1.0 / (np.pi * n / (4 * np.pi * R_IN**2)) / (2 * d)  # ~8e-4 m
    for mean, errs in ((m.accuracy_m, m.errors.accuracy_m), (m.completion_m, m.errors.completion_m)):
        assert errs.min() >= d - 1e-9
        assert d + 0.8 * excess < mean < d + 1.25 * excess
    assert m.fscore == (0.0, 1.0)
    assert m.num_recon_points == n and m.num_gt_points == n


def test_samples_mode_on_sphere_meshes(spheres):
    m = evaluate_reconstruction(spheres["inner"], spheres["outer"], mode="samples", num_samples=40_000, seed=3)
    assert GAP * spheres["h_min"] < m.accuracy_m < GAP + 0.003
    assert GAP * spheres["h_min"] < m.completion_m < GAP + 0.003
    assert m.protocol["mode"] == "samples" and m.protocol["num_samples"] == 40_000


def test_sampling_is_uniform_by_area_and_seeded():
    # Two triangles with areas 1 and 3: samples split 1:3, all on their triangle.
    v = np.array([[0, 0, 0], [1, 0, 0], [0, 2, 0], [10, 0, 0], [13, 0, 0], [10, 2, 0]], float)
    s = Surface(v, np.array([[0, 1, 2], [3, 4, 5]]))
    p = sample_surface(s, 40_000, np.random.default_rng(0))
    on_big = p[:, 0] >= 10
    assert abs(on_big.mean() - 0.75) < 0.01
    assert np.all(p[:, 2] == 0)
    small = p[~on_big]
    assert np.all(small[:, 0] / 1 + small[:, 1] / 2 <= 1 + 1e-12)  # inside triangle 0
    # uniform inside a triangle: the half nearer the right-angle corner (area 1/4 below x/1 + y/2 = 0.5)
    assert abs(np.mean(small[:, 0] + small[:, 1] / 2 < 0.5) - 0.25) < 0.02
    assert np.array_equal(p, sample_surface(s, 40_000, np.random.default_rng(0)))


def test_seed_reproducible(spheres):
    a = evaluate_reconstruction(spheres["inner"], spheres["outer"], mode="samples", num_samples=5000, seed=7)
    b = evaluate_reconstruction(spheres["inner"], spheres["outer"], mode="samples", num_samples=5000, seed=7)
    c = evaluate_reconstruction(spheres["inner"], spheres["outer"], mode="samples", num_samples=5000, seed=8)
    assert a.accuracy_m == b.accuracy_m and a.completion_m == b.completion_m
    assert a.accuracy_m != c.accuracy_m


def test_metrics_do_not_depend_on_vertex_or_triangle_order(spheres):
    """The same surface renumbered (as Open3D's marching cubes emits it from run to run) scores the same."""
    mesh = load_surface(spheres["inner"])
    rng = np.random.default_rng(7)
    perm = rng.permutation(len(mesh.vertices))
    renumbered = np.argsort(perm)[mesh.triangles][rng.permutation(len(mesh.triangles))]
    shuffled = Surface(mesh.vertices[perm], np.roll(renumbered, 1, axis=1), "shuffled")
    a = evaluate_reconstruction(mesh, spheres["outer"], num_samples=3000)
    b = evaluate_reconstruction(shuffled, spheres["outer"], num_samples=3000)
    assert (a.accuracy_m, a.completion_m, a.fscore) == (b.accuracy_m, b.completion_m, b.fscore)


def test_metrics_from_errors_by_hand():
    r = metrics_from_errors([0.005, 0.015, 0.03, 0.2], [0.001, 0.06], thresholds_m=(0.01, 0.05))
    assert r["precision"] == (0.25, 0.75) and r["recall"] == (0.5, 0.5)
    assert r["fscore"][0] == pytest.approx(2 * 0.25 * 0.5 / 0.75)
    assert r["completion_ratio"] == 0.5
    assert r["accuracy_m"] == pytest.approx(0.0625) and r["accuracy_median_m"] == pytest.approx(0.0225)
    assert r["chamfer_l1_m"] == pytest.approx(0.5 * (0.0625 + 0.0305))
    # strict threshold: a distance equal to the threshold does not count
    assert metrics_from_errors([0.01], [0.01], thresholds_m=(0.01,))["fscore"] == (0.0,)


# ---------------------------------------------------------------------------- culling
CAM = Camera(50.0, 50.0, 31.5, 23.5, 64, 48)  # camera at the origin looking down +z (identity pose)
# Back plane A at z = 2 (x, y in [-0.5, 0.5]); occluder B at z = 1 shadows A's x < 0 half.
PLANE_A = grid_mesh(-0.5, 0.5, -0.5, 0.5, 2.0, 0.1)
PLANE_B = grid_mesh(-0.3, 0.0, -0.35, 0.35, 1.0, 0.05)


def test_visibility_removes_hidden_half():
    gt = merge(PLANE_A, PLANE_B)
    pts = sample_surface(gt, 20_000, np.random.default_rng(0))
    seen, hit = visibility(gt, pts, Culling(CAM, np.eye(4)))
    on_a = np.isclose(pts[:, 2], 2.0)
    assert not seen[on_a & (pts[:, 0] < -0.05)].any(), "points behind the occluder were kept"
    assert seen[on_a & (pts[:, 0] > 0.05)].all(), "visible points were culled"
    assert seen[~on_a].all()
    centroid_x = gt.vertices[gt.triangles].mean(axis=1)[:, 0]
    tri_a = np.arange(len(gt.triangles)) < len(PLANE_A[1])
    assert not hit[tri_a & (centroid_x < -0.06)].any()
    assert hit[tri_a & (centroid_x > 0.06)].all() and hit[~tri_a].all()


def test_visibility_frustum_and_range():
    gt = merge(PLANE_A, PLANE_B)
    pts = sample_surface(gt, 5000, np.random.default_rng(0))
    turned = np.diag([1.0, -1.0, -1.0, 1.0])  # looking down -z: everything is behind the camera
    seen, hit = visibility(gt, pts, Culling(CAM, turned))
    assert not seen.any() and not hit.any()
    seen, _ = visibility(gt, pts, Culling(CAM, np.eye(4), max_depth_m=1.5))
    assert np.array_equal(seen, np.isclose(pts[:, 2], 1.0))
    with pytest.raises(ValueError, match="no ground-truth point"):
        evaluate_reconstruction(gt, gt, culling=Culling(CAM, turned), num_samples=1000)


def test_depth_epsilon_decides_near_occlusion():
    """An occluder 10 cm in front of the plane hides it at eps = 3 cm but not at eps = 20 cm."""
    gt = merge(grid_mesh(-0.5, 0.5, -0.5, 0.5, 2.0, 0.1), grid_mesh(-0.6, 0.6, -0.6, 0.6, 1.9, 0.1))
    pts = sample_surface(gt, 5000, np.random.default_rng(0))
    back = np.isclose(pts[:, 2], 2.0)
    seen, _ = visibility(gt, pts, Culling(CAM, np.eye(4), eps_m=0.03))
    assert not seen[back].any() and seen[~back].all()
    seen, _ = visibility(gt, pts, Culling(CAM, np.eye(4), eps_m=0.2))
    assert seen.all()


def test_culling_changes_completion_not_accuracy():
    gt = merge(PLANE_A, PLANE_B)
    v, t = PLANE_A
    right_half = Surface(v, t[v[t].mean(axis=1)[:, 0] > 0])
    recon = merge((right_half.vertices, right_half.triangles), PLANE_B)  # what the camera saw
    whole = evaluate_reconstruction(recon, gt, mode="exact", num_samples=20_000)
    culled = evaluate_reconstruction(recon, gt, mode="exact", num_samples=20_000, culling=Culling(CAM, np.eye(4)))
    assert whole.completion_ratio < 0.7  # the hidden half (41 % of the area) counts as missing
    assert culled.completion_ratio > 0.995 and culled.completion_m < 0.002
    assert culled.accuracy_m == whole.accuracy_m == pytest.approx(0.0, abs=1e-6)
    info = culled.protocol["culling"]
    assert info["method"] == "frustum+depth" and info["num_poses"] == 1 and info["eps_m"] == 0.03
    assert 0.5 < info["gt_points_kept_fraction"] < 0.65
    assert whole.protocol["culling"] == {"method": "none"}


def test_culled_accuracy_target():
    gt = merge(PLANE_A, PLANE_B)
    cull = Culling(CAM, np.eye(4), accuracy_target="culled")
    m = evaluate_reconstruction(gt, gt, mode="exact", num_samples=20_000, culling=cull)
    # the reconstruction's hidden half is far from the seen GT triangles
    assert m.precision[-1] < 0.7 and m.accuracy_m > 0.05
    s = evaluate_reconstruction(gt, gt, mode="samples", num_samples=20_000, culling=cull)
    assert s.precision[-1] < 0.7


# ---------------------------------------------------------------------------- inputs and reports
def test_input_kinds_agree(tmp_path, spheres):
    import open3d as o3d

    legacy = o3d.geometry.TriangleMesh(
        o3d.utility.Vector3dVector(spheres["inner"].vertices), o3d.utility.Vector3iVector(spheres["inner"].triangles)
    )
    tensor = o3d.t.geometry.TriangleMesh.from_legacy(legacy)
    path = tmp_path / "inner.ply"
    o3d.io.write_triangle_mesh(str(path), legacy)
    ref = evaluate_reconstruction(spheres["inner"], spheres["outer"], num_samples=2000)
    for src in (legacy, tensor, str(path)):
        m = evaluate_reconstruction(src, spheres["outer"], num_samples=2000)
        assert m.accuracy_m == pytest.approx(ref.accuracy_m, abs=1e-6)
        assert m.protocol["recon"].startswith("mesh")
    cloud_path = tmp_path / "cloud.ply"
    o3d.io.write_point_cloud(
        str(cloud_path), o3d.geometry.PointCloud(o3d.utility.Vector3dVector(spheres["inner"].vertices))
    )
    s = load_surface(cloud_path)
    assert not s.is_mesh and len(s.vertices) == 2000
    pcd = o3d.t.geometry.PointCloud(o3d.core.Tensor(spheres["inner"].vertices))
    assert load_surface(pcd).vertices.shape == (2000, 3)


def test_bad_inputs(tmp_path, spheres):
    with pytest.raises(FileNotFoundError, match="missing"):
        evaluate_reconstruction(tmp_path / "nope.ply", spheres["outer"])
    with pytest.raises(ValueError, match="unknown mode"):
        evaluate_reconstruction(spheres["inner"], spheres["outer"], mode="chamfer")
    with pytest.raises(ValueError, match="needs a mesh"):
        evaluate_reconstruction(spheres["inner"], spheres["outer"].vertices, culling=Culling(CAM, np.eye(4)))
    with pytest.raises(ValueError, match=r"\(N, 3\)"):
        load_surface(np.zeros((5, 2)))
    with pytest.raises(ValueError, match="out of range"):
        Surface(np.zeros((3, 3)), np.array([[0, 1, 3]]))
    with pytest.raises(ValueError, match="rotation"):
        Culling(CAM, np.diag([1.0, 1.0, -1.0, 1.0]))


def test_report_writes_json_and_png(tmp_path, spheres):
    m = evaluate_reconstruction(spheres["inner"], spheres["outer"], num_samples=3000)
    paths = write_recon_report(m, tmp_path / "out")
    assert [p.name for p in paths] == ["recon_metrics.json", "recon_errors.png"]
    d = json.loads(paths[0].read_text())
    assert d["accuracy_m"] == pytest.approx(m.accuracy_m) and d["fscore"] == list(m.fscore)
    assert "errors" not in d and d["protocol"]["mode"] == "exact"
    assert paths[1].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and paths[1].stat().st_size > 10_000
    m.errors = None
    assert [p.name for p in write_recon_report(m, tmp_path / "o2")] == ["recon_metrics.json"]


# ---------------------------------------------------------------------------- real data
def test_replica_sampling_floor():
    """The GT mesh against itself: samples mode scores the floor 0.5 / sqrt(N / area), exact mode ~0."""
    gt = load_surface(data_path("replica-office0", "office0_mesh.ply"))
    area = float(gt.triangle_areas().sum())
    n = 50_000
    s = evaluate_reconstruction(gt, gt, mode="samples", num_samples=n)
    floor = 0.5 / np.sqrt(n / area)  # ~2.2 cm for 101 m^2
    assert s.accuracy_m == pytest.approx(floor, rel=0.05) and s.completion_m == pytest.approx(floor, rel=0.05)
    e = evaluate_reconstruction(gt, gt, mode="exact", num_samples=n)
    assert e.accuracy_m < 1e-5 and e.completion_m < 1e-5
