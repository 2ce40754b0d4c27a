"""Frame sources: the base classes, the source registry and ``open_source``.

A source is an iterable of :class:`~sensors.frame.Frame` with ``len()`` when known.
Dataset readers derive from :class:`IndexedSource` (random access); streams such as
a live camera derive from :class:`FrameSource` and only iterate.

Spec strings: ``"<name>:<path-or-options>"`` (``"7scenes:/data/redkitchen"``,
``"realsense"``, ``"realsense:/rec.bag"``) or a bare path whose layout is detected.
"""

from __future__ import annotations

import itertools
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Iterator

from sensors.camera import Camera
from sensors.frame import Frame
from sensors.io import SourceError
from sensors.registry import Registry


class FrameSource(ABC):
    """Any iterable of Frames. Subclasses set ``name`` and, when known, ``camera``."""

    #: registry name of the source kind
    kind: str = "source"
    #: intrinsics of the frames, when known before iterating
    camera: Camera | None = None
    #: True when frames carry ground-truth / given poses
    has_poses: bool = False

    @classmethod
    def detect(cls, path: Path) -> bool:
        """True if ``path`` has this source's layout (used for auto-detection)."""
        return False

    @classmethod
    def open(cls, location: str, **options) -> "FrameSource":
        """Build from the part of the spec after ``"<name>:"`` (a path for datasets)."""
        if not location:
            raise SourceError(f"{cls.kind}: a path is required (e.g. '{cls.kind}:/path/to/data')")
        return cls(Path(location), **options)

    @abstractmethod
    def __iter__(self) -> Iterator[Frame]: ...

    def __len__(self) -> int:
        raise TypeError(f"{type(self).__name__} has no known length")

    def frames(self, stride: int = 1, max_frames: int | None = None) -> Iterator[Frame]:
        """Every ``stride``-th frame, at most ``max_frames`` of them."""
        if stride < 1:
            raise ValueError(f"stride must be >= 1, got {stride}")
        return itertools.islice(iter(self), 0, None if max_frames is None else max_frames * stride, stride)

    def count(self, stride: int = 1, max_frames: int | None = None) -> int | None:
        """How many frames ``frames(stride, max_frames)`` yields, or None if unknown."""
        try:
            n = len(self)
        except TypeError:
            return max_frames
        k = (n + stride - 1) // stride
        return k if max_frames is None else min(k, max_frames)

    def close(self) -> None:
        """Release devices or files (no-op for datasets)."""

    def __enter__(self) -> "FrameSource":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class IndexedSource(FrameSource):
    """A dataset with random access: implement ``__len__`` and ``load(i)``."""

    @abstractmethod
    def __len__(self) -> int: ...

    @abstractmethod
    def load(self, i: int) -> Frame:
        """The i-th frame (0 <= i < len)."""

    def __getitem__(self, i: int) -> Frame:
        n = len(self)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(f"frame index {i} out of range for {n} frames")
        return self.load(i)

    def __iter__(self) -> Iterator[Frame]:
        for i in range(len(self)):
            yield self.load(i)

    def frames(self, stride: int = 1, max_frames: int | None = None) -> Iterator[Frame]:
        if stride < 1:
            raise ValueError(f"stride must be >= 1, got {stride}")
        idx = range(0, len(self), stride)
        if max_frames is not None:
            idx = idx[:max_frames]
        for i in idx:
            yield self.load(i)


SOURCES = Registry("frame source", entry_point_group="semmap.sources")
SOURCES.register("7scenes", "sensors.sevenscenes:SevenScenesSource", "Microsoft 7-Scenes frame-NNNNNN.* folders (depth registered into the colour camera)")
SOURCES.register("3dmatch", "sensors.sevenscenes:ThreeDMatchSource", "3DMatch sequence (7-Scenes layout, colour registered)")
SOURCES.register("replica", "sensors.replica:ReplicaSource", "Replica in the NICE-SLAM layout (results/, traj.txt)")
SOURCES.register("tum", "sensors.tum:TUMSource", "TUM RGB-D (rgb.txt, depth.txt, groundtruth.txt)")
SOURCES.register("scannet", "sensors.scannet:ScanNetSource", "ScanNet export (color/, depth/, pose/, intrinsic/)")
SOURCES.register("o3dlog", "sensors.o3dlog:O3DLogSource", "ICL-NUIM / Redwood folder with an Open3D trajectory.log")
SOURCES.register("folder", "sensors.folder:FolderSource", "any folder described by a semmap.json / semmap.yaml manifest")
SOURCES.register("synthetic", "sensors.synthetic:SyntheticSource", "RGB-D rendered from a mesh along a trajectory")
SOURCES.register("realsense", "sensors.realsense:RealSenseSource", "Intel RealSense, live or a recording (.bag/.db3)")
SOURCES.register("monodepth", "sensors.monodepth:MonoDepthSource", "monocular-depth samples: test_annotations.json + rgb/ + depth/ (NYU, KITTI)")


def detect_source(path: Path | str) -> str:
    """Name of the first registered source whose layout matches ``path``."""
    p = Path(path)
    if not p.exists():
        raise SourceError(f"source path does not exist: {p}")
    for entry in SOURCES:
        try:
            cls = entry.load()
        except ImportError:
            continue
        if cls.detect(p):
            return entry.name
    raise SourceError(
        f"{p}: unknown layout; give a prefix such as 7scenes:, replica:, tum:, scannet:, o3dlog:, "
        f"folder:, realsense:. Known sources:\n{SOURCES.describe()}"
    )


def open_source(spec: str | Path, **options) -> FrameSource:
    """Open a frame source from ``"<name>:<path>"``, ``"<name>"`` or a bare path (auto-detected).

    Extra keyword ``options`` go to the source constructor (e.g. ``register_color=False``).
    """
    spec = str(spec)
    name, sep, rest = spec.partition(":")
    if sep and name in SOURCES:
        return SOURCES.get(name).open(rest, **options)
    if not sep and spec in SOURCES:
        return SOURCES.get(spec).open("", **options)
    kind = detect_source(spec)
    return SOURCES.get(kind).open(spec, **options)
