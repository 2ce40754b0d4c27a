"""The depth stage in the mapping loop: dropped / missing depth filled by a model or the map,
``depth_source`` recorded, estimated depth integrated with a lower TSDF weight, bad input."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from mapping.depth import load_depth_model
from semmap.pipeline import MapConfig, Stage, build_map
from semmap.stages.depth import DepthStage, DepthStageConfig
from sensors import Camera, Frame, open_source
from sensors.base import IndexedSource
from tests.mapping.test_tsdf import voxels
from tests.tiny_models import cached_model_dir


@pytest.fixture(scope="module")
def tiny_da_dir(tmp_path_factory):
    # max depth 4 m: the random metric head's output (sigmoid * 4) lands inside the TSDF range
    return cached_model_dir("depth_anything", tmp_path_factory, max_depth_m=4)


@pytest.fixture(scope="module")
def tiny_clip_dir(tmp_path_factory):
    return cached_model_dir("clip", tmp_path_factory)


def _voxel_keys(coords: np.ndarray) -> np.ndarray:
    """One int64 per global voxel coordinate (|coordinate| < 2^20)."""
    c = coords.astype(np.int64) + (1 << 20)
    return (c[:, 0] << 42) | (c[:, 1] << 21) | c[:, 2]


class WeightRecorder(Stage):
    """Records, per integrated frame, its depth source and the TSDF weight increments it caused."""

    name = "recorder"

    def __init__(self) -> None:
        self.rows: list[tuple[str, np.ndarray]] = []
        self._before = (np.zeros(0, np.int64), np.zeros(0, np.float32))

    def before_integrate(self, frame, tsdf):
        if tsdf.num_blocks:
            v = voxels(tsdf)
            keys = _voxel_keys(v["coords"])
            order = np.argsort(keys)
            self._before = (keys[order], v["weight"][order])
        return frame

    def after_integrate(self, frame, tsdf):
        v = voxels(tsdf)
        keys, w0 = self._before
        new = _voxel_keys(v["coords"])
        pos = np.clip(np.searchsorted(keys, new), 0, max(len(keys) - 1, 0))
        had = (pos < len(keys)) & (keys[pos] == new) if len(keys) else np.zeros(len(new), bool)
        before = np.where(had, w0[pos] if len(keys) else 0.0, 0.0)
        delta = v["weight"].astype(np.float64) - before
        self.rows.append((frame.depth_source, delta[delta != 0]))


def kitchen(redkitchen):
    return open_source(f"7scenes:{redkitchen}")


CFG = MapConfig(voxel_size_m=0.04, stride=10, max_frames=4, progress=False)


@pytest.mark.parametrize("family", ["depth_anything", "depthclip"])
def test_dropped_frames_get_model_depth_with_lower_weight(family, tiny_da_dir, tiny_clip_dir, redkitchen):
    spec = f"hf:{tiny_da_dir}" if family == "depth_anything" else f"depthclip:clip:{tiny_clip_dir}"
    stage = DepthStage(DepthStageConfig(model=spec, drop_depth_every=2, estimated_weight=0.3))
    rec = WeightRecorder()
    result = build_map(kitchen(redkitchen), CFG, [stage, rec])
    assert result.frames_integrated == 4 and not result.frames_skipped
    sources = [s for s, _ in rec.rows]
    model_name = stage.model.name
    assert model_name == spec
    assert sources == ["sensor", f"mono:{spec}", "sensor", f"mono:{spec}"]
    for source, delta in rec.rows:
        assert len(delta) > 1000, source  # each frame touched the map
        # every voxel a frame updated gained exactly that frame's weight
        np.testing.assert_allclose(delta, 1.0 if source == "sensor" else 0.3, atol=1e-5, err_msg=source)
    meta = stage.metadata()
    assert meta["frames_by_depth_source"] == {"sensor": 2, f"mono:{spec}": 2}
    assert meta["dropped_depth"]["frames"] == 2 and meta["dropped_depth"]["scored"] == 2
    if family == "depthclip":  # a convex combination of the paper's bins (1 m ... 3 m)
        assert stage.model.output_kind == "metric"


def test_depthclip_depth_is_within_its_bins(tiny_clip_dir, redkitchen):
    stage = DepthStage(DepthStageConfig(model=f"depthclip:clip:{tiny_clip_dir}", drop_depth_every=2))
    frame = kitchen(redkitchen)[0]
    stage.before_integrate(frame, _EmptyMap())  # frame 0 keeps its depth: no map needed
    out = stage.before_integrate(frame.with_(index=1), _EmptyMap())
    assert out.depth_source == f"mono:depthclip:clip:{tiny_clip_dir}"
    assert out.tsdf_weight == 0.3
    np.testing.assert_array_equal(out.dropped_depth_m, frame.depth)
    valid = out.depth > 0
    assert valid.all() and out.depth.min() >= 1.0 - 1e-5 and out.depth.max() <= 3.0 + 1e-5
    assert out.depth.std() > 0


class _EmptyMap:
    num_blocks = 0


def test_map_prior_fills_dropped_frames_close_to_full_depth_map(redkitchen):
    """A redkitchen slice with every second frame's depth removed (map prior + guided fill)
    against the same slice with all depth: the two meshes agree to well under 1 cm."""
    from eval.recon import evaluate_reconstruction

    cfg = MapConfig(voxel_size_m=0.02, stride=4, max_frames=10, progress=False)
    full = build_map(kitchen(redkitchen), cfg)
    stage = DepthStage(DepthStageConfig(drop_depth_every=2))
    dropped = build_map(kitchen(redkitchen), cfg, [stage])
    meta = stage.metadata()
    assert meta["frames_by_depth_source"] == {"sensor": 5, "rendered": 5}
    assert dropped.frames_integrated == 10
    # the fill itself, scored against the removed sensor depth
    dd = meta["dropped_depth"]
    assert dd["mean_abs_rel"] < 0.05 and dd["mean_d1"] > 0.95 and dd["mean_coverage"] > 0.8, dd
    m = evaluate_reconstruction(
        dropped.tsdf.extract_mesh().to_legacy(), full.tsdf.extract_mesh().to_legacy(), num_samples=50_000
    )
    # measured 0.12 / 0.16 cm, F@2cm 99.7 %; integrating the rendered and the interpolated pixels
    # at weight 0.3 (guided fill everywhere) gave 0.97 / 0.57 cm on 16 frames of the same slice
    assert m.accuracy_m < 0.004 and m.completion_m < 0.004, m.summary()
    assert m.fscore[1] > 0.97, m.summary()  # F-score at 2 cm


# ---------------------------------------------------------------- bad input
class DepthlessSource(IndexedSource):
    """Frames of a real source with their depth removed (an RGB-only source)."""

    kind = "depthless"

    def __init__(self, inner, n: int, with_pose: bool = True) -> None:
        self.inner, self.n, self.with_pose = inner, n, with_pose
        self.camera = inner.camera

    def __len__(self) -> int:
        return self.n

    def load(self, i: int) -> Frame:
        f = self.inner[10 * i]
        return f.with_(depth=None, T_world_cam=f.T_world_cam if self.with_pose else None, index=i)


def test_relative_model_without_anchors_is_a_clear_error(tiny_da_dir, redkitchen):
    """RGB-only frames and a relative model: there is nothing to give it a metric scale."""
    rel = load_depth_model(f"hf:{tiny_da_dir}", output_kind="relative")
    with pytest.warns(UserWarning, match="has no metric scale"):
        stage = DepthStage(DepthStageConfig(model="relative-tiny", fill_missing="model"), model=rel)
    with warnings.catch_warnings(), pytest.raises(
        ValueError, match=r"no frame could be integrated.*no metric scale: pass anchors"
    ):
        warnings.simplefilter("ignore")
        build_map(DepthlessSource(kitchen(redkitchen), 2), MapConfig(voxel_size_m=0.04, progress=False), [stage])
    assert stage.stats.skipped == 2


def test_map_fill_without_map_or_pose_skips_with_reason(redkitchen):
    stage = DepthStage(DepthStageConfig(fill_missing="map"))
    src = DepthlessSource(kitchen(redkitchen), 2, with_pose=False)
    with pytest.warns(UserWarning, match="no pose; give --depth-model"), pytest.raises(
        ValueError, match="no frame could be integrated"
    ):
        build_map(src, MapConfig(voxel_size_m=0.04, progress=False), [stage])


def test_metric_model_fills_rgb_only_frames_without_pose_or_map(tiny_da_dir, redkitchen):
    """A metric model needs neither: every RGB-only frame gets mono depth at the lower weight."""
    stage = DepthStage(DepthStageConfig(model=f"hf:{tiny_da_dir}"))
    rec = WeightRecorder()
    result = build_map(DepthlessSource(kitchen(redkitchen), 2), MapConfig(voxel_size_m=0.04, progress=False),
                       [stage, rec])
    assert result.frames_integrated == 2
    assert [s for s, _ in rec.rows] == [f"mono:hf:{tiny_da_dir}"] * 2
    for _, delta in rec.rows:
        np.testing.assert_allclose(delta, 0.3, atol=1e-5)
    # the default min_observations (summed weight 1) hides a surface seen by two estimated frames only
    with pytest.raises(RuntimeError, match="weight threshold"):
        result.tsdf.extract_mesh()
    assert len(result.tsdf.extract_mesh(min_observations=0.3).vertex.positions) > 100


def test_complete_depth_fills_holes_and_weights_only_filled_pixels(redkitchen):
    from scipy.ndimage import distance_transform_edt

    frame = kitchen(redkitchen)[0]
    holes = frame.depth == 0
    assert 0.05 < holes.mean() < 0.5
    stage = DepthStage(DepthStageConfig(complete_depth=True, interpolated_weight=0.25, max_fill_px=10))
    out = stage.before_integrate(frame, _EmptyMap())
    assert out.depth_source == "completed"
    known = ~holes
    np.testing.assert_array_equal(out.depth[known], frame.depth[known])  # measured pixels bit-exact
    filled = holes & (out.depth > 0)
    near = holes & (distance_transform_edt(holes) <= 10)
    assert not (filled & ~near).any()  # nothing beyond max_fill_px
    assert filled.sum() > 0.9 * near.sum()
    w = out.tsdf_weight
    assert w.shape == frame.depth.shape
    assert np.all(w[known] == 1.0) and np.all(w[filled] == 0.25) and np.all(w[holes & ~filled] == 0)
    assert out.depth_fill.guided == pytest.approx(filled.mean())
    unbounded = DepthStage(DepthStageConfig(complete_depth=True, max_fill_px=None)).before_integrate(frame, _EmptyMap())
    assert (unbounded.depth > 0).mean() > 0.99
    w = unbounded.tsdf_weight  # default: interpolated depth is kept for later stages, not integrated
    assert np.all(w[known] == 1.0) and np.all(w[holes] == 0.0)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"fill_missing": "model"}, "needs --depth-model"),
        ({"fill_missing": "sometimes"}, "fill_missing must be one of"),
        ({"drop_depth_every": 1}, "drop every frame"),
        ({"estimated_weight": 0.0}, r"in \(0, 1\]"),
        ({"estimated_weight": 1.5}, r"in \(0, 1\]"),
        ({"map_pixel_weight": -0.1}, r"in \[0, 1\]"),
        ({"max_fill_px": -1.0}, "max_fill_px"),
    ],
)
def test_bad_stage_settings(kwargs, match):
    with pytest.raises(ValueError, match=match):
        DepthStageConfig(**kwargs)


def test_image_camera_mismatch_is_a_clear_error(tiny_da_dir):
    est = load_depth_model(f"hf:{tiny_da_dir}")
    cam = Camera(60.0, 60.0, 31.5, 23.5, 64, 48)
    with pytest.raises(ValueError, match="image is 32x48 but the camera is 64x48"):
        est.estimate_metric(np.zeros((48, 32, 3), np.uint8), cam)
