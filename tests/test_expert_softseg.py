"""softseg/halftone: gray component replacement by the book, dot screens, and VRE's halftone to the pixel."""
from __future__ import annotations

import numpy as np

from experts.softseg import dot_screen, gray_component_replacement, halftone


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
