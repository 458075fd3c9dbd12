"""`vre ensemble` throughput (frames/s) for several K on a synthetic store:
`python -m video_pipeline.bench.ensemble --k 1 4 8 16`."""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from video_pipeline.bench.synthetic import bench_checkpoint, make_bench_store
from video_pipeline.phgmae.ensemble import ensemble_store, make_plan, predict
from video_pipeline.phgmae.inference import frame_batches, load
from video_pipeline.store import VideoStore


def bench(ks: Sequence[int], size: tuple[int, int], frames: int, batch_size: int, threads: int | None,
          num_filters: int = 10) -> list[dict]:
    """Ensemble throughput (frames/s, reading and writing included) for each K on a synthetic store."""
    if threads:
        torch.set_num_threads(threads)
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        store = make_bench_store(Path(tmp) / "bench.zarr", frames, size)
        loaded = load(bench_checkpoint(Path(tmp) / "bench.ckpt", size, num_filters))
        for k in ks:
            plan = make_plan(loaded, [VideoStore.open(store)], None, k, "mean", 0)
            for _, x, present, _ in frame_batches(loaded, store, plan.available, np.arange(batch_size), batch_size):
                predict(plan, loaded, x, present, size)  # first-call costs (allocator, kernels) left out
            s = ensemble_store(plan, loaded, store, {"semantic_output": f"bench_k{k}"}, None, batch_size)
            out.append({"k": k, "frames_per_s": s["frames_per_s"], "frames": s["frames"], "size": list(size),
                        "batch_size": batch_size, "threads": torch.get_num_threads(), "num_filters": num_filters,
                        "parameters": sum(p.numel() for p in loaded.model.parameters())})
    return out


def bench_main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m video_pipeline.bench.ensemble",
                                description="ensemble throughput (frames/s) for several K on a synthetic store")
    p.add_argument("--k", type=int, nargs="+", default=[1, 4, 8, 16])
    p.add_argument("--size", type=int, nargs=2, default=[540, 960], metavar=("H", "W"))
    p.add_argument("--frames", type=int, default=8)
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    p.add_argument("--num-filters", type=int, default=10, help="SafeUAV width (10: the 430k model)")
    args = p.parse_args(argv)
    for row in bench(args.k, tuple(args.size), args.frames, args.batch_size, args.threads, args.num_filters):
        print(json.dumps(row))
    return 0


if __name__ == "__main__":
    sys.exit(bench_main())
