"""A tiny deterministic image-text "encoder" over named colours, for scene-graph tests.

Not a model: an image embeds as the soft assignment of the median colour of its central
third (pixels of the scene graph's masked-out background grey ignored, unless all are)
to a fixed list of named colours; a text embeds as the first colour name it
contains (one-hot), or uniformly when it names none. It lets the tests check, without a
network, that each object is embedded from crops centred on it (a red mug's crops are
red in the middle) and that queries rank objects by their embeddings.
"""

from __future__ import annotations

import numpy as np
import torch

from mapping.encoders.base import Encoder
from scenegraph.embedding import EmbeddingConfig

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (200, 30, 35),
    "blue": (35, 70, 200),
    "yellow": (235, 200, 40),
    "white": (240, 240, 240),
    "green": (40, 160, 70),
    "black": (40, 40, 45),
    "grey": (120, 120, 125),
    "purple": (100, 40, 130),
    "brown": (190, 135, 75),
    "wood": (120, 80, 45),
    "beige": (205, 180, 140),
}
"""Colour names (the procedural room's object colours, see ``sensors.scenes``)."""


BACKGROUND = EmbeddingConfig().background_value
"""Grey level of the pixels object crops mask out (``scenegraph.embedding``)."""


class ColourEncoder(Encoder):
    """See the module docstring; ``name`` is "test-colours", ``dim`` the number of colours."""

    kind = "test-colours"

    def __init__(self, sigma: float = 40.0) -> None:
        super().__init__("test-colours", len(COLOURS), device="cpu", batch_size=64)
        self.names = list(COLOURS)
        self.rgb = np.array([COLOURS[n] for n in self.names], dtype=np.float64)
        self.sigma = sigma

    def _encode_image_batch(self, images: list[np.ndarray]) -> torch.Tensor:
        out = []
        for im in images:
            h, w = im.shape[:2]
            centre = im[h // 3 : max(h // 3 + 1, 2 * h // 3), w // 3 : max(w // 3 + 1, 2 * w // 3)].reshape(-1, 3)
            fg = centre[np.any(centre != BACKGROUND, axis=1)]
            centre = fg if len(fg) else centre
            c = np.median(centre.astype(np.float64), axis=0)
            d2 = ((self.rgb - c) ** 2).sum(axis=1)
            p = np.exp(-(d2 - d2.min()) / (2 * self.sigma**2))
            out.append(p / p.sum())
        return torch.tensor(np.stack(out), dtype=torch.float32)

    def _encode_text_batch(self, texts: list[str]) -> torch.Tensor:
        out = []
        for t in texts:
            words = t.lower().replace(".", " ").split()
            v = np.full(len(self.names), 1.0)
            for wd in words:
                if wd in COLOURS:
                    v = np.zeros(len(self.names))
                    v[self.names.index(wd)] = 1.0
                    break
            out.append(v)
        return torch.tensor(np.stack(out), dtype=torch.float32)
