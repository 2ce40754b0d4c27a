"""RGB-D frames rendered from a triangle mesh, with an optional depth-sensor noise model.

Three pieces, each usable alone:

- :class:`MeshRenderer` builds Open3D's ``RaycastingScene`` (an Embree BVH) once for a
  mesh and renders colour, z-depth, triangle ids, instance ids and surface normals for
  any number of poses.
- :class:`DepthNoiseModel` turns a clean rendered depth image into one that looks like
  a structured-light sensor's (Kinect v1 / RealSense style), and optionally perturbs the
  *reported* pose.
- :class:`SyntheticSource` is a frame source (registry name ``"synthetic"``) that renders
  frames lazily along a trajectory.

Conventions (docs/conventions.md): OpenCV camera axes, integer pixel coordinates are
pixel centres, depth is metres along the optical axis (0 = no hit / invalid),
``T_world_cam`` maps camera points to world points.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, Union
from urllib.parse import parse_qsl

import numpy as np

from sensors.base import IndexedSource
from sensors.camera import Camera
from sensors.frame import Frame, SyntheticFrameTruth, check_pose  # noqa: F401 (SyntheticFrameTruth re-exported)
from sensors.io import SourceError, require_file
from sensors.scenes import SyntheticScene, make_room, orbit_trajectory
from sensors.trajectory_io import Trajectory, read_trajectory

MeshLike = Union[str, Path, SyntheticScene, Any]
"""A mesh file path, an ``open3d.geometry.TriangleMesh``, an ``open3d.t.geometry.TriangleMesh``
or a :class:`sensors.scenes.SyntheticScene`."""

DEFAULT_CAMERA = Camera(fx=525.0, fy=525.0, cx=319.5, cy=239.5, width=640, height=480)
"""PrimeSense / Kinect v1 colour intrinsics at 640x480 (ICL-NUIM, Open3D test data)."""

_INVALID_ID = np.uint32(0xFFFFFFFF)  # RaycastingScene.INVALID_ID


# --------------------------------------------------------------------------- rendering
@dataclass
class RenderedView:
    """Everything one ray-cast render of a mesh gives, per pixel.

    Attributes:
        rgb: (H, W, 3) uint8 vertex colours interpolated barycentrically; background where no hit.
        depth_m: (H, W) float32 metres along the optical axis (z-depth); 0 where no hit.
        primitive_ids: (H, W) int64 index of the triangle hit; -1 where no hit.
        instance_ids: (H, W) int64 instance label of the triangle hit (-1 where no hit),
            or None when the mesh carries no per-triangle instance labels.
        normals_world: (H, W, 3) float32 unit geometric normal of the triangle hit, world frame
            (orientation from the triangle winding); zeros where no hit.
        cos_incidence: (H, W) float32 |cos| of the angle between the viewing ray and the
            surface normal (1 = head-on, 0 = grazing); 0 where no hit.
    """

    rgb: np.ndarray
    depth_m: np.ndarray
    primitive_ids: np.ndarray
    instance_ids: np.ndarray | None
    normals_world: np.ndarray
    cos_incidence: np.ndarray

    @property
    def hit(self) -> np.ndarray:
        """(H, W) bool, True where a ray hit the mesh."""
        return self.primitive_ids >= 0


def load_mesh(path: Path | str):
    """Read a triangle mesh file (PLY, OBJ, ...) as an ``open3d.t.geometry.TriangleMesh``.

    Raises SourceError naming the file if it is missing or holds no triangles.
    """
    import open3d as o3d

    p = require_file(path, "mesh file")
    mesh = o3d.t.io.read_triangle_mesh(str(p))
    if "indices" not in mesh.triangle or mesh.triangle.indices.shape[0] == 0:
        raise SourceError(f"{p}: not a triangle mesh or no triangles in it")
    return mesh


def interpolate_vertex_attribute(
    values: np.ndarray, triangles: np.ndarray, primitive_ids: np.ndarray, primitive_uvs: np.ndarray
) -> np.ndarray:
    """Barycentric interpolation of a per-vertex attribute at ray hits.

    Open3D's ``cast_rays`` reports ``primitive_uvs`` = (u, v) such that the hit point is
    ``(1 - u - v) * p0 + u * p1 + v * p2`` for the triangle's vertices (p0, p1, p2) in
    index order (checked in tests/sensors/test_synthetic.py).

    Args:
        values: (V, C) attribute per vertex.
        triangles: (T, 3) vertex indices.
        primitive_ids: (N,) int triangle index per hit (all valid, no -1).
        primitive_uvs: (N, 2) the (u, v) of each hit.
    Returns:
        (N, C) float32 interpolated attribute.
    """
    per_corner = np.asarray(values, dtype=np.float32)[triangles]  # (T, 3, C)
    return interpolate_corner_attribute(per_corner, primitive_ids, primitive_uvs)


def interpolate_corner_attribute(
    per_corner: np.ndarray, primitive_ids: np.ndarray, primitive_uvs: np.ndarray
) -> np.ndarray:
    """Like :func:`interpolate_vertex_attribute` with the attribute already gathered per
    triangle corner: ``per_corner`` (T, 3, C). Returns (N, C) float32."""
    c = per_corner[primitive_ids]  # (N, 3, C): one gather
    u = primitive_uvs[:, 0:1].astype(np.float32, copy=False)
    v = primitive_uvs[:, 1:2].astype(np.float32, copy=False)
    out = c[:, 0] * (1.0 - u - v)
    out += c[:, 1] * u
    out += c[:, 2] * v
    return out


class MeshRenderer:
    """Ray-cast renderer for one static mesh: the BVH is built once, each pose is one ``cast_rays``.

    Camera-frame ray directions are ``[(u - cx) / fx, (v - cy) / fy, 1]`` for every pixel
    centre (u, v), rotated to the world frame but not normalised, so the ray parameter
    ``t_hit`` of a hit *is* its z-depth. Rays are cached per camera.

    Args:
        mesh: see :data:`MeshLike`. Vertex colours are read from it (RGB in [0, 1]); a mesh
            without them renders grey (0.5).
        triangle_instance: (T,) int per-triangle instance labels; taken from a
            ``SyntheticScene`` or a tensor mesh's ``triangle["instance"]`` when not given.
        background_rgb: colour of pixels with no hit, uint8 RGB.
        nthreads: Embree threads (0 = all cores).
    """

    def __init__(
        self,
        mesh: MeshLike,
        triangle_instance: np.ndarray | None = None,
        background_rgb: tuple[int, int, int] = (0, 0, 0),
        nthreads: int = 0,
    ) -> None:
        import open3d as o3d

        self._o3c = o3d.core
        self.name = str(mesh) if isinstance(mesh, (str, Path)) else type(mesh).__name__
        self.instance_labels: tuple[str, ...] | None = None
        """Class label of each instance id (from a ``SyntheticScene``), or None."""
        if isinstance(mesh, SyntheticScene):
            self.instance_labels = tuple(inst.label for inst in mesh.instances)
            if triangle_instance is None:
                triangle_instance = mesh.triangle_instance
            mesh = mesh.mesh
        tmesh = self._to_tensor_mesh(mesh)
        self.vertices = tmesh.vertex.positions.numpy().astype(np.float32)
        self.triangles = tmesh.triangle.indices.numpy().astype(np.int64)
        if self.triangles.shape[0] == 0:
            raise ValueError(f"{self.name}: mesh has no triangles")
        if "colors" in tmesh.vertex:
            self.vertex_colors = np.clip(tmesh.vertex.colors.numpy().astype(np.float32)[:, :3], 0.0, 1.0)
        else:
            self.vertex_colors = np.full((len(self.vertices), 3), 0.5, np.float32)
        if triangle_instance is None and "instance" in tmesh.triangle:
            triangle_instance = tmesh.triangle["instance"].numpy()
        if triangle_instance is not None:
            triangle_instance = np.asarray(triangle_instance, dtype=np.int64).reshape(-1)
            if len(triangle_instance) != len(self.triangles):
                raise ValueError(
                    f"{self.name}: {len(triangle_instance)} instance labels for {len(self.triangles)} triangles"
                )
        self.triangle_instance = triangle_instance
        self.background_rgb = np.asarray(background_rgb, dtype=np.uint8).reshape(3)
        self.nthreads = int(nthreads)
        self.scene = o3d.t.geometry.RaycastingScene()
        self.scene.add_triangles(o3d.core.Tensor(self.vertices), o3d.core.Tensor(self.triangles.astype(np.uint32)))
        self._rays_cam: dict[Camera, np.ndarray] = {}
        self._corner_colors = self.vertex_colors[self.triangles]  # (T, 3, 3): one gather per render

    @staticmethod
    def _to_tensor_mesh(mesh: Any):
        import open3d as o3d

        if isinstance(mesh, (str, Path)):
            return load_mesh(mesh)
        if isinstance(mesh, o3d.t.geometry.TriangleMesh):
            return mesh.cpu()
        if isinstance(mesh, o3d.geometry.TriangleMesh):
            return o3d.t.geometry.TriangleMesh.from_legacy(mesh)
        raise TypeError(f"expected a mesh path, an Open3D TriangleMesh or a SyntheticScene, got {type(mesh).__name__}")

    @property
    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """(3,), (3,) world-frame axis-aligned bounds of the mesh vertices."""
        return self.vertices.min(axis=0), self.vertices.max(axis=0)

    def camera_rays(self, camera: Camera) -> np.ndarray:
        """(H*W, 3) float32 camera-frame directions with z = 1, row-major pixel order (cached)."""
        rays = self._rays_cam.get(camera)
        if rays is None:
            rays = camera.pixel_rays().reshape(-1, 3).astype(np.float32)
            self._rays_cam[camera] = rays
        return rays

    @staticmethod
    def _rotate(rays: np.ndarray, R: np.ndarray) -> np.ndarray:
        """(N, 3) float32 ``rays @ R.T`` without BLAS (a 3x3 matmul over ~1e6 rows is faster
        elementwise and does not start BLAS threads on a shared CPU)."""
        R = np.asarray(R, dtype=np.float32)
        out = np.empty_like(rays)
        for i in range(3):
            out[:, i] = rays[:, 0] * R[i, 0] + rays[:, 1] * R[i, 1] + rays[:, 2] * R[i, 2]
        return out

    def cast(self, origins: np.ndarray, directions: np.ndarray) -> dict[str, np.ndarray]:
        """Cast world-frame rays ``origin + t * direction``.

        Args:
            origins: (N, 3) or (3,) world points.
            directions: (N, 3) world directions (any length; ``t_hit`` is in units of it).
        Returns:
            Open3D's result as numpy: "t_hit" (N,) float32 (inf = miss), "primitive_ids"
            (N,) uint32, "primitive_uvs" (N, 2), "primitive_normals" (N, 3).
        """
        d = np.asarray(directions, dtype=np.float32).reshape(-1, 3)
        o = np.broadcast_to(np.asarray(origins, dtype=np.float32).reshape(-1, 3), d.shape)
        rays = np.ascontiguousarray(np.concatenate([o, d], axis=1))
        res = self.scene.cast_rays(self._o3c.Tensor(rays), nthreads=self.nthreads)
        return {k: res[k].numpy() for k in ("t_hit", "primitive_ids", "primitive_uvs", "primitive_normals")}

    def render(self, camera: Camera, T_world_cam: np.ndarray) -> RenderedView:
        """Render the mesh seen by ``camera`` at pose ``T_world_cam`` (4x4 camera-to-world)."""
        T = check_pose(T_world_cam, f"{self.name}: render pose")
        h, w = camera.shape
        dirs = self._rotate(self.camera_rays(camera), T[:3, :3])  # (N, 3) world, z_cam = 1
        res = self.cast(T[:3, 3], dirs)
        prim = res["primitive_ids"]
        hit = prim != _INVALID_ID
        t = res["t_hit"]
        depth = np.where(hit & np.isfinite(t), t, 0.0).astype(np.float32)
        prim_ids = np.where(hit, prim.astype(np.int64), -1)

        rgb = np.empty((h * w, 3), np.uint8)
        rgb[:] = self.background_rgb
        all_hit = bool(hit.all())
        idx = slice(None) if all_hit else np.flatnonzero(hit)
        col = interpolate_corner_attribute(self._corner_colors, prim_ids[idx], res["primitive_uvs"][idx])
        col *= 255.0
        np.clip(col, 0.0, 255.0, out=col)
        rgb[idx] = np.rint(col).astype(np.uint8)

        normals = res["primitive_normals"].astype(np.float32, copy=False)
        if not all_hit:
            normals = np.where(hit[:, None], normals, np.float32(0.0))
        dn = dirs[:, 0] * normals[:, 0] + dirs[:, 1] * normals[:, 1] + dirs[:, 2] * normals[:, 2]
        norm = np.sqrt(dirs[:, 0] ** 2 + dirs[:, 1] ** 2 + dirs[:, 2] ** 2)
        cos_inc = (np.abs(dn) / norm).astype(np.float32)

        inst = None
        if self.triangle_instance is not None:
            inst = np.full(h * w, -1, np.int64)
            inst[idx] = self.triangle_instance[prim_ids[idx]]
            inst = inst.reshape(h, w)
        return RenderedView(
            rgb=rgb.reshape(h, w, 3),
            depth_m=depth.reshape(h, w),
            primitive_ids=prim_ids.reshape(h, w),
            instance_ids=inst,
            normals_world=normals.reshape(h, w, 3),
            cos_incidence=cos_inc.reshape(h, w),
        )

    def projector_shadow(
        self, view: RenderedView, camera: Camera, T_world_cam: np.ndarray, projector_offset_m: float
    ) -> np.ndarray:
        """(H, W) bool: surface points the camera sees but a projector beside it cannot light.

        The projector sits at ``projector_offset_m`` along the camera's x axis (a structured-light
        sensor's baseline). A pixel is shadowed when the segment from its surface point to the
        projector hits the mesh; hits closer to the point than 0.2 % of that segment's length
        are ignored (the surface itself). Uses Embree's any-hit occlusion test.
        """
        T = check_pose(T_world_cam, f"{self.name}: shadow pose")
        depth = view.depth_m.reshape(-1)
        idx = np.flatnonzero(depth > 0)
        shadow = np.zeros(depth.shape, bool)
        if idx.size == 0 or projector_offset_m == 0:
            return shadow.reshape(view.depth_m.shape)
        pts = self._rotate(self.camera_rays(camera)[idx] * depth[idx, None], T[:3, :3]) + T[:3, 3].astype(np.float32)
        proj = (T[:3, 3] + projector_offset_m * T[:3, 0]).astype(np.float32)
        rays = np.ascontiguousarray(np.concatenate([pts, proj - pts], axis=1))  # t = 1 at the projector
        occluded = self.scene.test_occlusions(self._o3c.Tensor(rays), tnear=0.002, tfar=1.0, nthreads=self.nthreads)
        shadow[idx] = occluded.numpy().astype(bool)
        return shadow.reshape(view.depth_m.shape)


def render_rgbd(
    scene_or_mesh: MeshLike, camera: Camera, T_world_cam: np.ndarray
) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """Render one RGB-D view of a mesh (builds the BVH each call; use :class:`MeshRenderer` for many).

    Returns:
        rgb (H, W, 3) uint8; depth (H, W) float32 metres z-depth, 0 = no hit; and a dict with
        "primitive_ids" (H, W) int64 (-1 = no hit), "normals_world" (H, W, 3) float32,
        "cos_incidence" (H, W) float32 and, when the mesh carries per-triangle instance labels,
        "instance_ids" (H, W) int64 (-1 = no hit).
    """
    view = MeshRenderer(scene_or_mesh).render(camera, T_world_cam)
    extra = {
        "primitive_ids": view.primitive_ids,
        "normals_world": view.normals_world,
        "cos_incidence": view.cos_incidence,
    }
    if view.instance_ids is not None:
        extra["instance_ids"] = view.instance_ids
    return view.rgb, view.depth_m, extra


# --------------------------------------------------------------------------- noise
@dataclass
class DepthNoiseModel:
    """Structured-light depth-sensor noise (Kinect v1 / RealSense D4xx style) and pose noise.

    Applied to a clean z-depth image in this order (z in metres, theta = angle between the
    viewing ray and the surface normal, f_d = ``disparity_focal_px``, b = ``baseline_m``):

    1. Lateral noise: each pixel reads the depth of a neighbour offset by
       ``round(N(0, s_L^2))`` pixels in u and in v, with (Nguyen et al. 2012)
       ``s_L = lateral_scale * (0.8 + 0.035 * theta / (pi/2 - theta))`` sensor pixels, times
       ``fx / f_d`` to convert to pixels of the rendered image. Edges become ragged.
    2. Flying pixels: a valid pixel whose 3x3 neighbourhood spans a depth discontinuity
       (``z_max - z_min > edge_threshold_m + edge_threshold_rel * z_min``, valid neighbours
       only) becomes, with probability ``flying_prob``, ``z_min + a (z_max - z_min)``,
       ``a ~ U(0, 1)``: a point floating between foreground and background.
    3. Axial noise (Nguyen et al. 2012, Kinect v1):
       ``sigma_z = axial_scale * (0.0012 + 0.0019 (z - 0.4)^2 + 0.0001 / sqrt(z) * theta^2 / (pi/2 - theta)^2)``
       metres (theta clipped at 80 deg); ``z <- z + N(0, sigma_z^2)``.
    4. Disparity quantisation: ``d = f_d b / z`` pixels is rounded to multiples of
       ``disparity_step_px`` (1/8 px on Kinect v1), ``z <- f_d b / d_q``. Depth then takes
       discrete levels spaced ``z^2 step / (f_d b)`` apart (2.9 mm at 1 m, 2.6 cm at 3 m
       with the Kinect values); the measured error std is about
       ``sqrt(sigma_z^2 + (z^2 step / (f_d b))^2 / 12)``.
    5. Dropout (depth set to 0): independently with probability ``dropout_prob``; at grazing
       angles with probability rising linearly from 0 at ``grazing_start_deg`` to 1 at
       ``grazing_end_deg``; where the projector (``b`` along +x of the camera) cannot see
       the surface (``projector_shadow``); and outside ``[min_range_m, max_range_m]``.

    Pose noise (``perturb_pose``): the *reported* pose is ``T_world_cam @ dT`` with ``dT`` a
    camera-frame rotation of rotation vector ``N(0, (pose_sigma_rot_deg)^2 I)`` and
    translation ``N(0, pose_sigma_trans_m^2 I)``, drawn independently per frame. The render
    itself always uses the true pose.

    The noise is deterministic for a given ``seed`` and frame (see :meth:`rng`). Presets:
    :meth:`preset` ``("none", "kinect", "heavy")``.
    """

    seed: int = 0
    """Seed of the random generator (combined with the frame index)."""
    baseline_m: float = 0.075
    """Projector-camera baseline, metres (Kinect v1: 7.5 cm); the projector is at +x."""
    disparity_focal_px: float = 580.0
    """Focal length of the sensor's IR camera in its own pixels (Kinect v1: ~580), for disparity."""
    disparity_step_px: float = 0.125
    """Disparity quantisation step in pixels (Kinect v1: 1/8); 0 disables quantisation."""
    axial_scale: float = 1.0
    """Multiplier of the Nguyen axial noise sigma; 0 disables axial noise."""
    lateral_scale: float = 1.0
    """Multiplier of the Nguyen lateral noise sigma; 0 disables lateral noise."""
    flying_prob: float = 0.3
    """Probability that a pixel at a depth discontinuity becomes a flying pixel."""
    edge_threshold_m: float = 0.03
    """Absolute part of the discontinuity threshold, metres."""
    edge_threshold_rel: float = 0.05
    """Relative part of the discontinuity threshold (fraction of the nearer depth)."""
    dropout_prob: float = 0.005
    """Probability of a random missing pixel."""
    grazing_start_deg: float = 70.0
    """Incidence angle where grazing dropout starts (probability 0)."""
    grazing_end_deg: float = 85.0
    """Incidence angle where grazing dropout is certain (probability 1)."""
    projector_shadow: bool = True
    """Drop pixels the projector cannot see (needs the renderer; see SyntheticSource)."""
    min_range_m: float = 0.4
    """Nearest measurable depth, metres."""
    max_range_m: float = 4.5
    """Farthest measurable depth, metres."""
    pose_sigma_rot_deg: float = 0.0
    """Std of the reported-pose rotation error per axis, degrees."""
    pose_sigma_trans_m: float = 0.0
    """Std of the reported-pose translation error per axis, metres."""

    def __post_init__(self) -> None:
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                if not v >= 0:
                    raise ValueError(f"DepthNoiseModel.{f.name} must be >= 0, got {v}")
        if self.disparity_step_px > 0 and not (self.baseline_m > 0 and self.disparity_focal_px > 0):
            raise ValueError("disparity quantisation needs baseline_m > 0 and disparity_focal_px > 0")
        if self.grazing_start_deg < 90 and not self.grazing_end_deg > self.grazing_start_deg:
            raise ValueError(
                f"need grazing_end_deg > grazing_start_deg, got {self.grazing_start_deg}, {self.grazing_end_deg}"
            )
        if not self.max_range_m > self.min_range_m:
            raise ValueError(f"need max_range_m > min_range_m, got {self.min_range_m}, {self.max_range_m}")
        for name in ("flying_prob", "dropout_prob"):
            if getattr(self, name) > 1:
                raise ValueError(f"DepthNoiseModel.{name} is a probability, got {getattr(self, name)}")

    # ---------------------------------------------------------------- presets
    @classmethod
    def preset(cls, name: str, **overrides) -> "DepthNoiseModel":
        """A named configuration: "none" (identity), "kinect" (Kinect v1-like), "heavy" (worse
        sensor plus pose noise of 0.5 deg / 1 cm). ``overrides`` replace fields."""
        if name not in NOISE_PRESETS:
            raise ValueError(f"unknown noise preset {name!r}; known: {', '.join(NOISE_PRESETS)}")
        return replace(cls(**NOISE_PRESETS[name]), **overrides)

    @property
    def changes_depth(self) -> bool:
        """False when :meth:`apply` is the identity."""
        return bool(
            self.disparity_step_px > 0
            or self.axial_scale > 0
            or self.lateral_scale > 0
            or self.flying_prob > 0
            or self.dropout_prob > 0
            or self.grazing_start_deg < 90
            or self.projector_shadow
            or self.min_range_m > 0
            or np.isfinite(self.max_range_m)
        )

    @property
    def changes_pose(self) -> bool:
        return self.pose_sigma_rot_deg > 0 or self.pose_sigma_trans_m > 0

    def rng(self, frame_index: int, stream: int = 0) -> np.random.Generator:
        """The generator for one frame: independent of access order; stream 0 depth, 1 pose."""
        return np.random.default_rng([int(self.seed), int(frame_index), int(stream)])

    # ---------------------------------------------------------------- depth
    def apply(
        self,
        depth_m: np.ndarray,
        camera: Camera,
        rng: np.random.Generator,
        cos_incidence: np.ndarray | None = None,
        shadow: np.ndarray | None = None,
    ) -> np.ndarray:
        """Noisy copy of a clean depth image.

        Args:
            depth_m: (H, W) float32 clean z-depth, metres, 0 = no hit.
            camera: intrinsics of the image (for pixel-size conversion).
            rng: random generator (e.g. ``self.rng(frame_index)``).
            cos_incidence: (H, W) |cos| of the incidence angle (1 = head-on); None = head-on.
            shadow: (H, W) bool pixels the projector cannot see; None = none.
        Returns:
            (H, W) float32 noisy depth in metres, 0 = invalid.
        """
        depth = np.asarray(depth_m, dtype=np.float32)
        if depth.shape != camera.shape:
            raise ValueError(f"depth shape {depth.shape} does not match camera {camera.shape}")
        if not self.changes_depth:
            return depth.copy()
        cos = np.ones_like(depth) if cos_incidence is None else np.asarray(cos_incidence, np.float32)
        theta = np.arccos(np.clip(cos, 0.0, 1.0))
        shadow = np.zeros(depth.shape, bool) if shadow is None else np.asarray(shadow, bool)

        if self.lateral_scale > 0:
            depth, theta, shadow = self._lateral(depth, theta, shadow, camera, rng)
        z = depth.astype(np.float64)
        valid = z > 0
        if self.flying_prob > 0:
            z = self._flying(z, valid, rng)
        if self.axial_scale > 0:
            z = np.where(valid, z + rng.standard_normal(z.shape) * self.axial_sigma(z, theta), 0.0)
            valid &= z > 0
        if self.disparity_step_px > 0:
            z = self.quantise(z, valid)
            valid &= z > 0
        drop = ~valid | shadow if self.projector_shadow else ~valid
        if self.dropout_prob > 0:
            drop |= rng.random(z.shape) < self.dropout_prob
        if self.grazing_start_deg < 90:
            p = (np.degrees(theta) - self.grazing_start_deg) / (self.grazing_end_deg - self.grazing_start_deg)
            drop |= rng.random(z.shape) < np.clip(p, 0.0, 1.0)
        drop |= (z < self.min_range_m) | (z > self.max_range_m)
        return np.where(drop, 0.0, z).astype(np.float32)

    def axial_sigma(self, z: np.ndarray, theta: np.ndarray | float = 0.0) -> np.ndarray:
        """Axial noise std (metres) at depth ``z`` (metres) and incidence ``theta`` (radians)."""
        z = np.asarray(z, dtype=np.float64)
        th = np.minimum(np.asarray(theta, dtype=np.float64), math.radians(80.0))
        ang = 0.0001 / np.sqrt(np.maximum(z, 1e-3)) * th**2 / (math.pi / 2 - th) ** 2
        return self.axial_scale * (0.0012 + 0.0019 * (z - 0.4) ** 2 + ang)

    def quantisation_step_m(self, z: np.ndarray | float) -> np.ndarray:
        """Spacing of the depth levels at depth ``z`` (metres): ``z^2 step / (f_d b)``."""
        return (
            np.asarray(z, dtype=np.float64) ** 2 * self.disparity_step_px / (self.disparity_focal_px * self.baseline_m)
        )

    def quantise(self, z: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
        """Round depth (metres) through quantised disparity; invalid or zero-disparity pixels -> 0."""
        z = np.asarray(z, dtype=np.float64)
        valid = (z > 0) if valid is None else valid & (z > 0)
        fb = self.disparity_focal_px * self.baseline_m
        with np.errstate(divide="ignore", invalid="ignore"):
            d = np.where(valid, fb / z, 0.0)
            dq = np.rint(d / self.disparity_step_px) * self.disparity_step_px
            return np.where(valid & (dq > 0), fb / dq, 0.0)

    def _lateral(self, depth, theta, shadow, camera: Camera, rng: np.random.Generator):
        th = np.minimum(theta, math.radians(80.0))
        sigma_sensor = self.lateral_scale * (0.8 + 0.035 * th / (math.pi / 2 - th))
        sigma = sigma_sensor * (camera.fx / self.disparity_focal_px)
        h, w = depth.shape
        dv = np.rint(rng.standard_normal((h, w)) * sigma).astype(np.int64)
        du = np.rint(rng.standard_normal((h, w)) * sigma).astype(np.int64)
        vv = np.clip(np.arange(h)[:, None] + dv, 0, h - 1)
        uu = np.clip(np.arange(w)[None, :] + du, 0, w - 1)
        return depth[vv, uu], theta[vv, uu], shadow[vv, uu]

    def _flying(self, z: np.ndarray, valid: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        zmin, zmax = neighbourhood_min_max(z, valid)
        zmin, zmax = np.where(valid, zmin, z), np.where(valid, zmax, z)  # finite everywhere
        edge = valid & (zmax - zmin > self.edge_threshold_m + self.edge_threshold_rel * zmin)
        fly = edge & (rng.random(z.shape) < self.flying_prob)
        a = rng.random(z.shape)
        return np.where(fly, zmin + a * (zmax - zmin), z)

    # ---------------------------------------------------------------- pose
    def perturb_pose(self, T_world_cam: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """The reported pose ``T_world_cam @ dT`` (see the class docstring); a copy if no pose noise."""
        from scipy.spatial.transform import Rotation

        T = np.array(T_world_cam, dtype=np.float64)
        if not self.changes_pose:
            return T
        dT = np.eye(4)
        dT[:3, :3] = Rotation.from_rotvec(rng.standard_normal(3) * math.radians(self.pose_sigma_rot_deg)).as_matrix()
        dT[:3, 3] = rng.standard_normal(3) * self.pose_sigma_trans_m
        return T @ dT


def neighbourhood_min_max(z: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Min and max of the valid depths in each pixel's 3x3 neighbourhood (pixel included).

    Args:
        z: (H, W) depth; valid: (H, W) bool.
    Returns:
        (H, W), (H, W) float64; (inf, -inf) where no neighbour is valid.
    """
    h, w = z.shape
    lo = np.pad(np.where(valid, z, np.inf), 1, constant_values=np.inf)
    hi = np.pad(np.where(valid, z, -np.inf), 1, constant_values=-np.inf)
    zmin = np.full((h, w), np.inf)
    zmax = np.full((h, w), -np.inf)
    for dy in range(3):
        for dx in range(3):
            np.minimum(zmin, lo[dy : dy + h, dx : dx + w], out=zmin)
            np.maximum(zmax, hi[dy : dy + h, dx : dx + w], out=zmax)
    return zmin, zmax


NOISE_PRESETS: dict[str, dict[str, Any]] = {
    "none": dict(
        disparity_step_px=0.0,
        axial_scale=0.0,
        lateral_scale=0.0,
        flying_prob=0.0,
        dropout_prob=0.0,
        grazing_start_deg=90.0,
        grazing_end_deg=91.0,
        projector_shadow=False,
        min_range_m=0.0,
        max_range_m=float("inf"),
    ),
    "kinect": dict(),
    "heavy": dict(
        baseline_m=0.05,
        axial_scale=2.0,
        lateral_scale=1.5,
        flying_prob=0.7,
        dropout_prob=0.03,
        grazing_start_deg=60.0,
        grazing_end_deg=80.0,
        max_range_m=4.0,
        pose_sigma_rot_deg=0.5,
        pose_sigma_trans_m=0.01,
    ),
}
"""Field values of the named noise presets (the rest are the dataclass defaults = Kinect v1)."""


def as_noise_model(noise: str | DepthNoiseModel | None, seed: int | None = None) -> DepthNoiseModel:
    """A noise model from a preset name, a model or None ("none"); ``seed`` overrides its seed."""
    if noise is None:
        model = DepthNoiseModel.preset("none")
    elif isinstance(noise, str):
        model = DepthNoiseModel.preset(noise)
    elif isinstance(noise, DepthNoiseModel):
        model = noise
    else:
        raise TypeError(f"noise must be a preset name, a DepthNoiseModel or None, got {type(noise).__name__}")
    return model if seed is None else replace(model, seed=int(seed))


# --------------------------------------------------------------------------- source
class SyntheticSource(IndexedSource):
    """Frames rendered lazily from a mesh along a trajectory (``depth_source="rendered"``).

    Args:
        mesh: a mesh file, an Open3D mesh, a :class:`sensors.scenes.SyntheticScene`, or a
            ready :class:`MeshRenderer` (shared between sources).
        trajectory: a :class:`Trajectory` or a trajectory file (TUM, 4x4-per-line, .log) of
            ``T_world_cam`` poses; one frame per pose, timestamps from it.
        camera: intrinsics of the rendered frames (default :data:`DEFAULT_CAMERA`).
        noise: a preset name ("none", "kinect", "heavy"), a :class:`DepthNoiseModel`, or None.
        noise_seed: overrides the noise model's seed.
        keep_truth: store a :class:`SyntheticFrameTruth` in ``Frame.truth``.
        name: used in frame names and messages.
    """

    kind = "synthetic"
    has_poses = True

    def __init__(
        self,
        mesh: MeshLike | MeshRenderer,
        trajectory: Trajectory | str | Path,
        camera: Camera | None = None,
        noise: str | DepthNoiseModel | None = None,
        noise_seed: int | None = None,
        keep_truth: bool = True,
        name: str | None = None,
    ) -> None:
        self.renderer = mesh if isinstance(mesh, MeshRenderer) else MeshRenderer(mesh)
        if isinstance(trajectory, (str, Path)):
            trajectory = read_trajectory(trajectory)
        if not isinstance(trajectory, Trajectory):
            raise TypeError(f"trajectory must be a Trajectory or a file path, got {type(trajectory).__name__}")
        if len(trajectory) == 0:
            raise SourceError(f"{self.renderer.name}: empty trajectory")
        self.trajectory = trajectory
        self.camera = camera or DEFAULT_CAMERA
        self.noise = as_noise_model(noise, noise_seed)
        self.keep_truth = keep_truth
        self.name = name or f"synthetic:{self.renderer.name}"

    @classmethod
    def open(cls, location: str, **options) -> "SyntheticSource":
        """Build from a spec ``"<mesh>?key=value&..."`` (the part after ``"synthetic:"``).

        ``<mesh>`` is a mesh file, or ``room`` (or nothing) for the procedural room of
        :func:`sensors.scenes.make_room` with an orbit trajectory. Keys:

        - ``traj``: trajectory file (required for a mesh file); ``traj_format``: tum, lines, log.
        - ``width``, ``height``: image size (default 640x480); ``fx``, ``fy``, ``cx``, ``cy``:
          intrinsics (default fx = fy = 525 * width / 640 and the image centre).
        - ``noise``: none, kinect or heavy (default none); ``noise_seed``: int.
        - room only: ``seed`` (scene layout, default 0) and ``frames`` (orbit length, default 120).

        Example: ``synthetic:/data/office0_mesh.ply?traj=/data/traj.txt&width=320&height=240&noise=kinect``.
        Keyword ``options`` override the spec (and may pass objects: ``camera=Camera(...)``).
        """
        path, _, query = location.partition("?")
        params: dict[str, str] = {}
        for k, v in parse_qsl(query, keep_blank_values=True, strict_parsing=False):
            params[k] = v
        known = (
            "traj",
            "traj_format",
            "width",
            "height",
            "fx",
            "fy",
            "cx",
            "cy",
            "noise",
            "noise_seed",
            "seed",
            "frames",
        )
        unknown = set(params) - set(known)
        if unknown:
            raise SourceError(f"synthetic:{location}: unknown option(s) {sorted(unknown)}; known: {', '.join(known)}")

        def num(key: str, cast=float):
            try:
                return cast(params[key]) if key in params else None
            except ValueError as e:
                raise SourceError(f"synthetic:{location}: option {key}={params[key]!r} is not a number") from e

        camera = options.pop("camera", None)
        if camera is None:
            w, h = num("width", int) or DEFAULT_CAMERA.width, num("height", int) or DEFAULT_CAMERA.height
            fx = num("fx") or DEFAULT_CAMERA.fx * w / DEFAULT_CAMERA.width
            fy = num("fy") or fx
            cx = num("cx") if "cx" in params else (w - 1) / 2.0
            cy = num("cy") if "cy" in params else (h - 1) / 2.0
            camera = Camera(fx, fy, cx, cy, w, h)
        kwargs: dict[str, Any] = {
            "camera": camera,
            "noise": params.get("noise") or None,
            "noise_seed": num("noise_seed", int),
        }
        if path in ("", "room"):
            scene = make_room(seed=num("seed", int) or 0)
            traj = options.pop("trajectory", None)
            if traj is None:
                traj = orbit_trajectory(scene, n_frames=num("frames", int) or 120)
            kwargs.update(mesh=scene, trajectory=traj, name=f"synthetic:room(seed={num('seed', int) or 0})")
        else:
            if "traj" not in params and "trajectory" not in options:
                raise SourceError(f"synthetic:{location}: a trajectory is required, e.g. '?traj=/path/traj.txt'")
            traj = options.pop("trajectory", None)
            if traj is None:
                traj = read_trajectory(params["traj"], params.get("traj_format") or None)
            kwargs.update(mesh=path, trajectory=traj)
        kwargs.update(options)
        return cls(**kwargs)

    def __len__(self) -> int:
        return len(self.trajectory)

    def load(self, i: int) -> Frame:
        T_true = self.trajectory.T_world_cam[i]
        view = self.renderer.render(self.camera, T_true)
        depth = view.depth_m
        if self.noise.changes_depth:
            shadow = None
            if self.noise.projector_shadow:
                shadow = self.renderer.projector_shadow(view, self.camera, T_true, self.noise.baseline_m)
            depth = self.noise.apply(depth, self.camera, self.noise.rng(i, 0), view.cos_incidence, shadow)
        T_reported = self.noise.perturb_pose(T_true, self.noise.rng(i, 1))
        truth = None
        if self.keep_truth:
            truth = SyntheticFrameTruth(
                T_world_cam=np.array(T_true, dtype=np.float64),
                depth_m=view.depth_m,
                instance_ids=view.instance_ids,
                primitive_ids=view.primitive_ids,
                instance_labels=self.renderer.instance_labels,
            )
        return Frame(
            rgb=view.rgb,
            depth=depth,
            camera=self.camera,
            T_world_cam=T_reported,
            timestamp=float(self.trajectory.timestamps[i]),
            index=i,
            depth_source="rendered",
            name=f"{self.name}#{i}",
            truth=truth,
        )


# --------------------------------------------------------------------------- labelled ground truth
GT_MESH_FILE = "gt_mesh_labels.ply"
GT_CLASSES_FILE = "gt_classes.json"
GT_ANNOTATIONS_FILE = "gt_objects.json"
_RELATION_WORDS = {"on": "on", "inside": "in", "next_to": "next to", "against": "against"}
"""Generated relation -> the phrase of its text query (``scenegraph.query.RELATION_PHRASES``)."""


def scene_classes(scene: SyntheticScene) -> list[str]:
    """The scene's class labels, sorted; class id ``k + 1`` is ``scene_classes(scene)[k]`` (0 = unlabelled)."""
    return sorted({inst.label for inst in scene.instances})


def vertex_labels(scene: SyntheticScene) -> tuple[np.ndarray, np.ndarray]:
    """(V,) int32 instance id and (V,) int32 class id (1-based, see :func:`scene_classes`) of every mesh vertex.

    Each instance's vertices are used by its triangles only, so a vertex takes the
    instance of any triangle that uses it; unused vertices get instance -1, class 0.
    """
    tri = np.asarray(scene.mesh.triangles, dtype=np.int64)
    inst = np.full(len(scene.mesh.vertices), -1, np.int32)
    for k in range(3):
        inst[tri[:, k]] = scene.triangle_instance
    names = scene_classes(scene)
    cls_of_inst = np.array([names.index(i.label) + 1 for i in scene.instances], np.int32)
    cls = np.where(inst >= 0, cls_of_inst[np.maximum(inst, 0)], 0).astype(np.int32)
    return inst, cls


def scene_annotations(scene: SyntheticScene) -> dict:
    """Query annotations of a generated scene in the format of ``eval.queries`` (and of
    ``tests/data/redkitchen_objects.json``): every non-structure instance (id = its name,
    centroid = its box centre), one plain query per object class (its label, answered by
    every instance of it) and one relational query per generated relation between two
    object classes or an object class and the floor / a wall ("the mug on the table",
    "the box in the shelf", "the chair next to the table"), answered by every instance
    of the subject class that has that relation to an instance of the object class."""
    inst = scene.instances
    objects = [
        {
            "id": i.name,
            "label": i.label,
            "queries": [i.label],
            "centroid": [round(float(x), 4) for x in i.center],
            "bbox_min": [round(float(x), 4) for x in i.bbox_min],
            "bbox_max": [round(float(x), 4) for x in i.bbox_max],
        }
        for i in inst
        if not i.is_structure
    ]
    queries: list = sorted({i.label for i in inst if not i.is_structure})
    relational: dict[str, set[str]] = {}
    for s, r, o in scene.relations:
        if r not in _RELATION_WORDS or inst[s].is_structure:
            continue
        text = f"the {inst[s].label} {_RELATION_WORDS[r]} the {inst[o].label}"
        relational.setdefault(text, set()).add(inst[s].name)
    queries += [{"text": t, "objects": sorted(ids)} for t, ids in sorted(relational.items())]
    return {
        "dataset": f"generated room (sensors.scenes.make_room, seed {scene.seed})",
        "frame": "world frame of the generated scene, metres, z up",
        "protocol": "a query hits an object it names when a result centroid is within the tolerance of the "
        "object centroid or inside its box grown by the margin (eval.queries)",
        "hit_radius_m": 0.25,
        "queries": queries,
        "objects": objects,
    }


def write_labelled_ground_truth(scene: SyntheticScene, directory: Path | str) -> dict[str, Path]:
    """Write a generated scene's labelled ground truth into ``directory``.

    Files: :data:`GT_MESH_FILE` (binary PLY, world frame, metres: vertex x, y, z, uchar
    red/green/blue, int ``instance`` and int ``label`` = class id, and the triangles),
    :data:`GT_CLASSES_FILE` (``{"classes": [{"id", "name"}], "instances": [{"id", "name",
    "class_id"}], "unlabelled_id": 0}``) and :data:`GT_ANNOTATIONS_FILE`
    (:func:`scene_annotations`). Returns {"mesh", "classes", "annotations"} -> path.
    """
    import json

    from sensors.ply import write_ply

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    v = np.asarray(scene.mesh.vertices)
    rgb = np.clip(np.rint(np.asarray(scene.mesh.vertex_colors) * 255.0), 0, 255).astype(np.uint8)
    inst, cls = vertex_labels(scene)
    names = scene_classes(scene)
    vertex = {
        "x": v[:, 0].astype(np.float32),
        "y": v[:, 1].astype(np.float32),
        "z": v[:, 2].astype(np.float32),
        "red": rgb[:, 0],
        "green": rgb[:, 1],
        "blue": rgb[:, 2],
        "instance": inst,
        "label": cls,
    }
    mesh_path = write_ply(directory / GT_MESH_FILE, vertex, np.asarray(scene.mesh.triangles))
    classes = {
        "classes": [{"id": k + 1, "name": n} for k, n in enumerate(names)],
        "instances": [{"id": i.id, "name": i.name, "class_id": names.index(i.label) + 1} for i in scene.instances],
        "unlabelled_id": 0,
        "label_attribute": "label",
        "source": f"sensors.scenes.make_room(seed={scene.seed})",
    }
    classes_path = directory / GT_CLASSES_FILE
    classes_path.write_text(json.dumps(classes, indent=1))
    ann_path = directory / GT_ANNOTATIONS_FILE
    ann_path.write_text(json.dumps(scene_annotations(scene), indent=1))
    return {"mesh": mesh_path, "classes": classes_path, "annotations": ann_path}
