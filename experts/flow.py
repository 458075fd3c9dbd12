"""Optical-flow experts: OpenCV Farneback (`flow/farneback`) and torchvision RAFT (`flow/raft`).

Both return the flow from each frame to the next one, float16 [N,H,W,2] = (dx, dy) in pixels of the
frame: content at (x, y) in frame i is at (x + dx, y + dy) in frame i + 1. The runner hands over the
next frames; for the last frame of a video there is none, so it hands over the previous frame with
`next_sign = -1`, and the flow to the previous frame, negated, stands in for the forward flow.
"""
from __future__ import annotations

import math
from typing import Literal

import cv2
import numpy as np

from video_pipeline.errors import WeightsError
from video_pipeline.expert import Expert, OutputSpec
from video_pipeline.imageops import resize
from video_pipeline.learned import frames_to_tensor, inference
from video_pipeline.registry import register_expert
from video_pipeline.weights import load_checkpoint

# Stored with the array so a reader knows the convention without this package.
FLOW_ATTRS = {"units": "pixels", "components": ["dx", "dy"], "direction": "frame t -> frame t+1"}


def farneback_flow(frames: np.ndarray, next_frames: np.ndarray, next_sign: np.ndarray, *,
                   pyr_scale: float, levels: int, winsize: int, iterations: int, poly_n: int,
                   poly_sigma: float, scale: float) -> np.ndarray:
    """Dense Farneback flow from `frames` to `next_frames`, times `next_sign`.

    frames, next_frames: uint8 RGB [N,H,W,3]; next_sign: float [N] of +1/-1. The other arguments are
    those of `cv2.calcOpticalFlowFarneback` (pyramid ratio and depth, averaging window, iterations
    per level, polynomial neighbourhood and its Gaussian sigma).
    `scale` < 1 computes on frames shrunk by that factor and upsamples the flow, vectors rescaled to
    full-resolution pixels. Returns float16 [N,H,W,2] (dx, dy) in pixels.
    """
    n, h, w, _ = frames.shape
    small = (max(1, round(h * scale)), max(1, round(w * scale)))
    flows = np.empty((n, *small, 2), dtype=np.float32)
    for i in range(n):
        grey = [cv2.cvtColor(f[i], cv2.COLOR_RGB2GRAY) for f in (frames, next_frames)]
        if scale != 1:
            grey = [cv2.resize(g, small[::-1], interpolation=cv2.INTER_AREA) for g in grey]
        flows[i] = cv2.calcOpticalFlowFarneback(grey[0], grey[1], None, pyr_scale, levels, winsize,
                                                iterations, poly_n, poly_sigma, 0)
        flows[i] *= next_sign[i]
    return resize(flows, (h, w), kind="flow").astype(np.float16)


@register_expert("flow/farneback")
class Farneback(Expert):
    """OpenCV Farneback dense optical flow to the next frame: float16 [N,H,W,2] (dx, dy) pixels."""

    needs_next_frame = True
    batch_size = 16

    def __init__(self, pyr_scale: float = 0.5, levels: int = 5, winsize: int = 15,
                 iterations: int = 3, poly_n: int = 5, poly_sigma: float = 1.2, scale: float = 1.0):
        if not 0 < pyr_scale < 1:
            raise ValueError(f"pyr_scale must be in (0, 1), got {pyr_scale}")
        if levels < 1 or iterations < 1:
            raise ValueError(f"levels and iterations must be >= 1, got {levels} and {iterations}")
        if winsize < 3 or poly_n not in (5, 7):
            raise ValueError(f"need winsize >= 3 and poly_n 5 or 7, got {winsize} and {poly_n}")
        if poly_sigma <= 0 or not 0 < scale <= 1:
            raise ValueError(f"need poly_sigma > 0 and 0 < scale <= 1, got {poly_sigma} and {scale}")
        self.options = dict(pyr_scale=pyr_scale, levels=levels, winsize=winsize, iterations=iterations,
                            poly_n=poly_n, poly_sigma=poly_sigma, scale=scale)

    def output(self, deps):
        return OutputSpec(channels=2, kind="flow", extra=FLOW_ATTRS)

    def __call__(self, frames, deps):
        return farneback_flow(frames, deps["next_frames"], deps["next_sign"], **self.options)


# torchvision's default checkpoints (FlyingChairs + FlyingThings, then Sintel/KITTI/HD1K for large).
# Their full sha256 is not published, so they are not a silent default: a recipe names one as
# `weights: URL#sha256=...` (or a local copy).
RAFT_WEIGHTS = {
    "large": "https://download.pytorch.org/models/raft_large_C_T_SKHT_V2-ff5fadd5.pth",
    "small": "https://download.pytorch.org/models/raft_small_C_T_V2-01064c6d.pth",
}


def pad_for_raft(x, multiple: int = 8, minimum: int = 128):
    """Replicate-pad [N,C,H,W] at the bottom/right: H, W become multiples of `multiple`, >= `minimum`.

    RAFT works at 1/8 resolution and its 4-level correlation pyramid needs feature maps of >= 16
    pixels, hence 8 and 128.
    """
    import torch.nn.functional as F

    h, w = x.shape[-2:]
    pad_h, pad_w = (max(minimum, math.ceil(size / multiple) * multiple) - size for size in (h, w))
    if pad_h or pad_w:
        x = F.pad(x, (0, pad_w, 0, pad_h), mode="replicate")
    return x


@register_expert("flow/raft")
class RAFT(Expert):
    """torchvision RAFT optical flow to the next frame: float16 [N,H,W,2] (dx, dy) pixels."""

    needs_next_frame = True
    batch_size = 4
    uses_torch = True
    net = None  # the torchvision module, once set up

    def __init__(self, model: Literal["large", "small"] = "large", num_flow_updates: int = 12):
        if num_flow_updates < 1:
            raise ValueError(f"num_flow_updates must be >= 1, got {num_flow_updates}")
        self.variant, self.num_flow_updates = model, num_flow_updates

    def output(self, deps):
        return OutputSpec(channels=2, kind="flow", extra=FLOW_ATTRS)

    def setup(self, device):
        from torchvision.models.optical_flow import raft_large, raft_small

        self.device = device
        if self.weights_path is None:
            raise WeightsError(f"expert '{self.name}': flow/raft needs weights: give weights: a local "
                               f"torchvision raft_{self.variant} state dict, or "
                               f"{RAFT_WEIGHTS[self.variant]}#sha256=<its sha256>")
        state = load_checkpoint(self.weights_path)
        model = (raft_large if self.variant == "large" else raft_small)(weights=None, progress=False)
        try:
            model.load_state_dict(state)
        except (RuntimeError, TypeError, AttributeError) as err:
            first = str(err).strip().splitlines()[0]
            raise WeightsError(f"expert '{self.name}': {self.weights_path} is not a torchvision "
                               f"raft_{self.variant} state dict ({first}); set model: to the "
                               f"checkpoint's variant, or use raft_{self.variant} weights such as "
                               f"{RAFT_WEIGHTS[self.variant]}") from err
        self.net = model.eval().to(device)

    def _to_input(self, frames):
        """uint8 [N,H,W,3] -> float [N,3,H',W'] in [-1, 1] (RAFT's input range), padded."""
        return pad_for_raft(frames_to_tensor(frames, self.device).float() / 127.5 - 1.0)

    def __call__(self, frames, deps):
        import torch

        n, h, w, _ = frames.shape
        sign = torch.as_tensor(deps["next_sign"], dtype=torch.float32, device=self.device)
        # float32 unless the recipe asks for less: flow accuracy suffers first from lower precision.
        with inference(self.device, self.dtype, cuda_default="float32"):
            flows = self.net(self._to_input(frames), self._to_input(deps["next_frames"]),
                               num_flow_updates=self.num_flow_updates)[-1]
        flow = flows[:, :, :h, :w].float() * sign.view(n, 1, 1, 1)
        return flow.permute(0, 2, 3, 1).to(torch.float16).cpu().numpy()

    def teardown(self):
        self.net = None
