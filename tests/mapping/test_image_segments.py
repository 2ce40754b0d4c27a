"""Graph-based RGB-D image segmentation against hand-made images with known regions."""

from __future__ import annotations

import numpy as np
import pytest

from mapping.image_segments import felzenszwalb, segment_frame, square_crop_box


def squares_image(h: int = 60, w: int = 80) -> np.ndarray:
    """Grey background with a red square at rows/cols 10:30 and a blue one at rows 30:50, cols 50:70."""
    img = np.full((h, w, 3), 128, np.uint8)
    img[10:30, 10:30] = (220, 20, 20)
    img[30:50, 50:70] = (20, 20, 220)
    return img


def test_uniform_colour_regions_are_the_segments():
    labels = felzenszwalb(squares_image(), k=1.0, min_size=10, sigma=0)
    assert labels.shape == (60, 80) and len(np.unique(labels)) == 3
    red, blue, grey = labels[20, 20], labels[40, 60], labels[0, 0]
    assert len({red, blue, grey}) == 3
    assert (labels[12:28, 12:28] == red).all() and (labels[32:48, 52:68] == blue).all()
    assert (labels[:8] == grey).all() and (labels[:, 72:] == grey).all()


def test_depth_discontinuities_split_regions_of_one_colour():
    img = np.full((40, 60, 3), 100, np.uint8)
    depth = np.full((40, 60), 2.0, np.float32)
    depth[:, 30:] = 1.2  # a box in front of a wall, same colour
    assert len(np.unique(felzenszwalb(img, k=1.0, min_size=10))) == 1
    labels = felzenszwalb(img, k=1.0, min_size=10, depth_m=depth, depth_weight=3.0)
    assert len(np.unique(labels)) == 2
    assert (labels[:, :29] == labels[0, 0]).all() and (labels[:, 31:] == labels[0, 59]).all()
    # unknown depth (0) adds no cost
    assert len(np.unique(felzenszwalb(img, k=1.0, min_size=10, depth_m=np.zeros_like(depth)))) == 1


def test_small_regions_are_merged_into_a_neighbour():
    img = np.full((30, 30, 3), 50, np.uint8)
    img[10:12, 10:12] = 250  # a 4-pixel speck
    assert len(np.unique(felzenszwalb(img, k=0.5, min_size=2, sigma=0))) == 2
    assert len(np.unique(felzenszwalb(img, k=0.5, min_size=5, sigma=0))) == 1


def test_bad_arguments():
    with pytest.raises(ValueError, match="k > 0"):
        felzenszwalb(squares_image(), k=0)
    with pytest.raises(ValueError, match="depth"):
        felzenszwalb(squares_image(), k=1, depth_m=np.ones((3, 3)))
    with pytest.raises(ValueError, match="image"):
        felzenszwalb(np.zeros((5, 5)), k=1)


def test_segment_frame_reports_boxes_in_frame_pixels():
    img = np.kron(squares_image(), np.ones((4, 4, 1), np.uint8))  # 240 x 320 frame, segmented at 80 px
    labels, segments = segment_frame(img, None, k=1.0, work_width=80, sigma=0)
    assert labels.shape == (60, 80) and len(segments) == 3
    red = segments[labels[20, 20]]
    assert red.box_xyxy == (40, 40, 120, 120) and red.area == 400
    assert sum(s.area for s in segments) == labels.size


@pytest.mark.parametrize(
    "box,expected",
    [
        ((10, 10, 30, 20), (5, 0, 30)),  # 20 px long side + 2 x 0.25 x 20 context = 30, clipped at the top
        ((0, 0, 4, 4), (0, 0, 16)),  # grown to the minimum side, kept inside the frame
        ((70, 50, 80, 60), (64, 44, 16)),  # shifted back inside at the far corner
        ((0, 0, 80, 60), (10, 0, 60)),  # at most the short side
    ],
)
def test_square_crop_box(box, expected):
    assert square_crop_box(box, (60, 80), margin=0.25, min_side=16) == expected
