"""CPU milliseconds per frame of each stage of the {rgb, hsv, canny} pipeline, one thread, in order.

    python benchmarks/stage_cpu.py CLIP.mp4 [--frames 160] [--decoder-threads AUTO|NONE]

Decodes CLIP with PyAV, converts to RGB, stacks shard batches of 32, runs the hsv and Canny
functions of the built-in experts and writes each array with `VideoStore.write_frames` into a
temporary store, timing each step with the process CPU clock (FFmpeg's own threads included).
Complements `vre bench`, which measures the threaded pipeline as a whole.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import av
import cv2
import numpy as np

from experts.color import rgb_to_hsv
from experts.edges import canny_edges
from video_pipeline.store import ArraySpec, VideoStore

SHARD = 32


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("clip")
    p.add_argument("--frames", type=int, default=160)
    p.add_argument("--decoder-threads", default="AUTO", choices=("AUTO", "FRAME", "SLICE", "NONE"))
    a = p.parse_args()
    cv2.setNumThreads(1)
    cost: dict[str, float] = {}

    def timed(step, fn, *args):
        t0 = time.process_time()
        out = fn(*args)
        cost[step] = cost.get(step, 0.0) + time.process_time() - t0
        return out

    container = av.open(a.clip)
    stream = container.streams.video[0]
    stream.codec_context.thread_type = a.decoder_threads
    decoded = container.decode(stream)
    n = a.frames - a.frames % SHARD
    with tempfile.TemporaryDirectory() as tmp:
        store = VideoStore.open(Path(tmp) / "s.zarr", "w")
        h, w = stream.codec_context.height, stream.codec_context.width
        store.init_meta({"experts": {}}, "bench", {"path": a.clip, "n_frames": n, "fps": 30.0, "height": h,
                                                   "width": w}, "bench", SHARD, (h, w))
        for name, channels, kind in (("rgb", 3, "image"), ("hsv", 3, "image"), ("edges", 1, "binary")):
            store.ensure_array(ArraySpec(name, channels, "uint8", {"kind": kind}), h, w)
        for start in range(0, n, SHARD):
            frames = timed("decode", lambda: [next(decoded) for _ in range(SHARD)])
            rgb = timed("to rgb", lambda: [f.to_ndarray(format="rgb24") for f in frames])
            batch = timed("stack", np.stack, rgb)
            outputs = {"rgb": batch, "hsv": timed("hsv", rgb_to_hsv, batch),
                       "edges": timed("canny", canny_edges, batch, 100, 200)}
            idx = np.arange(start, start + SHARD)
            for name, data in outputs.items():
                timed(f"write {name}", store.write_frames, name, idx, data)
                timed("flags", store.mark_done, name, idx)
    print(", ".join(f"{step} {seconds / n * 1e3:.2f}" for step, seconds in cost.items()),
          f"| total {sum(cost.values()) / n * 1e3:.1f} ms/frame")


if __name__ == "__main__":
    main()
