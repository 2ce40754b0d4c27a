"""``--features oracle``: perfect 2D semantics, to measure the rest of the pipeline's ceiling.

Synthetic sources only: each frame must carry its true per-pixel instance ids and the
class label of every instance (``Frame.truth``, a
``sensors.frame.SyntheticFrameTruth`` with ``instance_ids`` and ``instance_labels``;
``synthetic:room?...`` sources and :class:`sensors.synthetic.SyntheticSource` over a
``SyntheticScene`` give both). Every feature pixel takes the map encoder's text embedding of
its instance's class name (``template.format(label)``; the default ``"{}"`` embeds the bare
name, as text queries do), at confidence 1; pixels that hit nothing get confidence 0. Fusion,
regions, proposals, relations and query ranking then run unchanged, so what they lose with
these features is the pipeline's own loss, apart from the encoder's.

Feature geometry is that of every strategy (``mapping.features``): an (h, w) grid at
``stride`` frame pixels per feature pixel, each feature pixel labelled by the instance at its
centre (nearest frame pixel).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from mapping.encoders.base import Encoder
from mapping.features import DenseExtractor, DenseFeatures, output_shape


class OracleFeatures(DenseExtractor):
    """Class-name text embeddings painted on the true instance masks of synthetic frames.

    Args:
        encoder: the map's encoder (its ``encode_text`` embeds the class names).
        stride: frame pixels per feature pixel.
        template: prompt each class name is embedded in (default ``"{}"``: the bare name).
    """

    name = "oracle"

    def __init__(self, encoder: Encoder, stride: int = 8, template: str = "{}") -> None:
        super().__init__(encoder, stride)
        if "{}" not in template:
            raise ValueError(f"oracle template must contain '{{}}', got {template!r}")
        self.template = template
        self._embeddings: dict[str, np.ndarray] = {}

    def __call__(self, rgb: np.ndarray, depth_m: np.ndarray | None = None) -> DenseFeatures:
        raise ValueError(
            "feature strategy 'oracle' needs frames with true instance ids and class labels "
            "(a synthetic source, e.g. synthetic:room?seed=3); an RGB image alone has none"
        )

    def extract_frame(self, frame) -> DenseFeatures:
        """Features of a synthetic ``Frame`` from its ``truth`` (see the module docstring)."""
        truth = frame.truth
        ids = getattr(truth, "instance_ids", None)
        labels = getattr(truth, "instance_labels", None)
        if ids is None or labels is None:
            raise ValueError(
                f"feature strategy 'oracle': frame {frame.name or frame.index} carries no true instance ids and "
                "class labels (only synthetic sources over a generated scene have them, e.g. synthetic:room?seed=3)"
            )
        H, W = ids.shape
        h, w = output_shape((H, W), self.stride)
        cols = np.clip(np.rint((np.arange(w) + 0.5) * W / w - 0.5).astype(int), 0, W - 1)
        rows = np.clip(np.rint((np.arange(h) + 0.5) * H / h - 0.5).astype(int), 0, H - 1)
        grid = ids[rows][:, cols]
        present = np.unique(grid[grid >= 0])
        if len(present) and present.max() >= len(labels):
            raise ValueError(f"frame {frame.index}: instance id {present.max()} has no label ({len(labels)} labels)")
        names = sorted({labels[i] for i in present})
        self._embed(names)
        feats = np.zeros((h, w, self.encoder.dim), np.float32)
        for i in present:
            feats[grid == i] = self._embeddings[labels[i]]
        self.last_crop_count = 0
        return DenseFeatures(feats, (grid >= 0).astype(np.float32), (H, W))

    def _embed(self, names: list[str]) -> None:
        new = [n for n in names if n not in self._embeddings]
        if new:
            emb = self.encoder.encode_text([self.template.format(n) for n in new])
            self._embeddings.update(zip(new, np.asarray(emb, np.float32)))

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "template": self.template}
