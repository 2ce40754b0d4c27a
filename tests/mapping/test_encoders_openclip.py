"""``openclip:`` encoder. open_clip is an optional extra that needs a torchvision built for
the installed torch; where it does not import, the model tests are skipped with the reason
and the install hint is checked instead."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mapping.encoders import load_encoder
from mapping.encoders.openclip import parse_openclip_argument
from tests.tiny_models import open_clip_or_reason, save_tiny_openclip

OPEN_CLIP, WHY = open_clip_or_reason()


def test_argument_parsing(tmp_path):
    ckpt = tmp_path / "w.bin"
    ckpt.write_bytes(b"")
    assert parse_openclip_argument("ViT-B-32/laion2b_s34b_b79k") == ("ViT-B-32", "laion2b_s34b_b79k")
    assert parse_openclip_argument(f"ViT-B-32/{ckpt}") == ("ViT-B-32", str(ckpt))
    assert parse_openclip_argument("hf-hub:laion/CLIP-ViT-B-32-laion2B-s34B-b79K") == (
        "hf-hub:laion/CLIP-ViT-B-32-laion2B-s34B-b79K",
        None,
    )


@pytest.mark.parametrize("arg", ["", "ViT-B-32", "ViT-B-32/", "/laion2b"])
def test_argument_needs_arch_and_pretrained(arg):
    with pytest.raises(ValueError, match="<arch>/<pretrained"):
        load_encoder(f"openclip:{arg}")


def test_missing_checkpoint_path():
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_encoder("openclip:ViT-B-32//nonexistent/semmap/vitb32.bin")


@pytest.mark.skipif(
    OPEN_CLIP is not None, reason="open_clip imports here; the missing-extra message cannot be observed"
)
def test_missing_open_clip_says_how_to_install():
    with pytest.raises(ImportError, match=r"pip install semmap\[openclip\]"):
        load_encoder("openclip:ViT-B-32/laion2b_s34b_b79k")


@pytest.mark.skipif(OPEN_CLIP is None, reason=WHY or "open_clip unavailable")
def test_tiny_openclip_model_from_a_checkpoint(tmp_path):
    """A tiny architecture registered from a JSON config, saved as a checkpoint, loaded by path."""
    model, ckpt = save_tiny_openclip(tmp_path, "semmap-tiny-vit")

    enc = load_encoder(f"openclip:semmap-tiny-vit/{ckpt}")
    rng = np.random.default_rng(0)
    img = enc.encode_images([rng.integers(0, 256, (40, 50, 3), dtype=np.uint8), np.zeros((32, 32, 3), np.uint8)])
    txt = enc.encode_text(["a photo of a cat", "a dog"])
    assert enc.dim == 16 and enc.name == f"openclip:semmap-tiny-vit/{ckpt}"
    assert img.shape == (2, 16) and txt.shape == (2, 16)
    np.testing.assert_allclose(np.linalg.norm(img, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(txt, axis=1), 1.0, atol=1e-5)
    with torch.no_grad():
        ref = torch.nn.functional.normalize(
            model.encode_text(OPEN_CLIP.get_tokenizer("semmap-tiny-vit")(["a photo of a cat"])), dim=-1
        )
    np.testing.assert_allclose(txt[0], ref[0].numpy(), atol=1e-5)
