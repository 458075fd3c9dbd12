"""`vre preview STORE --png DIR`: every modality as one PNG per frame, coloured as in the collage.

DIR/<modality>/<frame:06d>.png for each computed frame (frames a modality has not computed are left
out), plus DIR/legend/<modality>.png for class maps (swatches) and flow (its colour wheel). The
folder carries a MARK file: a later call writes into a folder only if it made it.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from video_pipeline.errors import VreError
from video_pipeline.preview import (READ_BLOCK, class_palette, colorize, flow_legend, legend_tile,
                                    tile_size)
from video_pipeline.store import VideoStore

MARK = ".vre-png-folders"


def check_folder(folder: Path) -> None:
    """VreError unless `folder` is absent, empty, or one this module wrote (it holds MARK)."""
    if folder.exists() and (not folder.is_dir() or (any(folder.iterdir()) and not (folder / MARK).is_file())):
        raise VreError(f"{folder}: exists and was not written by `vre preview --png`; vre never writes "
                       f"into a folder it did not make: choose another folder")


def save_png(path: Path, rgb: np.ndarray) -> None:
    """uint8 RGB [H,W,3] -> PNG at `path` (fast zlib level 1)."""
    if not cv2.imwrite(str(path), np.ascontiguousarray(rgb[..., ::-1]), [cv2.IMWRITE_PNG_COMPRESSION, 1]):
        raise OSError(f"cannot write {path}")


def write_png_folders(store: VideoStore, folder: Path, frames: np.ndarray | None = None) -> dict[str, int]:
    """Write the PNGs of `frames` (int64 [K], default every frame) of every modality into `folder`.

    Returns {modality: PNGs written}. Binary maps are drawn on black (the collage draws them over
    the rgb); every other kind exactly as in the collage, at the store's resolution.
    """
    folder = Path(folder)
    check_folder(folder)
    n = store.n_frames
    frames = np.arange(n) if frames is None else np.unique(np.asarray(frames, np.int64))
    if len(frames) and (frames.min() < 0 or frames.max() >= n):
        raise VreError(f"{store.path}: frames must lie in 0..{n - 1}")
    written = {}
    try:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / MARK).write_text(f"written by vre preview --png from {store.path}\n")
        for name in store.names:
            attrs = dict(store.array(name).attrs)
            done = store.done_frames(name)
            todo = frames[done[frames]]
            (folder / name).mkdir(exist_ok=True)
            for start in range(0, len(todo), READ_BLOCK):
                block = todo[start:start + READ_BLOCK]
                for index, arr in zip(block, store.read(name, block)):
                    save_png(folder / name / f"{index:06d}.png", colorize(arr, attrs))
            written[name] = len(todo)
            legend = modality_legend(attrs, name, store.array(name).shape[1:3])
            if legend is not None:
                (folder / "legend").mkdir(exist_ok=True)
                save_png(folder / "legend" / f"{name}.png", legend)
    except OSError as err:
        raise VreError(f"{folder}: cannot write the PNGs ({err.strerror or err}); choose another folder") from None
    return written


def modality_legend(attrs: dict, name: str, shape: tuple[int, int]) -> np.ndarray | None:
    """uint8 RGB legend of a modality: class swatches, flow's colour wheel, else None."""
    if attrs.get("kind") == "semantic" and attrs.get("classes"):
        return legend_tile(attrs["classes"], class_palette(attrs), tile_size(*shape), f"{name}: classes")
    if attrs.get("kind") == "flow":
        return flow_legend(256)
    return None
