"""--features oracle: class-name text embeddings painted on the true instance masks of synthetic frames."""

from __future__ import annotations

import numpy as np
import pytest

from mapping.features import make_extractor
from sensors import Camera
from sensors.scenes import make_room, orbit_trajectory
from sensors.synthetic import SyntheticSource


class WordEncoder:
    """A deterministic text encoder: each distinct text gets its own random unit vector."""

    name, kind, dim = "word", "word", 16

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def encode_text(self, texts):
        self.calls.append(list(texts))
        out = np.stack([np.random.default_rng(abs(hash(t)) % 2**32).normal(size=self.dim) for t in texts])
        return (out / np.linalg.norm(out, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def frame():
    scene = make_room(seed=3)
    src = SyntheticSource(scene, orbit_trajectory(scene, 8), camera=Camera(64, 64, 63.5, 47.5, 128, 96))
    return src.load(2)


def test_every_pixel_gets_its_class_name_embedding(frame):
    enc = WordEncoder()
    ex = make_extractor("oracle", enc, stride=4)
    dense = ex.extract_frame(frame)
    assert dense.shape == (24, 32) and dense.frame_shape == (96, 128)
    truth = frame.truth
    # the frame pixel nearest each feature pixel's centre (j + 0.5) * 4 - 0.5 (numpy rounds halves to even)
    rows, cols = np.rint(np.arange(24) * 4 + 1.5).astype(int), np.rint(np.arange(32) * 4 + 1.5).astype(int)
    ids = truth.instance_ids[rows][:, cols]
    for i in np.unique(ids[ids >= 0]):
        want = enc.encode_text([truth.instance_labels[i]])[0]
        np.testing.assert_allclose(dense.features[ids == i], np.broadcast_to(want, (int((ids == i).sum()), enc.dim)), atol=1e-6)
    assert np.all(dense.confidence[ids >= 0] == 1) and np.all(dense.confidence[ids < 0] == 0)
    n_calls = len(enc.calls)
    ex.extract_frame(frame)
    assert len(enc.calls) == n_calls  # class names embedded once


def test_template_and_frames_without_truth(frame):
    enc = WordEncoder()
    make_extractor("oracle", enc, template="a photo of a {}.").extract_frame(frame)
    assert all(t.startswith("a photo of a ") for t in enc.calls[0])
    ex = make_extractor("oracle", enc)
    with pytest.raises(ValueError, match="true instance ids"):
        ex(frame.rgb, frame.depth)
    from dataclasses import replace

    bare = replace(frame, truth=None)
    with pytest.raises(ValueError, match="carries no true instance ids"):
        ex.extract_frame(bare)
    with pytest.raises(ValueError, match="template"):
        make_extractor("oracle", enc, template="no slot")
