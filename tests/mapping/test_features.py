"""Dense per-frame features: crop tiling, crop blending and patch upsampling against known answers.

The encoders here are real ``Encoder`` subclasses with a transparent image model (an
image's embedding is its normalised mean colour; patch tokens are chosen by the test),
so the expected dense output can be written down exactly.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mapping.encoders.base import Encoder
from mapping.features import (
    FEATURE_STRATEGIES,
    CropFeatures,
    DenseFeatures,
    PatchFeatures,
    SegmentFeatures,
    crop_grid,
    encoder_input_size,
    make_extractor,
    output_shape,
)
from sensors.camera import Camera


class MeanColourEncoder(Encoder):
    """Image embedding = L2-normalised mean RGB (dim 3); text: "red"/"green"/"blue" axes."""

    kind = "meancolour"

    def __init__(self) -> None:
        super().__init__("meancolour", 3)
        self.calls: list[int] = []
        self.sizes: set[tuple[int, int]] = set()

    def _encode_image_batch(self, images):
        self.calls.append(len(images))
        self.sizes |= {im.shape[:2] for im in images}
        return torch.tensor(np.stack([im.reshape(-1, 3).mean(0) + 1e-3 for im in images]), dtype=torch.float32)

    def _encode_text_batch(self, texts):
        axes = {"red": [1.0, 0, 0], "green": [0, 1.0, 0], "blue": [0, 0, 1.0]}
        return torch.tensor([axes[t] for t in texts])


class GridPatchEncoder(MeanColourEncoder):
    """Patch tokens: a fixed (2, 2) grid of orthogonal unit vectors (dim 4)."""

    def __init__(self) -> None:
        Encoder.__init__(self, "gridpatch", 4)
        self.tokens = np.eye(4, dtype=np.float32).reshape(2, 2, 4)

    def encode_image_patches(self, images):
        return np.stack([self.tokens] * len(images))


def half_red_half_blue(h: int = 96, w: int = 128) -> np.ndarray:
    img = np.zeros((h, w, 3), np.uint8)
    img[:, : w // 2, 0] = 255
    img[:, w // 2 :, 2] = 255
    return img


# -- geometry --------------------------------------------------------------------------------
def test_output_shape_and_pixel_centres_match_the_resized_camera():
    assert output_shape((480, 640), 8) == (60, 80)
    assert output_shape((10, 10), 100) == (1, 1)
    dense = DenseFeatures(np.zeros((60, 80, 2), np.float32), np.zeros((60, 80), np.float32), (480, 640))
    cam = Camera(500.0, 500.0, 319.5, 239.5, 640, 480)
    fcam = dense.camera(cam)
    centres = dense.pixel_centres()
    # a ray through feature pixel (i, j) of the feature camera passes through its frame-pixel centre
    i, j = 17, 63
    x = (j - fcam.cx) / fcam.fx
    y = (i - fcam.cy) / fcam.fy
    np.testing.assert_allclose([x * cam.fx + cam.cx, y * cam.fy + cam.cy], centres[i, j], atol=1e-9)
    np.testing.assert_allclose(centres[0, 0], [3.5, 3.5])
    with pytest.raises(ValueError, match="does not match"):
        dense.camera(Camera(500.0, 500.0, 100, 100, 200, 200))


def test_dense_features_validates_shapes():
    with pytest.raises(ValueError, match="confidence shape"):
        DenseFeatures(np.zeros((4, 4, 3)), np.zeros((4, 5)), (8, 8))
    with pytest.raises(ValueError, match="does not fit"):
        DenseFeatures(np.zeros((9, 4, 3)), np.zeros((9, 4)), (8, 8))


@pytest.mark.parametrize("shape,size,overlap", [((480, 640), 144, 0.25), ((480, 640), 240, 0.0), ((50, 70), 30, 0.5)])
def test_crop_grid_covers_the_frame_with_the_requested_overlap(shape, size, overlap):
    crops = crop_grid(shape, size, overlap)
    cover = np.zeros(shape, int)
    for c in crops:
        assert c.size == size and 0 <= c.x0 <= shape[1] - size and 0 <= c.y0 <= shape[0] - size
        cover[c.y0 : c.y0 + size, c.x0 : c.x0 + size] += 1
    assert cover.min() >= 1
    xs = sorted({c.x0 for c in crops})
    ys = sorted({c.y0 for c in crops})
    for starts in (xs, ys):
        if len(starts) > 1:
            assert max(np.diff(starts)) <= size * (1 - overlap) + 1  # neighbours overlap enough
    # the fewest crops that achieve it: one fewer per axis would leave a step too long
    assert len(xs) == int(np.ceil((shape[1] - size) / (size * (1 - overlap)) - 1e-9)) + 1


def test_crop_grid_rejects_bad_overlap():
    with pytest.raises(ValueError, match="overlap"):
        crop_grid((10, 10), 5, 1.0)


# -- crops -------------------------------------------------------------------------------------
def test_crops_give_each_side_its_colour_and_low_confidence_at_the_boundary():
    enc = MeanColourEncoder()
    ext = CropFeatures(enc, stride=8, crop_fractions=(0.25, 0.5), overlap=0.5, full_frame_weight=0.0, resize_to=None)
    dense = ext(half_red_half_blue())
    assert dense.shape == (12, 16) and dense.dim == 3
    np.testing.assert_allclose(np.linalg.norm(dense.features, axis=-1), 1.0, atol=1e-5)
    red, blue = dense.features[:, 0], dense.features[:, -1]
    assert (red[:, 0] > 0.99).all() and (blue[:, 2] > 0.99).all()
    # the colour changes monotonically across the boundary and confidence dips there
    assert np.all(np.diff(dense.features[6, :, 0]) <= 1e-6)
    conf = dense.confidence[6]
    assert conf[0] > 0.99 and conf[-1] > 0.99 and conf[7:9].max() < 0.95
    assert sum(enc.calls) == len(ext.crops((96, 128)))  # each crop encoded once, no full frame


def test_crop_weighting_matches_a_direct_reference():
    """Pixel feature = normalised sum over covering crops of scale weight * Gaussian window * embedding."""
    enc = MeanColourEncoder()
    rng = np.random.default_rng(1)
    img = rng.integers(0, 256, (40, 56, 3), dtype=np.uint8)
    ext = CropFeatures(enc, stride=4, crop_fractions=(0.5, 1.0), scale_weights=(2.0, 0.5), overlap=0.3,
                       full_frame_weight=0.25, window_sigma=0.4, resize_to=None)
    dense = ext(img)
    crops = ext.crops(img.shape[:2])
    emb = enc.encode_images([img[c.y0 : c.y0 + c.size, c.x0 : c.x0 + c.size] for c in crops] + [img])
    for i, j in [(0, 0), (4, 7), (9, 13), (5, 0)]:
        u, v = (j + 0.5) * 4 - 0.5, (i + 0.5) * 4 - 0.5
        acc = 0.25 * emb[-1]
        for c, e in zip(crops, emb):
            if c.x0 - 0.5 <= u < c.x0 + c.size - 0.5 and c.y0 - 0.5 <= v < c.y0 + c.size - 0.5:
                m, s = (c.size - 1) / 2, 0.4 * c.size
                w = (2.0, 0.5)[c.scale] * np.exp(-0.5 * ((u - c.x0 - m) / s) ** 2 - 0.5 * ((v - c.y0 - m) / s) ** 2)
                acc = acc + w * e
        np.testing.assert_allclose(dense.features[i, j], acc / np.linalg.norm(acc), atol=1e-5)


def test_depth_focus_gives_a_crop_to_its_near_surfaces():
    """Red wall at 1 m on the left, blue wall at 3 m on the right; the middle crop sees both
    (purple). With depth focus it paints only its near (red) half, so the far pixels it
    covers keep the pure blue of the right crop; without depth they are tinted purple."""
    enc = MeanColourEncoder()
    img = half_red_half_blue(32, 64)
    depth = np.full((32, 64), 1.0, np.float32)
    depth[:, 32:] = 3.0
    ext = CropFeatures(enc, stride=4, crop_fractions=(1.0,), overlap=0.5, full_frame_weight=0.0, resize_to=None)
    assert [c.x0 for c in ext.crops((32, 64))] == [0, 16, 32]
    focused = ext(img, depth)
    plain = ext(img)
    col = 9  # feature column 9 = frame column 37.5: blue, covered by the middle and right crops
    assert focused.features[4, col, 2] > 0.999 and plain.features[4, col, 2] < 0.99
    np.testing.assert_allclose(focused.features[:, :4], plain.features[:, :4], atol=1e-6)  # near side unchanged
    assert CropFeatures(enc, depth_focus=None)(img, depth).features.shape == (4, 8, 3)
    # the weights: 1 up to the reference depth, then a Gaussian in relative excess depth
    w = ext._depth_focus_weights(np.array([[1.0, 1.0, 1.0, 1.15, 0.0]]))
    np.testing.assert_allclose(w, [[1, 1, 1, np.exp(-0.5), 1]], atol=1e-9)
    with pytest.raises(ValueError, match="does not match"):
        ext(img, depth[:, :32])


def test_crops_are_resized_to_the_encoders_input_size():
    enc = MeanColourEncoder()
    enc.image_size = 32  # what HFClipEncoder exposes
    assert encoder_input_size(enc) == 32
    CropFeatures(enc, stride=8, crop_fractions=(0.5,))(half_red_half_blue())
    assert enc.sizes == {(32, 32)}


def test_crop_options_are_checked():
    enc = MeanColourEncoder()
    with pytest.raises(ValueError, match="crop_fractions"):
        CropFeatures(enc, crop_fractions=(0.0,))
    with pytest.raises(ValueError, match="one non-negative scale weight"):
        CropFeatures(enc, crop_fractions=(0.5, 0.8), scale_weights=(1.0,))
    with pytest.raises(ValueError, match="uint8"):
        CropFeatures(enc)(np.zeros((10, 10, 3), np.float32))


# -- patches -----------------------------------------------------------------------------------
def test_patches_upsample_bilinearly_like_torch():
    enc = GridPatchEncoder()
    dense = PatchFeatures(enc, stride=8)(np.zeros((64, 64, 3), np.uint8))
    assert dense.shape == (8, 8)
    tok = torch.tensor(enc.tokens).permute(2, 0, 1)[None]
    ref = torch.nn.functional.interpolate(tok, size=(8, 8), mode="bilinear", align_corners=False)[0].permute(1, 2, 0)
    ref = ref.numpy()
    ref_len = np.linalg.norm(ref, axis=-1)
    np.testing.assert_allclose(dense.confidence, ref_len, atol=1e-6)
    np.testing.assert_allclose(dense.features, ref / ref_len[..., None], atol=1e-6)
    # corners keep their patch exactly; the centre mixes all four (length 1/2)
    np.testing.assert_allclose(dense.features[0, 0], enc.tokens[0, 0], atol=1e-6)
    assert dense.confidence[0, 0] == pytest.approx(1.0) and dense.confidence[3:5, 3:5].max() < 0.6


def test_patches_need_an_encoder_with_patch_tokens():
    with pytest.raises(ValueError, match="use --features crops"):
        PatchFeatures(MeanColourEncoder())


def test_registry():
    assert FEATURE_STRATEGIES.names() == ["crops", "patches", "segments", "oracle"]
    assert isinstance(make_extractor("crops", MeanColourEncoder(), stride=4), CropFeatures)
    assert isinstance(make_extractor("segments", MeanColourEncoder(), stride=4), SegmentFeatures)
    with pytest.raises(ValueError, match="unknown feature strategy 'sam'; known: crops, patches, segments, oracle"):
        make_extractor("sam", MeanColourEncoder())


def two_squares(h: int = 96, w: int = 128) -> np.ndarray:
    """Grey background, a red square (rows/cols 16:48) and a blue one (rows 48:80, cols 80:112)."""
    img = np.full((h, w, 3), 120, np.uint8)
    img[16:48, 16:48] = (230, 10, 10)
    img[48:80, 80:112] = (10, 10, 230)
    return img


def test_segments_give_each_object_its_crop_fused_with_the_frame():
    """Known answer: with no context margin each square's crop is exactly the square, so its
    pixels carry ConceptFusion's mix of that colour and the frame's mean colour; the
    background (too large for a crop of its own) carries the frame embedding at low confidence."""
    enc = MeanColourEncoder()
    ex = SegmentFeatures(
        enc, stride=8, levels=(1.0,), work_width=128, sigma=0, margin=0.0, min_crop_frac=0.1, resize_to=None
    )
    img = two_squares()
    dense = ex(img)
    assert dense.shape == (12, 16) and ex.last_crop_count == 3 and enc.calls == [3]
    assert enc.sizes == {(32, 32), (96, 128)}  # the two squares and the whole frame
    red, blue, glob = enc.encode_images([img[16:48, 16:48], img[48:80, 80:112], img])
    cos = np.array([red @ glob, blue @ glob])
    w = np.exp(cos - cos.max()) / np.exp(cos - cos.max()).sum()  # softmax over the frame's segments, T = 1
    want = [w[i] * glob + (1 - w[i]) * e for i, e in enumerate((red, blue))]
    want = [v / np.linalg.norm(v) for v in want]
    np.testing.assert_allclose(dense.features[3, 3], want[0], atol=1e-5)  # feature pixel centre (27.5, 27.5): red
    np.testing.assert_allclose(dense.features[7, 11], want[1], atol=1e-5)  # (91.5, 59.5): blue
    np.testing.assert_allclose(dense.features[0, 0], glob, atol=1e-5)
    assert dense.confidence[3, 3] == pytest.approx(1.0) and dense.confidence[0, 0] == pytest.approx(0.2)
    np.testing.assert_allclose(np.linalg.norm(dense.features, axis=-1), 1.0, atol=1e-5)


def test_segment_levels_agree_or_lower_the_confidence():
    """Two levels: a pixel whose segment has a crop at only one level gets half the confidence."""
    enc = MeanColourEncoder()
    ex = SegmentFeatures(enc, stride=8, levels=(1.0, 1.0), work_width=128, sigma=0, margin=0.0, min_crop_frac=0.1)
    dense = ex(two_squares())
    assert ex.last_crop_count == 3  # identical crops of both levels are embedded once
    assert dense.confidence[3, 3] == pytest.approx(1.0)
    ex = SegmentFeatures(
        enc, stride=8, levels=(1.0, 1.0), work_width=128, sigma=0, margin=0.0, min_crop_frac=0.1, max_segments=1
    )
    dense = ex(two_squares())
    assert sorted(np.unique(dense.confidence.round(6))) == [0.2, 1.0]  # one square kept, at both levels


def test_segments_use_depth_edges():
    """One colour everywhere; a nearer square is a segment only because of its depth."""
    img = np.full((96, 128, 3), 120, np.uint8)
    depth = np.full((96, 128), 3.0, np.float32)
    depth[16:48, 16:48] = 1.0
    enc = MeanColourEncoder()
    ex = SegmentFeatures(enc, stride=8, levels=(1.0,), work_width=128, sigma=0, margin=0.0, min_crop_frac=0.1)
    ex(img)
    assert ex.last_crop_count == 1  # the whole frame only
    ex(img, depth)
    assert ex.last_crop_count == 2 and (32, 32) in enc.sizes
    with pytest.raises(ValueError, match="depth"):
        ex(img, depth[:10])


def test_segment_options_are_checked():
    enc = MeanColourEncoder()
    with pytest.raises(ValueError, match="levels"):
        SegmentFeatures(enc, levels=())
    with pytest.raises(ValueError, match="min_area_frac"):
        SegmentFeatures(enc, min_area_frac=0.6, max_area_frac=0.5)
    with pytest.raises(ValueError, match="uncovered_confidence"):
        SegmentFeatures(enc, uncovered_confidence=2.0)
    assert SegmentFeatures(enc).describe()["strategy"] == "segments"
