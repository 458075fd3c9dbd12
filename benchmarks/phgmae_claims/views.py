"""A recipe plugin for the PHG-MAE claims experiment: the released PHG-MAE-Distil model seen
through another view of the frame.

`bench/phgmae-view` wraps `semantic/phgmae-distil` (same weights, same size parameter):
  mirror: false  the frame as it is;
  mirror: true   the left-right mirrored frame, the result mirrored back;
  average: true  the mean of both probability maps (flip averaging: a steadier target).
Output: 8 class probabilities (float16) or the class map of their argmax (`output: labels`).
"""
from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from experts.semantic import DRONESCAPES_CLASSES, DRONESCAPES_PALETTE, PhgmaeDistil, _semantic_spec
from video_pipeline.registry import register_expert


@register_expert("bench/phgmae-view")
class PhgmaeView(PhgmaeDistil):
    """semantic/phgmae-distil on the mirrored frame, or flip-averaged (see the module docstring)."""

    def __init__(self, output: str = "probabilities", size: list[int] | None = None, mirror: bool = False,
                 average: bool = False):
        super().__init__(output="probabilities", size=size)
        if output not in ("labels", "probabilities"):
            raise ValueError(f"output must be labels or probabilities, got {output!r}")
        self.view_output, self.mirror, self.average = output, bool(mirror), bool(average)

    def output(self, deps):
        spec = super().output(deps)
        if self.view_output == "labels":
            return _semantic_spec("labels", DRONESCAPES_CLASSES, DRONESCAPES_PALETTE)
        return spec

    def __call__(self, frames: np.ndarray, deps: Mapping[str, np.ndarray]) -> np.ndarray:
        run = super().__call__
        if self.average:
            probs = (run(frames, deps).astype(np.float32)
                     + run(np.ascontiguousarray(frames[:, :, ::-1]), deps)[:, :, ::-1].astype(np.float32)) / 2
        elif self.mirror:
            probs = run(np.ascontiguousarray(frames[:, :, ::-1]), deps)[:, :, ::-1].astype(np.float32)
        else:
            probs = run(frames, deps).astype(np.float32)
        if self.view_output == "labels":
            return probs.argmax(-1)[..., None].astype(np.uint8)
        return np.ascontiguousarray(probs.astype(np.float16))
