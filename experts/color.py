"""Colour experts: the frame itself (`color/rgb`) and its HSV conversion (`color/hsv`)."""
from __future__ import annotations

import cv2
import numpy as np

from video_pipeline.expert import Expert, OutputSpec
from video_pipeline.registry import register_expert


def rgb_to_hsv(frames: np.ndarray) -> np.ndarray:
    """uint8 RGB [N,H,W,3] -> uint8 HSV [N,H,W,3], every channel scaled to 0..255.

    OpenCV's full-range conversion (hue 0..255 instead of 0..179) so all channels share one range.
    """
    out = np.empty_like(frames)
    for i, frame in enumerate(frames):
        cv2.cvtColor(frame, cv2.COLOR_RGB2HSV_FULL, dst=out[i])
    return out


@register_expert("color/rgb")
class RGB(Expert):
    """The decoded frame, resized to the store resolution: uint8 [N,H,W,3]."""

    batch_size = 32

    def output(self, deps):
        return OutputSpec(channels=3, kind="image", value_range=(0, 255))

    def __call__(self, frames, deps):
        return frames


@register_expert("color/hsv")
class HSV(Expert):
    """Hue, saturation, value of the frame, each 0..255: uint8 [N,H,W,3]."""

    batch_size = 32

    def output(self, deps):
        return OutputSpec(channels=3, kind="image", value_range=(0, 255))

    def __call__(self, frames, deps):
        return rgb_to_hsv(frames)
