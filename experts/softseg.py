"""Soft-segmentation experts: the halftone screen of the extended Dronescapes dataset (`softseg/halftone`).

Halftoning (the print process, as the python-halftone package by Phil Gyford renders it): the frame
becomes cyan, magenta, yellow and black inks with `percentage` of the grey component moved into
black (gray component replacement), and each ink is drawn as a screen of dots rotated by its angle:
one dot per `sample` x `sample` cell of the rotated ink, its diameter the square root of the cell's
mean ink. The output holds the cyan, magenta and yellow dot screens (the dataset drops black).
Dots are rasterised by Pillow, as the dataset's were, so the screens agree with it to the pixel.
"""
from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from video_pipeline.expert import Expert, OutputSpec
from video_pipeline.registry import register_expert


def gray_component_replacement(frame: np.ndarray, percentage: float) -> np.ndarray:
    """uint8 RGB [H,W,3] -> uint8 CMYK [H,W,4]: naive inks (255 - RGB, no black), then `percentage`
    of the grey component min(C, M, Y), truncated to an integer, moved from C, M, Y to K."""
    cmy = 255 - frame.astype(np.int64)
    gray = (cmy.min(-1) * percentage / 100).astype(np.int64)  # truncation, as int() of a float
    return np.concatenate([cmy - gray[..., None], gray[..., None]], axis=-1).astype(np.uint8)


def dot_screen(ink: np.ndarray, angle: int, sample: int, scale: int) -> np.ndarray:
    """One ink [H,W] uint8 -> its dot screen uint8 [H*scale, W*scale] of 0 and 255.

    The ink is rotated by `angle` degrees (counter-clockwise, canvas grown to fit, nearest pixel);
    every `sample` x `sample` cell from the top-left corner (cells past the edge count the missing
    pixels as no ink) gets a filled circle centred in its `sample*scale` box, of diameter
    sqrt(mean / 255) times the box; the screen is rotated back and cropped to the frame, centred.
    """
    h, w = ink.shape
    rotated = Image.fromarray(ink, "L").rotate(angle, expand=1)
    cols, rows = rotated.size
    padded = np.zeros((-(-rows // sample) * sample, -(-cols // sample) * sample), dtype=np.int64)
    padded[:rows, :cols] = np.asarray(rotated)
    sums = padded.reshape(padded.shape[0] // sample, sample, padded.shape[1] // sample, sample).sum(axis=(1, 3))
    box = sample * scale
    screen = Image.new("L", (cols * scale, rows * scale))
    draw = ImageDraw.Draw(screen)
    for i, x in enumerate(range(0, cols, sample)):
        for j, y in enumerate(range(0, rows, sample)):
            mean = int(sums[j, i]) / (sample * sample)
            diameter = (mean / 255) ** 0.5 * box
            left, top = x * scale + (box - diameter) / 2, y * scale + (box - diameter) / 2
            draw.ellipse([(left, top), (left + diameter, top + diameter)], fill=255)
    back = screen.rotate(-angle, expand=1)
    left, top = (back.size[0] - w * scale) / 2, (back.size[1] - h * scale) / 2
    return np.asarray(back.crop((left, top, left + w * scale, top + h * scale)))


def halftone(frames: np.ndarray, sample: int, scale: int, percentage: float,
             angles: tuple[int, int, int]) -> np.ndarray:
    """uint8 RGB [N,H,W,3] -> uint8 [N,H*scale,W*scale,3]: the cyan, magenta and yellow dot screens
    (0 or 255) at `angles` degrees, after `percentage` gray component replacement."""
    out = []
    for frame in frames:
        cmyk = gray_component_replacement(frame, percentage)
        out.append(np.stack([dot_screen(np.ascontiguousarray(cmyk[..., c]), angles[c], sample, scale)
                             for c in range(3)], axis=-1))
    return np.stack(out)


@register_expert("softseg/halftone")
class Halftone(Expert):
    """Halftone dot screens of the frame: uint8 [N,H,W,3], cyan/magenta/yellow dots as 255, else 0.

    Parameters as the extended Dronescapes `halftone1` node: `sample` (cell side, pixels), `percentage`
    (gray component replacement, 0..100), `angles` (screen angles of cyan, magenta, yellow and black,
    degrees; black's screen is not part of the output). The dataset computed it at 240x426: give the
    recipe entry `resolution: [240, 426]`. About 1 s per 240x426 frame (one Pillow ellipse per cell).
    """

    batch_size = 4

    def __init__(self, sample: int = 3, percentage: float = 91.0, angles: list[int] = (0, 15, 30, 45)):
        if sample < 1:
            raise ValueError(f"sample must be a cell side >= 1 pixel, got {sample}")
        if not 0 <= percentage <= 100:
            raise ValueError(f"percentage must be in 0..100, got {percentage}")
        if len(angles) != 4 or not all(isinstance(a, int) for a in angles):
            raise ValueError(f"angles must be 4 integers (cyan, magenta, yellow, black), got {list(angles)}")
        self.sample, self.percentage, self.angles = sample, percentage, tuple(angles)

    def output(self, deps):
        return OutputSpec(channels=3, kind="image", value_range=(0, 255))

    def __call__(self, frames, deps):
        return halftone(frames, self.sample, 1, self.percentage, self.angles[:3])
