"""Optical-flow experts: OpenCV Farneback (`flow/farneback`), torchvision RAFT (`flow/raft`), RIFE (`flow/rife`).

Each returns the flow from each frame to the frame `delta` frames later (default 1; negative: an
earlier frame), float16 [N,H,W,2] = (dx, dy) in pixels of the frame: content at (x, y) in frame i
is at (x + dx, y + dy) in frame i + delta. The runner hands over those frames; where the video has
no frame i + delta (its last frames, or its first ones for a negative delta) it hands over frame
i - delta with `next_sign = -1`, and the flow to that frame, negated, stands in for the flow asked for.
"""
from __future__ import annotations

import math
from typing import Literal

import numpy as np

from video_pipeline.errors import WeightsError
from video_pipeline.expert import Expert, OutputSpec
from video_pipeline.imageops import resize
from video_pipeline.learned import check_state_dict, frames_to_tensor, inference, weights_file
from video_pipeline.registry import register_expert
from video_pipeline.weights import load_checkpoint

# Stored with the array so a reader knows the convention without this package.
FLOW_ATTRS = {"units": "pixels", "components": ["dx", "dy"], "direction": "frame t -> frame t+1"}


def flow_attrs(delta: int, backward: bool = False) -> dict:
    """FLOW_ATTRS for a frame step `delta`: the direction names both frames and `delta` is kept."""
    far = f"frame t{delta:+d}"
    return {**FLOW_ATTRS, "direction": f"{far} -> frame t" if backward else f"frame t -> {far}", "delta": delta}


def check_delta(delta) -> int:
    """A flow expert's `delta` (frames between the two frames compared): a non-zero int."""
    if isinstance(delta, bool) or not isinstance(delta, int) or delta == 0:
        raise ValueError(f"delta must be a non-zero whole number of frames (1: the next frame, -1: the "
                         f"previous one), got {delta!r}")
    return delta


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
    import cv2

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
    """OpenCV Farneback dense optical flow to the frame `delta` frames later: float16 [N,H,W,2]
    (dx, dy) pixels."""

    needs_next_frame = True
    batch_size = 16
    frame_parallel = True  # a per-frame OpenCV/NumPy function

    def __init__(self, pyr_scale: float = 0.5, levels: int = 5, winsize: int = 15,
                 iterations: int = 3, poly_n: int = 5, poly_sigma: float = 1.2, scale: float = 1.0,
                 delta: int = 1):
        self.frame_step = check_delta(delta)
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
        return OutputSpec(channels=2, kind="flow", extra=flow_attrs(self.frame_step))

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
    """torchvision RAFT optical flow to the frame `delta` frames later: float16 [N,H,W,2] (dx, dy) pixels."""

    needs_next_frame = True
    batch_size = 4
    uses_torch = True
    net = None  # the torchvision module, once set up

    def __init__(self, model: Literal["large", "small"] = "large", num_flow_updates: int = 12, delta: int = 1):
        self.frame_step = check_delta(delta)
        if num_flow_updates < 1:
            raise ValueError(f"num_flow_updates must be >= 1, got {num_flow_updates}")
        self.variant, self.num_flow_updates = model, num_flow_updates

    def output(self, deps):
        return OutputSpec(channels=2, kind="flow", extra=flow_attrs(self.frame_step))

    def setup(self, device):
        from torchvision.models.optical_flow import raft_large, raft_small

        self.device = device
        state = load_checkpoint(weights_file(self, f"a local torchvision raft_{self.variant} state dict, or "
                                                   f"{RAFT_WEIGHTS[self.variant]}#sha256=<its sha256>"))
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


# --- RIFE ------------------------------------------------------------------------------------------
# RIFE's IFNet (Huang et al., "Real-Time Intermediate Flow Estimation for Video Frame Interpolation",
# ECCV 2022), HD v2 layout, as the extended Dronescapes `opticalflow_rife` was made: the released
# `flownet.ckpt` (keys prefixed `module.`). Four blocks refine the flows from the middle instant to
# both frames, coarse to fine: (name, input channels, downscale, width c).
RIFE_WEIGHTS = ("https://gitlab.com/video-representations-extractor/video-representations-extractor"
                "/-/raw/master/vre_repository/optical_flow/rife/weights/flownet.ckpt")
RIFE_BLOCKS = (("block0", 6, 8, 192), ("block1", 10, 4, 128), ("block2", 10, 2, 96), ("block3", 10, 1, 48))


def rife_layout() -> dict[str, tuple[int, ...]]:
    """Parameter name -> shape of the released IFNet state dict (without the `module.` prefix)."""
    shapes: dict[str, tuple[int, ...]] = {}
    for name, cin, _, c in RIFE_BLOCKS:
        convs = [("conv0.0", cin, c), ("conv0.1", c, 2 * c)] + [(f"convblock.{i}", 2 * c, 2 * c) for i in range(6)]
        for prefix, i, o in convs:  # each a 3x3 convolution and a PReLU
            shapes |= {f"{name}.{prefix}.0.weight": (o, i, 3, 3), f"{name}.{prefix}.0.bias": (o,),
                       f"{name}.{prefix}.1.weight": (o,)}
        shapes |= {f"{name}.conv1.weight": (2 * c, 4, 4, 4), f"{name}.conv1.bias": (4,)}
    return shapes


def check_rife(state: dict, source: str = "checkpoint") -> dict:
    """The IFNet state dict (prefix `module.` dropped) as float tensors, every key and shape checked."""
    state = check_state_dict(state, rife_layout(), source, "a RIFE (HD v2) flownet checkpoint",
                             f"use the released flownet.ckpt ({RIFE_WEIGHTS})")
    return {k: v.float() for k, v in state.items()}


def backward_warp(image, flow):
    """Sample image [N,C,H,W] at (x + flow_x, y + flow_y), flow [N,2,H,W] in pixels; bilinear, zeros
    outside, sampling positions clamped to the frame (RIFE's warp)."""
    import torch
    import torch.nn.functional as F

    n, _, h, w = flow.shape
    xs = torch.linspace(-1.0, 1.0, w, device=flow.device).view(1, 1, w).expand(n, h, w)
    ys = torch.linspace(-1.0, 1.0, h, device=flow.device).view(1, h, 1).expand(n, h, w)
    gx = xs + flow[:, 0] / ((image.shape[3] - 1.0) / 2.0)
    gy = ys + flow[:, 1] / ((image.shape[2] - 1.0) / 2.0)
    grid = torch.stack([gx, gy], dim=-1).clamp(-1, 1)
    return F.grid_sample(image, grid, mode="bilinear", padding_mode="zeros", align_corners=True)


def ifnet_forward(params: dict, x, uhd: bool = False):
    """IFNet: two frames in [0,1] stacked [N,6,H,W] (H, W multiples of 32) -> flows [N,4,H/2,W/2]
    from the middle instant to frame 0 (channels 0-1) and to frame 1 (2-3), in half-resolution pixels.
    `uhd` runs on the frames halved (flows at H/4, W/4)."""
    import torch
    import torch.nn.functional as F

    def block(y, name, scale):
        if scale != 1:
            y = F.interpolate(y, scale_factor=1.0 / scale, mode="bilinear", align_corners=False)
        for k, prefix in enumerate(["conv0.0", "conv0.1"] + [f"convblock.{i}" for i in range(6)]):
            p = f"{name}.{prefix}"
            y = F.conv2d(y, params[p + ".0.weight"], params[p + ".0.bias"], stride=2 if k < 2 else 1, padding=1)
            y = F.prelu(y, params[p + ".1.weight"])
        y = F.conv_transpose2d(y, params[f"{name}.conv1.weight"], params[f"{name}.conv1.bias"], stride=2, padding=1)
        if scale != 1:
            y = F.interpolate(y, scale_factor=scale, mode="bilinear", align_corners=False)
        return y

    if uhd:
        x = F.interpolate(x, scale_factor=0.5, mode="bilinear", align_corners=False)
    name, _, scale, _ = RIFE_BLOCKS[0]
    flow = block(x, name, scale)
    for name, _, scale, _ in RIFE_BLOCKS[1:]:
        large = F.interpolate(flow, scale_factor=2.0, mode="bilinear", align_corners=False,
                              recompute_scale_factor=False) * 2.0
        warped = [backward_warp(x[:, :3], large[:, :2]), backward_warp(x[:, 3:], large[:, 2:4])]
        flow = flow + block(torch.cat(warped + [large], dim=1), name, scale)
    return flow


def rife_dronescapes_units(flow: np.ndarray, pad_h: int, pad_w: int) -> np.ndarray:
    """IFNet's doubled flow [N,h,w,2] (on the padded frame's reduced grid) -> the extended Dronescapes
    `opticalflow_rife` values: the grid cropped by half the padding, then dx divided by h and dy by w
    (the dataset's normalisation pairs the components with the grid's sides in this order)."""
    n, h, w, _ = flow.shape
    return flow[:, :h - pad_h // 2, :w - pad_w // 2] / np.array([h, w], np.float32)


@register_expert("flow/rife")
class RIFE(Expert):
    """RIFE (IFNet HD v2) optical flow to the frame `delta` frames later, float16 [N,H,W,2]: (dx, dy)
    in pixels, or `units: dronescapes` the values of the public `opticalflow_rife` (see
    `rife_dronescapes_units`). `backward`: the flow from that frame back to this one instead.
    `uhd`: run on frames halved."""

    needs_next_frame = True
    batch_size = 4
    uses_torch = True
    net: dict | None = None

    def __init__(self, units: Literal["pixels", "dronescapes"] = "pixels", backward: bool = False,
                 uhd: bool = False, delta: int = 1):
        self.frame_step = check_delta(delta)
        if units not in ("pixels", "dronescapes"):
            raise ValueError(f"units must be pixels or dronescapes, got {units!r}")
        self.units, self.backward, self.uhd = units, backward, uhd

    def output(self, deps):
        units = "pixels" if self.units == "pixels" else \
            "dronescapes: (dx / h, dy / w) with h, w the sides of RIFE's half-resolution padded grid"
        return OutputSpec(channels=2, kind="flow", extra={**flow_attrs(self.frame_step, self.backward), "units": units})

    def setup(self, device):
        self.device = device
        path = weights_file(self, f"a path to RIFE's flownet.ckpt or its folder, or {RIFE_WEIGHTS}#sha256=<its sha256>")
        path = path / "flownet.ckpt" if path.is_dir() else path
        self.net = {k: v.to(device) for k, v in check_rife(load_checkpoint(path), source=str(path)).items()}

    def __call__(self, frames, deps):
        import cv2

        import torch
        import torch.nn.functional as F

        n, h, w, _ = frames.shape
        pad_h, pad_w = (-h) % 32, (-w) % 32
        # float32 unless the recipe asks for less: flow accuracy suffers first from lower precision.
        with inference(self.device, self.dtype, cuda_default="float32"):
            pair = [F.pad(frames_to_tensor(f, self.device).float() / 255.0, (0, pad_w, 0, pad_h))
                    for f in (frames, deps["next_frames"])]
            flows = ifnet_forward(self.net, torch.cat(pair, dim=1), self.uhd).float()
        flow = (flows[:, :2] if self.backward else flows[:, 2:4]) * 2.0
        flow = flow.permute(0, 2, 3, 1).cpu().numpy()
        if self.units == "dronescapes":
            flow = rife_dronescapes_units(flow, pad_h, pad_w)
            out = np.stack([cv2.resize(f, (w, h), interpolation=cv2.INTER_LINEAR) for f in flow])
        else:  # the reduced grid's pixels -> pixels of the frame, on the padded frame, cropped
            flow = flow * np.float32((h + pad_h) / flow.shape[1])
            out = np.stack([cv2.resize(f, (w + pad_w, h + pad_h), interpolation=cv2.INTER_LINEAR)[:h, :w]
                            for f in flow])
        return (out * np.asarray(deps["next_sign"], np.float32).reshape(n, 1, 1, 1)).astype(np.float16)

    def teardown(self):
        self.net = None
