"""Edge experts: OpenCV Canny (`edges/canny`) and the learned PiDiNet detector (`edges/pidinet`).

PiDiNet (Su et al., "Pixel Difference Networks for Efficient Edge Detection", ICCV 2021) is trained
with pixel-difference convolutions; each is a linear function of its 3x3 weights, so at load time it
becomes an ordinary convolution and inference runs plain `conv2d` calls.
"""
from __future__ import annotations

from typing import Literal

import numpy as np

from video_pipeline.expert import Expert, OutputSpec
from video_pipeline.learned import check_state_dict, frames_to_tensor, inference, weights_file
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
    import cv2

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
    frame_parallel = True  # a per-frame OpenCV/NumPy function

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
    state = check_state_dict(state, pidinet_layout(), source, "a PiDiNet (table5 'pidinet') checkpoint",
                             "use the released table5_pidinet.pth")
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
        checkpoint = load_checkpoint(weights_file(self, "a path to table5_pidinet.pth, or its URL with #sha256="))
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


# --- DexiNed ---------------------------------------------------------------------------------------
# DexiNed (Soria et al., "Dense Extreme Inception Network: Towards a Robust CNN Model for Edge
# Detection", WACV 2020), in the layout of the checkpoint the extended Dronescapes `edges_dexined`
# was made with (VRE's `dexined.pth`). Eval-mode batch norms (eps 1e-5) throughout.
DEXINED_WEIGHTS = ("https://gitlab.com/video-representations-extractor/video-representations-extractor"
                   "/-/raw/master/vre_repository/edges/dexined/weights/dexined.pth")
DEXINED_SIZE = 512  # the dataset's: the network runs on frames resized to 512x512
# Per-channel means subtracted from the 0..255 frame (the BGR ImageNet means, applied as the dataset
# did to the RGB channels in this order).
DEXINED_MEAN = (103.939, 116.779, 123.68)
# (name, in, mid, out, stride, ReLU at the end) of the two plain double-convolution blocks.
DEXINED_DOUBLE = (("block_1", 3, 32, 64, 2, True), ("block_2", 64, 128, 128, 1, False))
# (name, layers, in, out) of the dense blocks 3..6.
DEXINED_DENSE = (("dblock_3", 2, 128, 256), ("dblock_4", 3, 256, 512), ("dblock_5", 3, 512, 512),
                 ("dblock_6", 3, 512, 256))
# (name, in, out, stride) of the 1x1 conv + batch-norm skip connections.
DEXINED_SINGLE = (("side_1", 64, 128, 2), ("side_2", 128, 256, 2), ("side_3", 256, 512, 2),
                  ("side_4", 512, 512, 1), ("side_5", 512, 256, 1), ("pre_dense_3", 128, 256, 1),
                  ("pre_dense_4", 256, 512, 1), ("pre_dense_5", 512, 512, 1), ("pre_dense_6", 512, 256, 1),
                  ("block_cat", 6, 1, 1))
# (name, in, upsampling steps) of the six side outputs; each step is 1x1 conv, ReLU, stride-2
# transposed conv of kernel 2**steps and padding DEXINED_UP_PAD[steps]; 16 channels, 1 at the end.
DEXINED_UP = (("up_block_1", 64, 1), ("up_block_2", 128, 1), ("up_block_3", 256, 2),
              ("up_block_4", 512, 3), ("up_block_5", 512, 4), ("up_block_6", 256, 4))
DEXINED_UP_PAD = {1: 0, 2: 1, 3: 3, 4: 7}


def _bn_shapes(prefix: str, channels: int) -> dict[str, tuple[int, ...]]:
    return {f"{prefix}.{k}": (channels,) for k in ("weight", "bias", "running_mean", "running_var")} | \
        {f"{prefix}.num_batches_tracked": ()}


def dexined_layout() -> dict[str, tuple[int, ...]]:
    """Parameter/buffer name -> shape of the released DexiNed state dict."""
    shapes: dict[str, tuple[int, ...]] = {}
    for name, cin, mid, cout, _, _ in DEXINED_DOUBLE:
        shapes |= {f"{name}.conv1.weight": (mid, cin, 3, 3), f"{name}.conv1.bias": (mid,),
                   f"{name}.conv2.weight": (cout, mid, 3, 3), f"{name}.conv2.bias": (cout,)}
        shapes |= _bn_shapes(f"{name}.bn1", mid) | _bn_shapes(f"{name}.bn2", cout)
    for name, layers, cin, cout in DEXINED_DENSE:
        for i in range(1, layers + 1):
            p = f"{name}.denselayer{i}"
            shapes |= {f"{p}.conv1.weight": (cout, cin if i == 1 else cout, 3, 3), f"{p}.conv1.bias": (cout,),
                       f"{p}.conv2.weight": (cout, cout, 3, 3), f"{p}.conv2.bias": (cout,)}
            shapes |= _bn_shapes(f"{p}.norm1", cout) | _bn_shapes(f"{p}.norm2", cout)
    for name, cin, cout, _ in DEXINED_SINGLE:
        shapes |= {f"{name}.conv.weight": (cout, cin, 1, 1), f"{name}.conv.bias": (cout,)}
        shapes |= _bn_shapes(f"{name}.bn", cout)  # block_cat keeps an unused one
    for name, cin, steps in DEXINED_UP:
        k = 2 ** steps
        for i in range(steps):
            cout = 1 if i == steps - 1 else 16
            shapes |= {f"{name}.features.{3 * i}.weight": (cout, cin, 1, 1),
                       f"{name}.features.{3 * i}.bias": (cout,),
                       f"{name}.features.{3 * i + 2}.weight": (cout, cout, k, k),
                       f"{name}.features.{3 * i + 2}.bias": (cout,)}
            cin = cout
    return shapes


def check_dexined(state: dict, source: str = "checkpoint") -> dict:
    """The DexiNed state dict as float tensors, after checking every key and shape (`WeightsError`)."""
    state = check_state_dict(state, dexined_layout(), source, "a DexiNed checkpoint",
                             f"use the released dexined.pth ({DEXINED_WEIGHTS})")
    return {k: v.float() for k, v in state.items() if not k.endswith("num_batches_tracked")}


def dexined_forward(params: dict, x) -> list:
    """DexiNed: mean-subtracted RGB [N,3,H,W] (H, W multiples of 16) -> 7 logit maps [N,1,H,W].

    The six side outputs (1/2 .. 1/16 resolution, upsampled by transposed convolutions) and, last,
    their learned 1x1 fusion.
    """
    import torch
    import torch.nn.functional as F

    def bn(y, p):
        return F.batch_norm(y, params[p + ".running_mean"], params[p + ".running_var"],
                            params[p + ".weight"], params[p + ".bias"], training=False, eps=1e-5)

    def conv(y, p, stride=1, padding=0):
        return F.conv2d(y, params[p + ".weight"], params[p + ".bias"], stride=stride, padding=padding)

    def double(y, name, stride, act):
        y = F.relu(bn(conv(y, f"{name}.conv1", stride, 1), f"{name}.bn1"))
        y = bn(conv(y, f"{name}.conv2", 1, 1), f"{name}.bn2")
        return F.relu(y) if act else y

    def single(y, name, stride=1, norm=True):
        y = conv(y, f"{name}.conv", stride)
        return bn(y, f"{name}.bn") if norm else y

    def dense(y, skip, name, layers):
        # each layer: conv (padding 2) - bn - ReLU - conv (no padding) - bn on ReLU(y); averaged with the skip
        for i in range(1, layers + 1):
            p = f"{name}.denselayer{i}"
            z = F.relu(bn(conv(F.relu(y), f"{p}.conv1", 1, 2), f"{p}.norm1"))
            y = 0.5 * (bn(conv(z, f"{p}.conv2"), f"{p}.norm2") + skip)
        return y

    def up(y, name, steps):
        for i in range(steps):
            y = F.relu(conv(y, f"{name}.features.{3 * i}"))
            p = f"{name}.features.{3 * i + 2}"
            y = F.conv_transpose2d(y, params[p + ".weight"], params[p + ".bias"], stride=2,
                                   padding=DEXINED_UP_PAD[steps])
        return y

    def pool(y):
        return F.max_pool2d(y, kernel_size=3, stride=2, padding=1)

    b1 = double(x, "block_1", 2, True)
    b2 = double(b1, "block_2", 1, False)
    b2_down = pool(b2)
    b2_add = b2_down + single(b1, "side_1", 2)
    b3 = dense(b2_add, single(b2_down, "pre_dense_3"), "dblock_3", 2)
    b3_down = pool(b3)
    b3_add = b3_down + single(b2_add, "side_2", 2)
    b4 = dense(b3_add, single(b3_down, "pre_dense_4"), "dblock_4", 3)
    b4_down = pool(b4)
    b4_add = b4_down + single(b3_add, "side_3", 2)
    b5 = dense(b4_add, single(b4_down, "pre_dense_5"), "dblock_5", 3)
    b5_add = b5 + single(b4_add, "side_4")
    b6 = dense(b5_add, single(b5, "pre_dense_6"), "dblock_6", 3)
    sides = [up(b, name, steps) for b, (name, _, steps) in zip((b1, b2, b3, b4, b5, b6), DEXINED_UP)]
    return sides + [single(torch.cat(sides, dim=1), "block_cat", norm=False)]


def dexined_edges(outputs: list, encoding: str):
    """DexiNed's 7 logit maps [N,1,H,W] -> one map [N,1,H,W] in [0, 1].

    "fused": the sigmoid of the fused map (edge probability, high on edges).
    "dronescapes": the extended Dronescapes `edges_dexined` encoding: for each of the 7 sigmoid maps
    s, with a = min(s) and b = max(s) over the frame, 1 - (s - a) * (b - a), averaged over the 7 maps
    (low on edges; the product by (b - a), not a division, is the dataset's).
    """
    import torch

    if encoding == "fused":
        return torch.sigmoid(outputs[-1])
    s = torch.sigmoid(torch.cat(outputs, dim=1))
    a = s.amin(dim=(-2, -1), keepdim=True)
    b = s.amax(dim=(-2, -1), keepdim=True)
    return (1 - (s - a) * (b - a)).mean(dim=1, keepdim=True)


@register_expert("edges/dexined")
class DexiNed(Expert):
    """DexiNed edges, float16 [N,H,W,1] in [0,1]: the Dronescapes encoding (low on edges) or the fused
    edge probability (see `dexined_edges`). Computed on the frame resized to `size` x `size` (512 as
    the dataset; a multiple of 16), the map resized back bilinearly."""

    batch_size = 2
    uses_torch = True
    net: dict | None = None

    def __init__(self, encoding: Literal["dronescapes", "fused"] = "dronescapes", size: int = DEXINED_SIZE):
        if encoding not in ("dronescapes", "fused"):
            raise ValueError(f"encoding must be dronescapes or fused, got {encoding!r}")
        if size < 16 or size % 16:
            raise ValueError(f"size must be a positive multiple of 16, got {size}")
        self.encoding, self.size = encoding, size

    def output(self, deps):
        return OutputSpec(channels=1, kind="features", dtype="float16", value_range=(0, 1),
                          extra={"encoding": self.encoding})

    def setup(self, device):
        import torch

        self.device = device
        checkpoint = load_checkpoint(weights_file(self, f"a path to dexined.pth, or {DEXINED_WEIGHTS}#sha256=<its sha256>"))
        state = checkpoint.get("state_dict", checkpoint)
        params = check_dexined(state, source=str(self.weights_path))
        self.net = {k: v.to(device) for k, v in params.items()}
        self.mean = torch.tensor(DEXINED_MEAN, device=device).view(1, 3, 1, 1)

    def __call__(self, frames, deps):
        import cv2

        import torch

        n, h, w, _ = frames.shape
        size = (self.size, self.size)
        small = np.stack([cv2.resize(f, size, interpolation=cv2.INTER_LINEAR) for f in frames])
        with inference(self.device, self.dtype):
            x = frames_to_tensor(small, self.device).float() - self.mean
            edges = dexined_edges(dexined_forward(self.net, x), self.encoding).float()
        edges = edges[:, 0].cpu().numpy()
        out = np.stack([cv2.resize(e, (w, h), interpolation=cv2.INTER_LINEAR) for e in edges])
        return np.clip(out, 0, 1)[..., None].astype(np.float16)

    def teardown(self):
        self.net = None
