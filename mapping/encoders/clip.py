"""transformers CLIP and SigLIP: ``clip:<hf-name-or-local-path>``.

Offline first. A local directory is loaded with ``local_files_only=True``. A hub
name ("openai/clip-vit-base-patch32") is first looked up in the local Hugging
Face cache; only if it is not there, and downloads are allowed (not
``HF_HUB_OFFLINE``, ``allow_download`` not False), is the hub tried. Each
failure says which of those places were tried.

Image and text features come from the same model (``get_image_features`` /
``get_text_features``). CLIP vs SigLIP is read from ``config.model_type``.
SigLIP text is padded to ``max_length`` without an attention mask, as the model
was trained.

``encode_image_patches`` gives MaskCLIP-style dense features (Zhou et al.,
"Extract Free Dense Labels from CLIP", ECCV 2022): the image pooling step's
query-key mixing is skipped so every patch token follows the value path.
- CLIP ViT: the last encoder layer runs with attention replaced by its value
  path (``out_proj(v_proj(ln_1(x)))``, residual and MLP kept), then
  ``post_layernorm`` and ``visual_projection`` map each patch token into the
  joint space.
- SigLIP: the image embedding comes from the attention-pooling head (a probe
  query over all tokens); each token goes through that head's value path and
  MLP instead. This is the direct analogue; it is not a published recipe.
Both are done by running the module on length-1 token sequences, where
softmax attention over a single key is exactly the value path.
"""

from __future__ import annotations

import inspect
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mapping.encoders.base import Encoder, check_images, l2_normalize

SUPPORTED_MODEL_TYPES = ("clip", "siglip")


def _looks_like_path(spec: str) -> bool:
    """True for strings that can only be file paths (a hub name is "org/name")."""
    return spec.startswith(("/", "./", "../", "~")) or os.path.isabs(spec) or spec.count("/") > 1


def _hub_offline() -> bool:
    try:
        from huggingface_hub import constants

        if constants.HF_HUB_OFFLINE:
            return True
    except ImportError:
        pass
    return any(
        os.environ.get(v, "").lower() in ("1", "true", "yes", "on") for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    )


def resolve_model_source(model: str, allow_download: bool | None = None, kind: str = "clip") -> tuple[str, bool]:
    """Decide where a transformers model comes from: (path-or-name, local_files_only).

    Args:
        model: a local directory, or a Hugging Face hub name.
        allow_download: None: allowed unless the hub is offline (``HF_HUB_OFFLINE``).
        kind: the spec prefix the messages name ("clip", "sam").

    Returns:
        (source, local_files_only): a local directory or a cached hub name gives
        ``local_files_only=True``; an uncached hub name with downloads allowed gives False.

    Raises:
        FileNotFoundError: a path that does not exist, or a hub name that is neither
            cached nor downloadable (the message says why).
    """
    if not model:
        raise ValueError(f"{kind}: needs a model, e.g. '{kind}:/path/to/model' or '{kind}:org/model-name'")
    path = Path(model).expanduser()
    if path.exists():
        if not path.is_dir() or not (path / "config.json").is_file():
            raise FileNotFoundError(f"{kind}: {path} is not a transformers model folder (no config.json)")
        return str(path), True
    if _looks_like_path(model):
        raise FileNotFoundError(f"{kind}: model path {path} does not exist")
    try:
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(model, "config.json")
    except Exception:  # noqa: BLE001 - an invalid repo id is "not cached"
        cached = None
    if isinstance(cached, str):
        return model, True
    offline = _hub_offline()
    if allow_download is None:
        allow_download = not offline
    if not allow_download:
        why = (
            "the hub is offline (HF_HUB_OFFLINE/TRANSFORMERS_OFFLINE)"
            if offline
            else "downloads are disabled (allow_download=False)"
        )
        raise FileNotFoundError(
            f"{kind}: {model!r} is neither a local path nor in the local Hugging Face cache, and {why}; "
            f"pass a local model folder ({kind}:/path/to/model) or download it first"
        )
    return model, False


class HFClipEncoder(Encoder):
    """A transformers CLIP or SigLIP model as an ``Encoder``.

    Args:
        model: local folder or hub name.
        device: torch device.
        batch_size: images or texts per forward pass.
        allow_download: see ``resolve_model_source``.
        dtype: torch dtype for the weights (default float32; float16 only on GPU).
    """

    kind = "clip"

    def __init__(
        self,
        model: str,
        device: str = "cpu",
        batch_size: int = 32,
        allow_download: bool | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        from transformers import AutoConfig, AutoImageProcessor, AutoModel, AutoTokenizer

        source, local_only = resolve_model_source(model, allow_download)
        try:
            config = AutoConfig.from_pretrained(source, local_files_only=local_only)
        except OSError as e:
            if local_only:
                raise FileNotFoundError(f"clip: could not read the model config of {model!r} from {source}: {e}") from e
            raise FileNotFoundError(
                f"clip: {model!r} is neither a local path nor in the local Hugging Face cache, "
                f"and downloading it failed: {e}"
            ) from e
        if config.model_type not in SUPPORTED_MODEL_TYPES:
            raise ValueError(
                f"clip: {model!r} is a {config.model_type!r} model; supported: {', '.join(SUPPORTED_MODEL_TYPES)}"
            )
        self.model_type: str = config.model_type
        dim = _joint_dim(config)
        super().__init__(f"clip:{model}", dim, device=device, batch_size=batch_size)
        kw: dict[str, Any] = {"local_files_only": local_only}
        self.model = AutoModel.from_pretrained(source, **kw).eval().to(self.device, dtype)
        self.tokenizer = AutoTokenizer.from_pretrained(source, **kw)
        self.image_processor = AutoImageProcessor.from_pretrained(source, **kw)
        self.dtype = dtype
        text_positions = int(config.text_config.max_position_embeddings)
        tok_max = getattr(self.tokenizer, "model_max_length", text_positions) or text_positions
        self.max_text_tokens = int(min(tok_max, text_positions))
        vision = config.vision_config
        self.image_size = int(vision.image_size)
        self.patch_size = int(vision.patch_size)

    @classmethod
    def from_spec(cls, argument: str, device: str = "cpu", **options: Any) -> HFClipEncoder:
        return cls(argument, device=device, **options)

    # -- global features -------------------------------------------------------------------
    def _encode_image_batch(self, images: list[np.ndarray]) -> torch.Tensor:
        pixels = self.image_processor(images=images, return_tensors="pt")["pixel_values"]
        out = self.model.get_image_features(pixel_values=pixels.to(self.device, self.dtype))
        return _pooled(out)

    def _encode_text_batch(self, texts: list[str]) -> torch.Tensor:
        if self.model_type == "siglip":
            tokens = self.tokenizer(
                texts, padding="max_length", truncation=True, max_length=self.max_text_tokens, return_tensors="pt"
            )
            out = self.model.get_text_features(input_ids=tokens["input_ids"].to(self.device))
        else:
            tokens = self.tokenizer(
                texts, padding=True, truncation=True, max_length=self.max_text_tokens, return_tensors="pt"
            )
            out = self.model.get_text_features(
                input_ids=tokens["input_ids"].to(self.device), attention_mask=tokens["attention_mask"].to(self.device)
            )
        return _pooled(out)

    # -- dense features --------------------------------------------------------------------
    @property
    def patch_grid(self) -> tuple[int, int]:
        """(h, w) patches of ``encode_image_patches``."""
        n = self.image_size // self.patch_size
        return n, n

    def encode_image_patches(self, images: list[np.ndarray]) -> np.ndarray:
        """MaskCLIP-style per-patch embeddings in the joint image-text space.

        Each image is resized whole (no crop, aspect not kept) to the model's
        ``image_size`` square and normalised with the processor's mean/std, so
        patch (i, j) covers rows [i*H/h, (i+1)*H/h) and columns [j*W/w, (j+1)*W/w)
        of the original image.

        Args:
            images: N arrays (H_i, W_i, 3) uint8 RGB.

        Returns:
            (N, h, w, dim) float32, each patch vector L2-normalised; (h, w) = ``patch_grid``.
        """
        images = check_images(images, "encode_image_patches")
        h, w = self.patch_grid
        out = np.empty((len(images), h, w, self.dim), dtype=np.float32)
        with torch.inference_mode():
            for start in range(0, len(images), self.batch_size):
                batch = images[start : start + self.batch_size]
                feats = self._patch_batch(self._pixels_whole(batch))  # (B, h*w, dim)
                out[start : start + len(batch)] = l2_normalize(feats.reshape(-1, self.dim), "image patches").reshape(
                    len(batch), h, w, self.dim
                )
        return out

    def _pixels_whole(self, images: list[np.ndarray]) -> torch.Tensor:
        proc = self.image_processor
        mean = torch.tensor(proc.image_mean, dtype=torch.float32, device=self.device).view(1, 3, 1, 1)
        std = torch.tensor(proc.image_std, dtype=torch.float32, device=self.device).view(1, 3, 1, 1)
        scale = float(getattr(proc, "rescale_factor", 1 / 255))
        s = self.image_size
        batch = []
        for im in images:
            t = torch.tensor(im, device=self.device).permute(2, 0, 1).unsqueeze(0).float()
            batch.append(
                torch.nn.functional.interpolate(t, size=(s, s), mode="bicubic", antialias=True, align_corners=False)
            )
        x = torch.cat(batch).clamp_(0, 255) * scale
        return ((x - mean) / std).to(self.dtype)

    def _patch_batch(self, pixels: torch.Tensor) -> torch.Tensor:
        vision = self.model.vision_model
        if self.model_type == "clip":
            out = vision(pixel_values=pixels, output_hidden_states=True)
            hidden = out.hidden_states
            layers = vision.encoder.layers
            if len(hidden) != len(layers) + 1:
                raise RuntimeError(
                    f"expected {len(layers) + 1} hidden states from the CLIP vision tower, got {len(hidden)}"
                )
            x = hidden[-2][:, 1:]  # input of the last layer, patch tokens only: (B, P, D)
            b, p, d = x.shape
            y = _run_layer_per_token(layers[-1], x.reshape(b * p, 1, d))
            y = vision.post_layernorm(y)
            return self.model.visual_projection(y).reshape(b, p, -1)
        # SigLIP: all layers + post_layernorm (no CLS token), then the pooling head's value path.
        if not getattr(vision, "use_head", True):
            raise ValueError(
                "encode_image_patches needs a SigLIP vision tower with its pooling head (vision_use_head=True)"
            )
        x = vision(pixel_values=pixels).last_hidden_state  # (B, P, D), post_layernorm applied
        b, p, d = x.shape
        return vision.head(x.reshape(b * p, 1, d)).reshape(b, p, -1)


def _joint_dim(config: Any) -> int:
    """Dimension of the shared image-text space of a CLIP or SigLIP config."""
    if config.model_type == "clip":
        return int(config.projection_dim)
    text = config.text_config
    text_dim = int(getattr(text, "projection_size", None) or text.hidden_size)
    vision_dim = int(config.vision_config.hidden_size)  # the SigLIP pooling head keeps the vision width
    if text_dim != vision_dim:
        raise ValueError(
            f"SigLIP config with text output {text_dim} != vision output {vision_dim}; not a joint embedding model"
        )
    return text_dim


def _pooled(out: Any) -> torch.Tensor:
    """Feature tensor from ``get_*_features``: a tensor (transformers 4) or an output with ``pooler_output`` (5)."""
    if isinstance(out, torch.Tensor):
        return out
    pooled = getattr(out, "pooler_output", None)
    if pooled is None:
        raise RuntimeError(f"unexpected output {type(out).__name__} from get_*_features (no pooler_output)")
    return pooled


def _run_layer_per_token(layer: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Run a transformer layer on (M, 1, D) one-token sequences (attention = value path)."""
    params = inspect.signature(layer.forward).parameters
    kwargs: dict[str, Any] = {"attention_mask": None}
    if "causal_attention_mask" in params:  # transformers 4.x CLIP layers
        kwargs["causal_attention_mask"] = None
    y = layer(x, **kwargs)
    y = y[0] if isinstance(y, tuple) else y
    return y[:, 0]
