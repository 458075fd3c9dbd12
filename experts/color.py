"""Colour experts: the frame itself (`color/rgb`) and its HSV conversion (`color/hsv`)."""
from __future__ import annotations

from typing import Literal

import numpy as np

from video_pipeline.expert import Expert, OutputSpec
from video_pipeline.registry import register_expert


def rgb_to_hsv(frames: np.ndarray) -> np.ndarray:
    """uint8 RGB [N,H,W,3] -> uint8 HSV [N,H,W,3], every channel scaled to 0..255.

    OpenCV's full-range conversion (hue 0..255 instead of 0..179) so all channels share one range.
    """
    import cv2

    out = np.empty_like(frames)
    for i, frame in enumerate(frames):
        cv2.cvtColor(frame, cv2.COLOR_RGB2HSV_FULL, dst=out[i])
    return out


def rgb_to_hsv_float(frames: np.ndarray) -> np.ndarray:
    """uint8 RGB [N,H,W,3] -> uint8 HSV [N,H,W,3]: the textbook definition in float64, each channel
    in [0, 1] (hue a fraction of the turn), kept as float32 and scaled by 255, rounded half to even.

    This is the extended Dronescapes `hsv` modality (floats in [0, 1]) times 255, to the pixel; it
    differs from `rgb_to_hsv` (OpenCV's integer arithmetic) by at most 1 in some pixels, and costs
    about 20x more. Where two channels tie for the maximum, the hue is taken from the later one
    (blue over green over red); grey pixels have hue and saturation 0.
    """
    x = frames.astype(np.float64) / 255
    r, g, b = x[..., 0], x[..., 1], x[..., 2]
    value = x.max(-1)
    delta = value - x.min(-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        saturation = np.where(delta == 0, 0.0, delta / value)
        sector = np.where(b == value, 4.0 + (r - g) / delta,
                          np.where(g == value, 2.0 + (b - r) / delta, (g - b) / delta))
    hue = np.where(delta == 0, 0.0, (sector / 6.0) % 1.0)
    hsv = np.stack([hue, saturation, value], axis=-1).astype(np.float32)
    return np.round(hsv * np.float32(255)).astype(np.uint8)


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
    """Hue, saturation, value of the frame, each 0..255: uint8 [N,H,W,3].

    `method`: "opencv" (fast integer conversion, `rgb_to_hsv`) or "float" (the float definition
    the extended Dronescapes `hsv` modality holds, x 255: `rgb_to_hsv_float`).
    """

    batch_size = 32
    frame_parallel = True  # a per-frame OpenCV/NumPy function

    def __init__(self, method: Literal["opencv", "float"] = "opencv"):
        if method not in ("opencv", "float"):
            raise ValueError(f"method must be opencv or float, got {method!r}")
        self.method = method

    def output(self, deps):
        return OutputSpec(channels=3, kind="image", value_range=(0, 255))

    def __call__(self, frames, deps):
        return rgb_to_hsv(frames) if self.method == "opencv" else rgb_to_hsv_float(frames)
