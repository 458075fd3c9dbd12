"""Test plugin (a recipe's `plugins:` entry): an expert that misbehaves on one chosen frame, and one
that holds a run in the middle.

Frames of a clip made with `synth.make_clip(..., stamp=True)` carry their frame number, so an
expert can tell which frame it is given without help from the runner.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Literal

import numpy as np

from video_pipeline import Expert, OutputSpec, register_expert
from video_pipeline.synth import read_stamp



@register_expert("reliability/bad-at")
class BadAt(Expert):
    """A float16 map (the frame's brightness) that goes wrong at frame `frame` the way `fault` says:
    NaN/Inf there, a wrong shape for the batch holding it, a list instead of an array, values
    beyond float16 (65504), or an exception."""

    def __init__(self, frame: int = 0, fault: Literal["nan", "inf", "-inf", "channels", "frames", "ndim", "list",
                                                      "overflow", "raise"] = "nan"):
        self.frame, self.fault = frame, fault

    def output(self, deps):
        return OutputSpec(channels=1, kind="depth")

    def __call__(self, frames, deps):
        out = frames.mean(axis=3, keepdims=True).astype(np.float32) / 255.0
        hit = [i for i, f in enumerate(frames) if read_stamp(f) == self.frame]
        if not hit:
            return out
        i = hit[0]
        if self.fault in ("nan", "inf", "-inf"):
            out[i, out.shape[1] // 2, out.shape[2] // 2] = float(self.fault)
        elif self.fault == "overflow":
            out[i] = 1e6
        elif self.fault == "channels":
            return np.repeat(out, 2, axis=3)
        elif self.fault == "frames":
            return out[:-1]
        elif self.fault == "ndim":
            return out[..., 0]
        elif self.fault == "list":
            return out.tolist()
        elif self.fault == "raise":
            raise RuntimeError(f"model crashed on frame {self.frame}")
        return out


@register_expert("reliability/gate")
class Gate(Expert):
    """The frame's brightness; its `at_call`-th call first creates `<release>.waiting`, then waits
    until the file `release` exists: holds a run in the middle for as long as a test needs."""

    def __init__(self, release: str = "", at_call: int = 2):
        self.release, self.at_call, self.calls = Path(release), at_call, 0

    def output(self, deps):
        return OutputSpec(channels=1, kind="depth", value_range=(0, 1))

    def __call__(self, frames, deps):
        self.calls += 1
        if self.calls == self.at_call:
            self.release.with_name(self.release.name + ".waiting").touch()
            deadline = time.monotonic() + 120
            while not self.release.exists() and time.monotonic() < deadline:
                time.sleep(0.01)
        return (frames.mean(axis=3, keepdims=True) / 255.0).astype(np.float16)
