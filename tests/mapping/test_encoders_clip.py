"""``clip:`` encoder on tiny randomly initialised CLIP and SigLIP models saved to disk.

Nothing is downloaded: each model is a small random config written with
``save_pretrained`` beside a word-level tokenizer built with the ``tokenizers``
library (a real SentencePiece/BPE vocabulary cannot be made offline; every
tokenizer loads through ``AutoTokenizer`` the same way) and an image processor
(tests/tiny_models.py: ``save_tiny_clip``, ``save_tiny_siglip``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from mapping.encoders import load_encoder
from tests.tiny_models import ENCODER_TEST_WORDS, save_tiny_clip, save_tiny_siglip


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory) -> Path:
    return save_tiny_clip(tmp_path_factory.mktemp("tiny-clip"), words=ENCODER_TEST_WORDS)


@pytest.fixture(scope="module")
def siglip_dir(tmp_path_factory) -> Path:
    return save_tiny_siglip(tmp_path_factory.mktemp("tiny-siglip"), words=ENCODER_TEST_WORDS)


@pytest.fixture(scope="module")
def clip_enc(clip_dir):
    return load_encoder(f"clip:{clip_dir}")


@pytest.fixture(scope="module")
def siglip_enc(siglip_dir):
    return load_encoder(f"clip:{siglip_dir}")


def images(n: int = 3, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    sizes = [(32, 32), (40, 50), (17, 90), (64, 48)]
    return [rng.integers(0, 256, (*sizes[i % 4], 3), dtype=np.uint8) for i in range(n)]


@pytest.fixture(params=["clip", "siglip"])
def enc(request, clip_enc, siglip_enc):
    return clip_enc if request.param == "clip" else siglip_enc


# -- loading -----------------------------------------------------------------------------------
def test_loads_by_path_and_detects_the_family(clip_enc, siglip_enc, clip_dir, siglip_dir):
    assert (clip_enc.model_type, clip_enc.dim, clip_enc.name) == ("clip", 24, f"clip:{clip_dir}")
    assert (siglip_enc.model_type, siglip_enc.dim, siglip_enc.name) == ("siglip", 32, f"clip:{siglip_dir}")
    assert clip_enc.patch_grid == siglip_enc.patch_grid == (4, 4)


def test_missing_local_path():
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_encoder("clip:/nonexistent/semmap/clip-model")


def test_folder_without_config(tmp_path):
    with pytest.raises(FileNotFoundError, match="no config.json"):
        load_encoder(f"clip:{tmp_path}")


def test_uncached_hub_name_without_download_is_a_clear_error():
    with pytest.raises(FileNotFoundError, match="neither a local path nor in the local Hugging Face cache"):
        load_encoder("clip:semmap-test/not-a-cached-model", allow_download=False)


def test_unsupported_model_type(tmp_path):
    from transformers import BertConfig

    BertConfig(hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=8).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="'bert' model; supported: clip, siglip"):
        load_encoder(f"clip:{tmp_path}")


def test_empty_argument():
    with pytest.raises(ValueError, match="needs a model"):
        load_encoder("clip:")


# -- global features ----------------------------------------------------------------------------
def test_shapes_and_normalisation(enc):
    img = enc.encode_images(images(3))
    txt = enc.encode_text(["a photo of a cat", "dog", "an unknown word"])
    assert img.shape == (3, enc.dim) and txt.shape == (3, enc.dim)
    assert img.dtype == txt.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(img, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(txt, axis=1), 1.0, atol=1e-5)
    assert abs(float(img[0] @ img[1])) < 0.999 and abs(float(txt[0] @ txt[1])) < 0.999


def test_batching_does_not_change_results(enc):
    ims = images(4)
    texts = ["cat", "a photo of a dog on the table", "mug", "coffee cup"]
    a_img, a_txt = enc.encode_images(ims), enc.encode_text(texts)
    bs = enc.batch_size
    try:
        enc.batch_size = 1
        b_img, b_txt = enc.encode_images(ims), enc.encode_text(texts)
    finally:
        enc.batch_size = bs
    # text alone vs padded beside a longer one: same embedding (attention mask / max_length padding)
    np.testing.assert_allclose(a_img, b_img, atol=1e-5)
    np.testing.assert_allclose(a_txt, b_txt, atol=1e-5)


def test_siglip_text_is_padded_to_max_length(siglip_enc):
    seen = []
    model = siglip_enc.model
    original = model.get_text_features

    def spy(**kw):
        seen.append(kw)
        return original(**kw)

    model.get_text_features = spy
    try:
        siglip_enc.encode_text(["cat"])
    finally:
        del model.get_text_features
    assert seen[0]["input_ids"].shape == (1, 16) and "attention_mask" not in seen[0]


# -- dense (MaskCLIP) features -----------------------------------------------------------------
def normalised_pixels(enc, ims: list[np.ndarray]) -> torch.Tensor:
    """Processor normalisation of images already at model size (so no resize is involved)."""
    proc = enc.image_processor
    x = torch.tensor(np.stack(ims)).permute(0, 3, 1, 2).float() / 255
    return (x - torch.tensor(proc.image_mean).view(1, 3, 1, 1)) / torch.tensor(proc.image_std).view(1, 3, 1, 1)


def test_patch_features_shape(enc):
    out = enc.encode_image_patches(images(3))
    assert out.shape == (3, 4, 4, enc.dim) and out.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(out, axis=-1), 1.0, atol=1e-5)


def test_clip_patch_features_follow_maskclip(clip_enc):
    """Reference written out with the named sub-modules: the last layer with attention
    replaced by its value path (out_proj(v_proj(ln1 x)) + residual, then MLP), then
    post_layernorm and visual_projection, patch tokens only."""
    ims = [im for im in images(4) if im.shape[:2] == (32, 32)] + [np.full((32, 32, 3), 90, np.uint8)]
    model, vision = clip_enc.model, clip_enc.model.vision_model
    last = vision.encoder.layers[-1]
    with torch.no_grad():
        px = normalised_pixels(clip_enc, ims)
        out = vision(pixel_values=px, output_hidden_states=True)
        h = out.hidden_states[-2]
        # hidden_states[-2] really is the last layer's input
        y_full = last(h, None)
        y_full = y_full[0] if isinstance(y_full, tuple) else y_full
        torch.testing.assert_close(y_full, out.last_hidden_state, atol=1e-5, rtol=1e-5)
        x = h[:, 1:]
        x = x + last.self_attn.out_proj(last.self_attn.v_proj(last.layer_norm1(x)))
        x = x + last.mlp(last.layer_norm2(x))
        ref = torch.nn.functional.normalize(model.visual_projection(vision.post_layernorm(x)), dim=-1)
    got = clip_enc.encode_image_patches(ims)
    np.testing.assert_allclose(got.reshape(len(ims), 16, -1), ref.numpy(), atol=1e-5)


def test_siglip_patch_features_follow_the_pooling_heads_value_path(siglip_enc):
    ims = [im for im in images(4) if im.shape[:2] == (32, 32)] + [np.full((32, 32, 3), 200, np.uint8)]
    vision = siglip_enc.model.vision_model
    head = vision.head
    with torch.no_grad():
        x = vision(pixel_values=normalised_pixels(siglip_enc, ims)).last_hidden_state
        d = x.shape[-1]
        v = x @ head.attention.in_proj_weight[2 * d :].T + head.attention.in_proj_bias[2 * d :]
        o = head.attention.out_proj(v)
        ref = torch.nn.functional.normalize(o + head.mlp(head.layernorm(o)), dim=-1)
    got = siglip_enc.encode_image_patches(ims)
    np.testing.assert_allclose(got.reshape(len(ims), 16, -1), ref.numpy(), atol=1e-5)
