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
    from PIL import Image, ImageDraw  # here: loading the expert registry stays cheap (`vre run`'s start-up)

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


# --- generalized boundaries (Leordeanu, Sukthankar, Sminchisescu, ECCV 2012) ------------------------
# The soft segmentation of the extended Dronescapes `softseg_gb` node: the frame, shrunk so its long side
# is `internal_size`, is quantised into 15 x 11 x 7 HSV colour bins; a PCA over which colours occur
# together in 16x16 patches gives the image's main colour "themes"; every patch of a sparser grid (step
# 30) turns into one map per pixel (how strongly the pixel's colour goes with that patch's theme); a
# second PCA over those maps keeps the first `max_channels` components: the soft segmentation layers.
# Both PCAs sort their eigenvectors by eigenvalue (largest first) and fix each one's sign, so the result
# is deterministic (VRE takes LAPACK's unsorted order, see docs/dronescapes.md).

GB_BINS = (15, 11, 7)  # hue, saturation, value
GB_WINDOW = 16  # reference patch side (pixels of the shrunk frame)
GB_SAMPLE_STEP = 30  # grid step of the patches whose maps make the layers
GB_RGB_STEP = 3  # grid step of the pixels the RGB fit (`adjust_to_rgb`) samples


def minmax(x: "torch.Tensor", dims: tuple[int, ...]) -> "torch.Tensor":
    """Scale `x` to [0, 1] over `dims` (min -> 0, max -> 1; a flat block -> 0); any shape."""
    import torch
    lo, hi = x.amin(dim=dims, keepdim=True), x.amax(dim=dims, keepdim=True)
    return (x - lo) / (hi - lo + torch.finfo(x.dtype).eps)


def rgb_to_hsv01(rgb: "torch.Tensor") -> "torch.Tensor":
    """float RGB [N,3,H,W] in [0, 1] -> HSV [N,3,H,W], each in [0, 1] (hue / 360); grey has hue 0-ish."""
    import torch
    eps = 1e-10
    r, g, b = rgb.unbind(1)
    hi = rgb.amax(1)
    span = hi - rgb.amin(1) + eps
    # the hexcone hue, written from the smallest channel's side (ties: the first smallest of r, g, b)
    first = rgb.argmin(1)
    hue = torch.stack([60 * (b - g) / span + 180, 60 * (r - b) / span + 300,
                       60 * (g - r) / span + 60]).gather(0, first[None])[0]
    return torch.stack([hue / 360, span / (hi + eps), hi], dim=1)


def colour_bins(hsv: "torch.Tensor") -> "torch.Tensor":
    """HSV [N,3,H,W] -> long [N,H,W]: bin index in 0..15*11*7-1 (per-channel min-max scaled first)."""
    import torch
    hsv = minmax(hsv, (2, 3))
    nh, ns, nv = GB_BINS
    h, s, v = (torch.round(hsv[:, i] * (n - 1) + 1) - 1 for i, n in enumerate(GB_BINS))
    return torch.round(h + s * nh + v * nh * ns).long()


def patch_grid(h: int, w: int, step: int) -> tuple[np.ndarray, np.ndarray]:
    """Centres (ys, xs), each [P], of the GB_WINDOW patches on a `step` grid inside an h x w image."""
    half = GB_WINDOW // 2
    xs, ys = np.meshgrid(np.arange(half, w - half, step), np.arange(half, h - half, step), indexing="ij")
    return ys.ravel(), xs.ravel()


def patch_presence(bins: "torch.Tensor", ys: np.ndarray, xs: np.ndarray) -> "torch.Tensor":
    """long bins [H,W] and centres [P] -> float [P, n_bins]: 1 where the colour occurs in the patch."""
    import torch
    half = GB_WINDOW // 2
    out = torch.zeros(len(ys), int(np.prod(GB_BINS)), dtype=torch.float32)
    for i, (y, x) in enumerate(zip(ys, xs)):
        out[i, bins[y - half:y + half, x - half:x + half].reshape(-1)] = 1.0
    return out


def sorted_eigh(gram: "torch.Tensor") -> tuple["torch.Tensor", "torch.Tensor"]:
    """Symmetric [D,D] -> (eigenvalues [D] largest first, eigenvectors [D,D] as columns), each column's
    largest-magnitude entry made positive (a deterministic sign)."""
    import torch
    values, vectors = torch.linalg.eigh(gram.double())  # float32 LAPACK fails on the many zero eigenvalues
    values, vectors = values.flip(0).float(), vectors.flip(1).float()
    peak = vectors.abs().argmax(0)
    signs = torch.sign(vectors[peak, torch.arange(vectors.shape[1])])
    return values, vectors * torch.where(signs == 0, 1.0, signs)


def theme_maps(bins: "torch.Tensor") -> "torch.Tensor":
    """long colour bins [H,W] -> float [K,H,W]: one map per sampled patch (K patches on the
    GB_SAMPLE_STEP grid), the share in [0, 1] of each pixel's colour that goes with the patch's theme."""
    import torch
    h, w = bins.shape
    presence = patch_presence(bins, *patch_grid(h, w, GB_WINDOW // 2))
    mean = presence.mean(0, keepdim=True)
    centred = presence - mean
    # colours no reference patch holds add only zero rows and columns: decompose the rest
    seen = torch.nonzero(presence.any(0))[:, 0]
    values, vectors = sorted_eigh(centred[:, seen].T @ centred[:, seen])
    energy = values.cumsum(0)
    # fewest components past half the energy; none for a one-colour frame (every map is then 0.5)
    keep = int((energy > energy[-1] * 0.5).nonzero()[0]) + 1 if energy[-1] > 0 else 0
    basis = torch.zeros(presence.shape[1], keep)
    basis[seen] = vectors[:, :keep]
    samples = patch_presence(bins, *patch_grid(h, w, GB_SAMPLE_STEP)) - mean
    theme = (samples @ basis) @ basis.T  # [K, n_bins]
    high, low = (mean + theme).clamp(min=0), (mean - theme).clamp(min=0)
    share = high / (high + low + torch.finfo(torch.float32).eps)
    return share[:, bins.reshape(-1)].reshape(-1, h, w)


def median3(x: "torch.Tensor") -> "torch.Tensor":
    """[C,H,W] -> [C,H,W]: 3x3 median, the border padded with zeros."""
    import torch
    h, w = x.shape[1:]
    padded = torch.nn.functional.pad(x, (1, 1, 1, 1))
    shifts = [padded[:, dy:dy + h, dx:dx + w] for dy in range(3) for dx in range(3)]
    return torch.stack(shifts).median(0).values


def fit_to_rgb(layers: "torch.Tensor", rgb: "torch.Tensor") -> "torch.Tensor":
    """layers [C,H,W], rgb [3,H,W] -> [3,H,W]: the affine map of the layers that best fits the colours
    (least squares over the pixels of a GB_RGB_STEP grid), applied everywhere."""
    import torch
    c, h, w = layers.shape
    design = torch.cat([layers, torch.ones(1, h, w)]).reshape(c + 1, -1).T  # [H*W, C+1]
    ys, xs = torch.meshgrid(torch.arange(0, h - GB_RGB_STEP, GB_RGB_STEP),
                            torch.arange(0, w - GB_RGB_STEP, GB_RGB_STEP), indexing="ij")
    picked = (ys * w + xs).reshape(-1)
    coef = torch.linalg.lstsq(design[picked], rgb.reshape(3, -1).T[picked]).solution  # [C+1, 3]
    return (design @ coef).T.reshape(3, h, w)


def generalized_boundaries(frames: np.ndarray, max_channels: int, median_filter: bool,
                           adjust_to_rgb: bool, internal_size: int = 300) -> np.ndarray:
    """uint8 RGB [N,H,W,3] -> float32 [N,H,W,C] in [0, 1] (C = 3 if adjust_to_rgb else max_channels):
    the generalized-boundaries soft segmentation, computed at `internal_size` on the long side,
    resized back bicubically and min-max scaled over the whole frame's block."""
    import torch
    import torch.nn.functional as F
    n, h, w = frames.shape[:3]
    x = minmax(torch.from_numpy(frames).float().permute(0, 3, 1, 2) / 255, (2, 3))
    small = F.interpolate(x, scale_factor=internal_size / max(h, w), mode="nearest", recompute_scale_factor=False)
    bins = colour_bins(rgb_to_hsv01(small))
    out = []
    for i in range(n):
        maps = theme_maps(bins[i])
        k, sh, sw = maps.shape
        if k < max_channels:
            raise ValueError(f"the frame gives {k} patch maps, fewer than max_channels={max_channels}")
        flat = maps.reshape(k, -1)
        flat = flat - flat.mean(1, keepdim=True)
        _, vectors = sorted_eigh(flat @ flat.T)
        layers = (flat.T @ vectors[:, :max_channels]).T.reshape(max_channels, sh, sw)
        if median_filter:
            layers = median3(layers)
        if adjust_to_rgb:
            layers = fit_to_rgb(layers, small[i])
        out.append(layers)
    seg = F.interpolate(torch.stack(out), size=(h, w), mode="bicubic", align_corners=False)
    return minmax(seg, (1, 2, 3)).permute(0, 2, 3, 1).numpy()


def layer_boundaries(layers: np.ndarray) -> np.ndarray:
    """float [N,H,W,C] soft-segmentation layers -> float32 [N,H,W,1] in [0, 1]: the generalized
    boundary strength, sqrt of the largest eigenvalue of the 2x2 matrix sum_c grad(L_c) grad(L_c)^T
    (central differences), divided by the frame's largest value (a frame with no boundary is all 0)."""
    layers = layers.astype(np.float32)
    gy, gx = np.gradient(layers, axis=(1, 2))
    a, b, c = (gx * gx).sum(-1), (gx * gy).sum(-1), (gy * gy).sum(-1)
    strength = np.sqrt(np.maximum((a + c) / 2 + np.sqrt(((a - c) / 2) ** 2 + b * b), 0))
    peak = strength.reshape(len(strength), -1).max(1).reshape(-1, 1, 1)
    return (strength / np.where(peak > 0, peak, 1))[..., None].astype(np.float32)


@register_expert("softseg/generalized-boundaries")
class GeneralizedBoundaries(Expert):
    """Generalized-boundaries soft segmentation (Leordeanu et al., ECCV 2012): float16 [N,H,W,C] in
    [0, 1], as the extended Dronescapes `softseg_gb` node (VRE's defaults there: median filtering on,
    fitted to RGB, 3 channels). `max_channels`: number of layers kept (at most the number of sampled
    patches, ~50 for a 16:9 frame); `adjust_to_rgb`: output the affine fit of the layers to the frame's
    colours (3 channels) instead of the `max_channels` layers; `median_filtering`: 3x3 median on them.
    About 1 s per frame on one CPU core at any frame size (the work is done at 300 px on the long side).
    """

    batch_size = 4

    def __init__(self, max_channels: int = 3, median_filtering: bool = True, adjust_to_rgb: bool = True):
        if not 1 <= max_channels <= 60:
            raise ValueError(f"max_channels must be in 1..60, got {max_channels}")
        self.max_channels, self.median_filtering, self.adjust_to_rgb = max_channels, median_filtering, adjust_to_rgb

    def output(self, deps):
        return OutputSpec(channels=3 if self.adjust_to_rgb else self.max_channels, kind="features",
                          dtype="float16", value_range=(0.0, 1.0))

    def __call__(self, frames, deps):
        return generalized_boundaries(frames, self.max_channels, self.median_filtering,
                                      self.adjust_to_rgb).astype(np.float16)


@register_expert("edges/generalized-boundaries")
class GeneralizedBoundaryEdges(Expert):
    """Boundaries of a soft segmentation (its one dependency, e.g. `softseg/generalized-boundaries`):
    float16 [N,H,W,1] in [0, 1], the generalized boundary strength of the layers (see
    `layer_boundaries`), the `edges_gb` node. No parameters."""

    n_deps = 1
    dep_kinds = ("features",)

    def output(self, deps):
        return OutputSpec(channels=1, kind="features", dtype="float16", value_range=(0.0, 1.0))

    def __call__(self, frames, deps):
        return layer_boundaries(deps[self.deps[0]]).astype(np.float16)
