"""Image-text encoders, chosen by a spec string.

=====================================  ==============================================
spec                                   backend
=====================================  ==============================================
``lite``                               offline: EfficientNet-Lite0 ImageNet classes
                                       projected into all-MiniLM-L6-v2 text space
``clip:<hf-name-or-local-path>``       transformers CLIP or SigLIP
``openclip:<arch>/<pretrained>``       open_clip (optional extra ``semmap[openclip]``);
                                       ``<pretrained>`` is a tag or a checkpoint path
=====================================  ==============================================

Every encoder has ``name`` (the spec), ``dim``, ``encode_images`` and
``encode_text`` returning float32 L2-normalised rows (see ``base.Encoder``).
Plugins register more prefixes through the ``semmap.encoders`` entry-point
group; the target must be an ``Encoder`` subclass (its ``from_spec`` builds it).
Nothing heavy is imported until an encoder is loaded.
"""

from __future__ import annotations

from typing import Any

from mapping.encoders.base import Encoder
from sensors.registry import Registry

ENCODERS = Registry("encoder", entry_point_group="semmap.encoders")
ENCODERS.register(
    "lite", "mapping.encoders.lite:LiteEncoder", "offline EfficientNet-Lite0 + all-MiniLM-L6-v2 (dim 384)"
)
ENCODERS.register("clip", "mapping.encoders.clip:HFClipEncoder", "transformers CLIP/SigLIP: clip:<hf-name-or-path>")
ENCODERS.register(
    "openclip", "mapping.encoders.openclip:OpenClipEncoder", "open_clip: openclip:<arch>/<pretrained-or-path>"
)


def parse_spec(spec: str) -> tuple[str, str]:
    """Split ``"kind:argument"`` into (kind, argument); ``"lite"`` gives ("lite", "").

    Raises:
        ValueError: an empty spec, or an unknown kind (the message lists the known ones).
    """
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"encoder spec must be a non-empty string like 'lite' or 'clip:<path>', got {spec!r}")
    kind, _, argument = spec.strip().partition(":")
    if kind not in ENCODERS:
        raise ValueError(
            f"unknown encoder {kind!r} in spec {spec!r}; known: {', '.join(ENCODERS.names())}\n{ENCODERS.describe()}"
        )
    return kind, argument.strip()


def load_encoder(spec: str, device: str = "cpu", **options: Any) -> Encoder:
    """Build the encoder named by ``spec`` on ``device``.

    Args:
        spec: "lite", "clip:<hf-name-or-path>" or "openclip:<arch>/<pretrained>" (or a plugin's).
        device: torch device string ("cpu", "cuda", "cuda:1", Open3D-style "CUDA:0").
        options: backend keywords (``batch_size``; ``temperature``/``top_k`` for lite, ...).

    Raises:
        ValueError: unknown kind or bad argument; FileNotFoundError / OSError: model not found.
    """
    kind, argument = parse_spec(spec)
    cls = ENCODERS.get(kind)
    if not (isinstance(cls, type) and issubclass(cls, Encoder)):
        raise TypeError(f"encoder {kind!r} is registered as {cls!r}, which is not an Encoder subclass")
    return cls.from_spec(argument, device=device, **options)


__all__ = ["ENCODERS", "Encoder", "load_encoder", "parse_spec"]
