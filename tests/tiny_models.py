"""Tiny randomly initialised models saved to disk like hub checkpoints (nothing is downloaded).

- :func:`save_tiny_depth_anything`: Depth Anything with the *metric* head (2-layer DINOv2
  backbone, DPT neck), plus its image processor; loads with ``hf:<dir>``.
- :func:`save_tiny_clip`: CLIP (2-layer ViT, patch 8 at 32 px) with an offline word-level
  tokenizer (:func:`tiny_tokenizer`; a real BPE vocabulary cannot be made offline) and an
  image processor; loads with ``clip:<dir>`` (``mapping.encoders``), so
  ``depthclip:clip:<dir>`` builds DepthCLIP on it. :func:`save_tiny_siglip`: the same for SigLIP.
- :func:`save_tiny_sam`: SAM (2-layer ViT at 64 px, 16-channel prompt encoder and mask
  decoder) with its image processor; loads with ``sam:<dir>`` (``scenegraph.masks``).
- :func:`save_tiny_openclip`: an open_clip ViT (1 layer, patch 16 at 32 px, joint dim 16)
  registered under a name and saved as a checkpoint; loads with ``openclip:<name>/<ckpt>``.
  open_clip is optional: :func:`open_clip_or_reason` says why it does not import.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

DEPTHCLIP_WORDS = (
    *("this", "object", "is", "giant", "extremely", "close", "not", "in", "distance"),
    *("a", "little", "remote", "far", "unseen", "photo", "of", "the", "cat", "dog", "table", "chair"),
)
"""Tokenizer vocabulary: DepthCLIP's prompt words ("This object is extremely close", ...) and a few more."""
ENCODER_TEST_WORDS = tuple("a photo of the cat dog car mug cup chair table keyboard monitor ocean coffee computer".split())
"""Tokenizer vocabulary of the ``clip:`` encoder tests (tests/mapping/test_encoders_clip.py)."""
PAD, EOS, BOS, UNK = 0, 1, 2, 3
TINY_CLIP_LAYERS = {"hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 2, "num_attention_heads": 4}


def save_tiny_depth_anything(
    path: Path, max_depth_m: int = 20, seed: int = 0, depth_estimation_type: str = "metric"
) -> Path:
    """Write a tiny Depth Anything and its processor to ``path``.

    ``depth_estimation_type="metric"``: the metric head (``sigmoid * max_depth_m``, metres);
    ``"relative"``: the relative head (disparity-like, no scale). The output head is re-drawn
    with a wide normal init so the random network gives a non-constant map. Returns ``path``.
    """
    import torch
    from transformers import DepthAnythingConfig, DepthAnythingForDepthEstimation, Dinov2Config
    from transformers.models.dpt.image_processing_pil_dpt import DPTImageProcessorPil

    path = Path(path)
    backbone = Dinov2Config(
        image_size=56, patch_size=14, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, out_indices=[1, 2], reshape_hidden_states=False,
    )
    config = DepthAnythingConfig(
        backbone_config=backbone, reassemble_hidden_size=32, neck_hidden_sizes=[16, 32],
        reassemble_factors=[2, 1], fusion_hidden_size=16, head_hidden_size=8,
        depth_estimation_type=depth_estimation_type, max_depth=max_depth_m,
    )
    torch.manual_seed(seed)
    model = DepthAnythingForDepthEstimation(config)
    with torch.no_grad():
        for p in model.head.parameters():
            p.normal_(0.0, 0.5)
    model.save_pretrained(path)
    DPTImageProcessorPil(
        size={"height": 56, "width": 56}, keep_aspect_ratio=True, ensure_multiple_of=14,
        image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225],
    ).save_pretrained(path)
    return path


def tiny_tokenizer(words: Sequence[str] = DEPTHCLIP_WORDS):
    """A word-level fast tokenizer ("[BOS] words [EOS]", max 16 tokens) of ``words`` and its vocabulary size."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {"[PAD]": PAD, "[EOS]": EOS, "[BOS]": BOS, "[UNK]": UNK}
    for w in words:
        vocab.setdefault(w, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(
        single="[BOS] $A [EOS]", special_tokens=[("[BOS]", BOS), ("[EOS]", EOS)]
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="[PAD]", eos_token="[EOS]", bos_token="[BOS]", unk_token="[UNK]",
        model_max_length=16,
    )
    return fast, len(vocab)


def tiny_text_config(vocab_size: int) -> dict:
    """Text tower of :func:`save_tiny_clip` / :func:`save_tiny_siglip` (16 positions, the tokenizer's ids)."""
    return dict(TINY_CLIP_LAYERS, vocab_size=vocab_size, max_position_embeddings=16, pad_token_id=PAD,
                bos_token_id=BOS, eos_token_id=EOS)


def save_tiny_clip(path: Path, seed: int = 0, words: Sequence[str] = DEPTHCLIP_WORDS) -> Path:
    """Write a tiny random CLIP (joint dim 24, 4x4 patch grid), tokenizer of ``words`` and image processor to ``path``."""
    import torch
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    path = Path(path)
    tok, vocab = tiny_tokenizer(words)
    cfg = CLIPConfig(text_config=tiny_text_config(vocab),
                     vision_config=dict(TINY_CLIP_LAYERS, image_size=32, patch_size=8), projection_dim=24)
    torch.manual_seed(seed)
    CLIPModel(cfg).save_pretrained(path)
    tok.save_pretrained(path)
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(path)
    return path


def save_tiny_siglip(path: Path, seed: int = 0, words: Sequence[str] = DEPTHCLIP_WORDS) -> Path:
    """Write a tiny random SigLIP (joint dim 32, 4x4 patch grid), tokenizer of ``words`` and image processor to ``path``."""
    import torch
    from transformers import SiglipConfig, SiglipImageProcessor, SiglipModel

    path = Path(path)
    tok, vocab = tiny_tokenizer(words)
    cfg = SiglipConfig(text_config=tiny_text_config(vocab),
                       vision_config=dict(TINY_CLIP_LAYERS, image_size=32, patch_size=8))
    torch.manual_seed(seed)
    SiglipModel(cfg).save_pretrained(path)
    tok.save_pretrained(path)
    SiglipImageProcessor(size={"height": 32, "width": 32}).save_pretrained(path)
    return path


def save_tiny_sam(path: Path, seed: int = 0) -> Path:
    """Write a tiny randomly initialised SAM and its processor (64 px input) to ``path``."""
    import torch
    from transformers import SamConfig, SamModel, SamProcessor
    from transformers.models.sam.configuration_sam import (
        SamMaskDecoderConfig,
        SamPromptEncoderConfig,
        SamVisionConfig,
    )

    try:  # transformers >= 5 without torchvision
        from transformers import SamImageProcessorPil as ImageProcessor
    except ImportError:
        from transformers import SamImageProcessor as ImageProcessor

    vision = SamVisionConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, mlp_dim=64,
        image_size=64, patch_size=8, output_channels=16, window_size=4, global_attn_indexes=[1], num_pos_feats=8,
    )  # fmt: skip
    prompt = SamPromptEncoderConfig(hidden_size=16, image_size=64, patch_size=8, mask_input_channels=4)
    decoder = SamMaskDecoderConfig(hidden_size=16, num_hidden_layers=2, num_attention_heads=2, mlp_dim=32, iou_head_hidden_dim=16)
    torch.manual_seed(seed)
    SamModel(SamConfig(vision_config=vision, prompt_encoder_config=prompt, mask_decoder_config=decoder)).save_pretrained(path)
    processor = ImageProcessor(size={"longest_edge": 64}, pad_size={"height": 64, "width": 64})
    SamProcessor(image_processor=processor).save_pretrained(path)
    return path


def open_clip_or_reason():
    """``(open_clip, "")``, or ``(None, why)`` where open_clip does not import (for ``skipif``)."""
    try:
        import open_clip

        return open_clip, ""
    except Exception as e:  # noqa: BLE001 - a mismatched torchvision raises RuntimeError/OSError too
        return None, f"open_clip does not import here: {type(e).__name__}: {e}"


TINY_OPENCLIP_CONFIG = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 16},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}
"""open_clip model config of :func:`save_tiny_openclip` (joint embedding dim 16)."""


def save_tiny_openclip(path: Path, name: str, seed: int = 0):
    """Register :data:`TINY_OPENCLIP_CONFIG` with open_clip as architecture ``name`` (its JSON in
    ``path/configs``), create it seeded and save its state dict as ``path/tiny.pt``.

    Returns:
        (model, checkpoint path); ``openclip:<name>/<checkpoint>`` loads it.
    """
    import open_clip
    import torch

    path = Path(path)
    (path / "configs").mkdir()
    (path / "configs" / f"{name}.json").write_text(json.dumps(TINY_OPENCLIP_CONFIG))
    open_clip.add_model_config(path / "configs")
    torch.manual_seed(seed)
    model = open_clip.create_model(name)
    ckpt = path / "tiny.pt"
    torch.save(model.state_dict(), ckpt)
    return model, ckpt


_SAVED: dict[tuple, Path] = {}


def cached_model_dir(kind: str, tmp_path_factory, **options) -> Path:
    """A tiny model directory made once per test session (shared by the test modules that use it).

    Args:
        kind: "depth_anything", "clip" or "sam".
        tmp_path_factory: pytest's session ``tmp_path_factory`` (the directory lives under it).
        options: passed to the ``save_tiny_*`` function.
    """
    key = (kind, tuple(sorted(options.items())))
    if key not in _SAVED:
        save = {"depth_anything": save_tiny_depth_anything, "clip": save_tiny_clip, "sam": save_tiny_sam}[kind]
        _SAVED[key] = save(tmp_path_factory.mktemp(f"tiny-{kind}"), **options)
    return _SAVED[key]
