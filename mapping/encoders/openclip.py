"""open_clip models: ``openclip:<arch>/<pretrained-tag-or-checkpoint-path>``.

Examples: ``openclip:ViT-B-32/laion2b_s34b_b79k`` (a tag, resolved by open_clip
through its Hugging Face cache), ``openclip:ViT-B-16//models/vitb16.bin`` (a
local checkpoint), ``openclip:hf-hub:laion/CLIP-ViT-B-32-laion2B-s34B-b79K``
(an open_clip hub model, config and weights together).

open_clip is an optional extra (``pip install semmap[openclip]``). It imports
torchvision, which must be built for the installed torch, so it is imported
only when this encoder is built.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from mapping.encoders.base import Encoder


def import_open_clip() -> Any:
    """The ``open_clip`` module, or ImportError saying how to install it."""
    try:
        import open_clip
    except Exception as e:  # noqa: BLE001 - a broken torchvision raises more than ImportError
        raise ImportError(
            f"the 'openclip' encoder needs open_clip, which failed to import ({type(e).__name__}: {e}). "
            "Install it with: pip install semmap[openclip] (open_clip_torch); torchvision must be the build "
            f"that matches the installed torch {torch.__version__}"
        ) from e
    return open_clip


def parse_openclip_argument(argument: str) -> tuple[str, str | None]:
    """``"<arch>/<pretrained>"`` -> (arch, pretrained); ``"hf-hub:org/name"`` -> (that, None).

    Raises:
        ValueError: no arch or no pretrained part.
        FileNotFoundError: ``pretrained`` is written as a path that does not exist.
    """
    if argument.startswith("hf-hub:"):
        if argument.count("/") < 1:
            raise ValueError(f"openclip: expected 'hf-hub:<org>/<name>', got {argument!r}")
        return argument, None
    arch, sep, pretrained = argument.partition("/")
    if not arch or not sep or not pretrained:
        raise ValueError(
            "openclip: expected '<arch>/<pretrained-tag-or-checkpoint-path>' "
            f"(e.g. 'ViT-B-32/laion2b_s34b_b79k'), got {argument!r}"
        )
    path = Path(pretrained).expanduser()
    if path.exists():
        if not path.is_file():
            raise FileNotFoundError(f"openclip: checkpoint {path} is not a file")
        return arch, str(path)
    if (
        pretrained.startswith(("/", "./", "../", "~"))
        or "/" in pretrained
        or pretrained.endswith((".pt", ".bin", ".pth", ".safetensors"))
    ):
        raise FileNotFoundError(f"openclip: checkpoint {path} does not exist")
    return arch, pretrained


class OpenClipEncoder(Encoder):
    """An open_clip model as an ``Encoder``.

    Args:
        argument: "<arch>/<pretrained>" or "hf-hub:<org>/<name>".
        device: torch device.
        batch_size: images or texts per forward pass.
    """

    kind = "openclip"

    def __init__(self, argument: str, device: str = "cpu", batch_size: int = 32) -> None:
        arch, pretrained = parse_openclip_argument(argument)
        open_clip = import_open_clip()
        if not arch.startswith("hf-hub:") and arch not in open_clip.list_models():
            raise ValueError(
                f"openclip: unknown architecture {arch!r}; "
                f"open_clip knows e.g. {', '.join(open_clip.list_models()[:12])}, ..."
            )
        super().__init__(f"openclip:{argument}", 1, device=device, batch_size=batch_size)
        try:
            model, _, preprocess = open_clip.create_model_and_transforms(
                arch, pretrained=pretrained, device=self.device
            )
        except Exception as e:  # noqa: BLE001 - open_clip raises RuntimeError/OSError/HTTP errors
            raise RuntimeError(
                f"openclip: could not load {arch!r} with pretrained {pretrained!r}: {type(e).__name__}: {e}. "
                "A tag is fetched through the Hugging Face cache (offline: it must already be cached); "
                "a checkpoint path must exist and match the architecture"
            ) from e
        self.model = model.eval()
        self.preprocess = preprocess
        self.tokenizer = open_clip.get_tokenizer(arch)
        with torch.inference_mode():
            self.dim = int(self._encode_text_batch(["a photo"]).shape[-1])

    @classmethod
    def from_spec(cls, argument: str, device: str = "cpu", **options: Any) -> OpenClipEncoder:
        return cls(argument, device=device, **options)

    def _encode_image_batch(self, images: list[np.ndarray]) -> torch.Tensor:
        from PIL import Image

        pixels = torch.stack([self.preprocess(Image.fromarray(im)) for im in images]).to(self.device)
        return self.model.encode_image(pixels)

    def _encode_text_batch(self, texts: list[str]) -> torch.Tensor:
        return self.model.encode_text(self.tokenizer(texts).to(self.device))
