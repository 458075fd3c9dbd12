"""Test plugin (loaded through a recipe's `plugins:` list): experts that record what they see."""
from __future__ import annotations

import os
import time

import numpy as np

from video_pipeline import Expert, OutputSpec, register_expert

CALLS: dict[str, list[int]] = {}  # expert name -> number of frames per call, in this process


def _log(name: str, n: int) -> None:
    CALLS.setdefault(name, []).append(n)
    log = os.environ.get("VRE_TEST_CALL_LOG")
    if log:
        with open(log, "a") as f:
            f.write(f"{name} {n}\n")


@register_expert("test/brightness")
class Brightness(Expert):
    """Mean brightness of the frame, per pixel row broadcast: float16 [N,H,W,1] (a fake 'depth')."""

    delay: float

    def __init__(self, delay: float = 0.0):
        self.delay = delay

    def output(self, deps):
        return OutputSpec(channels=1, kind="depth", value_range=(0, 1), quantity="relative_depth")

    def __call__(self, frames, deps):
        _log(self.name, len(frames))
        time.sleep(self.delay * len(frames))
        return (frames.mean(axis=3, keepdims=True) / 255.0).astype(np.float16)


@register_expert("test/plus-one")
class PlusOne(Expert):
    """Its single dependency + 1: proves the dependency arrives in memory, aligned frame by frame."""

    n_deps = 1

    def output(self, deps):
        (spec,) = deps.values()
        return OutputSpec(channels=spec.channels, kind="depth")

    def __call__(self, frames, deps):
        _log(self.name, len(frames))
        (dep,) = [v for k, v in deps.items() if k in self.deps]
        assert dep.shape[0] == frames.shape[0]
        return dep.astype(np.float32) + 1


@register_expert("test/fail-at")
class FailAt(Expert):
    """Fails on its `fail_call`-th call: raises, or returns NaN or a wrong shape (for --on-error)."""

    def __init__(self, fail_call: int = 2, bad_output: str = "raise"):
        self.fail_call, self.bad_output, self.calls = fail_call, bad_output, 0

    def output(self, deps):
        return OutputSpec(channels=1, kind="depth")

    def __call__(self, frames, deps):
        self.calls += 1
        if self.calls >= self.fail_call:
            if self.bad_output == "nan":
                return np.full((len(frames), *frames.shape[1:3], 1), np.nan, np.float32)
            if self.bad_output == "shape":
                return np.zeros((len(frames), 3, 3), np.float32)
            raise RuntimeError("boom")
        return np.zeros((len(frames), *frames.shape[1:3], 1), np.float32)


BUILT: dict[str, int] = {}  # expert class name -> instances made, in this process


@register_expert("test/weighted")
class Weighted(Expert):
    """Writes the number its weights file (text) holds: float16 [N,H,W,1]. Its `output` reads the
    weights, so validation resolves them."""

    output_needs_weights = True

    def __init__(self):
        BUILT[type(self).__name__] = BUILT.get(type(self).__name__, 0) + 1
        self.value = None

    def output(self, deps):
        return OutputSpec(channels=1, kind="features")

    def setup(self, device):
        super().setup(device)
        self.value = float(open(self.weights_path).read())

    def __call__(self, frames, deps):
        _log(self.name, len(frames))
        return np.full((*frames.shape[:3], 1), self.value, np.float16)


@register_expert("test/weighted-late")
class WeightedLate(Weighted):
    """`test/weighted` whose `output` does not read the weights: the run resolves them."""

    output_needs_weights = False
