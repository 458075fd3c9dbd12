"""DataLoader throughput over a store (samples/s): `python -m video_pipeline.bench.loader [STORE]`."""
from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import torch

from video_pipeline.bench.synthetic import make_bench_store
from video_pipeline.codecs import parse_codec
from video_pipeline.dataset import StoreDataset
from video_pipeline.errors import VreError
from video_pipeline.store import VideoStore


def bench(store: Path, workers: int, batch_size: int, seconds: float, start_method: str | None,
          compact: bool = False, device: str = "cpu") -> dict:
    """Samples/s of a shuffled DataLoader over `store` ({rgb, depth, normals, semantic} if present).

    With `compact`, workers deliver stored dtypes and each batch is made float32 on `device` by
    `to_float`, inside the timed loop; device "none" leaves batches compact (what the loader
    delivers when the conversion runs on an accelerator, where it costs microseconds); "copy"
    copies each batch once into buffers reused from batch to batch, in this process (what
    `pin_memory` does before a GPU copy: the cost of reading the batch out of shared memory).
    """
    dataset = StoreDataset(store, modalities=[m for m in ("rgb", "depth", "normals", "semantic")
                                              if m in VideoStore.open(store).names], compact=compact)
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=workers,
                                         multiprocessing_context=start_method if workers else None,
                                         persistent_workers=workers > 0)
    batches = iter(())
    warmup = 2 * max(workers, 1)  # worker start-up and first reads are not the steady state
    samples, t0, delivered, cpu0, main0 = 0, None, 0, _cpu_seconds(), _cpu_seconds(children=False)
    batch, kept = None, {}
    threads = torch.get_num_threads()
    if device == "copy":
        torch.set_num_threads(1)  # as DataLoader's pin_memory thread
    while t0 is None or time.perf_counter() - t0 < seconds or batch is None:
        batch = next(batches, None)
        if batch is None:  # next epoch
            batches = iter(loader)
            continue
        if device == "copy":
            for key, value in batch.items():
                if isinstance(value, torch.Tensor):
                    if key not in kept or kept[key].shape != value.shape:
                        kept[key] = torch.empty_like(value)
                    kept[key].copy_(value)
        elif compact and device != "none":
            batch = dataset.to_float(batch, device)
        delivered += len(batch["frame"])
        if warmup:
            warmup -= 1
            t0 = time.perf_counter() if not warmup else None
            continue
        samples += len(batch["frame"])
    torch.set_num_threads(threads)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    wall = time.perf_counter() - t0
    main_ms = (_cpu_seconds(children=False) - main0) / delivered * 1e3
    del batches, loader  # the workers end, so their CPU time is counted
    cpu_ms = (_cpu_seconds() - cpu0) / delivered * 1e3
    shapes = {k: [*v.shape[1:], str(v.dtype).removeprefix("torch.")] for k, v in batch.items()
              if isinstance(v, torch.Tensor)}
    return {"samples_per_s": round(samples / wall, 1), "samples": samples, "seconds": round(wall, 2),
            "cpu_ms_per_sample": round(cpu_ms, 1), "main_cpu_ms_per_sample": round(main_ms, 1),
            "workers": workers, "batch_size": batch_size, "start_method": start_method or "default",
            "compact": compact, "device": device, "cpus": os.cpu_count(),
            "load_average": round(os.getloadavg()[0], 1), "batch_shapes": shapes}


def _cpu_seconds(children: bool = True) -> float:
    """CPU seconds of this process (all its threads) and, with `children`, of its ended children
    (the loader's workers), user + system. Per delivered sample (warm-up and worker start included)
    it says what the loader costs whatever else runs on the machine."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    total = own.ru_utime + own.ru_stime
    if children:
        kids = resource.getrusage(resource.RUSAGE_CHILDREN)
        total += kids.ru_utime + kids.ru_stime
    return total


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m video_pipeline.bench.loader",
                                description="DataLoader throughput over a store (samples/s)")
    p.add_argument("store", nargs="?", help="store to read (default: a synthetic 540x960 store of "
                   "rgb, depth, normals, semantic in a temporary folder)")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--frames", type=int, default=64, help="frames of the synthetic store")
    p.add_argument("--start-method", choices=("fork", "spawn", "forkserver"))
    p.add_argument("--compact", action="store_true", help="workers send stored dtypes; to_float on --device")
    p.add_argument("--device", default="cpu", help="where --compact batches are made float32 (cpu, cuda; "
                   "none: not converted, the loader's delivery alone; copy: not converted, copied once "
                   "into reused buffers, as pin_memory does)")
    p.add_argument("--codec", default=None, help="codec of the synthetic store (auto, zstd, lz4; default auto: lz4 for rgb, zstd for the rest)")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        codec = parse_codec(args.codec) if args.codec else None
        store = Path(args.store) if args.store else make_bench_store(Path(tmp) / "bench.zarr", args.frames,
                                                                     codec=codec)
        try:
            print(json.dumps(bench(store, args.workers, args.batch_size, args.seconds, args.start_method,
                                   args.compact, args.device)))
        except VreError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
