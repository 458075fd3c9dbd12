"""Synthetic inputs of the benchmarks: a store with realistic content and a random checkpoint."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from video_pipeline.codecs import CodecSpec, codec_fits
from video_pipeline.dronescapes import DRONESCAPES_CLASSES, DRONESCAPES_PALETTE
from video_pipeline.imageops import resize
from video_pipeline.store import ArraySpec, VideoStore


def make_bench_store(path: Path, n_frames: int = 64, size: tuple[int, int] = (540, 960),
                     binary: bool = False, codec: CodecSpec | None = None) -> Path:
    """A store of {rgb, depth, normals, semantic} (and a binary map `roads` if asked) at `size` with
    realistic content for the benchmarks (a camera panning over a textured world with sharp-edged
    shapes, smooth depth, its normals, 8 classes), every array with `codec` (default: the store's
    default) where it can hold it. At most 32 distinct frames are made; longer stores repeat them."""
    rng = np.random.default_rng(0)
    n_unique = min(n_frames, 32)
    world_size = (size[0], size[1] + 8 * n_unique)  # the camera pans 8 pixels a frame
    world = cv2.resize(rng.random((world_size[0] // 24, world_size[1] // 24, 3), dtype=np.float32),
                       world_size[::-1], interpolation=cv2.INTER_CUBIC) * 190
    world += rng.random((*world_size, 3), dtype=np.float32) * 40  # fine texture
    world = np.ascontiguousarray(np.clip(world, 0, 255).astype(np.uint8))
    for _ in range(world_size[1] // 40):  # sharp-edged shapes: buildings, roads
        x, y = int(rng.integers(0, world_size[1])), int(rng.integers(0, world_size[0]))
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        cv2.rectangle(world, (x, y), (x + int(rng.integers(10, 90)), y + int(rng.integers(10, 90))), colour, -1)
    unique = np.stack([world[:, 8 * t:8 * t + size[1]] for t in range(n_unique)])
    rgb = unique[np.arange(n_frames) % n_unique]
    grey = unique.astype(np.float32).mean(axis=-1) / 255.0
    depth = np.stack([resize(g[None, ::8, ::8, None], size, "depth")[0, ..., 0] for g in grey])
    gy, gx = np.gradient(depth, axis=(1, 2))
    normals = np.stack([-gx * 40, -gy * 40, np.ones_like(gx)], axis=-1)
    normals /= np.linalg.norm(normals, axis=-1, keepdims=True)
    semantic = np.minimum(grey * 8, 7).astype(np.uint8)
    arrays = {"rgb": (rgb, "image"), "depth": (depth[..., None].astype(np.float16), "depth"),
              "normals": (normals.astype(np.float16), "normals"), "semantic": (semantic[..., None], "semantic")}
    if binary:
        arrays["roads"] = ((semantic == 3).astype(np.uint8)[..., None], "binary")
    store = VideoStore.open(path, "w")
    store.init_meta({"experts": {}}, "bench", {"path": "synthetic", "n_frames": n_frames, "fps": 30.0,
                                               "height": size[0], "width": size[1]}, "bench", 32, size)
    classes = DRONESCAPES_CLASSES
    for name, (data, kind) in arrays.items():
        attrs = {"kind": kind, "channels": data.shape[-1], "classes": classes if kind == "semantic" else []}
        fits = codec is not None and codec_fits(codec, str(data.dtype), data.shape[-1])
        spec = ArraySpec(name, data.shape[-1], str(data.dtype), attrs, codec if fits else None)
        store.write_array(spec, _Repeat(data, n_frames))
    return path


class _Repeat:
    """Frames data [U,H,W,C] seen as [n,H,W,C], frame t being data[t % U]; slices are made on demand."""

    def __init__(self, data: np.ndarray, n: int):
        self.data, self.shape = data, (n, *data.shape[1:])

    def __getitem__(self, rows: slice) -> np.ndarray:
        return self.data[np.arange(self.shape[0])[rows] % len(self.data)]


def bench_checkpoint(path: Path, size: tuple[int, int], num_filters: int = 10) -> Path:
    """A randomly initialised SafeUAV checkpoint over the benchmark store's nodes (rgb, depth,
    normals in; semantic_output, 8 classes, out), described the way `vre train` describes them."""
    import torch

    from video_pipeline.phgmae.engine import Node, NodeLayout
    from video_pipeline.phgmae.model import build_model, to_checkpoint

    nodes = (Node("rgb", "regression", 3, "rgb"), Node("depth", "regression", 1, "depth"),
             Node("normals", "regression", 3, "normals"),
             Node("semantic_output", "class", 8, "semantic", DRONESCAPES_CLASSES, DRONESCAPES_PALETTE))
    stats = {"rgb": [[0.0] * 3, [255.0] * 3, [120.0] * 3, [60.0] * 3], "depth": [[0.0], [1.0], [0.5], [0.25]],
             "normals": [[-1.0] * 3, [1.0] * 3, [0.0] * 3, [0.5] * 3],
             "semantic_output": [[0.0] * 8, [1.0] * 8, [0.0] * 8, [1.0] * 8]}
    layout = NodeLayout(nodes, ("semantic_output",), stats, "standardization", tuple(size))
    model_cfg = {"type": "safeuav", "parameters": {"in_channels": 15, "out_channels": 15, "num_filters": num_filters}}
    torch.manual_seed(0)
    cfg = layout.cfg(model_cfg, {"masking": {"probability": 0.5, "always_visible": ["rgb"]}})
    torch.save(to_checkpoint(build_model(model_cfg), cfg, stats), path)
    return path
