"""softseg/halftone and softseg/generalized-boundaries: properties by the book, and agreement with VRE."""
from __future__ import annotations

import numpy as np

from experts.softseg import dot_screen, generalized_boundaries, gray_component_replacement, halftone, layer_boundaries


def test_gray_component_replacement_moves_the_grey_into_black():
    # inks (41, 100, 255): all of the grey (41) moves to black at 100%, 91% of it (37.31 -> 37) at 91%
    rgb = np.array([[[214, 155, 0]]], np.uint8)
    assert gray_component_replacement(rgb, 100)[0, 0].tolist() == [0, 59, 214, 41]
    assert gray_component_replacement(rgb, 91)[0, 0].tolist() == [4, 63, 218, 37]
    assert gray_component_replacement(rgb, 0)[0, 0].tolist() == [41, 100, 255, 0]


def test_more_ink_gives_bigger_dots_at_any_angle():
    for angle in (0, 15, 45):
        coverage = [(dot_screen(np.full((60, 84), ink, np.uint8), angle, 6, 1) > 0).mean() for ink in (30, 120, 255)]
        assert coverage[0] < coverage[1] < coverage[2], (angle, coverage)
    screen = dot_screen(np.full((30, 42), 255, np.uint8), 0, 3, 2)
    assert screen.shape == (60, 84) and set(np.unique(screen)) == {0, 255}


def test_agrees_with_vre_halftone(vre_reference):
    inputs, theirs = vre_reference
    ours = halftone(inputs["frames"], 3, 1, 91, (0, 15, 30))
    assert 0 < (ours > 0).mean() < 1
    np.testing.assert_array_equal(ours, np.round(theirs["soft-segmentation/python-halftone"] * np.float32(255))
                                  .astype(np.uint8))


def two_regions(h: int = 60, w: int = 90) -> np.ndarray:
    """uint8 [1,h,w,3]: a flat green left part and a flat red right part, the border at column w/2."""
    frame = np.zeros((1, h, w, 3), np.uint8)
    frame[:, :, : w // 2] = (40, 160, 60)
    frame[:, :, w // 2:] = (200, 50, 40)
    return frame


def test_generalized_boundaries_two_flat_regions_have_edges_on_their_border_only():
    frame = two_regions()
    layers = generalized_boundaries(frame, max_channels=3, median_filter=True, adjust_to_rgb=False)
    assert layers.shape == (1, 60, 90, 3) and layers.min() >= 0 and layers.max() <= 1
    # each region is flat in every layer, and the regions differ in the first layer
    left, right = layers[0, :, 5:40], layers[0, :, 50:85]
    assert np.ptp(left, axis=(0, 1)).max() < 1e-4 and np.ptp(right, axis=(0, 1)).max() < 1e-4
    assert abs(left[0, 0, 0] - right[0, 0, 0]) > 0.5
    # (the frame's outer 3 pixels are left out: the zero-padded median marks the corners, as VRE's does)
    edges = layer_boundaries(layers)[0, 3:-3, 3:-3, 0]
    columns = edges.max(0)  # column j here is column j + 3 of the frame
    assert columns.max() > 0.99 and set(np.flatnonzero(columns > 0.5) + 3) <= set(range(40, 50))
    assert columns[:35].max() < 0.01 and columns[49:].max() < 0.01
    # fitted to RGB, the left region is green and the right one red, as in the frame
    rgb = generalized_boundaries(frame, 3, True, True)[0]
    assert rgb[30, 10, 1] > rgb[30, 10, 0] and rgb[30, 80, 0] > rgb[30, 80, 1]


def test_generalized_boundaries_flat_frame_has_no_edges():
    frame = np.full((1, 40, 60, 3), 120, np.uint8)
    edges = layer_boundaries(generalized_boundaries(frame, 3, True, True))
    assert edges.shape == (1, 40, 60, 1) and not edges.any()


def test_generalized_boundaries_agrees_with_vre(vre_reference):
    inputs, theirs = vre_reference
    ours = generalized_boundaries(inputs["frames"], 3, True, True)
    diff = np.abs(ours - theirs["soft-segmentation/generalized-boundaries"])
    # the synthetic scenes agree to float32 rounding (VRE's unsorted eigenvectors happen to be in order)
    assert diff[:2].max() < 1e-3, diff.reshape(len(diff), -1).max(1)
