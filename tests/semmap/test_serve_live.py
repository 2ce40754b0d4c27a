"""Live mapping behind the service: latest-frame reading, consistent snapshots, and a saved
map equal to `semmap map` of the same frames."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import open3d as o3d
import pytest
from scipy.spatial import cKDTree

from sensors.base import FrameSource
from sensors.camera import Camera
from sensors.frame import Frame
from sensors.live import LatestFrameSource
from tests.conftest import data_path
from tests.semmap.serve_fixtures import _restore_torch_threads  # noqa: F401 (autouse fixture)


class CountingSource(FrameSource):
    """``n`` tiny frames, ``read_s`` seconds each; optionally fails at frame ``fail_at``."""

    def __init__(self, n: int, read_s: float = 0.0, fail_at: int | None = None) -> None:
        self.n, self.read_s, self.fail_at = n, read_s, fail_at
        self.camera = Camera(10.0, 10.0, 3.5, 2.5, 8, 6)
        self.closed = False

    def __len__(self) -> int:
        return self.n

    def __iter__(self) -> Iterator[Frame]:
        for i in range(self.n):
            if i == self.fail_at:
                raise OSError(f"sensor unplugged at frame {i}")
            time.sleep(self.read_s)
            yield Frame(np.full((6, 8, 3), i % 256, np.uint8), np.ones((6, 8), np.float32), self.camera,
                        np.eye(4), timestamp=float(i), index=i)

    def close(self) -> None:
        self.closed = True


def test_latest_frame_drops_and_counts_when_the_consumer_is_slow():
    src = LatestFrameSource(CountingSource(60), fps=200.0)
    got = []
    for f in src.frames():
        got.append((f.index, f.frames_dropped_before))
        time.sleep(0.02)  # a mapper 4x slower than the sensor
    src.close()
    idx = [i for i, _ in got]
    assert idx == sorted(idx) and idx[-1] == 59  # in order; the last frame is never lost
    s = src.stats
    assert s.read == 60 and s.delivered == len(got) and s.dropped == 60 - len(got) == src.dropped
    assert s.dropped > 20  # it did drop (4x too slow)
    # every gap in the frame indices is a counted drop
    gaps = np.diff([-1, *idx]) - 1
    assert [d for _, d in got] == list(gaps)


def test_latest_frame_paces_and_keeps_everything_when_the_consumer_keeps_up():
    t0 = time.perf_counter()
    src = LatestFrameSource(CountingSource(20), fps=100.0)
    idx = [f.index for f in src]
    elapsed = time.perf_counter() - t0
    assert idx == list(range(20)) and src.stats.dropped == 0
    assert elapsed >= 19 / 100.0 * 0.95  # frame k released k / fps after the first


def test_latest_frame_applies_stride_and_limit_and_passes_errors():
    src = LatestFrameSource(CountingSource(30))
    got = [f.index for f in src.frames(stride=3, max_frames=5)]
    assert set(got) <= {0, 3, 6, 9, 12} and 12 in got
    src = LatestFrameSource(CountingSource(10, fail_at=4))
    with pytest.raises(OSError, match="unplugged at frame 4"):
        for _ in src:
            time.sleep(0.001)
    src.close()
    assert src.source.closed
    with pytest.raises(ValueError, match="fps"):
        LatestFrameSource(CountingSource(1), fps=0)


def test_latest_frame_holds_one_frame():
    """Nothing queues: a consumer that never asks leaves one frame in the slot."""
    src = LatestFrameSource(CountingSource(50))
    it = src.frames()
    time.sleep(0.3)
    assert src.stats.read == 50 and src.stats.dropped == 49
    assert next(it).index == 49
    src.close()


# ---------------------------------------------------------------------- live mapping on real frames
MAP_ARGS = ["--stride", "25", "--max-frames", "6", "--voxel-size", "0.04", "--no-progress", "--encoder", "lite",
            "--crop-scales", "0.4", "--semantic-voxel-size", "0.06", "--kf-translation", "0.05"]


def _parse(argv: list[str]):
    """`semmap map`'s parsed options (the same parser `semmap serve --live` shares)."""
    from semmap.cli import build_parser

    return build_parser().parse_args(["map", "SOURCE", "--out", "unused", *argv])




@pytest.fixture(scope="module")
def live_run(tmp_path_factory):
    """A LiveMapper over 6 redkitchen frames (publishing every 0.2 s), queried while it maps;
    and `semmap map` of the same frames."""
    from semmap.cli import main
    from semmap.commands.map import map_config
    from semmap.serve.live import LiveMapper
    from semmap.serve.maps import EncoderCache, MapStore, answer_query
    from semmap.stages import build_stages
    from sensors import open_source

    root = data_path("7scenes-redkitchen")
    base = tmp_path_factory.mktemp("live")
    spec = f"7scenes:{root}"
    args = _parse(MAP_ARGS)
    store, encoders = MapStore(), EncoderCache()
    seen: list = []
    store.add_listener(seen.append)
    mapper = LiveMapper(store, "live", open_source(spec), spec, map_config(args), build_stages(args),
                        base / "live", encoders, interval_s=0.2)
    answers: list[dict] = []

    def ask() -> None:
        while not mapper.finished.is_set():
            snap = store.get("live")
            if snap.semantic is not None:
                answers.append(answer_query(snap, "coffee mug", 3))
            time.sleep(0.05)

    asker = threading.Thread(target=ask)
    mapper.start()
    asker.start()
    assert mapper.join(600), "live mapping did not finish"
    asker.join()
    assert mapper.error is None
    assert main(["map", spec, "--out", str(base / "ref"), *MAP_ARGS]) == 0
    return store, mapper, seen, answers, base / "live", base / "ref"


def test_snapshots_grow_and_queries_answer_while_mapping(live_run):
    store, mapper, seen, answers, _, _ = live_run
    versions = [s.version for s in seen]
    assert versions == sorted(versions) and len(set(versions)) == len(versions)
    frames = [s.frames for s in seen]
    assert frames == sorted(frames) and frames[-1] == 6
    assert len({s.frames for s in seen if s.frames > 0}) >= 2  # published before the end, not only at it
    final = store.get("live")
    assert final.mapping == "saved" and final.live and final.directory == mapper.out_dir
    assert len(final.T_world_cam) == 6 and final.camera is not None
    assert len(answers) >= 1 and all(a["path"] == "voxels" for a in answers)


def test_a_snapshot_is_not_changed_by_later_fusion(live_run):
    """The first snapshot with features keeps its grid while the mapper fuses more."""
    _, _, seen, _, _, _ = live_run
    with_features = [s for s in seen if s.semantic is not None]
    first, last = with_features[0], with_features[-1]
    assert len(first.semantic.grid) < len(last.semantic.grid)
    assert first.semantic.grid is not last.semantic.grid
    # its arrays still match its own metadata (nothing was appended into them)
    assert len(first.semantic.grid) == first.semantic.metadata["voxels"]
    assert len(first.semantic.unit_embeddings) == len(first.semantic.grid)
    assert not first.mesh_vertices.flags.writeable


def test_saved_map_equals_semmap_map_of_the_same_frames(live_run):
    _, mapper, _, _, live_dir, ref_dir = live_run
    names = {p.name for p in ref_dir.iterdir()}
    assert {p.name for p in live_dir.iterdir()} == names
    live_meta, ref_meta = (json.loads((d / "map.json").read_text()) for d in (live_dir, ref_dir))
    assert set(live_meta) - set(ref_meta) == {"live"}
    for k in ("config", "frames_integrated", "frames_seen", "camera", "mesh_vertices", "mesh_triangles", "source"):
        assert live_meta[k] == ref_meta[k], k
    assert set(live_meta["timings_s"]) == set(ref_meta["timings_s"])  # the publish stage is not listed
    assert live_meta["live"]["snapshots_published"] == mapper.published >= 2
    a, b = (o3d.io.read_triangle_mesh(str(d / "mesh.ply")) for d in (live_dir, ref_dir))
    va, vb = np.asarray(a.vertices), np.asarray(b.vertices)
    assert len(va) == len(vb) > 1000
    # Open3D's marching cubes orders vertices by hash-map traversal: compare as point sets
    assert max(cKDTree(vb).query(va)[0].max(), cKDTree(va).query(vb)[0].max()) < 1e-3  # within 1 mm
    fa, fb = (np.load(d / "features.npz") for d in (live_dir, ref_dir))
    for k in ("keys", "embeddings", "weights", "counts"):
        assert np.array_equal(fa[k], fb[k]), k
    ta, tb = ((d / "trajectory.tum").read_text() for d in (live_dir, ref_dir))
    assert ta == tb


def test_stop_saves_what_was_mapped(tmp_path):
    """What `semmap serve` does on Ctrl-C: stop at the next frame, finish, save."""
    from semmap.commands.map import map_config
    from semmap.serve.live import LiveMapper
    from semmap.serve.maps import EncoderCache, MapStore
    from sensors import open_source

    root = data_path("7scenes-redkitchen")
    args = _parse(["--stride", "10", "--max-frames", "200", "--voxel-size", "0.05", "--no-progress"])
    src = LatestFrameSource(open_source(f"7scenes:{root}"), fps=30.0)
    store = MapStore()
    mapper = LiveMapper(store, "stop", src, "redkitchen", map_config(args), [], tmp_path / "m", EncoderCache(),
                        interval_s=0.1, dropped=lambda: src.stats.dropped).start()
    t0 = time.perf_counter()
    while store.get("stop").frames < 2 and time.perf_counter() - t0 < 120:
        time.sleep(0.05)
    mapper.stop()
    assert mapper.join(120) and mapper.error is None
    meta = json.loads((tmp_path / "m" / "map.json").read_text())
    assert "stopped by the service" in meta["stopped_early"]
    assert 2 <= meta["frames_integrated"] < 200
    assert meta["live"]["frames_dropped"] == src.stats.dropped
    assert store.get("stop").mapping == "saved" and store.get("stop").semantic is None


def test_live_graph_request_builds_from_a_working_copy(tmp_path):
    """POST /graph during live mapping: the mapper writes a temporary copy, the graph is built
    from it and published; the copy is removed."""
    from semmap.commands.map import map_config
    from semmap.serve.live import LiveMapper
    from semmap.serve.maps import EncoderCache, GraphBuilder, MapStore
    from semmap.stages import build_stages
    from sensors import open_source

    root = data_path("7scenes-redkitchen")
    args = _parse(["--stride", "10", "--max-frames", "300", "--voxel-size", "0.05", "--no-progress", "--save-views"])
    store, encoders = MapStore(), EncoderCache()
    src = LatestFrameSource(open_source(f"7scenes:{root}"), fps=15.0)
    mapper = LiveMapper(store, "g", src, "redkitchen", map_config(args), build_stages(args), tmp_path / "m",
                        encoders, interval_s=0.5).start()
    graphs = GraphBuilder(store, encoders)
    graphs.directories["g"] = mapper.map_directory
    try:
        t0 = time.perf_counter()
        while store.get("g").frames < 3 and time.perf_counter() - t0 < 120:
            time.sleep(0.05)
        assert graphs.request("g") == "building"
        graphs.wait("g", 300)
        snap = store.get("g")
        assert snap.graph_status == "idle", snap.graph_status
        assert snap.graph is not None and len(snap.graph.objects) > 0 and snap.graph_updated is not None
        assert mapper._copy is None
    finally:
        mapper.stop()
        assert mapper.join(120)
    assert not any(Path(p).name.startswith("semmap-live-g-") for p in Path(__import__("tempfile").gettempdir()).iterdir())
