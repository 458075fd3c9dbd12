"""`vre preview`: a collage of every modality of a store, one tile per modality, as MP4 or PNG.

Each modality is drawn by its kind (the array attrs' `kind`) with a pure `colorize` function, shrunk
to a tile of at most `MAX_TILE` pixels a side, labelled with its name; a frame a modality has not
computed yet is a grey tile saying "missing". Semantic modalities get a legend tile of class colours,
flow a tile of its colour wheel.
"""
from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np

from video_pipeline.errors import StoreError, VreError
from video_pipeline.imageops import resize
from video_pipeline.quantities import grows_with_distance, quantity_of
from video_pipeline.store import VideoStore

MAX_TILE = 480           # longest tile side in pixels: 10 modalities of 540x960 -> 1920x810
READ_BLOCK = 16          # frames read from the store at once (bounds memory on long videos)
MISSING_GREY = 96
LABEL_BG = (0, 0, 0)
LABEL_FG = (255, 255, 255)
# Colours of the channels of a binary map drawn over the frame (channel c gets colour c mod 6).
MASK_COLOURS = ((255, 48, 48), (48, 220, 48), (64, 128, 255), (255, 220, 0), (255, 0, 255), (0, 230, 230))
MASK_ALPHA = 0.6
# Hue segments of the optical-flow colour wheel (Baker et al., "A Database and Evaluation
# Methodology for Optical Flow", IJCV 2011): red-yellow, yellow-green, green-cyan, cyan-blue,
# blue-magenta, magenta-red; segment lengths make perceptually even steps around the wheel.
WHEEL_SEGMENTS = (15, 6, 4, 11, 13, 6)
# Written into every preview (MP4 `comment` tag, PNG `Software` text): a preview replaces only a
# file that carries it, so it never writes over a video or image it did not make.
PREVIEW_MARK = "video-pipeline preview"


# ------------------------------------------------------------------------------------ colorizing
def robust_range(values: np.ndarray, low_pct: float = 2.0, high_pct: float = 98.0) -> tuple[float, float]:
    """(lo, hi) percentiles of the finite values of any array; (0, 1) when none is finite.

    Percentiles rather than min/max, so a few outlier pixels do not wash the whole frame out.
    """
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return 0.0, 1.0
    lo, hi = np.percentile(finite, (low_pct, high_pct))
    if hi <= lo:  # a constant map
        hi = lo + 1.0
    return float(lo), float(hi)


def normalize(values: np.ndarray, value_range: Sequence[float] | None = None) -> np.ndarray:
    """float [H,W] -> float32 [H,W] in [0, 1], by `value_range` or else `robust_range`; NaN -> 0."""
    values = values.astype(np.float32)
    lo, hi = value_range if value_range is not None else robust_range(values)
    if hi <= lo:
        hi = lo + 1.0
    out = (values - np.float32(lo)) / np.float32(hi - lo)
    return np.nan_to_num(np.clip(out, 0.0, 1.0), nan=0.0)


def apply_colormap(unit: np.ndarray, colormap: int) -> np.ndarray:
    """float [H,W] in [0,1] -> uint8 RGB [H,W,3] through an OpenCV colormap (e.g. COLORMAP_INFERNO)."""
    grey = np.round(unit * 255).astype(np.uint8)
    return np.ascontiguousarray(cv2.applyColorMap(grey, colormap)[..., ::-1])


def depth_to_rgb(depth: np.ndarray, quantity: str | None = None) -> np.ndarray:
    """Depth [H,W] (any unit; NaN where missing) -> uint8 RGB [H,W,3], inferno, normalised per frame.

    The 2nd..98th percentile of the frame spans the colormap (relative and metric depth alike),
    near bright and far dark whatever the `quantity` (inverse depth is drawn as it is, depths
    reversed; None: drawn as it is); missing pixels are black.
    """
    missing = ~np.isfinite(depth)
    shade = normalize(depth)
    if quantity is not None and grows_with_distance(quantity):
        shade = 1.0 - shade
    rgb = apply_colormap(shade, cv2.COLORMAP_INFERNO)
    rgb[missing] = 0
    return rgb


def normals_to_rgb(normals: np.ndarray) -> np.ndarray:
    """Normals [H,W,3] stored as (n + 1) / 2 in [0, 1] -> uint8 RGB [H,W,3] (x->R, y->G, z->B)."""
    return np.round(np.clip(np.nan_to_num(normals[..., :3], nan=0.5), 0, 1) * 255).astype(np.uint8)


def default_palette(n_classes: int) -> np.ndarray:
    """uint8 [n_classes, 3]: distinct colours for a semantic map stored without a palette."""
    hues = (np.arange(n_classes) * 0.618034 % 1.0 * 180).astype(np.uint8)  # golden-ratio hue steps
    hsv = np.stack([hues, np.full_like(hues, 200), np.full_like(hues, 230)], axis=-1)[None]
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0]


def semantic_to_rgb(labels: np.ndarray, palette: np.ndarray) -> np.ndarray:
    """Class map -> uint8 RGB [H,W,3] by `palette` (uint8 [K,3]).

    labels: integer [H,W] or [H,W,1] class indices, or float [H,W,K] class probabilities (argmax).
    Indices >= K (255 is the store's "not computed" fill) are black.
    """
    if labels.ndim == 3 and labels.shape[-1] > 1:
        labels = np.nan_to_num(labels.astype(np.float32), nan=-1.0).argmax(axis=-1)
    elif labels.ndim == 3:
        labels = labels[..., 0]
    labels = labels.astype(np.int64)
    table = np.zeros((max(len(palette), int(labels.max(initial=0)) + 1), 3), dtype=np.uint8)
    table[:len(palette)] = palette
    return table[labels]


def binary_to_rgb(mask: np.ndarray, frame: np.ndarray | None = None) -> np.ndarray:
    """Binary map [H,W,C] (1 = on; 0 and the 255 fill = off) -> uint8 RGB [H,W,3].

    Drawn over `frame` (uint8 RGB [H,W,3]) when given, each channel in its `MASK_COLOURS` entry at
    `MASK_ALPHA`; on black, fully opaque, without a frame.
    """
    h, w = mask.shape[:2]
    base = frame.astype(np.float32) if frame is not None else np.zeros((h, w, 3), np.float32)
    alpha = MASK_ALPHA if frame is not None else 1.0
    out = base.copy()
    for c in range(mask.shape[-1]):
        on = mask[..., c] == 1
        colour = np.asarray(MASK_COLOURS[c % len(MASK_COLOURS)], np.float32)
        out[on] = (1 - alpha) * base[on] + alpha * colour
    return np.round(out).astype(np.uint8)


def flow_wheel() -> np.ndarray:
    """float32 [55, 3] in [0, 1]: RGB colours around the optical-flow colour wheel (WHEEL_SEGMENTS)."""
    ramps = []
    # (channel that ramps, direction, channel held at 1) for each segment, going round the hues.
    for n, (ramp, up, held) in zip(WHEEL_SEGMENTS, ((1, True, 0), (0, False, 1), (2, True, 1),
                                                    (1, False, 2), (0, True, 2), (2, False, 0))):
        seg = np.zeros((n, 3), np.float32)
        step = np.floor(255 * np.arange(n) / n) / 255
        seg[:, ramp] = step if up else 1 - step
        seg[:, held] = 1
        ramps.append(seg)
    return np.concatenate(ramps)


def flow_to_rgb(flow: np.ndarray, max_magnitude: float | None = None) -> np.ndarray:
    """Optical flow [H,W,2] (dx, dy in pixels) -> uint8 RGB [H,W,3] by the standard colour wheel.

    Hue is the direction of motion; saturation grows with the magnitude, from white (no motion) to
    the full wheel colour at `max_magnitude` (default: the largest finite magnitude of the frame);
    longer vectors are darkened. NaN vectors are black.
    """
    u, v = flow[..., 0].astype(np.float32), flow[..., 1].astype(np.float32)
    missing = ~(np.isfinite(u) & np.isfinite(v))
    u, v = np.where(missing, 0, u), np.where(missing, 0, v)
    magnitude = np.hypot(u, v)
    if max_magnitude is None:
        max_magnitude = float(magnitude.max(initial=0.0))
    radius = magnitude / max(max_magnitude, 1e-6)
    wheel = flow_wheel()
    position = (np.arctan2(-v, -u) / np.pi + 1) / 2 * (len(wheel) - 1)  # angle -> [0, 54]
    k0 = np.floor(position).astype(np.int64)
    k1 = (k0 + 1) % len(wheel)
    frac = (position - k0)[..., None]
    colour = (1 - frac) * wheel[k0] + frac * wheel[k1]
    r = radius[..., None]
    colour = np.where(r <= 1, 1 - r * (1 - colour), colour * 0.75)
    rgb = np.round(colour * 255).astype(np.uint8)
    rgb[missing] = 0
    return rgb


def flow_legend(size: int) -> np.ndarray:
    """uint8 RGB [size, size, 3]: the colour wheel `flow_to_rgb` draws, as a key: the colour at
    offset (dx, dy) from the centre is that of a vector (dx, dy) (image axes: y down), the rim is
    the frame's largest motion; outside the disc dark grey."""
    half = (size - 1) / 2
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    flow = np.stack([(xx - half) / half, (yy - half) / half], axis=-1)
    rgb = flow_to_rgb(flow, max_magnitude=1.0)
    rgb[np.hypot(flow[..., 0], flow[..., 1]) > 1] = 32
    return rgb


def flow_legend_tile(size: tuple[int, int], title: str) -> np.ndarray:
    """uint8 [h,w,3]: `flow_legend` centred on a dark tile labelled `title`."""
    h, w = size
    tile = np.full((h, w, 3), 32, dtype=np.uint8)
    side = max(2, min(h - 24, w - 8))
    y, x = h - side - 4, (w - side) // 2
    tile[y:y + side, x:x + side] = flow_legend(side)
    draw_label(tile, title)
    return tile


def features_to_rgb(arr: np.ndarray, value_range: Sequence[float] | None = None) -> np.ndarray:
    """Any map [H,W,C] -> uint8 RGB [H,W,3]: one channel through viridis, or the first three as RGB.

    Values are normalised by `value_range` when known, else per channel by `robust_range`.
    """
    if arr.shape[-1] < 3:
        return apply_colormap(normalize(arr[..., 0], value_range), cv2.COLORMAP_VIRIDIS)
    channels = [normalize(arr[..., c], value_range) for c in range(3)]
    return np.round(np.stack(channels, axis=-1) * 255).astype(np.uint8)


def image_to_rgb(arr: np.ndarray, value_range: Sequence[float] | None = None) -> np.ndarray:
    """Picture [H,W,C] -> uint8 RGB [H,W,3]: uint8 as is (grey replicated), floats by `value_range`."""
    if arr.dtype != np.uint8:
        arr = np.round(normalize_channels(arr, value_range) * 255).astype(np.uint8)
    if arr.shape[-1] < 3:
        return np.repeat(arr[..., :1], 3, axis=-1)
    return np.ascontiguousarray(arr[..., :3])


def normalize_channels(arr: np.ndarray, value_range: Sequence[float] | None) -> np.ndarray:
    """float [H,W,C] -> float32 [H,W,C] in [0, 1], channel by channel (see `normalize`)."""
    return np.stack([normalize(arr[..., c], value_range) for c in range(arr.shape[-1])], axis=-1)


def colorize(arr: np.ndarray, attrs: Mapping, frame: np.ndarray | None = None) -> np.ndarray:
    """One frame of a modality [H,W,C] -> uint8 RGB [H,W,3], drawn by `attrs["kind"]`.

    attrs: the array's attrs (`kind`, and `palette`, `classes`, `value_range` when set).
    frame: uint8 RGB [H,W,3] under a binary map (None: the map is drawn on black).
    """
    kind = attrs.get("kind")
    value_range = attrs.get("value_range")
    if kind == "image":
        return image_to_rgb(arr, value_range)
    if kind == "depth":
        return depth_to_rgb(arr[..., 0].astype(np.float32), quantity_of(attrs))
    if kind == "normals":
        return normals_to_rgb(arr.astype(np.float32))
    if kind == "semantic":
        return semantic_to_rgb(arr, class_palette(attrs, arr))
    if kind == "flow":
        return flow_to_rgb(arr)
    if kind == "binary":
        return binary_to_rgb(arr, frame)
    return features_to_rgb(arr, value_range)


def class_palette(attrs: Mapping, arr: np.ndarray | None = None) -> np.ndarray:
    """uint8 [K,3]: the stored palette, or `default_palette` for as many classes as there are."""
    palette = attrs.get("palette") or []
    if palette:
        return np.asarray(palette, dtype=np.uint8).reshape(-1, 3)
    n = len(attrs.get("classes") or [])
    if not n and arr is not None:
        n = arr.shape[-1] if arr.shape[-1] > 1 else 1 + int(arr[arr != 255].max(initial=0))
    return default_palette(max(n, 1))


# ------------------------------------------------------------------------------------ tiles
def tile_size(height: int, width: int, max_side: int = MAX_TILE) -> tuple[int, int]:
    """(h, w) of a tile for frames of height x width: shrunk to `max_side`, even, at least 2."""
    scale = min(1.0, max_side / max(height, width))
    return (max(2, round(height * scale / 2) * 2), max(2, round(width * scale / 2) * 2))


def draw_label(tile: np.ndarray, text: str, origin: str = "top") -> None:
    """Write `text` on `tile` (uint8 [h,w,3], in place) in white on a black band."""
    h, w = tile.shape[:2]
    scale = max(0.35, min(0.7, w / 640))
    (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
    pad = 3
    if origin == "top":
        x, y = pad, th + pad
    else:  # centred
        x, y = max(pad, (w - tw) // 2), (h + th) // 2
    cv2.rectangle(tile, (x - pad, y - th - pad), (min(w - 1, x + tw + pad), y + base + pad - 1), LABEL_BG, -1)
    cv2.putText(tile, text, (x, y), cv2.FONT_HERSHEY_SIMPLEX, scale, LABEL_FG, 1, cv2.LINE_AA)


def missing_tile(size: tuple[int, int], name: str) -> np.ndarray:
    """uint8 [h,w,3]: a grey tile labelled `name` saying "missing" (frame not computed)."""
    tile = np.full((*size, 3), MISSING_GREY, dtype=np.uint8)
    draw_label(tile, "missing", origin="centre")
    draw_label(tile, name)
    return tile


def legend_tile(classes: Sequence[str], palette: np.ndarray, size: tuple[int, int], title: str) -> np.ndarray:
    """uint8 [h,w,3]: colour swatches and class names in as many columns as needed.

    Classes that do not fit are summarised as "+N more" in the last slot.
    """
    h, w = size
    tile = np.full((h, w, 3), 32, dtype=np.uint8)
    draw_label(tile, title)
    scale = max(0.3, min(0.5, w / 900))
    (_, th), _ = cv2.getTextSize("Ag", cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
    row_h, top = th + 8, th + 14
    rows = max(1, (h - top) // row_h)
    longest = max((cv2.getTextSize(c, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)[0][0] for c in classes), default=0)
    col_w = max(longest + row_h + 12, 40)
    slots = rows * max(1, w // col_w)
    shown = len(classes) if len(classes) <= slots else slots - 1
    for i in range(shown):
        x, y = 6 + (i // rows) * col_w, top + (i % rows) * row_h
        colour = tuple(int(v) for v in palette[i]) if i < len(palette) else (0, 0, 0)
        cv2.rectangle(tile, (x, y), (x + row_h - 6, y + row_h - 6), colour, -1)
        cv2.putText(tile, str(classes[i]), (x + row_h, y + th), cv2.FONT_HERSHEY_SIMPLEX, scale,
                    LABEL_FG, 1, cv2.LINE_AA)
    if shown < len(classes):
        x, y = 6 + (shown // rows) * col_w, top + (shown % rows) * row_h
        cv2.putText(tile, f"+{len(classes) - shown} more", (x, y + th), cv2.FONT_HERSHEY_SIMPLEX,
                    scale, LABEL_FG, 1, cv2.LINE_AA)
    return tile


def grid(tiles: Sequence[np.ndarray]) -> np.ndarray:
    """Tiles (uint8 [h,w,3], one size) -> uint8 collage [rows*h, cols*w, 3], cols = ceil(sqrt(n)).

    Empty cells of the last row are black.
    """
    n = len(tiles)
    h, w = tiles[0].shape[:2]
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    out = np.zeros((rows * h, cols * w, 3), dtype=np.uint8)
    for i, tile in enumerate(tiles):
        r, c = divmod(i, cols)
        out[r * h:(r + 1) * h, c * w:(c + 1) * w] = tile
    return out


# ------------------------------------------------------------------------------------ the store
def base_frame_name(attrs: Mapping[str, Mapping]) -> str | None:
    """The modality binary maps are drawn over: the `color/rgb` one, else one named "rgb"."""
    for name, a in attrs.items():
        if a.get("type") == "color/rgb":
            return name
    return "rgb" if "rgb" in attrs and attrs["rgb"].get("kind") == "image" else None


def collage_frames(store: VideoStore, frames: np.ndarray):
    """Yield one uint8 collage [H', W', 3] (even sides) per frame index of `frames` (int64 [K])."""
    names = store.names
    if not names:
        raise StoreError(f"{store.path}: has no modalities to preview; run `vre run RECIPE VIDEO -o "
                         f"{store.path}` first")
    attrs = {n: dict(store.array(n).attrs) for n in names}
    height, width = store.array(names[0]).shape[1:3]
    size = tile_size(height, width)
    done = {n: store.done_frames(n) for n in names}
    base = base_frame_name(attrs)
    legends = {n: legend_tile(a["classes"], class_palette(a), size, f"{n}: classes")
               for n, a in attrs.items() if a.get("kind") == "semantic" and a.get("classes")}
    legends.update({n: flow_legend_tile(size, f"{n}: direction, speed")
                    for n, a in attrs.items() if a.get("kind") == "flow"})
    for start in range(0, len(frames), READ_BLOCK):
        block = frames[start:start + READ_BLOCK]
        data = {n: resize(store.read(n, block), size, attrs[n].get("kind", "features")) for n in names}
        for k, index in enumerate(block):
            frame = data[base][k] if base is not None and done[base][index] else None
            tiles = []
            for n in names:
                if done[n][index]:
                    tiles.append(colorize(data[n][k], attrs[n], frame))
                    draw_label(tiles[-1], n)
                else:
                    tiles.append(missing_tile(size, n))
                if n in legends:  # also beside a missing tile: every collage has the same layout
                    tiles.append(legends[n])
            draw_label(tiles[0], f"{names[0]}  frame {index}")
            yield grid(tiles)


def make_preview(store: VideoStore, out: Path, frames: np.ndarray | None = None) -> Path:
    """Write the collage of `store` to `out`: every frame of `frames` as an MP4, or one frame as PNG.

    frames: int64 frame indices (default: every frame; for a PNG the middle frame). A PNG shows the
    first of `frames`. The MP4 is H.264 (yuv420p) at the video's frame rate.
    """
    out = Path(out)
    suffix = out.suffix.lower()
    if suffix not in (".mp4", ".png"):
        raise VreError(f"{out}: preview is written as .mp4 (every frame) or .png (one frame); "
                       f"choose such a name with -o")
    check_output(store, out)
    n = store.n_frames
    if frames is None:
        frames = np.array([n // 2]) if suffix == ".png" else np.arange(n)
    frames = np.asarray(frames, dtype=np.int64)
    if not len(frames) or frames.min() < 0 or frames.max() >= n:
        raise VreError(f"{store.path}: frames to preview must lie in 0..{n - 1}")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        if suffix == ".png":
            write_png(out, next(collage_frames(store, frames[:1])))
        else:
            fps = float((store.meta.get("video") or {}).get("fps") or 24.0)
            write_mp4(out, collage_frames(store, np.unique(frames)), fps)
    except OSError as err:
        raise VreError(f"{out}: cannot write the preview ({err.strerror or err}); "
                       f"choose another -o") from None
    return out


def default_output(store_path: Path) -> Path:
    """`<store folder without .zarr>.preview.mp4` beside the store: never the name of its video
    (`vre run r.yaml flight.mp4` makes `flight.zarr`, whose preview is `flight.preview.mp4`)."""
    store_path = Path(store_path)
    stem = store_path.name[:-5] if store_path.name.endswith(".zarr") else store_path.name
    return store_path.with_name(f"{stem}.preview.mp4")


def written_by_preview(path: Path) -> bool:
    """Whether the file at `path` is a preview this module wrote (it carries PREVIEW_MARK)."""
    try:
        if path.suffix.lower() == ".png":
            from PIL import Image

            with Image.open(path) as image:
                return getattr(image, "text", {}).get("Software") == PREVIEW_MARK
        import av

        with av.open(str(path)) as container:
            return container.metadata.get("comment") == PREVIEW_MARK
    except Exception:  # unreadable, not an image or video: not ours
        return False


def check_output(store: VideoStore, out: Path) -> None:
    """VreError unless writing the preview to `out` destroys nothing the user made: `out` must not
    be the store's source video, and an existing file there must be an earlier preview."""
    source = (store.meta.get("video") or {}).get("path")
    if source and out.exists() and Path(source).exists() and os.path.samefile(out, source):
        raise VreError(f"{out}: is the video store {store.path} was made from; choose another -o")
    if out.is_dir():
        raise VreError(f"{out}: is a folder; name the preview file with -o FILE.mp4 or FILE.png")
    if out.exists() and not written_by_preview(out):
        raise VreError(f"{out}: exists and was not written by `vre preview`; vre never writes over "
                       f"a file it did not make: choose another -o or move that file")


def write_png(path: Path, image: np.ndarray) -> None:
    """Save uint8 RGB [H,W,3] as a PNG carrying PREVIEW_MARK (temporary file, then rename)."""
    from PIL import Image, PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_text("Software", PREVIEW_MARK)
    partial = path.with_name(path.name + f".{os.getpid()}.partial")
    try:
        Image.fromarray(np.ascontiguousarray(image)).save(partial, format="PNG", pnginfo=info)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


def write_mp4(path: Path, images, fps: float) -> None:
    """Encode uint8 RGB images [H,W,3] (one size, even sides) as H.264 yuv420p at `fps`.

    Written to `<path>.partial` and renamed, so an interrupted preview leaves no broken file.
    """
    import av

    partial = path.with_name(path.name + f".{os.getpid()}.partial")
    try:
        with av.open(str(partial), "w", format="mp4") as container:
            container.metadata["comment"] = PREVIEW_MARK
            stream = None
            for image in images:
                if stream is None:
                    stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
                    stream.height, stream.width = image.shape[:2]
                    stream.pix_fmt = "yuv420p"
                    stream.options = {"crf": "20", "preset": "veryfast"}
                for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
