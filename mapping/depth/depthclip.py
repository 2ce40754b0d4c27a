"""DepthCLIP: zero-shot monocular depth from a CLIP encoder (Zhang et al., ACM MM 2022).

No training. For every image patch feature ``f`` (L2-normalised) and the text
feature ``t_k`` of each distance class k (prompt "This {object} is {distance}",
averaged over objects and templates, L2-normalised):

    logit_k = logit_scale * <f, t_k> / temperature
    p_k     = softmax_k(logit_k)
    depth   = sum_k p_k * bin_k            (metres, per patch)

and the (h, w) patch depth is bilinearly upsampled to the frame. Defaults follow
the paper's code: distance words ("giant", "extremely close", "close",
"not in distance", "a little remote", "far", "unseen"), bins
[1.00, 1.50, 2.00, 2.25, 2.50, 2.75, 3.00] m, object "object", template
"This {object} is {distance}", CLIP logit scale 100 and temperature 0.1.

The encoder is anything with the :class:`PatchTextEncoder` protocol (e.g. the
project's CLIP encoders); its patch grid must cover the whole image (no centre
crop), so that patch (i, j) sits over the same image region after upsampling.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

from mapping.depth.base import DepthEstimator
from sensors.resize import resize_map
from sensors.camera import Camera

PAPER_DISTANCE_WORDS = ("giant", "extremely close", "close", "not in distance", "a little remote", "far", "unseen")
PAPER_BINS_M = (1.00, 1.50, 2.00, 2.25, 2.50, 2.75, 3.00)


@runtime_checkable
class PatchTextEncoder(Protocol):
    """What DepthCLIP needs from an image-text encoder."""

    def encode_image_patches(self, images: Sequence[np.ndarray]):
        """(N, h, w, D) patch embeddings (numpy or torch) for N (H, W, 3) uint8 images."""

    def encode_text(self, texts: Sequence[str]):
        """(T, D) text embeddings (numpy or torch)."""


@dataclass(frozen=True)
class DepthCLIPConfig:
    """DepthCLIP settings (paper defaults)."""

    bins_m: tuple[float, ...] = PAPER_BINS_M
    """Depth of each distance class, metres."""
    distance_words: tuple[str, ...] = PAPER_DISTANCE_WORDS
    """One word (phrase) per class, near to far; same length as ``bins_m``."""
    objects: tuple[str, ...] = ("object",)
    """Object nouns the prompt features are averaged over."""
    templates: tuple[str, ...] = ("This {object} is {distance}",)
    """Prompt templates with ``{object}`` and ``{distance}`` fields."""
    temperature: float = 0.1
    """Softmax temperature applied to the scaled cosine similarities."""
    logit_scale: float = 100.0
    """CLIP's logit scale multiplying the cosine similarity."""

    def __post_init__(self) -> None:
        if len(self.bins_m) != len(self.distance_words) or len(self.bins_m) < 2:
            raise ValueError(
                f"need one bin per distance word (at least 2), got {len(self.bins_m)} bins and "
                f"{len(self.distance_words)} words"
            )
        if not all(b > 0 for b in self.bins_m):
            raise ValueError(f"bins must be positive depths in metres, got {self.bins_m}")
        if not self.temperature > 0:
            raise ValueError(f"temperature must be positive, got {self.temperature}")
        for t in self.templates:
            if "{distance}" not in t:
                raise ValueError(f"template {t!r} has no {{distance}} field")

    def prompts(self) -> list[list[str]]:
        """Prompts per class: ``prompts()[k]`` lists every object x template text for class k."""
        return [
            [t.format(object=o, distance=word) for o in self.objects for t in self.templates]
            for word in self.distance_words
        ]


def _as_numpy(x) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().float().cpu().numpy()
    return np.asarray(x, dtype=np.float32)


def _normalise(x: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.maximum(n, 1e-12)


def class_probabilities(patch_features: np.ndarray, text_features: np.ndarray, config: DepthCLIPConfig) -> np.ndarray:
    """Softmax over distance classes per patch.

    Args:
        patch_features: (h, w, D) patch embeddings (normalised here).
        text_features: (K, D) class embeddings (normalised here).
    Returns:
        (h, w, K) float64 probabilities.
    """
    f = _normalise(patch_features.astype(np.float64))
    t = _normalise(text_features.astype(np.float64))
    logits = config.logit_scale * (f @ t.T) / config.temperature
    logits -= logits.max(axis=-1, keepdims=True)
    e = np.exp(logits)
    return e / e.sum(axis=-1, keepdims=True)


class DepthCLIPEstimator(DepthEstimator):
    """Zero-shot DepthCLIP on any :class:`PatchTextEncoder`.

    Args:
        encoder: provides ``encode_image_patches`` and ``encode_text``.
        config: bins, prompts and temperature (paper defaults).
        encoder_name: for the estimator's name.
    """

    output_kind = "metric"

    def __init__(self, encoder: PatchTextEncoder, config: DepthCLIPConfig | None = None, encoder_name: str = "") -> None:
        if not (hasattr(encoder, "encode_image_patches") and hasattr(encoder, "encode_text")):
            raise TypeError(
                f"DepthCLIP needs an encoder with encode_image_patches and encode_text, got {type(encoder).__name__}"
            )
        self.encoder = encoder
        self.config = config or DepthCLIPConfig()
        self.name = f"depthclip:{encoder_name or getattr(encoder, 'name', type(encoder).__name__)}"
        self._text_features: np.ndarray | None = None

    def text_features(self) -> np.ndarray:
        """(K, D) class embeddings: per class, the normalised mean of its normalised prompt embeddings."""
        if self._text_features is None:
            per_class = self.config.prompts()
            flat = [p for ps in per_class for p in ps]
            emb = _normalise(_as_numpy(self.encoder.encode_text(flat)))
            if emb.ndim != 2 or emb.shape[0] != len(flat):
                raise RuntimeError(f"encode_text returned shape {emb.shape} for {len(flat)} prompts")
            emb = emb.reshape(len(per_class), len(per_class[0]), -1).mean(axis=1)
            self._text_features = _normalise(emb)
        return self._text_features

    def patch_depth(self, rgb: np.ndarray) -> np.ndarray:
        """(h, w) float32 depth in metres on the encoder's patch grid."""
        feats = _as_numpy(self.encoder.encode_image_patches([rgb]))
        if feats.ndim != 4 or feats.shape[0] != 1:
            raise RuntimeError(f"encode_image_patches returned shape {feats.shape}, expected (1, h, w, D)")
        text = self.text_features()
        if feats.shape[-1] != text.shape[-1]:
            raise RuntimeError(f"patch dim {feats.shape[-1]} != text dim {text.shape[-1]}")
        p = class_probabilities(feats[0], text, self.config)
        return (p @ np.asarray(self.config.bins_m, dtype=np.float64)).astype(np.float32)

    def _predict(self, rgb: np.ndarray, camera: Camera) -> np.ndarray:
        return resize_map(self.patch_depth(rgb), camera.shape, mode="bilinear")


def load_depthclip(location: str, device: str = "cpu", encoder: PatchTextEncoder | None = None, **options) -> DepthCLIPEstimator:
    """Registry factory for ``"depthclip:<encoder-spec>"`` (e.g. ``"depthclip:clip:/models/clip-vit-b16"``).

    Args:
        location: encoder spec, loaded with ``mapping.encoders.load_encoder`` unless
            ``encoder`` is given.
        device: torch device for the encoder.
        encoder: an already built :class:`PatchTextEncoder` (then ``location`` only names it).
        **options: :class:`DepthCLIPConfig` fields (``bins_m``, ``temperature``, ...).
    """
    if encoder is None:
        if not location:
            raise ValueError("depthclip needs an encoder spec, e.g. 'depthclip:clip:/models/clip-vit-base-patch16'")
        try:
            from mapping.encoders import load_encoder
        except ImportError as e:
            raise ImportError(f"depthclip:{location}: no encoder loader available (mapping.encoders: {e})") from e
        encoder = load_encoder(location, device=device)
    cfg_fields = {k: tuple(v) if isinstance(v, list) else v for k, v in options.items()}
    return DepthCLIPEstimator(encoder, DepthCLIPConfig(**cfg_fields), encoder_name=location)
