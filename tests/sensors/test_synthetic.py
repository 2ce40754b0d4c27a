"""Synthetic RGB-D: ray-cast rendering (z-depth, colours, silhouettes, real Replica depth),
the depth-sensor noise model, and the "synthetic" frame source."""

from __future__ import annotations

import math

import numpy as np
import pytest

from sensors import Camera, SourceError, open_source
from sensors.io import read_depth_m, read_json, read_rgb
from sensors.scenes import look_at_pose, make_room, orbit_trajectory
from sensors.synthetic import (
    DepthNoiseModel,
    MeshRenderer,
    SyntheticSource,
    interpolate_vertex_attribute,
    neighbourhood_min_max,
    render_rgbd,
)
from sensors.trajectory_io import Trajectory, read_matrix_lines, write_matrix_lines
from tests.conftest import data_path


def tri_mesh(vertices, triangles, colors=None):
    import open3d as o3d

    m = o3d.geometry.TriangleMesh(
        o3d.utility.Vector3dVector(np.asarray(vertices, float)),
        o3d.utility.Vector3iVector(np.asarray(triangles, np.int32)),
    )
    if colors is not None:
        m.vertex_colors = o3d.utility.Vector3dVector(np.asarray(colors, float))
    return m


def quad_mesh(center, axis_u, axis_v, half_size):
    """A square of side 2*half_size spanned by two unit axes, centred at ``center``."""
    c, u, v = (np.asarray(a, float) for a in (center, axis_u, axis_v))
    verts = [
        c - half_size * u - half_size * v,
        c + half_size * u - half_size * v,
        c + half_size * u + half_size * v,
        c - half_size * u + half_size * v,
    ]
    return tri_mesh(verts, [[0, 1, 2], [0, 2, 3]], np.full((4, 3), 0.5))


# ----------------------------------------------------------------------------- rendering
def test_barycentric_colour_follows_open3d_uv_convention():
    """Every pixel's colour equals an independent barycentric reference; mean at the centroid."""
    p = np.array([[-0.6, -0.4, 2.0], [0.6, -0.4, 2.0], [0.0, 0.8, 2.0]])  # centroid (0, 0, 2)
    colors = np.eye(3)  # red, green, blue
    cam = Camera(40.0, 40.0, 32.0, 32.0, 65, 65)  # pixel (32, 32) looks along +z
    rgb, depth, extra = render_rgbd(tri_mesh(p, [[0, 1, 2]], colors), cam, np.eye(4))
    hit = extra["primitive_ids"] >= 0
    assert hit.sum() > 300 and np.all(extra["primitive_ids"][hit] == 0)
    # reference: intersect each pixel ray with z = 2 and solve the 2D barycentric system
    rays = cam.pixel_rays()[hit]
    pts = rays * 2.0
    A = np.array([[p[1, 0] - p[0, 0], p[2, 0] - p[0, 0]], [p[1, 1] - p[0, 1], p[2, 1] - p[0, 1]]])
    uv = np.linalg.solve(A, (pts[:, :2] - p[0, :2]).T).T
    w = np.column_stack([1 - uv.sum(1), uv])
    expected = np.rint(255 * w @ colors)
    err = np.abs(rgb[hit].astype(float) - expected)
    assert err.max() <= 1.0, f"colour differs from barycentric reference by up to {err.max()}"
    assert tuple(rgb[32, 32]) == (85, 85, 85), f"centroid colour {rgb[32, 32]} is not the mean"
    np.testing.assert_allclose(depth[hit], 2.0, atol=1e-5)
    # exactly the vertex colours at the vertices
    verts = interpolate_vertex_attribute(
        colors, np.array([[0, 1, 2]]), np.zeros(3, int), np.array([[0.0, 0], [1, 0], [0, 1]])
    )
    np.testing.assert_array_equal(verts, colors)
    # pixels next to each vertex are dominated by that vertex's colour
    uvs, _ = cam.project(p)
    for k, (u, v) in enumerate(uvs):
        centroid_px = np.array([32.0, 32.0])
        q = np.rint((np.array([u, v]) * 0.9 + centroid_px * 0.1)).astype(int)
        assert np.argmax(rgb[q[1], q[0]]) == k and rgb[q[1], q[0], k] > 200


def test_depth_is_z_depth_not_ray_length():
    """A plane perpendicular to the optical axis renders the same depth at every pixel."""
    T = look_at_pose([0.3, -1.0, 1.2], [2.0, 1.5, 0.4])
    d = 2.5
    center = T[:3, 3] + d * T[:3, 2]
    mesh = quad_mesh(center, T[:3, 0], T[:3, 1], 10.0)
    cam = Camera(60.0, 60.0, 39.5, 29.5, 80, 60)
    _, depth, extra = render_rgbd(mesh, cam, T)
    assert np.all(extra["primitive_ids"] >= 0)
    np.testing.assert_allclose(depth, d, atol=2e-5)
    # a head-on plane has cos(incidence) = 1 at the principal point, less towards the corners
    cos = extra["cos_incidence"]
    assert cos[29, 39] == pytest.approx(1.0, abs=1e-3)
    corner_ray = cam.pixel_rays()[0, 0]
    assert cos[0, 0] == pytest.approx(1.0 / np.linalg.norm(corner_ray), abs=1e-4)


def test_cube_silhouette_size_head_on():
    import open3d as o3d

    side, dist = 0.5, 3.0
    cube = o3d.geometry.TriangleMesh.create_box(side, side, side).translate([-side / 2, -side / 2, dist - side / 2])
    cam = Camera(100.0, 100.0, 79.5, 59.5, 160, 120)
    _, depth, _ = render_rgbd(cube, cam, np.eye(4))
    front = dist - side / 2
    half_px = cam.fx * (side / 2) / front  # 9.09 px
    u = np.arange(cam.width)
    expected_cols = int(np.sum(np.abs(u - cam.cx) < half_px))
    v = np.arange(cam.height)
    expected_rows = int(np.sum(np.abs(v - cam.cy) < half_px))
    assert (depth[int(cam.cy)] > 0).sum() == expected_cols == 18
    assert (depth[:, int(cam.cx)] > 0).sum() == expected_rows
    assert (depth > 0).sum() == expected_cols * expected_rows
    np.testing.assert_allclose(depth[depth > 0], front, atol=1e-5)


def test_pose_rotation_and_translation_move_the_image_consistently():
    """A point rendered from a look-at pose lands on the pixel Camera.project predicts."""
    import open3d as o3d

    target = np.array([1.0, 2.0, 0.5])
    ball = o3d.geometry.TriangleMesh.create_sphere(0.05, 20).translate(target + [0.3, -0.2, 0.1])
    T = look_at_pose([3.0, 0.5, 1.6], target)
    cam = Camera(120.0, 120.0, 79.5, 59.5, 160, 120)
    renderer = MeshRenderer(ball)
    view = renderer.render(cam, T)
    v, u = np.nonzero(view.hit)
    centre_px = np.array([u.mean(), v.mean()])
    p_cam = (np.linalg.inv(T) @ np.append(target + [0.3, -0.2, 0.1], 1.0))[:3]
    uv, _ = cam.project(p_cam[None])
    assert np.linalg.norm(centre_px - uv[0]) < 0.5


def test_renderer_builds_bvh_once_and_renders_many_poses():
    scene = make_room(seed=1)
    renderer = MeshRenderer(scene)
    bvh = renderer.scene
    cam = Camera(50.0, 50.0, 31.5, 23.5, 64, 48)
    traj = orbit_trajectory(scene, 6)
    views = [renderer.render(cam, T) for T in traj.T_world_cam]
    assert renderer.scene is bvh
    assert all(v.instance_ids is not None and (v.instance_ids >= 0).all() for v in views)  # closed room
    assert not np.array_equal(views[0].depth_m, views[3].depth_m)
    again = renderer.render(cam, traj.T_world_cam[0])
    np.testing.assert_array_equal(again.rgb, views[0].rgb)
    np.testing.assert_array_equal(again.depth_m, views[0].depth_m)


def test_bad_mesh_path_is_named(tmp_path):
    with pytest.raises(SourceError, match="missing mesh file"):
        MeshRenderer(tmp_path / "nope.ply")
    bad = tmp_path / "bad.ply"
    bad.write_text("not a mesh")
    with pytest.raises(SourceError, match="bad.ply"):
        MeshRenderer(bad)


def test_replica_rendered_depth_matches_stored_depth():
    """Render the decimated office0 mesh at the 4 stored poses: median |depth diff| <= 5 mm."""
    root = data_path("replica-office0")
    p = read_json(root / "cam_params.json")["camera"]
    cam = Camera(p["fx"], p["fy"], p["cx"], p["cy"], p["w"], p["h"])
    traj = read_matrix_lines(root / "office0" / "traj.txt")
    renderer = MeshRenderer(root / "office0_mesh.ply")
    medians, both_valid, colour_corr = [], [], []
    for i in range(4):
        gt = read_depth_m(root / "office0" / "results" / f"depth{i:06d}.png", p["scale"])
        view = renderer.render(cam, traj.T_world_cam[i])
        valid = (gt > 0) & (view.depth_m > 0)
        both_valid.append(valid.mean())
        medians.append(float(np.median(np.abs(view.depth_m[valid] - gt[valid]))))
        photo = read_rgb(root / "office0" / "results" / f"frame{i:06d}.jpg").astype(float)
        corr = np.corrcoef(view.rgb.reshape(-1, 3).T, photo.reshape(-1, 3).T)[:3, 3:]  # rendered x photo
        colour_corr.append(corr.diagonal().min())
        # registered and in RGB order: each channel matches its own far better than the swapped one
        assert corr[0, 0] > corr[2, 0] + 0.1 and corr[2, 2] > corr[0, 2] + 0.1, corr
    print(
        f"Replica office0: median |depth diff| per frame (m) {np.round(medians, 5)}, "
        f"valid in both {np.round(both_valid, 4)}, colour correlation {np.round(colour_corr, 3)}"
    )
    assert max(medians) <= 0.005
    assert min(both_valid) > 0.99
    # the mesh's vertex colours are ~3x brighter than the stored frames, but correlate well
    assert min(colour_corr) > 0.65


# ----------------------------------------------------------------------------- noise model
def plane(cam: Camera, z: float) -> np.ndarray:
    return np.full(cam.shape, z, np.float32)


CAM = Camera(160.0, 160.0, 79.5, 59.5, 160, 120)


def test_noise_none_is_identity():
    model = DepthNoiseModel.preset("none")
    assert not model.changes_depth and not model.changes_pose
    rng = np.random.default_rng(0)
    depth = np.random.default_rng(1).uniform(0.2, 8.0, CAM.shape).astype(np.float32)
    depth[::7, ::5] = 0
    out = model.apply(depth, CAM, rng, cos_incidence=np.full(CAM.shape, 0.05, np.float32))
    np.testing.assert_array_equal(out, depth)
    T = look_at_pose([1, 2, 3], [0, 0, 0])
    np.testing.assert_array_equal(model.perturb_pose(T, rng), T)


@pytest.mark.parametrize("z", [1.0, 3.0])
def test_kinect_axial_noise_and_quantisation_statistics(z):
    model = DepthNoiseModel.preset("kinect")
    out = model.apply(plane(CAM, z), CAM, model.rng(0))
    valid = out > 0
    assert 0.98 < valid.mean() < 1.0  # only the 0.5 % random dropout
    err = out[valid].astype(np.float64) - z
    sigma = float(model.axial_sigma(z))
    q = float(model.quantisation_step_m(z))
    expected = math.sqrt(sigma**2 + q**2 / 12)
    print(
        f"kinect at {z} m: error std {err.std() * 1000:.2f} mm, model {expected * 1000:.2f} mm "
        f"(axial {sigma * 1000:.2f} mm, level spacing {q * 1000:.2f} mm)"
    )
    assert err.std() == pytest.approx(expected, rel=0.12)
    assert abs(err.mean()) < 0.15 * expected
    # depth takes discrete levels: f*b/z is a multiple of 1/8 px
    k = model.disparity_focal_px * model.baseline_m / out[valid].astype(np.float64) / model.disparity_step_px
    np.testing.assert_allclose(k, np.rint(k), atol=1e-3)
    levels = np.unique(out[valid])
    assert 3 <= len(levels) <= 16


def test_quantisation_alone_gives_expected_levels():
    model = DepthNoiseModel.preset("none", disparity_step_px=0.125)
    z = np.linspace(0.5, 4.0, 160 * 120, dtype=np.float32).reshape(CAM.shape)
    out = model.apply(z, CAM, model.rng(0))
    err = np.abs(out - z)
    # rounding disparity by at most half a step moves depth by at most ~half a level
    assert np.all(err <= 0.51 * model.quantisation_step_m(z) * (1 + 0.01))
    fb = model.disparity_focal_px * model.baseline_m
    n_levels = round((fb / 0.5 - fb / 4.0) / model.disparity_step_px) + 1  # 609 steps of 1/8 px
    assert len(np.unique(out)) == n_levels


def test_dropout_random_grazing_and_range():
    base = DepthNoiseModel.preset("none")
    m = DepthNoiseModel.preset("none", dropout_prob=0.02)
    frac = (m.apply(plane(CAM, 2.0), CAM, m.rng(0)) == 0).mean()
    assert 0.015 < frac < 0.025
    g = DepthNoiseModel.preset("none", grazing_start_deg=70.0, grazing_end_deg=85.0)
    for angle, lo, hi in [(60.0, 0.0, 0.0), (77.5, 0.45, 0.55), (86.0, 1.0, 1.0)]:
        cos = np.full(CAM.shape, math.cos(math.radians(angle)), np.float32)
        frac = (g.apply(plane(CAM, 2.0), CAM, g.rng(0), cos_incidence=cos) == 0).mean()
        assert lo <= frac <= hi, f"grazing dropout at {angle} deg: {frac}"
    r = DepthNoiseModel.preset("none", min_range_m=0.4, max_range_m=4.5)
    depth = np.concatenate([plane(CAM, 0.3)[:40], plane(CAM, 2.0)[:40], plane(CAM, 5.0)[:40]])
    out = r.apply(depth, CAM, r.rng(0))
    assert np.all(out[:40] == 0) and np.all(out[40:80] == 2.0) and np.all(out[80:] == 0)
    shadow = np.zeros(CAM.shape, bool)
    shadow[:, :10] = True
    s = DepthNoiseModel.preset("none", projector_shadow=True)
    out = s.apply(plane(CAM, 2.0), CAM, s.rng(0), shadow=shadow)
    assert np.all(out[:, :10] == 0) and np.all(out[:, 10:] == 2.0)
    assert base.apply(plane(CAM, 2.0), CAM, base.rng(0), shadow=shadow).min() == 2.0


def test_flying_pixels_lie_between_foreground_and_background_at_edges_only():
    depth = plane(CAM, 2.0)
    depth[:, :80] = 1.0  # vertical step edge between columns 79 and 80
    m = DepthNoiseModel.preset("none", flying_prob=1.0)
    out = m.apply(depth, CAM, m.rng(0))
    changed = out != depth
    assert set(np.nonzero(changed.any(axis=0))[0]) == {79, 80}
    assert changed[:, 79:81].mean() > 0.99  # a ~ U(0, 1): exactly 0 has probability 0
    assert np.all((out[changed] > 1.0) & (out[changed] < 2.0))
    half = DepthNoiseModel.preset("none", flying_prob=0.5)
    frac = (half.apply(depth, CAM, half.rng(0)) != depth)[:, 79:81].mean()
    assert 0.4 < frac < 0.6


def test_kinect_noise_on_a_rendered_room_changes_depth_only_near_edges():
    from scipy.ndimage import binary_dilation

    scene = make_room(seed=0)
    cam = Camera(130.0, 130.0, 79.5, 59.5, 160, 120)
    T = orbit_trajectory(scene, 8).T_world_cam[1]
    src = SyntheticSource(scene, Trajectory([0.0], T[None]), camera=cam, noise="kinect")
    f = src[0]
    clean = f.truth.depth_m
    noisy = f.depth
    both = (clean > 0) & (noisy > 0)
    model = src.noise
    tol = 5 * model.axial_sigma(clean) + 1.5 * model.quantisation_step_m(clean)
    big = both & (np.abs(noisy - clean) > tol)
    zmin, zmax = neighbourhood_min_max(clean.astype(float), clean > 0)
    edges = (clean > 0) & (zmax - zmin > model.edge_threshold_m + model.edge_threshold_rel * zmin)
    near_edges = binary_dilation(edges, iterations=3)
    assert big.sum() > 20, "expected flying / laterally displaced pixels at the depth edges"
    assert np.all(near_edges[big]), f"{(big & ~near_edges).sum()} large depth changes away from edges"
    dropped = (clean > 0) & (noisy == 0)
    assert 0.005 < dropped.mean() < 0.3
    assert (np.abs(noisy - clean)[both & ~near_edges] > 0).mean() > 0.5  # axial noise everywhere


def test_projector_shadow_falls_beside_foreground_edges():
    import open3d as o3d

    wall = quad_mesh([0, 0, 3.0], [1, 0, 0], [0, 1, 0], 5.0)
    post = o3d.geometry.TriangleMesh.create_box(0.2, 2.0, 0.2).translate([-0.1, -1.0, 1.4])
    renderer = MeshRenderer(wall + post)
    cam = Camera(100.0, 100.0, 79.5, 59.5, 160, 120)
    view = renderer.render(cam, np.eye(4))
    shadow = renderer.projector_shadow(view, cam, np.eye(4), 0.075)
    cols = np.nonzero(shadow[60])[0]
    # the post spans x in [-0.1, 0.1] at z = 1.4; a projector at x = +0.075 throws its shadow on
    # the wall to the left of the post: wall points x in [-0.1 - 3 (0.175) / 1.4 ... ] (about 4 px)
    assert len(cols) >= 2
    post_cols = np.nonzero(view.depth_m[60] < 2.0)[0]
    assert cols.max() < post_cols.min() and post_cols.min() - cols.max() <= 1
    assert not shadow[view.depth_m < 2.0].any()


def test_noise_is_deterministic_for_a_seed():
    scene = make_room(seed=2)
    cam = Camera(60.0, 60.0, 39.5, 29.5, 80, 60)
    traj = orbit_trajectory(scene, 4)
    a = SyntheticSource(scene, traj, camera=cam, noise="heavy", noise_seed=7)
    b = SyntheticSource(a.renderer, traj, camera=cam, noise="heavy", noise_seed=7)
    c = SyntheticSource(a.renderer, traj, camera=cam, noise="heavy", noise_seed=8)
    fa, fb, fc = a[2], b[2], c[2]
    np.testing.assert_array_equal(fa.depth, fb.depth)
    np.testing.assert_array_equal(fa.T_world_cam, fb.T_world_cam)
    assert not np.array_equal(fa.depth, fc.depth)
    np.testing.assert_array_equal(a[2].depth, fa.depth)  # independent of access order
    np.testing.assert_array_equal(fa.rgb, fc.rgb)  # colour is never noised


def test_pose_noise_changes_only_the_reported_pose():
    rng = np.random.default_rng(0)
    m = DepthNoiseModel.preset("none", pose_sigma_rot_deg=0.5, pose_sigma_trans_m=0.01)
    from scipy.spatial.transform import Rotation

    T = look_at_pose([1.0, 0.5, 1.5], [2.0, 2.0, 0.5])
    samples = [np.linalg.inv(T) @ m.perturb_pose(T, rng) for _ in range(2000)]
    rotvec = Rotation.from_matrix(np.stack([s[:3, :3] for s in samples])).as_rotvec()
    trans = np.stack([s[:3, 3] for s in samples])
    np.testing.assert_allclose(np.degrees(rotvec.std(axis=0)), 0.5, rtol=0.1)
    np.testing.assert_allclose(trans.std(axis=0), 0.01, rtol=0.1)

    scene = make_room(seed=0)
    cam = Camera(50.0, 50.0, 31.5, 23.5, 64, 48)
    traj = orbit_trajectory(scene, 3)
    noisy = SyntheticSource(scene, traj, camera=cam, noise=m)
    clean = SyntheticSource(noisy.renderer, traj, camera=cam)
    f, g = noisy[1], clean[1]
    np.testing.assert_array_equal(f.depth, g.depth)
    np.testing.assert_array_equal(f.truth.T_world_cam, traj.T_world_cam[1])
    np.testing.assert_array_equal(g.T_world_cam, traj.T_world_cam[1])
    assert 1e-4 < np.abs(f.T_world_cam - traj.T_world_cam[1]).max() < 0.1


def test_noise_model_rejects_bad_settings():
    with pytest.raises(ValueError, match="unknown noise preset"):
        DepthNoiseModel.preset("kinect2")
    with pytest.raises(ValueError, match="probability"):
        DepthNoiseModel(dropout_prob=1.5)
    with pytest.raises(ValueError, match="max_range_m"):
        DepthNoiseModel(min_range_m=3.0, max_range_m=2.0)
    with pytest.raises(ValueError, match="axial_scale"):
        DepthNoiseModel(axial_scale=-1.0)


# ----------------------------------------------------------------------------- the source
def test_source_from_spec_string_on_replica_mesh(tmp_path):
    root = data_path("replica-office0")
    traj = read_matrix_lines(root / "office0" / "traj.txt")
    short = tmp_path / "traj.txt"
    write_matrix_lines(short, Trajectory(traj.timestamps[:5], traj.T_world_cam[:5]))
    src = open_source(f"synthetic:{root / 'office0_mesh.ply'}?traj={short}&width=120&height=68&fx=60&noise=kinect")
    assert isinstance(src, SyntheticSource) and len(src) == 5 and src.has_poses
    assert src.camera == Camera(60.0, 60.0, 59.5, 33.5, 120, 68)
    f = src[4]
    assert f.depth_source == "rendered" and f.index == 4 and f.rgb.shape == (68, 120, 3)
    np.testing.assert_allclose(f.T_world_cam, traj.T_world_cam[4])
    assert 0.5 < (f.depth > 0).mean() <= 1.0
    assert f.truth.instance_ids is None
    assert len(list(src.frames(stride=2))) == 3


def test_source_procedural_room_spec():
    src = open_source("synthetic:room?seed=1&frames=4&width=80&height=60")
    assert len(src) == 4 and src.camera.shape == (60, 80)
    f = src[0]
    assert f.timestamp == 0.0 and src[1].timestamp == pytest.approx(1 / 30)
    truth = f.truth
    assert truth.instance_ids.shape == (60, 80) and (truth.instance_ids >= 0).all()
    np.testing.assert_array_equal(f.depth, truth.depth_m)  # noise "none" by default


@pytest.mark.parametrize(
    "spec, message",
    [
        ("synthetic:/x/mesh.ply", "trajectory is required"),
        ("synthetic:room?colour=1", "unknown option"),
        ("synthetic:room?width=abc", "not a number"),
        ("synthetic:room?noise=kinekt", "unknown noise preset"),
    ],
)
def test_source_spec_errors(spec, message):
    with pytest.raises((SourceError, ValueError), match=message):
        open_source(spec)
