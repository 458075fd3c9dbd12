"""Edge experts: OpenCV Canny (`edges/canny`) and the learned PiDiNet detector (`edges/pidinet`).

PiDiNet (Su et al., "Pixel Difference Networks for Efficient Edge Detection", ICCV 2021) is trained
with pixel-difference convolutions; each is a linear function of its 3x3 weights, so at load time it
becomes an ordinary convolution and inference runs plain `conv2d` calls.
"""
from __future__ import annotations

from typing import Literal

import cv2
import numpy as np

from video_pipeline.errors import WeightsError
from video_pipeline.expert import Expert, OutputSpec
from video_pipeline.learned import frames_to_tensor, inference
from video_pipeline.registry import register_expert
from video_pipeline.weights import load_checkpoint


def canny_edges(frames: np.ndarray, low: int, high: int, aperture: int = 3, blur: int = 0,
                l2_gradient: bool = False, source: str = "grey") -> np.ndarray:
    """uint8 RGB [N,H,W,3] -> uint8 [N,H,W,1], 1 on an edge pixel, 0 elsewhere.

    `low`/`high` are the hysteresis thresholds on the gradient magnitude (L1 norm of the Sobel
    derivatives, or L2 with `l2_gradient`), `aperture` the Sobel size (3, 5 or 7), `blur` an odd
    Gaussian kernel size applied first (0: none). `source`: "grey" runs on the grey frame; "rgb" on
    the colour frame, where OpenCV takes at each pixel the channel with the strongest gradient (how
    the extended Dronescapes `edges_canny` was made).
    """
    n, h, w, _ = frames.shape
    out = np.empty((n, h, w, 1), dtype=np.uint8)
    for i, frame in enumerate(frames):
        image = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY) if source == "grey" else np.ascontiguousarray(frame)
        if blur:
            image = cv2.GaussianBlur(image, (blur, blur), 0)
        cv2.Canny(image, low, high, edges=out[i, :, :, 0], apertureSize=aperture, L2gradient=l2_gradient)
    # Canny marks edges with 255; the store keeps binary maps as 0/1.
    np.minimum(out, 1, out=out)
    return out


@register_expert("edges/canny")
class Canny(Expert):
    """Canny edges of the grey (or colour) frame: uint8 [N,H,W,1] with values 0/1 (see `canny_edges`)."""

    batch_size = 32

    def __init__(self, low: int = 100, high: int = 200, aperture: int = 3, blur: int = 0,
                 l2_gradient: bool = False, source: Literal["grey", "rgb"] = "grey"):
        if not 0 <= low <= high:
            raise ValueError(f"need 0 <= low <= high, got low={low}, high={high}")
        if aperture not in (3, 5, 7):
            raise ValueError(f"aperture must be 3, 5 or 7, got {aperture}")
        if blur < 0 or (blur and blur % 2 == 0):
            raise ValueError(f"blur must be 0 (off) or an odd kernel size, got {blur}")
        if source not in ("grey", "rgb"):
            raise ValueError(f"source must be grey or rgb, got {source!r}")
        self.low, self.high, self.aperture, self.blur = low, high, aperture, blur
        self.l2_gradient, self.source = l2_gradient, source

    def output(self, deps):
        return OutputSpec(channels=1, kind="binary", value_range=(0, 1))

    def __call__(self, frames, deps):
        return canny_edges(frames, self.low, self.high, self.aperture, self.blur, self.l2_gradient, self.source)


# --- PiDiNet ---------------------------------------------------------------------------------------
# The released BSDS model ("table5 pidinet"): 60 base channels, CDCM with 24 channels, CSAM attention,
# and the "carv4" layout: layer i (0 = init block, 1..15 = the blocks) uses PIDINET_OPS[i % 4].
PIDINET_CHANNELS = 60
PIDINET_DIL_CHANNELS = 24
PIDINET_OPS = ("cd", "ad", "rd", "cv")
PIDINET_DILATIONS = (5, 7, 9, 11)
# (stage, input channels, output channels, blocks); every stage after the first starts by halving
# the resolution.
PIDINET_STAGES = tuple((s, PIDINET_CHANNELS * cin, PIDINET_CHANNELS * cout, n)
                       for s, cin, cout, n in ((1, 1, 1, 3), (2, 1, 2, 4), (3, 2, 4, 4), (4, 4, 4, 4)))
# (block name, input channels, output channels, stride); block j is layer j + 1.
PIDINET_BLOCKS = tuple(
    (f"block{stage}_{k}", cin if k == 1 else cout, cout, 2 if k == 1 and stage > 1 else 1)
    for stage, cin, cout, n in PIDINET_STAGES for k in range(1, n + 1))
PIDINET_STAGE_ENDS = tuple(f"block{stage}_{n}" for stage, _, _, n in PIDINET_STAGES)
# The detector was trained on ImageNet-standardised RGB (the reference data loaders normalise so).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# The 8-neighbourhood of a 3x3 kernel clockwise from the top-left, as flat indices.
_RING = (0, 1, 2, 5, 8, 7, 6, 3)
# (dy, dx) of the 8 neighbours in row-major order (the centre skipped).
_DIRECTIONS = ((-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1))


def pidinet_layout() -> dict[str, tuple[int, ...]]:
    """Parameter name -> shape of the trained PiDiNet checkpoint (without the `module.` prefix)."""
    c, d = PIDINET_CHANNELS, PIDINET_DIL_CHANNELS
    shapes = {"init_block.weight": (c, 3, 3, 3)}
    for name, cin, cout, stride in PIDINET_BLOCKS:
        if stride > 1:
            shapes[f"{name}.shortcut.weight"] = (cout, cin, 1, 1)
            shapes[f"{name}.shortcut.bias"] = (cout,)
        shapes[f"{name}.conv1.weight"] = (cin, 1, 3, 3)
        shapes[f"{name}.conv2.weight"] = (cout, cin, 1, 1)
    for i, (_, _, stage_channels, _) in enumerate(PIDINET_STAGES):
        shapes[f"conv_reduces.{i}.conv.weight"] = (1, d, 1, 1)
        shapes[f"conv_reduces.{i}.conv.bias"] = (1,)
        shapes[f"attentions.{i}.conv1.weight"] = (4, d, 1, 1)
        shapes[f"attentions.{i}.conv1.bias"] = (4,)
        shapes[f"attentions.{i}.conv2.weight"] = (1, 4, 3, 3)
        shapes[f"dilations.{i}.conv1.weight"] = (d, stage_channels, 1, 1)
        shapes[f"dilations.{i}.conv1.bias"] = (d,)
        for k in range(1, len(PIDINET_DILATIONS) + 1):
            shapes[f"dilations.{i}.conv2_{k}.weight"] = (d, d, 3, 3)
    shapes["classifier.weight"] = (1, 4, 1, 1)
    shapes["classifier.bias"] = (1,)
    return shapes


def pdc_to_conv(op: str, weight):
    """The plain convolution kernel equal to a pixel-difference convolution (exact: both are linear).

    weight: float tensor [C_out, C_in/groups, 3, 3] as trained. With x_k the 3x3 neighbourhood
    (flat index k, centre 4) of an output pixel:
      cv: sum_k w_k x_k                                 -> w itself
      cd: sum_k w_k (x_k - x_4)                         -> w, centre tap minus sum(w)
      ad: sum_k w_k (x_k - x_next(k)), ring clockwise   -> w_k - w_prev(k), centre 0
      rd: sum_d v_d (x[2d] - x[d]) over the 8 directions -> 5x5 kernel: +v_d at 2d, -v_d at d
    For rd the trained tensor keeps v_d in flat positions 1..8 (position 0 is unused), in the
    row-major direction order of `_DIRECTIONS`. Returns [C_out, C_in/groups, 3, 3] (5x5 for rd).
    """
    import torch

    out_c, in_c = weight.shape[:2]
    flat = weight.reshape(out_c, in_c, 9)
    if op == "cv":
        return weight.clone()
    if op == "cd":
        kernel = flat.clone()
        kernel[:, :, 4] -= flat.sum(dim=2)
        return kernel.reshape(weight.shape)
    if op == "ad":
        prev = list(range(9))
        for i, k in enumerate(_RING):
            prev[k] = _RING[i - 1]
        kernel = flat - flat[:, :, prev]
        return kernel.reshape(weight.shape)
    if op == "rd":
        kernel = torch.zeros(out_c, in_c, 5, 5, dtype=weight.dtype, device=weight.device)
        for i, (dy, dx) in enumerate(_DIRECTIONS):
            v = flat[:, :, i + 1]
            kernel[:, :, 2 + 2 * dy, 2 + 2 * dx] = v
            kernel[:, :, 2 + dy, 2 + dx] = -v
        return kernel
    raise ValueError(f"unknown pixel-difference op {op!r} (cv, cd, ad or rd)")


def convert_pidinet(state: dict, source: str = "checkpoint") -> dict:
    """Trained PiDiNet state dict -> inference parameters for `pidinet_forward`.

    Accepts the released checkpoint's `state_dict` (keys with or without the `module.` prefix of
    DataParallel); every key and shape must match `pidinet_layout()` exactly (`WeightsError` naming
    `source` otherwise). Pixel-difference kernels become plain kernels (`pdc_to_conv`).
    """
    state = {k.removeprefix("module."): v for k, v in state.items()}
    layout = pidinet_layout()
    missing = sorted(set(layout) - set(state))
    unexpected = sorted(set(state) - set(layout))
    wrong = sorted(k for k in set(layout) & set(state) if tuple(state[k].shape) != layout[k])
    if missing or unexpected or wrong:
        what = "; ".join(f"{label}: {', '.join(keys[:3])}{' ...' if len(keys) > 3 else ''}"
                         for label, keys in (("missing", missing), ("unexpected", unexpected),
                                             ("wrong shape", wrong)) if keys)
        raise WeightsError(f"{source} is not a PiDiNet (table5 'pidinet') checkpoint ({what}); "
                           f"use the released table5_pidinet.pth")
    params = {k: v.float() for k, v in state.items()}
    params["init_block.weight"] = pdc_to_conv(PIDINET_OPS[0], params["init_block.weight"])
    for j, (name, *_rest) in enumerate(PIDINET_BLOCKS):
        key = f"{name}.conv1.weight"
        params[key] = pdc_to_conv(PIDINET_OPS[(j + 1) % 4], params[key])
    return params


def pidinet_forward(params: dict, x):
    """PiDiNet with converted parameters: standardised RGB [N,3,H,W] -> fused edge logits [N,1,H,W].

    Four stages (1, 1/2, 1/4, 1/8 resolution) of depthwise-separable residual blocks; each stage's
    output goes through a multi-dilation module (CDCM) and a spatial attention (CSAM), is reduced to
    one map, upsampled to H,W, and a 1x1 classifier fuses the four maps.
    """
    import torch
    import torch.nn.functional as F

    h, w = x.shape[-2:]
    kernel = params["init_block.weight"]
    x = F.conv2d(x, kernel, padding=kernel.shape[-1] // 2)
    stage_maps = []
    for name, _, _, stride in PIDINET_BLOCKS:
        if stride > 1:
            x = F.max_pool2d(x, kernel_size=2, stride=2)
        kernel = params[f"{name}.conv1.weight"]
        y = F.conv2d(x, kernel, padding=kernel.shape[-1] // 2, groups=x.shape[1])
        y = F.conv2d(F.relu_(y), params[f"{name}.conv2.weight"])
        if stride > 1:
            x = F.conv2d(x, params[f"{name}.shortcut.weight"], params[f"{name}.shortcut.bias"])
        x = y.add_(x)  # in place: at full resolution every pass over memory counts
        if name in PIDINET_STAGE_ENDS:
            stage_maps.append(x)
    reduced = []
    for i, feats in enumerate(stage_maps):
        p = f"dilations.{i}."
        y = F.conv2d(F.relu(feats), params[p + "conv1.weight"], params[p + "conv1.bias"])
        y = sum(F.conv2d(y, params[f"{p}conv2_{k}.weight"], padding=d, dilation=d)
                for k, d in enumerate(PIDINET_DILATIONS, start=1))
        p = f"attentions.{i}."
        attention = F.conv2d(F.relu(y), params[p + "conv1.weight"], params[p + "conv1.bias"])
        attention = torch.sigmoid(F.conv2d(attention, params[p + "conv2.weight"], padding=1))
        p = f"conv_reduces.{i}.conv."
        edge = F.conv2d(y * attention, params[p + "weight"], params[p + "bias"])
        reduced.append(F.interpolate(edge, size=(h, w), mode="bilinear", align_corners=False))
    return F.conv2d(torch.cat(reduced, dim=1), params["classifier.weight"], params["classifier.bias"])


@register_expert("edges/pidinet")
class PiDiNet(Expert):
    """PiDiNet edge probability of every pixel: float16 [N,H,W,1] in [0,1]."""

    default_weights = ("https://github.com/hellozhuo/pidinet/raw/master/trained_models/table5_pidinet.pth"
                       "#sha256=80860ac267258b5f27486e0ef152a211d0b08120f62aeb185a050acc30da486c")
    batch_size = 4
    uses_torch = True
    net: dict | None = None  # converted parameters, on the device once set up

    def output(self, deps):
        # A soft per-pixel probability, not a 0/1 map: "binary" is reserved for thresholded maps
        # (uint8 0/1), so it is stored as a one-channel float map of kind "features" in [0, 1];
        # `map/threshold` turns it into a binary map.
        return OutputSpec(channels=1, kind="features", dtype="float16", value_range=(0, 1))

    def setup(self, device):
        import torch

        self.device = device
        if self.weights_path is None:
            raise WeightsError(f"expert '{self.name}': edges/pidinet needs weights (give weights: "
                               f"a path to table5_pidinet.pth, or its URL with #sha256=)")
        checkpoint = load_checkpoint(self.weights_path)
        # The released file wraps the weights as {'epoch', 'state_dict'}; a bare state dict works too.
        state = checkpoint.get("state_dict", checkpoint)
        params = convert_pidinet(state, source=str(self.weights_path))
        # channels_last: about 2x faster convolutions on CPU (oneDNN), tensor-core friendly on GPU.
        self.net = {k: v.to(device).contiguous(memory_format=torch.channels_last) if v.ndim == 4
                    else v.to(device) for k, v in params.items()}
        self.mean = torch.tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1)
        self.std = torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1)

    def __call__(self, frames, deps):
        import torch

        # float16 on GPUs unless the recipe asks otherwise; CPUs compute in float32 by default.
        with inference(self.device, self.dtype):
            # [N,H,W,3] viewed as [N,3,H,W] is already channels_last in memory.
            x = frames_to_tensor(frames, self.device).float() / 255.0
            logits = pidinet_forward(self.net, (x - self.mean) / self.std)
            edges = torch.sigmoid(logits.float())
        return edges.permute(0, 2, 3, 1).to(torch.float16).cpu().numpy()

    def teardown(self):
        self.net = None
