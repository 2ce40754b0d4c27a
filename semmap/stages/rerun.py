"""Rerun stage of ``semmap map``: a recording of the run for the rerun viewer (``--rerun FILE.rrd``).

Per integrated frame (timeline ``frame`` = the source frame index, plus ``time`` = the
frame timestamp in seconds), under the entity tree

- ``world/camera``: the pose used for integration (``Transform3D``, camera-to-world,
  OpenCV axes, metres);
- ``world/camera/image``: the pinhole (intrinsics of the logged images; the viewer draws
  the frustum from it), with ``rgb`` (JPEG) and ``depth`` (16-bit PNG, millimetres,
  ``meter=1000``) below it, downscaled to ``--rerun-width`` pixels (``scenegraph.views``:
  antialiased colour, nearest-pixel depth);

and once at the end (static): ``world/mesh`` (the marching-cubes mesh with vertex colours,
extracted like ``mesh.ply``) and ``world/trajectory`` (the final camera path, after any
tracking stage's loop closure). World axes are the map's own (no up axis is declared);
cameras are declared OpenCV (x right, y down, z forward).

The file is written to a temporary name beside ``FILE.rrd`` and renamed into place when
mapping finishes (also after Ctrl-C), so a reader never sees a half-written recording.
Downscaling and encoding run on the mapping thread (about 15 ms per 320 px frame on
the shared 2-core machine: resize 6, JPEG 1, PNG 7.5); rerun batches and writes in its
own thread. ``--rerun-image-every N`` logs the images of every N-th frame only. No viewer is needed: ``rerun FILE.rrd`` opens it later.
"""

from __future__ import annotations

import argparse
import io
import os
import uuid
import weakref
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from mapping.tsdf import TSDFMap
from scenegraph.views import DEPTH_SCALE, downscale_frame
from semmap.config_args import add_dataclass_arguments, config_kwargs
from semmap.pipeline import MapResult, Stage
from sensors.frame import Frame

ORDER = 90
"""After every stage that changes the frame or the final trajectory."""

APPLICATION_ID = "semmap"
CAMERA_ENTITY = "world/camera"
IMAGE_ENTITY = "world/camera/image"
RGB_ENTITY = "world/camera/image/rgb"
DEPTH_ENTITY = "world/camera/image/depth"
MESH_ENTITY = "world/mesh"
TRAJECTORY_ENTITY = "world/trajectory"
FRAME_TIMELINE = "frame"
TIME_TIMELINE = "time"


@dataclass
class RerunConfig:
    """Settings of the rerun recording."""

    path: Path
    """The ``.rrd`` file to write (replaced atomically)."""
    width: int = 320
    """Width of the logged colour and depth images, pixels (aspect kept; never enlarged)."""
    image_every: int = 1
    """Log the images of every N-th integrated frame (poses of all of them)."""
    jpeg_quality: int = 85
    """JPEG quality of the colour images."""
    png_level: int = 1
    """zlib level of the 16-bit depth PNGs: at 320x240 on redkitchen, level 1 takes 7.5 ms and
    37 kB a frame, the default 6 21 ms and 30 kB (measured on the shared 2-core machine, loaded)."""
    mesh: bool = True
    """Log the final mesh (one marching-cubes extraction at the end)."""

    def __post_init__(self) -> None:
        self.path = Path(self.path)
        if self.path.suffix != ".rrd":
            raise ValueError(f"--rerun: the recording file must end in .rrd, got {self.path}")
        if self.path.is_dir():
            raise ValueError(f"--rerun: {self.path} is a folder; give a file name ending in .rrd")
        if self.width < 16:
            raise ValueError(f"--rerun-width must be >= 16 pixels, got {self.width}")
        if self.image_every < 1:
            raise ValueError(f"--rerun-image-every must be >= 1, got {self.image_every}")


def jpeg_bytes(rgb: np.ndarray, quality: int) -> bytes:
    """JPEG of an (h, w, 3) uint8 image."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgb)).save(buf, format="JPEG", quality=int(quality))
    return buf.getvalue()


def depth_png_bytes(depth_m: np.ndarray, level: int) -> bytes:
    """16-bit PNG of (h, w) depth in metres, stored as millimetres (0 = invalid)."""
    from PIL import Image

    mm = np.clip(np.round(np.nan_to_num(depth_m, nan=0.0, posinf=0.0, neginf=0.0) * DEPTH_SCALE), 0, 65535)
    buf = io.BytesIO()
    Image.fromarray(mm.astype(np.uint16)).save(buf, format="PNG", compress_level=int(level))
    return buf.getvalue()


def pose_parts(T_world_cam: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(3,) translation and (4,) unit quaternion ``xyzw`` of a (4, 4) camera-to-world pose."""
    from scipy.spatial.transform import Rotation

    T = np.asarray(T_world_cam, np.float64)
    return T[:3, 3].copy(), Rotation.from_matrix(T[:3, :3]).as_quat()


class RerunStage(Stage):
    """Log each integrated frame to a rerun recording and, at the end, the mesh and trajectory."""

    name = "rerun"

    def __init__(self, config: RerunConfig) -> None:
        import rerun as rr

        self.config = config
        config.path.parent.mkdir(parents=True, exist_ok=True)
        self.tmp_path = config.path.with_name(f".{config.path.name}.{os.getpid()}.tmp")
        self.recording_id = str(uuid.uuid4())
        self.rec = rr.RecordingStream(APPLICATION_ID, recording_id=self.recording_id, send_properties=False)
        self.rec.save(self.tmp_path)
        # a run that fails before finish() leaves no temporary file behind
        self._cleanup = weakref.finalize(self, _remove_file, self.tmp_path)
        self.frames = 0
        self.images = 0
        self._camera_key: tuple | None = None

    def after_integrate(self, frame: Frame, tsdf: TSDFMap) -> None:
        import rerun as rr

        rec = self.rec
        rec.set_time(FRAME_TIMELINE, sequence=int(frame.index))
        rec.set_time(TIME_TIMELINE, duration=float(frame.timestamp))
        t, q = pose_parts(frame.T_world_cam)
        rec.log(CAMERA_ENTITY, rr.Transform3D(translation=t, quaternion=q))
        if self.frames % self.config.image_every == 0:
            rgb, depth, cam = downscale_frame(frame.rgb, frame.depth, frame.camera, self.config.width)
            key = (cam.fx, cam.fy, cam.cx, cam.cy, cam.width, cam.height)
            if key != self._camera_key:  # intrinsics change rarely: log them when they do
                rec.log(IMAGE_ENTITY, rr.Pinhole(image_from_camera=cam.K, resolution=[cam.width, cam.height],
                                                 camera_xyz=rr.ViewCoordinates.RDF))
                self._camera_key = key
            rec.log(RGB_ENTITY, rr.EncodedImage(contents=jpeg_bytes(rgb, self.config.jpeg_quality),
                                                media_type="image/jpeg"))
            rec.log(DEPTH_ENTITY, rr.EncodedDepthImage(blob=depth_png_bytes(depth, self.config.png_level),
                                                       media_type="image/png", meter=DEPTH_SCALE))
            self.images += 1
        self.frames += 1

    def finish(self, result: MapResult) -> None:
        """Log the mesh and the final trajectory, close the file and rename it into place."""
        import rerun as rr

        rec = self.rec
        try:
            positions = np.asarray(result.trajectory.T_world_cam)[:, :3, 3]
            rec.log(TRAJECTORY_ENTITY, rr.LineStrips3D([positions], colors=[[255, 140, 0]]), static=True)
            if self.config.mesh:
                mesh = result.tsdf.extract_mesh_or_none()
                if mesh is not None:
                    colours = None
                    if "colors" in mesh.vertex:
                        colours = (np.clip(mesh.vertex.colors.numpy(), 0.0, 1.0) * 255).astype(np.uint8)
                    rec.log(
                        MESH_ENTITY,
                        rr.Mesh3D(
                            vertex_positions=mesh.vertex.positions.numpy(),
                            triangle_indices=mesh.triangle.indices.numpy(),
                            vertex_colors=colours,
                        ),
                        static=True,
                    )
            rec.flush()
        finally:
            rec.disconnect()
        os.replace(self.tmp_path, self.config.path)
        self._cleanup.detach()
        print(f"wrote rerun recording to {self.config.path} (open it with `rerun {self.config.path}`)")

    def metadata(self) -> dict:
        cfg = asdict(self.config)
        cfg["path"] = str(self.config.path)
        return {"file": str(self.config.path), "frames": self.frames, "images": self.images,
                "recording_id": self.recording_id, "config": cfg}


def _remove_file(path: Path) -> None:
    path.unlink(missing_ok=True)


RERUN_FLAGS = {"path": "--rerun", "width": "--rerun-width", "image_every": "--rerun-image-every"}
"""``RerunConfig`` field -> its ``semmap map`` option."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("rerun recording (open with `rerun FILE.rrd`)")
    add_dataclass_arguments(g, RerunConfig, RERUN_FLAGS, path={
        "metavar": "FILE.rrd",
        "help": "log every frame's image, depth, pose and frustum, then the mesh and trajectory, to FILE.rrd"})


def from_args(args: argparse.Namespace) -> RerunStage | None:
    if getattr(args, "rerun", None) is None:
        return None
    return RerunStage(RerunConfig(**config_kwargs(args, RerunConfig, RERUN_FLAGS)))
