"""Depth estimators: interface guards, metric conversion, registry, transformers models, DepthCLIP."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mapping.depth import (
    DEPTH_MODELS,
    DepthEstimator,
    DepthPrediction,
    MetricDepthError,
    load_depth_model,
)
from sensors import Camera

CAM = Camera(60.0, 60.0, 31.5, 23.5, 64, 48)


def ramp_depth(cam: Camera = CAM) -> np.ndarray:
    """(H, W) metric depth: a slanted plane from 1 m to 3 m."""
    return np.tile(np.linspace(1.0, 3.0, cam.width, dtype=np.float32), (cam.height, 1))


class FixedEstimator(DepthEstimator):
    """Returns a fixed map of a given kind (a stand-in network)."""

    def __init__(self, values: np.ndarray, kind: str) -> None:
        self.values, self.output_kind, self.name = values, kind, f"fixed-{kind}"

    def _predict(self, rgb, camera):
        return self.values


def rgb_for(cam: Camera = CAM) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 255, (cam.height, cam.width, 3), dtype=np.uint8)


# ---------------------------------------------------------------- interface and metric conversion
def test_image_camera_size_mismatch_is_a_clear_error():
    est = FixedEstimator(ramp_depth(), "metric")
    with pytest.raises(ValueError, match="image is 32x48 but the camera is 64x48"):
        est.predict(rgb_for()[:, :32], CAM)
    with pytest.raises(ValueError, match="uint8"):
        est.predict(rgb_for().astype(np.float32), CAM)


def test_wrong_output_shape_is_caught():
    with pytest.raises(RuntimeError, match="produced shape"):
        FixedEstimator(ramp_depth()[:10], "metric").predict(rgb_for(), CAM)


def test_relative_model_without_anchors_raises():
    est = FixedEstimator(1.0 / ramp_depth(), "relative_inverse")
    with pytest.raises(MetricDepthError, match="relative inverse depth, which has no metric scale: pass anchors"):
        est.estimate_metric(rgb_for(), CAM)


def test_relative_model_with_all_invalid_anchors_raises():
    est = FixedEstimator(ramp_depth(), "relative")
    with pytest.raises(MetricDepthError, match="only 0 valid anchors"):
        est.estimate_metric(rgb_for(), CAM, anchors=np.zeros(CAM.shape, np.float32))


@pytest.mark.parametrize("kind", ["relative", "relative_inverse"])
def test_relative_model_aligned_to_sparse_anchors(kind):
    gt = ramp_depth()
    raw = (gt - 0.4) / 3.0 if kind == "relative" else (1.0 / gt - 0.05) * 7.0
    anchors = np.zeros_like(gt)
    anchors[::6, ::6] = gt[::6, ::6]
    anchors[::12, ::12] = 9.0  # some wrong anchors
    depth, info = FixedEstimator(raw, kind).estimate_metric(rgb_for(), CAM, anchors)
    assert info.alignment is not None and info.kind == kind
    assert info.alignment.space == ("depth" if kind == "relative" else "inverse_depth")
    np.testing.assert_allclose(depth, gt, rtol=1e-4)
    assert info.valid_fraction == 1.0


def test_poorly_supported_alignment_warns():
    """60 % of the anchors wrong: the fit still finds the 40 % that agree, but says so."""
    gt = ramp_depth()
    rng = np.random.default_rng(3)
    anchors = np.where(rng.random(gt.shape) < 0.6, rng.uniform(0.5, 9.0, gt.shape), gt).astype(np.float32)
    with pytest.warns(UserWarning, match=r"only \d+ % of \d+ anchors agree"):
        depth, info = FixedEstimator(2.0 * gt, "relative").estimate_metric(rgb_for(), CAM, anchors)
    np.testing.assert_allclose(depth, gt, rtol=1e-4)
    assert 0.35 < info.alignment.inlier_fraction < 0.5


def test_metric_model_passes_through():
    gt = ramp_depth()
    gt[0, 0] = np.nan
    depth, info = FixedEstimator(gt, "metric").estimate_metric(rgb_for(), CAM)
    assert info.alignment is None and depth[0, 0] == 0
    np.testing.assert_array_equal(depth[1:], gt[1:])


def test_prediction_validates_kind():
    with pytest.raises(ValueError, match="kind"):
        DepthPrediction(np.zeros((2, 2)), "disparity")


# ---------------------------------------------------------------- registry
def test_registry_names_and_unknown_spec():
    assert {"hf", "depthclip"} <= set(DEPTH_MODELS.names())
    with pytest.raises(KeyError, match="unknown depth model 'nope'; known: hf, depthclip"):
        load_depth_model("nope:x")
    with pytest.raises(ValueError, match="<name>:<location>"):
        load_depth_model("just-a-path")


def test_hf_missing_local_model_is_a_clear_error(tmp_path):
    from mapping.depth.hf import DepthModelLoadError

    with pytest.raises(DepthModelLoadError, match="is a directory but does not hold a loadable depth model"):
        load_depth_model(f"hf:{tmp_path}")
    with pytest.raises(DepthModelLoadError, match="not in the Hugging Face cache; loading is offline"):
        load_depth_model("hf:someone/not-a-cached-model")


# ---------------------------------------------------------------- transformers Depth Anything (tiny, random)
@pytest.fixture(scope="module")
def tiny_depth_anything(tmp_path_factory):
    """A 2-layer Dinov2 + DPT head Depth Anything with the metric head, saved like a hub checkpoint."""
    from tests.tiny_models import save_tiny_depth_anything

    return save_tiny_depth_anything(tmp_path_factory.mktemp("tiny-depth-anything-metric"))


def test_hf_depth_anything_metric_end_to_end(tiny_depth_anything, redkitchen):
    from sensors.io import read_rgb

    rgb = read_rgb(redkitchen / "frame-000000.color.jpg")
    cam = Camera(585.0, 585.0, 320.0, 240.0, rgb.shape[1], rgb.shape[0])
    est = load_depth_model(f"hf:{tiny_depth_anything}")
    assert est.output_kind == "metric" and est.model_type == "depth_anything"
    depth, info = est.estimate_metric(rgb, cam)
    assert depth.shape == (480, 640) and depth.dtype == np.float32
    assert info.alignment is None
    assert np.all(np.isfinite(depth)) and depth.min() >= 0 and depth.max() <= 20.0  # sigmoid * max_depth
    assert depth.std() > 1e-3  # a real image gives a non-constant map
    # the same network as relative: declared by option, then it needs anchors
    rel = load_depth_model(f"hf:{tiny_depth_anything}", output_kind="relative")
    with pytest.raises(MetricDepthError, match="pass anchors"):
        rel.estimate_metric(rgb, cam)


def test_hf_model_in_canonical_camera(tiny_depth_anything):
    """load_depth_model(..., canonical_focal_px=...) wraps the network; the focal ratio scales its output."""
    cam = Camera(100.0, 100.0, 31.5, 23.5, 64, 48)
    rgb = rgb_for(cam)
    plain = load_depth_model(f"hf:{tiny_depth_anything}")
    wrapped = load_depth_model(f"hf:{tiny_depth_anything}", canonical_focal_px=200.0)
    assert wrapped.name.startswith("canonical(hf:") and wrapped.output_kind == "metric"
    assert wrapped.input_camera(cam).shape == (96, 128)
    rescale = type(wrapped)(plain, canonical_focal_px=200.0, mode="rescale")
    np.testing.assert_allclose(rescale.predict(rgb, cam).values, plain.predict(rgb, cam).values * 0.5, rtol=1e-6)
    assert wrapped.predict(rgb, cam).values.shape == (48, 64)


def test_hf_output_kind_inference(tiny_depth_anything):
    from transformers import AutoConfig

    from mapping.depth.hf import infer_output_kind

    cfg = AutoConfig.from_pretrained(tiny_depth_anything, local_files_only=True)
    assert infer_output_kind(cfg)[0] == "metric"
    cfg.depth_estimation_type = "relative"
    assert infer_output_kind(cfg)[0] == "relative_inverse"
    for model_type, kind in (("zoedepth", "metric"), ("glpn", "metric"), ("dpt", "relative_inverse"), ("xyz", None)):
        cfg.model_type = model_type
        assert infer_output_kind(cfg)[0] == kind


# ---------------------------------------------------------------- DepthCLIP
class KeywordEncoder:
    """Hand-built encoder: patch (i, j) points along class k = j mod K; prompt k along class k."""

    def __init__(self, words):
        self.words = list(words)

    def encode_text(self, texts):
        out = np.zeros((len(texts), len(self.words)), np.float32)
        for i, t in enumerate(texts):
            k = max(range(len(self.words)), key=lambda k: len(self.words[k]) * t.endswith(" " + self.words[k]))
            out[i, k] = 1.0
        return out

    def encode_image_patches(self, images):
        K = len(self.words)
        f = np.zeros((len(images), 2, K, K), np.float32)
        f[:, :, np.arange(K), np.arange(K)] = 1.0
        return f


def test_depthclip_paper_defaults_and_math():
    from mapping.depth.depthclip import (
        PAPER_BINS_M,
        DepthCLIPConfig,
        DepthCLIPEstimator,
    )

    cfg = DepthCLIPConfig()
    assert cfg.bins_m == (1.00, 1.50, 2.00, 2.25, 2.50, 2.75, 3.00) == PAPER_BINS_M
    assert cfg.temperature == 0.1
    assert cfg.prompts()[3] == ["This object is not in distance"]
    est = DepthCLIPEstimator(KeywordEncoder(cfg.distance_words), cfg)
    # one-hot similarity 1 vs 0, logits 1000 apart: the softmax picks the class -> its bin exactly
    np.testing.assert_allclose(est.patch_depth(rgb_for())[0], PAPER_BINS_M, rtol=1e-6)
    # a high temperature flattens the softmax towards the mean bin
    warm = DepthCLIPEstimator(KeywordEncoder(cfg.distance_words), DepthCLIPConfig(temperature=1e4))
    np.testing.assert_allclose(warm.patch_depth(rgb_for()), np.mean(PAPER_BINS_M), rtol=1e-3)
    cam = Camera(60.0, 60.0, 31.5, 23.5, 70, 20)
    depth = est.predict(rgb_for(cam), cam).values
    assert depth.shape == (20, 70) and depth.min() >= 1.0 - 1e-6 and depth.max() <= 3.0 + 1e-6
    assert np.all(np.diff(depth[10]) >= -1e-6)  # bilinear upsampling of increasing bins stays monotone


def test_depthclip_config_validation():
    from mapping.depth.depthclip import DepthCLIPConfig

    with pytest.raises(ValueError, match="one bin per distance word"):
        DepthCLIPConfig(bins_m=(1.0, 2.0))
    with pytest.raises(ValueError, match="temperature"):
        DepthCLIPConfig(temperature=0.0)


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    """A tiny random CLIP (2-layer ViT, patch 8 at 32 px) with a character-level BPE tokenizer, saved."""
    import torch
    from transformers import CLIPConfig, CLIPModel, CLIPTokenizer

    path = tmp_path_factory.mktemp("tiny-clip")
    letters = "abcdefghijklmnopqrstuvwxyz"
    vocab = {c: i for i, c in enumerate(letters)}
    vocab.update({c + "</w>": 26 + i for i, c in enumerate(letters)})
    vocab.update({"<|startoftext|>": 52, "<|endoftext|>": 53})
    (path / "vocab.json").write_text(json.dumps(vocab))
    (path / "merges.txt").write_text("#version: 0.2\n")
    CLIPTokenizer(str(path / "vocab.json"), str(path / "merges.txt")).save_pretrained(path)
    text = {"vocab_size": 54, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
                "max_position_embeddings": 64, "bos_token_id": 52, "eos_token_id": 53, "pad_token_id": 53}
    vision = {"image_size": 32, "patch_size": 8, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
                  "num_attention_heads": 2}
    torch.manual_seed(0)
    CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=16)).save_pretrained(path)
    return path


class TinyClipPatches:
    """Adapter: transformers CLIPModel -> encode_image_patches / encode_text (whole image, no crop)."""

    def __init__(self, path):
        from transformers import AutoTokenizer, CLIPModel

        self.model = CLIPModel.from_pretrained(path, local_files_only=True).eval()
        self.tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        self.size = self.model.config.vision_config.image_size
        self.name = "tiny-clip"

    def encode_image_patches(self, images):
        import torch
        import torch.nn.functional as F

        x = torch.stack([torch.from_numpy(im).permute(2, 0, 1).float() / 255.0 for im in images])
        x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False)
        with torch.no_grad():
            h = self.model.vision_model(pixel_values=x).last_hidden_state[:, 1:]
            f = self.model.visual_projection(self.model.vision_model.post_layernorm(h))
        g = self.size // self.model.config.vision_config.patch_size
        return f.reshape(len(images), g, g, -1)

    def encode_text(self, texts):
        import torch

        enc = self.tokenizer(list(texts), padding=True, return_tensors="pt")
        with torch.no_grad():
            pooled = self.model.text_model(**enc).pooler_output
            return self.model.text_projection(pooled)


def test_depthclip_tiny_random_clip_end_to_end(tiny_clip, redkitchen):
    from sensors.io import read_rgb

    rgb = read_rgb(redkitchen / "frame-000000.color.jpg")
    cam = Camera(585.0, 585.0, 320.0, 240.0, 640, 480)
    encoder = TinyClipPatches(tiny_clip)
    est = load_depth_model("depthclip:tiny-clip", encoder=encoder, temperature=0.1)
    assert est.name == "depthclip:tiny-clip"
    text = est.text_features()
    assert text.shape == (7, 16)
    np.testing.assert_allclose(np.linalg.norm(text, axis=1), 1.0, rtol=1e-5)
    assert len({tuple(np.round(t, 4)) for t in text}) == 7  # distinct prompts give distinct features
    depth, info = est.estimate_metric(rgb, cam)
    assert depth.shape == (480, 640) and info.kind == "metric"
    assert depth.min() >= 1.0 - 1e-6 and depth.max() <= 3.0 + 1e-6  # convex combination of the bins
    assert depth.std() > 0  # patches differ


def test_depthclip_spec_without_encoder_is_clear():
    with pytest.raises(ValueError, match="needs an encoder spec"):
        load_depth_model("depthclip:")
    with pytest.raises(TypeError, match="encode_image_patches and encode_text"):
        load_depth_model("depthclip:x", encoder=object())
