"""The frame reader: a video file or an image folder as exact 0-based frames, decoded in the background.

Frame indices never come from container metadata (frame counts and durations are often wrong):
`FrameIndex` is built by demuxing the packets of the video track once (no decoding) and kept in the
store. Decoded frames are matched to indices by their timestamps, which stays right with B-frames and
after seeks. Random access seeks to the keyframe before the wanted frame and decodes forward.

A truncated or corrupt file keeps every frame that decodes; the index ends with the frame where the
stream breaks, and reading that frame raises `DecodeError` naming it.
"""
from __future__ import annotations

# PyAV and OpenCV are imported where frames are demuxed or decoded: commands that never touch a
# video (and a rerun with nothing to do, until its content check) start without them.
import abc
import hashlib
import queue
import re
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np

from video_pipeline.errors import DecodeError, VideoError, VreError
from video_pipeline.imageops import resize

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
FOLDER_FPS = 1.0  # an image folder has no frame rate; one frame per second keeps times readable


@dataclass(frozen=True, eq=False)
class FrameIndex:
    """Where every frame of a video is: frame i is the one with the i-th smallest timestamp.

    pts: int64 [T] presentation timestamps, ascending (image folder: 0..T-1).
    keyframe: bool [T], frames decoding may start from (image folder: all).
    time_base: seconds per pts unit (image folder: 1 / fps).
    counted: the stream has no usable timestamps (e.g. raw .h264): frame i is the i-th frame decoded
      from the start, pts are 0..T-1 and only frame 0 is a place to start decoding.
    truncated: the stream breaks off (truncated or corrupt) at the last frame, which cannot be read.
    """

    pts: np.ndarray
    keyframe: np.ndarray
    time_base: float
    counted: bool = False
    truncated: bool = False

    def __len__(self) -> int:
        return len(self.pts)

    def to_arrays(self) -> dict[str, np.ndarray]:
        """Arrays to store (`_index/<key>`); `from_arrays` reads them back."""
        return {"pts": self.pts, "keyframe": self.keyframe,
                "counted": np.array([self.counted]), "truncated": np.array([self.truncated])}

    @classmethod
    def from_arrays(cls, d: dict[str, np.ndarray], time_base: float) -> FrameIndex:
        flag = lambda key: bool(np.asarray(d[key]).any()) if key in d else False  # noqa: E731
        return cls(np.asarray(d["pts"], np.int64), np.asarray(d["keyframe"], bool), float(time_base),
                   flag("counted"), flag("truncated"))

    @classmethod
    def regular(cls, n_frames: int, fps: float) -> FrameIndex:
        """The index of an image folder: every frame is a keyframe, one pts unit per frame."""
        return cls(np.arange(n_frames, dtype=np.int64), np.ones(n_frames, bool), 1.0 / fps)

    @cached_property
    def _keyframes(self) -> np.ndarray:
        return np.flatnonzero(self.keyframe)

    def keyframe_before(self, i: int) -> int:
        """The last keyframe at or before frame i (0 when none is: decode from the start)."""
        k = np.searchsorted(self._keyframes, i, side="right")
        return int(self._keyframes[k - 1]) if k else 0

    @cached_property
    def position(self) -> dict[int, int]:
        """pts -> frame index."""
        return {int(p): i for i, p in enumerate(self.pts)}


def demux_index(container: av.container.InputContainer, stream: av.VideoStream) -> FrameIndex:
    """Build the frame index of `stream` by reading its packets (no decoding).

    Flush and discarded packets carry no frame and are skipped. Where the file breaks off (a read
    error, a packet the demuxer marks corrupt, or, in a constant-rate stream, B-frames missing at
    the very end) the index keeps the frames before the break plus one entry for the broken frame.
    """
    import av

    packets = []  # (pts, keyframe, corrupt) in stored (decoding) order
    failed = False
    packed = _packed_bitstream(stream.codec_context.extradata)
    try:
        for packet in container.demux(stream):
            if packet.size and not packet.is_discard:
                if not packets and stream.codec_context.name == "mpeg4":
                    packed = packed or _packed_bitstream(bytes(packet)[:4096])
                packets.append((packet.pts, packet.is_keyframe, packet.is_corrupt))
    except av.FFmpegError:
        failed = True  # unreadable from here on: keep what was read
    if packed:
        return _decoded_index(container, stream)
    timed = [q for q in packets if q[0] is not None]  # stray packets without a pts carry no frame
    p = np.array([q[0] for q in timed], np.int64)
    order = np.argsort(p, kind="stable")
    sorted_pts = p[order]
    if packets and (not timed or np.any(np.diff(sorted_pts) == 0)):
        return _counted_index(np.array([q[2] for q in packets], bool), failed, stream)
    n = len(timed)
    corrupt = np.array([q[2] for q in timed], bool)
    rank = np.empty(n, np.int64)
    rank[order] = np.arange(n)
    step = int(np.median(np.diff(sorted_pts))) if n > 1 else 1
    breaks = [(n, int(sorted_pts[-1]) + step)] if failed and n else []
    breaks += [(int(rank[j]), int(p[j])) for j in np.flatnonzero(corrupt)[:1]]
    gap = _missing_at_end(sorted_pts, rank)
    if gap is not None:
        breaks.append((gap, int(sorted_pts[gap - 1]) + step))
    keyframe = np.array([q[1] for q in timed], bool)[order]
    if not breaks:
        return FrameIndex(sorted_pts, keyframe, float(stream.time_base))
    at, broken_pts = min(breaks)
    return FrameIndex(np.append(sorted_pts[:at], broken_pts), np.append(keyframe[:at], False),
                      float(stream.time_base), truncated=True)


# DivX/Xvid "packed bitstream" user data (`DivX503b1393p`: the final `p`): a B-frame travels in the
# packet of the frame before it and its own packet holds a placeholder, so packets are not frames
# and their timestamps do not label the frames the decoder outputs.
_PACKED = re.compile(rb"DivX\d+(?:b|Build)\d+p")


def _packed_bitstream(data: bytes | None) -> bool:
    """Whether MPEG-4 Part 2 header bytes `data` declare a DivX/Xvid packed bitstream."""
    return bool(data) and _PACKED.search(bytes(data)) is not None


def _decoded_index(container: av.container.InputContainer, stream: av.VideoStream) -> FrameIndex:
    """Index of a stream whose packets do not map to frames (packed bitstream): decode it once and
    count the frames the decoder outputs, in display order; decoding always starts from frame 0.
    A decoding error ends the index with one entry for the broken frame."""
    import av

    container.seek(0, stream=stream, backward=True)
    stream.codec_context.flush_buffers()
    n, failed = 0, False
    try:
        for packet in container.demux(stream):
            n += len(packet.decode())
    except av.FFmpegError:
        failed = True
    rate = stream.guessed_rate or stream.average_rate
    total = n + failed
    return FrameIndex(np.arange(total, dtype=np.int64), np.arange(total) == 0,
                      1.0 / float(rate) if rate else 1.0, counted=True, truncated=failed)


def _missing_at_end(sorted_pts: np.ndarray, rank: np.ndarray) -> int | None:
    """Frame index of the first frame lost at the end of a cut constant-rate stream, or None.

    With B-frames a reference frame is stored before the frames shown ahead of it; a file cut right
    after it has lost those frames, leaving a gap of whole frame durations among the last few pts.
    Without reordering, or with a variable frame rate, no gap can be told apart and none is reported.
    """
    n = len(sorted_pts)
    ahead = int(np.max(rank - np.arange(n))) if n else 0  # how far decoding runs ahead of display
    if ahead == 0:
        return None
    if n - 1 - ahead < 2:
        return None
    steps = np.diff(sorted_pts)
    body, tail = steps[: n - 1 - ahead], steps[n - 1 - ahead:]
    d = float(np.median(body))
    if np.any(np.abs(body - d) > max(1.0, 0.02 * d)):
        return None
    wide = np.flatnonzero(tail > 1.5 * d)
    return n - ahead + int(wide[0]) if len(wide) else None


def _counted_index(corrupt: np.ndarray, failed: bool, stream: av.VideoStream) -> FrameIndex:
    """Index of a stream without usable timestamps: frames are counted in decoding order, and
    decoding always starts from the first frame. `corrupt`: bool [packets]."""
    n = len(corrupt)
    at = int(np.argmax(corrupt)) if corrupt.any() else (n if failed else None)
    rate = stream.guessed_rate or stream.average_rate
    total = n if at is None else at + 1
    keyframe = np.arange(total) == 0
    return FrameIndex(np.arange(total, dtype=np.int64), keyframe, 1.0 / float(rate) if rate else 1.0,
                      counted=True, truncated=at is not None)


@dataclass(frozen=True, eq=False)
class FrameBatch:
    """One group of frames.

    frames: uint8 [N, H, W, 3] RGB at the requested size; indices: int64 [N] 0-based frame indices.
    partners: for each frame step k asked for (`Video.batches(steps=...)`), (frames uint8
    [N, H, W, 3], sign float32 [N]) as `partner_frames` pairs them: frame i+k for each frame i, or
    frame i-k with sign -1 where the video has no frame i+k (see `partner_frames`).
    """

    frames: np.ndarray
    indices: np.ndarray
    partners: Mapping[int, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)


@dataclass(frozen=True)
class Video:
    """An opened video file or image folder. `files` lists a folder's images in frame order."""

    path: Path
    n_frames: int
    fps: float
    height: int
    width: int
    is_folder: bool
    index: FrameIndex
    files: tuple[Path, ...] = ()

    @classmethod
    def open(cls, path: str | Path, index: FrameIndex | None = None, facts: Mapping | None = None) -> Video:
        """Open a video file or image folder; `index` (from a store) skips the demuxing pass, and
        with it `facts` (the store's `video` attrs: height, width, fps, recorded with that index
        from this very file) skip opening the file at all.

        Raises VideoError with one line for a missing, empty, unreadable or frameless input.
        """
        path = Path(path)
        if path.is_dir():
            return cls._open_folder(path, index)
        if not path.exists():
            raise VideoError(f"{path}: no such file or folder")
        if path.stat().st_size == 0:
            raise VideoError(f"{path}: the file is empty (0 bytes)")
        known = _known_size_and_rate(facts) if index is not None else None
        if known is not None and len(index) - index.truncated >= 1:
            return cls(path, len(index), known[2], known[0], known[1], False, index)
        import av

        try:
            # the frame rate comes from our own index: skipping FFmpeg's probe for it halves start-up
            container = av.open(str(path), options={"fpsprobesize": "0"})
        except av.FFmpegError as err:
            raise VideoError(f"{path}: not a video FFmpeg can read ({err.strerror or err})") from None
        with container:
            if not container.streams.video:
                kinds = ", ".join(s.type for s in container.streams) or "none"
                raise VideoError(f"{path}: has no video track (streams: {kinds}); is it a complete video?")
            stream = container.streams.video[0]
            codec = stream.codec_context
            if codec is None or not codec.height or not codec.width:
                raise VideoError(f"{path}: the video track cannot be decoded (damaged header, or a "
                                 f"codec FFmpeg lacks); is the file complete?")
            height, width = codec.height, codec.width
            if index is None:
                index = demux_index(container, stream)
            fps = _frame_rate(index, stream)
        if len(index) - index.truncated < 1:
            what = "breaks off before its first frame" if index.truncated else "holds no video frames"
            raise VideoError(f"{path}: {what}")
        return cls(path, len(index), fps, height, width, False, index)

    @classmethod
    def _open_folder(cls, path: Path, index: FrameIndex | None) -> Video:
        from PIL import Image  # reads only the image headers: checking sizes stays fast

        files = tuple(sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES
                             and not p.name.startswith(".") and p.is_file()))
        if not files:
            raise VideoError(f"{path}: a folder without images ({' '.join(IMAGE_SUFFIXES)})")
        sizes = []
        for f in files:
            try:
                with Image.open(f) as im:
                    sizes.append(im.size)
            except (OSError, ValueError) as err:
                raise VideoError(f"{f}: unreadable image ({err})") from None
        width, height = sizes[0]
        for f, (w, h) in zip(files, sizes):
            if (w, h) != (width, height):
                raise VideoError(f"{f}: is {w}x{h} but {files[0].name} is {width}x{height}; every image "
                                 f"of a folder must have the same size")
        if index is None:
            index = FrameIndex.regular(len(files), FOLDER_FPS)
        elif len(index) != len(files):
            raise VideoError(f"{path}: holds {len(files)} images, the stored index {len(index)}; "
                             f"the folder changed: use another -o")
        return cls(path, len(files), 1.0 / index.time_base, height, width, True, index, files)

    def info(self) -> dict:
        """The store's `video` attrs: {"path", "n_frames", "fps", "height", "width"}."""
        return {"path": str(self.path), "n_frames": self.n_frames, "fps": self.fps,
                "height": self.height, "width": self.width}

    def batches(self, groups: Iterable[Sequence[int]], size: tuple[int, int] | None = None,
                steps: Iterable[int] = (), queue_size: int = 2) -> Iterator[FrameBatch]:
        """One FrameBatch per group of increasing frame indices, in order, decoded in a thread.

        Frames are resized to `size` (H, W). Each batch carries, for every frame step k of `steps`
        (non-zero ints), each frame's partner k frames away (`FrameBatch.partners`). Decoding runs
        ahead by at most `queue_size` batches.
        When frame f cannot be decoded, the frames of its group before f are yielded (if any), then
        DecodeError(frame=f) is raised. Closing the generator stops the decoding thread.
        """
        groups = [np.asarray(g, np.int64) for g in groups]
        for g in groups:
            if len(g) and (g[0] < 0 or g[-1] >= self.n_frames or np.any(np.diff(g) <= 0)):
                raise ValueError(f"frame groups must be increasing indices in 0..{self.n_frames - 1}, "
                                 f"got {g[0]}..{g[-1]}")
        steps = tuple(sorted({int(k) for k in steps}))
        if 0 in steps:
            raise ValueError("a frame step must not be 0")
        out: queue.Queue = queue.Queue(maxsize=max(queue_size, 1))
        stop = threading.Event()
        worker = threading.Thread(target=self._produce, args=(groups, size, steps, out, stop),
                                  name=f"vre-decode:{self.path.name}", daemon=True)
        worker.start()
        try:
            while True:
                item = out.get()
                if item is _END:
                    return
                if isinstance(item, Exception):
                    raise item
                yield item
        finally:
            stop.set()
            worker.join()

    def read(self, indices: Sequence[int], size: tuple[int, int] | None = None) -> np.ndarray:
        """Frames at `indices` (any order, repeats allowed): uint8 [N, H, W, 3]."""
        idx = np.asarray(indices, np.int64)
        wanted = np.unique(idx)
        h, w = size or (self.height, self.width)
        if not len(wanted):
            return np.empty((0, h, w, 3), np.uint8)
        gen = self.batches([wanted], size=size)
        try:
            batch = next(gen)
            if len(batch.indices) < len(wanted):
                next(gen)  # raises the DecodeError that cut the batch short
        finally:
            gen.close()
        return batch.frames[np.searchsorted(batch.indices, idx)]

    def _produce(self, groups: list[np.ndarray], size, steps: tuple[int, ...], out: queue.Queue,
                 stop: threading.Event) -> None:
        """The decoding thread: fills `out` with batches, then _END or the exception that ended it."""
        # keep the frames a step reaches across a group boundary: the next group finds them cached
        keep = max([2] + [abs(k) + 1 for k in steps])
        reader = _FolderReader(self, size, keep) if self.is_folder else _StreamReader(self, size, keep)
        readable = self.n_frames - self.index.truncated
        try:
            for group in groups:
                batch, failure = _read_group(reader, group, steps, readable, stop)
                if stop.is_set():
                    return
                if batch is not None:
                    _put(out, batch, stop)
                if failure is not None:
                    _put(out, failure, stop)
                    return
            _put(out, _END, stop)
        except Exception as err:  # noqa: BLE001 - handed to the consumer, which raises it
            _put(out, err, stop)
        finally:
            reader.close()


_END = object()


def _known_size_and_rate(facts: Mapping | None) -> tuple[int, int, float] | None:
    """(height, width, fps) from a store's `video` attrs, or None where they do not hold them."""
    try:
        h, w, fps = facts["height"], facts["width"], facts["fps"]
    except (KeyError, TypeError):
        return None
    ints = all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in (h, w))
    return (h, w, float(fps)) if ints and isinstance(fps, (int, float)) and fps > 0 else None


def _put(out: queue.Queue, item, stop: threading.Event) -> None:
    """Put `item`, giving up once the consumer has stopped (so the thread can end)."""
    while not stop.is_set():
        try:
            out.put(item, timeout=0.05)
            return
        except queue.Full:
            continue


def partner_frames(indices: np.ndarray, readable: int, step: int) -> tuple[np.ndarray, np.ndarray]:
    """The frame `step` frames away from each of `indices`, for experts comparing two frames (flow).

    indices: int64 [N] in 0..readable-1; step: non-zero int. Returns partner int64 [N] and sign
    float32 [N]: frame i+step with sign +1 where the video has it; else frame i-step with sign -1
    (the flow to it, negated, stands in: the last frames of a video for a positive step, the first
    ones for a negative step); else, for a video shorter than the step, the farthest frame in the
    step's direction with sign (partner - i) / step (0 for a one-frame video: the frame itself).
    """
    indices = np.asarray(indices, np.int64)
    partner = indices + step
    sign = np.ones(len(indices), np.float32)
    outside = (partner < 0) | (partner >= readable)
    back = indices - step
    mirror = outside & (back >= 0) & (back < readable)
    partner[mirror], sign[mirror] = back[mirror], -1.0
    clip = outside & ~mirror
    partner[clip] = np.clip(indices[clip] + step, 0, max(readable - 1, 0))
    sign[clip] = (partner[clip] - indices[clip]) / np.float32(step)
    return partner, sign


def _read_group(reader: _Reader, group: np.ndarray, steps: tuple[int, ...], readable: int,
                stop: threading.Event) -> tuple[FrameBatch | None, DecodeError | None]:
    """Decode one group (and the partners of each frame step); on failure, the part before it."""
    pairs = {k: partner_frames(group, readable, k) for k in steps}
    got: dict[int, np.ndarray] = {}
    failure = None
    # each frame of the group is copied into the batch as soon as it is decoded, while it is still
    # in the CPU's cache (stacking them afterwards costs ~1 ms more per 960x540 frame)
    frames: np.ndarray | None = None
    slot = {int(t): i for i, t in enumerate(group)}
    try:
        for t, img in reader.frames(np.union1d(group, [p for p, _ in pairs.values()]), stop):
            got[t] = img
            if t in slot:
                if frames is None:
                    frames = np.empty((len(group), *img.shape), img.dtype)
                frames[slot[t]] = img
    except DecodeError as err:
        failure = err
    if failure is not None:
        group = group[group < failure.frame]
        if steps:  # frames near the failure now pair with frames before it
            pairs = {k: partner_frames(group, min(readable, failure.frame), k) for k in steps}
            try:
                for t, img in reader.frames(np.setdiff1d([p for p, _ in pairs.values()], list(got)), stop):
                    got[t] = img
            except DecodeError:
                pass  # frames without their partners are left out below
            keep = np.ones(len(group), bool)
            for partner, _ in pairs.values():
                keep &= np.isin(partner, list(got))
            group = group[keep]
            pairs = {k: (p[keep], s[keep]) for k, (p, s) in pairs.items()}
        frames = frames[[slot[int(t)] for t in group]] if frames is not None and len(group) else None
    if stop.is_set() or not len(group):
        return None, failure
    partners = {k: (np.stack([got[int(t)] for t in p]), s) for k, (p, s) in pairs.items()}
    return FrameBatch(frames, group, partners), failure


class _Reader(abc.ABC):
    """Frames by index for the decoding thread, resized; keeps the last `keep` decoded frames (a
    group shares them with the next one, which starts at or before them for frame steps)."""

    def __init__(self, video: Video, size: tuple[int, int] | None, keep: int = 2):
        self.video, self.size = video, tuple(size) if size else None
        self.recent: dict[int, np.ndarray] = {}
        self.keep = keep

    def frames(self, wanted: np.ndarray, stop: threading.Event) -> Iterator[tuple[int, np.ndarray]]:
        """(index, uint8 [H, W, 3]) for each wanted index, in order; DecodeError at the first failure."""
        for t in map(int, wanted):
            if stop.is_set():
                return
            img = self.recent.get(t)
            if img is None:
                img = self.decode(t)
                if self.size:
                    img = resize(img[None], self.size, "image")[0]
                self.recent[t] = img
                if len(self.recent) > self.keep:
                    del self.recent[next(iter(self.recent))]
            yield t, img

    @abc.abstractmethod
    def decode(self, t: int) -> np.ndarray:
        """Frame t at full size, uint8 [H, W, 3] RGB; DecodeError if it cannot be read."""

    def error(self, t: int, reason: str) -> DecodeError:
        return DecodeError(f"{self.video.path}: decoding failed at frame {t} ({reason})", frame=t)

    def close(self) -> None:
        """Release the file."""


class _FolderReader(_Reader):
    def decode(self, t: int) -> np.ndarray:
        import cv2

        f = self.video.files[t]
        try:
            data = f.read_bytes()
        except OSError as err:
            raise self.error(t, f"cannot read image {f.name} ({err.strerror})") from None
        if f.suffix.lower() in (".jpg", ".jpeg") and not jpeg_complete(data):
            # OpenCV fills what is missing with grey and only logs a warning: check it ourselves
            raise self.error(t, f"image {f.name} is cut short (its JPEG data ends before the end-of-image "
                                f"marker); replace the file")
        img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
        if img is None:
            raise self.error(t, f"cannot read image {f.name}")
        if img.shape[:2] != (self.video.height, self.video.width):
            raise self.error(t, f"{f.name} is now {img.shape[1]}x{img.shape[0]}, the folder's images are "
                                f"{self.video.width}x{self.video.height}")
        return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def jpeg_complete(data: bytes) -> bool:
    """Whether JPEG bytes hold their end-of-image marker after their last scan (a file cut short
    lacks it; inside entropy-coded data a 0xFF byte is always followed by 0x00 or a restart
    marker, so 0xFFD9 there is the real end)."""
    sos = data.rfind(b"\xff\xda")
    return data.startswith(b"\xff\xd8") and sos != -1 and data.find(b"\xff\xd9", sos) != -1


class _StreamReader(_Reader):
    """Sequential PyAV decoding; seeks (to the keyframe before the wanted frame) only when that
    skips frames or goes back."""

    def __init__(self, video: Video, size, keep: int = 2):
        import av

        super().__init__(video, size, keep)
        self.ffmpeg_error = av.FFmpegError  # PyAV is imported once per reader, not per decoded frame
        self.index = video.index
        self.container = None
        self.decoded: Iterator | None = None  # (frame index or None, av.VideoFrame) in display order
        self.pos = -1  # index of the last frame taken from `decoded`
        self.start = 0  # the keyframe `decoded` started from

    def decode(self, t: int) -> np.ndarray:
        if self.index.truncated and t == len(self.index) - 1:
            raise self.error(t, "the file is truncated or corrupt here")
        k = self.index.keyframe_before(t)
        if self.decoded is None or t <= self.pos or k > self.pos + 1:
            self.restart(k)
        try:
            frame = self.advance(t)
            if frame is None and self.start > 0:  # the seek landed past t: decode from the start
                self.restart(0)
                frame = self.advance(t)
        except self.ffmpeg_error as err:
            self.decoded = None
            raise self.error(t, err.strerror or str(err)) from None
        if frame is None:
            self.decoded = None
            raise self.error(t, "the decoder gave no frame for it")
        if (frame.height, frame.width) != (self.video.height, self.video.width):
            self.decoded = None
            raise self.error(t, f"the video changes resolution here, from {self.video.width}x"
                                f"{self.video.height} to {frame.width}x{frame.height}; a store holds one "
                                f"resolution: cut the video at this frame and run each part into its own store")
        return frame.to_ndarray(format="rgb24")

    def advance(self, t: int):
        """Decode forward to frame t; None if the stream skips it or ends first."""
        for i, frame in self.decoded:
            self.pos = i
            if i == t:
                return frame
            if i > t:
                return None
        return None

    def restart(self, k: int) -> None:
        """Make `decoded` start at keyframe k (reopening the file for k = 0)."""
        import av

        if self.container is None or k == 0:
            self.close()
            try:
                self.container = av.open(str(self.video.path))
            except av.FFmpegError as err:
                raise self.error(k, f"cannot reopen: {err.strerror or err}") from None
            self.stream = self.container.streams.video[0]
            self.stream.codec_context.thread_type = "AUTO"
        if k > 0:
            self.container.seek(int(self.index.pts[k]), stream=self.stream, backward=True, any_frame=False)
            self.stream.codec_context.flush_buffers()
        self.decoded, self.pos, self.start = self._decoded(), k - 1, k

    def _decoded(self) -> Iterator:
        """Frames in display order with their index; after a decoding error, the frames still
        inside the decoder come out before the error is raised."""
        import av

        position = self.index.position
        counted = self.index.counted
        n = 0
        try:
            for packet in self.container.demux(self.stream):
                if packet.is_corrupt:  # the index ends there; fed to a frame-threaded decoder it
                    continue          # would also swallow the frames still inside the decoder
                for frame in packet.decode():
                    yield (n if counted else position.get(frame.pts)), frame
                    n += 1
        except av.FFmpegError as err:
            failure = err
        else:
            return
        try:
            for frame in self.stream.codec_context.decode(None):
                yield (n if counted else position.get(frame.pts)), frame
                n += 1
        except av.FFmpegError:
            pass
        raise failure

    def close(self) -> None:
        if self.container is not None:
            self.container.close()
            self.container = self.decoded = None


def _frame_rate(index: FrameIndex, stream: av.VideoStream) -> float:
    """Frames per second measured from the timestamps; the container's rate when it agrees (it
    is exact, e.g. 30000/1001, where the measure is rounded)."""
    rate = stream.guessed_rate or stream.average_rate
    n = len(index) - index.truncated
    if not index.counted and n >= 2:
        span = float(index.pts[n - 1] - index.pts[0]) * index.time_base
        if span > 0:
            measured = (n - 1) / span
            return float(rate) if rate and abs(float(rate) - measured) <= 0.01 * measured else measured
    return float(rate) if rate else 1.0


_RANGE = re.compile(r"^(\d*)\.\.(\d*)$")


def parse_frames(spec: list[str] | None, stride: int, n_frames: int) -> np.ndarray:
    """Frame selection of the CLI: sorted unique int64 indices.

    `spec` tokens are ranges `A..B` (end-exclusive; `A..` runs to the end, `..B` from 0) or frame
    numbers (`1 5 9`), combined; None or empty selects every frame. Then every `stride`-th frame of
    the selection is kept. Raises VreError naming the offending value and the valid range.
    """
    if stride < 1:
        raise VreError(f"--stride must be a positive integer, got {stride}")
    valid = f"this video has frames 0..{n_frames - 1}"
    picked = []
    for token in spec or ["0.."]:
        token = token.strip()
        m = _RANGE.match(token)
        if m:
            a = int(m[1]) if m[1] else 0
            b = int(m[2]) if m[2] else n_frames
            if a >= n_frames or b > n_frames:
                raise VreError(f"--frames {token}: out of range ({valid}; A..B stops before B)")
            if a >= b:
                raise VreError(f"--frames {token}: selects no frame (A..B stops before B)")
            picked.append(np.arange(a, b, dtype=np.int64))
        elif token.isdigit():
            if int(token) >= n_frames:
                raise VreError(f"--frames {token}: out of range ({valid})")
            picked.append(np.array([int(token)], np.int64))
        else:
            raise VreError(f"--frames {token}: not a frame number or range; use A..B (end-exclusive), "
                           f"A.., ..B or numbers like 1 5 9")
    return np.unique(np.concatenate(picked))[::stride]


FINGERPRINT_PACKETS = 16      # demuxed packets hashed at the start and at a keyframe mid-video
FINGERPRINT_FILE_BYTES = 1 << 20  # bytes hashed of the first, middle and last image of a folder


def fingerprint(video: Video) -> dict:
    """What identifies the frames of `video`: {size, mtime, content_sha256}.

    size/mtime: the file's (a folder: total bytes and latest mtime of its images). content_sha256:
    a hash of the frame count and of the bytes of FINGERPRINT_PACKETS demuxed packets at the start
    and as many from the keyframe nearest the middle (a folder: its image names, sizes and the first
    FINGERPRINT_FILE_BYTES of its first, middle and last images). Remuxing or retagging a file keeps
    its content hash; any other video, even one of the same length, gets another.
    """
    import av

    digest = hashlib.sha256(f"frames={video.n_frames};".encode())
    if video.is_folder:
        stats = [f.stat() for f in video.files]
        for f, st in zip(video.files, stats):
            digest.update(f"{f.name}:{st.st_size};".encode())
        for f in {video.files[0], video.files[len(video.files) // 2], video.files[-1]}:
            with open(f, "rb") as fh:
                digest.update(fh.read(FINGERPRINT_FILE_BYTES))
        return {"size": sum(st.st_size for st in stats), "mtime": max(st.st_mtime for st in stats),
                "content_sha256": digest.hexdigest()}
    st = video.path.stat()
    try:
        with av.open(str(video.path), options={"fpsprobesize": "0"}) as container:
            stream = container.streams.video[0]
            _hash_packets(container, stream, digest)
            index = video.index
            middle = index.keyframe_before(len(index) // 2)
            if middle > 0 and not index.counted:
                container.seek(int(index.pts[middle]), stream=stream, backward=True)
                _hash_packets(container, stream, digest)
    except av.FFmpegError as err:
        raise VideoError(f"{video.path}: cannot be read to fingerprint it ({err.strerror or err})") from None
    return {"size": st.st_size, "mtime": st.st_mtime, "content_sha256": digest.hexdigest()}


def _hash_packets(container, stream, digest) -> None:
    """Feed the next FINGERPRINT_PACKETS non-empty packets of `stream` (bytes and pts) to `digest`."""
    import av

    seen = 0
    try:
        for packet in container.demux(stream):
            if not packet.size:
                continue
            digest.update(f"{packet.pts};".encode())
            digest.update(bytes(packet))
            seen += 1
            if seen == FINGERPRINT_PACKETS:
                break
    except av.FFmpegError:
        pass  # a damaged file: what was read identifies it
