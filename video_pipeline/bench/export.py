"""Dronescapes export speed against a plain numpy loop: `python -m video_pipeline.bench.export`."""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from video_pipeline.bench.synthetic import make_bench_store
from video_pipeline.export import ALL, export_dronescapes
from video_pipeline.npzfile import file_format
from video_pipeline.store import VideoStore


def bench(frames: int, size: tuple[int, int], jobs: Sequence[int]) -> dict:
    """Seconds to write `frames` frames x 5 modalities (rgb, depth, normals, semantic, a binary
    map) as Dronescapes files: a plain numpy loop (one zarr read and one np.savez_compressed per
    file, as export now deflates every file) against `export_dronescapes` with each of `jobs` workers."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        store_path = make_bench_store(root / "bench.zarr", frames, size, binary=True)
        store = VideoStore.open(store_path)
        t0 = time.perf_counter()
        for name in store.names:
            arr, attrs = store.array(name), dict(store.array(name).attrs)
            folder = root / "numpy" / ALL / name
            folder.mkdir(parents=True)
            fmt = file_format(attrs, str(arr.dtype), int(arr.shape[-1]))
            for t in range(store.n_frames):
                np.savez_compressed(folder / f"bench_{t}.npz", fmt.encode(arr[t]))
        out = {"frames": frames, "modalities": len(store.names), "size": list(size), "cpus": os.cpu_count(),
               "numpy_loop_s": round(time.perf_counter() - t0, 2)}
        for n in jobs:
            summary = export_dronescapes([store_path], root / f"jobs{n}", None, n, None)
            out[f"export_jobs{n}_s"] = summary["seconds"]
        return out


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m video_pipeline.bench.export",
                                     description="Dronescapes export speed against a plain numpy loop")
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--size", type=int, nargs=2, default=(540, 960), metavar=("H", "W"))
    parser.add_argument("--jobs", type=int, nargs="+", default=(1, 2))
    args = parser.parse_args()
    print(json.dumps(bench(args.frames, tuple(args.size), args.jobs)))
