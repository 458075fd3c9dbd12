"""Synthetic videos for tests and `vre demo`: moving scenes, virtual flights over a photo, broken files.

Every generator is deterministic. Frames are uint8 [N, H, W, 3] RGB. Clips are written with PyAV;
the container follows the file suffix (.mp4, .mkv, .avi, or .h264 for a raw H.264 stream).
"""
from __future__ import annotations

import struct
from collections.abc import Iterable
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

STAMP_BITS = 10  # frame numbers 0..1023 fit in the stamp
PERIOD = 96  # frames of one cycle of the synthetic camera path


def scene_frames(n_frames: int = 48, size: tuple[int, int] = (180, 320), seed: int = 0,
                 stamp: bool = False) -> np.ndarray:
    """A smooth synthetic camera move over a textured world, uint8 [N, H, W, 3].

    The world mixes smooth colour noise, fine texture and sharp-edged shapes (so edges and optical
    flow are non-trivial); the camera drifts on a smooth loop of PERIOD frames (a few pixels per
    frame) with a slight rotation, and a disc crosses the scene on its own path. `stamp` writes
    each frame's number into the top band (see `stamp_number`).
    """
    rng = np.random.default_rng(seed)
    h, w = size
    wh, ww = 2 * h, 2 * w
    world = cv2.resize(rng.uniform(0, 255, (6, 10, 3)).astype(np.float32), (ww, wh),
                       interpolation=cv2.INTER_CUBIC)
    fine = cv2.GaussianBlur(rng.normal(0, 120, (wh, ww, 1)).astype(np.float32), (0, 0), 1.5)
    world = world + fine.reshape(wh, ww, 1)
    for _ in range(24):
        colour = tuple(float(c) for c in rng.uniform(0, 255, 3))
        cy, cx = int(rng.uniform(0, wh)), int(rng.uniform(0, ww))
        r = int(rng.uniform(0.03, 0.12) * min(wh, ww))
        if rng.uniform() < 0.5:
            cv2.circle(world, (cx, cy), r, colour, -1)
        else:
            cv2.rectangle(world, (cx - r, cy - r // 2), (cx + r, cy + r // 2), colour, -1)
    world = np.clip(world, 0, 255).astype(np.uint8)
    phase = rng.uniform(0, 2 * np.pi)
    disc_colour = tuple(float(c) for c in rng.uniform(0, 255, 3))
    out = np.empty((n_frames, h, w, 3), np.uint8)
    for t in range(n_frames):
        s = t / PERIOD  # the motion per frame does not depend on the clip's length
        # camera centre in world pixels, moving smoothly; small rotation about it
        cx = ww / 2 + 0.25 * w * np.sin(2 * np.pi * s + phase)
        cy = wh / 2 + 0.25 * h * np.sin(np.pi * s + phase)
        rot = cv2.getRotationMatrix2D((cx, cy), 6.0 * np.sin(2 * np.pi * s), 1.0)
        rot[:, 2] -= (cx - w / 2, cy - h / 2)
        frame = cv2.warpAffine(world, rot, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        disc = (int(w * (0.1 + 0.8 * (s % 1))), int(h * (0.7 - 0.4 * (s % 1))))
        cv2.circle(frame, disc, max(3, h // 10), disc_colour, -1, lineType=cv2.LINE_AA)
        if stamp:
            stamp_number(frame, t)
        out[t] = frame
    return out


def stamp_number(frame: np.ndarray, number: int) -> None:
    """Write `number` (0..1023) into the top band of `frame` [H, W, 3] in place.

    The band is the top H/8 rows split into 10 equal columns, one bit each (most significant first):
    white for 1, black for 0. Big blocks survive lossy coding and resizing; `read_stamp` reads it.
    """
    if not 0 <= number < 2 ** STAMP_BITS:
        raise ValueError(f"stamp number must be in 0..{2 ** STAMP_BITS - 1}, got {number}")
    h, w = frame.shape[:2]
    band = max(h // 8, 2)
    edges = np.linspace(0, w, STAMP_BITS + 1).round().astype(int)
    for bit in range(STAMP_BITS):
        on = (number >> (STAMP_BITS - 1 - bit)) & 1
        frame[:band, edges[bit]:edges[bit + 1]] = 255 * on


def read_stamp(frame: np.ndarray) -> int:
    """The number `stamp_number` wrote into `frame` [H, W, 3] (any resolution of the same frame)."""
    h, w = frame.shape[:2]
    band = max(h // 8, 2)
    edges = np.linspace(0, w, STAMP_BITS + 1)
    width = edges[1] - edges[0]
    rows = slice(band // 4, max(3 * band // 4, band // 4 + 1))
    number = 0
    for left in edges[:-1]:
        # the middle of each block: away from the blur of lossy coding at block edges
        cols = slice(int(left + 0.3 * width), int(left + 0.7 * width))
        number = 2 * number + int(frame[rows, cols].mean() > 127)
    return number


def make_clip(path: str | Path, n_frames: int = 48, size: tuple[int, int] = (180, 320), fps: float = 24,
              codec: str = "libx264", seed: int = 0, stamp: bool = False, lossless: bool = False,
              keyint: int = 12) -> Path:
    """Write `scene_frames(n_frames, size, seed, stamp)` as a clip (see `write_clip`); return its path."""
    return write_clip(scene_frames(n_frames, size, seed, stamp), path, fps=fps, codec=codec,
                      lossless=lossless, keyint=keyint)


def write_clip(frames: Iterable[np.ndarray], path: str | Path, fps: float = 24, codec: str = "libx264",
               lossless: bool = False, keyint: int = 12) -> Path:
    """Encode RGB frames uint8 [H, W, 3] to `path`; return the path.

    `codec` is an FFmpeg encoder (libx264 by default: yuv420p, crf 18, B-frames, so H and W must be
    even; mpeg4 for .avi). `lossless=True` encodes with libx264rgb at qp 0: decoded frames equal the
    input exactly. A keyframe at least every `keyint` frames gives random access something to seek
    to. MP4 files get their index at the front (faststart), so a truncated copy still opens.
    """
    path = Path(path)
    fmt = {".h264": "h264", ".264": "h264"}.get(path.suffix.lower())
    options = {"movflags": "faststart"} if path.suffix.lower() in (".mp4", ".mov") else {}
    container = av.open(str(path), "w", format=fmt, options=options)
    try:
        stream = container.add_stream("libx264rgb" if lossless else codec,
                                      rate=Fraction(fps).limit_denominator(1001))
        stream.codec_context.gop_size = keyint
        if lossless:
            stream.pix_fmt, stream.options = "rgb24", {"qp": "0"}
        else:
            stream.pix_fmt = "yuv420p"
            stream.options = {"crf": "18"} if codec == "libx264" else {}
            if codec == "mpeg4":
                stream.codec_context.qscale = 2  # near-lossless MPEG-4 part 2
        started = False
        for frame in frames:
            if not started:
                stream.height, stream.width = frame.shape[:2]
                started = True
            picture = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
            for packet in stream.encode(picture):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    finally:
        container.close()
    return path


def flight_frames(photo: str | Path, n_frames: int, size: tuple[int, int], step: tuple[float, float],
                  start: tuple[float, float] | None = None) -> np.ndarray:
    """A "virtual flight": a window of `size` (H, W) sliding over one photo, uint8 [N, H, W, 3] RGB.

    The window's top-left corner is `start + t * step` (dy, dx in photo pixels; sub-pixel steps are
    interpolated bilinearly, whole-pixel steps are exact crops). `start` defaults to the position that
    centres the path on the photo. The content moves by -step between frames: the ground-truth optical
    flow is `flight_flow(size, step)`.
    """
    image = cv2.imread(str(photo), cv2.IMREAD_COLOR)
    if image is None:
        raise FileNotFoundError(f"{photo}: cannot read the photo")
    image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    ph, pw = image.shape[:2]
    h, w = size
    dy, dx = step
    span_y, span_x = dy * (n_frames - 1), dx * (n_frames - 1)
    if start is None:
        start = ((ph - h - span_y) / 2, (pw - w - span_x) / 2)
    y0, x0 = start
    ys, xs = (y0, y0 + span_y), (x0, x0 + span_x)
    if min(ys) < 0 or min(xs) < 0 or max(ys) + h > ph or max(xs) + w > pw:
        raise ValueError(f"a {h}x{w} window moving {step} px/frame for {n_frames} frames from {start} "
                         f"leaves the {ph}x{pw} photo")
    out = np.empty((n_frames, h, w, 3), np.uint8)
    for t in range(n_frames):
        shift = np.float32([[1, 0, -(x0 + t * dx)], [0, 1, -(y0 + t * dy)]])
        out[t] = cv2.warpAffine(image, shift, (w, h), flags=cv2.INTER_LINEAR)
    return out


def flight_flow(size: tuple[int, int], step: tuple[float, float]) -> np.ndarray:
    """Ground-truth optical flow of `flight_frames` from frame t to t+1: float32 [H, W, 2] (dx, dy)
    in pixels, the same everywhere: the content moves opposite to the window."""
    flow = np.empty((*size, 2), np.float32)
    flow[..., 0], flow[..., 1] = -step[1], -step[0]
    return flow


def make_flight_clip(photo: str | Path, path: str | Path, n_frames: int, size: tuple[int, int],
                     step: tuple[float, float], fps: float = 24, lossless: bool = False,
                     codec: str = "libx264") -> Path:
    """Write `flight_frames(photo, n_frames, size, step)` as a clip (see `write_clip`); return its path."""
    return write_clip(flight_frames(photo, n_frames, size, step), path, fps=fps, codec=codec,
                      lossless=lossless)


def write_image_folder(frames: Iterable[np.ndarray], folder: str | Path, ext: str = ".png") -> Path:
    """Write RGB frames as `folder/frame_00000{ext}`, ... (names sort in frame order); return the folder."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for t, frame in enumerate(frames):
        if not cv2.imwrite(str(folder / f"frame_{t:05d}{ext}"), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR)):
            raise OSError(f"{folder}: cannot write frame {t} as {ext}")
    return folder


# ------------------------------------------------------------------------------------ broken files
def truncate(src: str | Path, dst: str | Path, keep_fraction: float) -> Path:
    """Copy the first `keep_fraction` of the bytes of `src` to `dst` (a download cut short)."""
    data = Path(src).read_bytes()
    dst = Path(dst)
    dst.write_bytes(data[: int(len(data) * keep_fraction)])
    return dst


def miscount_mp4(src: str | Path, dst: str | Path, extra: int = 100) -> Path:
    """Copy an MP4 to `dst` with a header claiming `extra` more frames than the file holds.

    The first entry of the video track's time-to-sample table (`stts`) gets `extra` more samples:
    FFmpeg reports that total as the stream's frame count while the sample sizes (`stsz`), hence
    the packets, stay as they were.
    """
    data = bytearray(Path(src).read_bytes())
    offset = _find_box(data, 0, len(data), (b"moov", b"trak", b"mdia", b"minf", b"stbl", b"stts"))
    if offset is None:
        raise ValueError(f"{src}: no moov/trak/mdia/minf/stbl/stts box (not an MP4 with a video track?)")
    first_count = offset + 16  # box size, type, version+flags, entry count, then (count, delta) pairs
    (count,) = struct.unpack(">I", data[first_count:first_count + 4])
    data[first_count:first_count + 4] = struct.pack(">I", count + extra)
    dst = Path(dst)
    dst.write_bytes(bytes(data))
    return dst


def _find_box(data: bytearray, start: int, end: int, path: tuple[bytes, ...]) -> int | None:
    """Offset of the box reached by following `path` (box types) from data[start:end], or None.

    Walks ISO-BMFF boxes by their 32-bit sizes (enough for the small files written here); the first
    `trak` holding the rest of the path wins, which is the video track of a clip from `write_clip`.
    """
    pos = start
    while pos + 8 <= end:
        size, kind = struct.unpack(">I4s", data[pos:pos + 8])
        if size < 8:
            return None
        if kind == path[0]:
            if len(path) == 1:
                return pos
            found = _find_box(data, pos + 8, pos + size, path[1:])
            if found is not None:
                return found
        pos += size
    return None
