"""`vre bench RECIPE VIDEO`: per-stage throughput and peak memory of a recipe on a video.

Stages: decode alone (frames/s), each expert (frames/s of time spent inside its calls), writing
(MB/s of raw data through compression + write, and compressed bytes per frame per modality),
end to end (frames/s of the whole run, start-up of experts included), CPU per frame and how many
cores were busy, how long the main thread (which runs the experts) waited for the decoder and for
the writers, peak resident memory. Reading them: cores busy near the core count means CPU-bound
(choose cheaper experts or codecs: docs/benchmarks.md); a long decode wait means decoding is the
bottleneck, a long writer wait compression and disk (`codec: lz4` writes ~7x faster than zstd).
"""
from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from video_pipeline.bench.gpu import GpuSampler, torch_uuid
from video_pipeline.errors import VreError
from video_pipeline.recipe import load_recipe
from video_pipeline.runner import RunOptions, run
from video_pipeline.store import VideoStore, dir_size, load_zarr, shard_groups
from video_pipeline.video import Video, parse_frames


def decode_fps(video: Video, frames: np.ndarray, size: tuple[int, int], shard_frames: int) -> float:
    """Frames/s of decoding + resizing `frames` alone, in shard-sized batches."""
    groups = list(shard_groups(frames, shard_frames).values())
    t0 = time.perf_counter()
    n = sum(len(b.indices) for b in video.batches(groups, size=size))
    return n / (time.perf_counter() - t0)


def cpu_seconds() -> float:
    """User + system CPU seconds of this process so far (all its threads)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def import_libraries() -> None:
    """Import the libraries a run uses before it is timed. The modules import zarr and OpenCV where
    they are first needed (a rerun with nothing to do never loads zarr), so the first run of a
    process would otherwise count their ~0.3-0.5 s of start-up as pipeline time; the start-up
    is measured on its own, as the whole `vre run` command (`rerun_command_s`)."""
    import cv2  # noqa: F401

    load_zarr()


def bench(recipe_path, video_path, frames=None, device=None, workers: int = 1, keep=None,
          as_json: bool = False) -> str:
    """Run the benchmark and return its report (a table, or JSON)."""
    if keep and Path(keep).exists():  # never delete what may be a user's store or folder
        raise VreError(f"{keep}: exists; vre bench writes a fresh store there, so name a path that "
                       f"does not exist with --keep")
    recipe = load_recipe(recipe_path)
    video = Video.open(video_path)
    selected = parse_frames(frames, 1, video.n_frames) if frames else np.arange(video.n_frames)
    size = recipe.resolution or (video.height, video.width)
    report = {"recipe": str(recipe_path), "video": str(video_path), "frames": int(len(selected)),
              "size": list(size), "workers": workers}
    report["decode_fps"] = decode_fps(video, selected, size, recipe.shard_frames)

    import_libraries()
    tmp = Path(tempfile.mkdtemp(prefix="vre-bench-"))
    out = Path(keep) if keep else tmp / "bench.zarr"
    try:
        t0, cpu0 = time.perf_counter(), cpu_seconds()
        with GpuSampler() as gpu_sampler:
            stats = run(recipe, video_path, out, RunOptions(frames=selected, device=device, progress=False))
        wall = time.perf_counter() - t0
        report["cpu_s"] = cpu_seconds() - cpu0
        report["cores"] = os.cpu_count()
        report["load_average"] = os.getloadavg()[0]
        report["end_to_end_fps"] = stats.frames / wall
        report["wall_s"] = wall
        report["experts"] = {
            name: {"fps": stats.expert_frames[name] / max(stats.expert_seconds[name], 1e-9),
                   "seconds": stats.expert_seconds[name]} for name in stats.expert_frames}
        report["write_mb_s"] = stats.bytes_written / 1e6 / max(stats.write_seconds, 1e-9)
        report["decode_wait_s"] = stats.decode_wait
        report["write_wait_s"] = stats.write_wait
        store = VideoStore.open(out, "r")
        report["stored_bytes_per_frame"] = {
            name: dir_size(out / name) / max(len(selected), 1) for name in store.names}
        t0 = time.perf_counter()
        run(recipe, video_path, out, RunOptions(frames=selected, device=device, progress=False))
        report["rerun_nothing_to_do_s"] = time.perf_counter() - t0
        report["rerun_command_s"] = rerun_command_s(recipe_path, video_path, out, frames, device)
        report["gpu"] = gpu_report(stats, gpu_sampler)
    finally:
        if not keep:
            shutil.rmtree(tmp, ignore_errors=True)
    report["peak_rss_mb"] = peak_rss_mb()
    return json.dumps(report, indent=1) if as_json else format_report(report)


def rerun_command_s(recipe_path, video_path, out: Path, frames, device) -> float | None:
    """Seconds of the same `vre run` command on the finished store `out`, as a user types it: a new
    Python process, its imports included (None if it failed)."""
    cmd = [sys.executable, "-m", "video_pipeline.cli", "run", str(recipe_path), str(video_path), "-o", str(out),
           "-q", *(["--device", device] if device else []), *(["--frames", *frames] if frames else [])]
    t0 = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True)
    return time.perf_counter() - t0 if done.returncode == 0 and "nothing to do" in done.stdout else None


def gpu_report(stats, sampler: GpuSampler) -> dict | None:
    """The device the learned experts ran on, if CUDA was used (None otherwise), and the share of
    the run during which it ran kernels (`python -m video_pipeline.bench.gpu` measures more)."""
    import sys

    if "torch" not in sys.modules:
        return None
    import torch

    if not torch.cuda.is_available():
        return None
    return {"device": torch.cuda.get_device_name(0),
            "max_memory_allocated_mb": torch.cuda.max_memory_allocated() / 2**20,
            "busy_share": sampler.share(torch_uuid("cuda:0"))}


def format_report(r: dict) -> str:
    lines = [f"recipe {r['recipe']} on {r['video']}: {r['frames']} frames at {r['size'][0]}x{r['size'][1]}",
             f"  decode            {r['decode_fps']:8.1f} frames/s"]
    for name, e in r["experts"].items():
        lines.append(f"  expert {name:<10} {e['fps']:8.1f} frames/s  ({e['seconds']:.2f} s)")
    lines += [f"  write             {r['write_mb_s']:8.1f} MB/s (raw data compressed + written)",
              f"  end to end        {r['end_to_end_fps']:8.1f} frames/s ({r['wall_s']:.2f} s)",
              f"  cpu               {r['cpu_s'] / max(r['frames'], 1) * 1e3:8.1f} ms/frame, {r['cpu_s'] / r['wall_s']:.2f} "
              f"of {r['cores']} cores busy (load average {r['load_average']:.1f})",
              f"  main thread idle  {r['decode_wait_s']:8.2f} s waiting for decoded frames, "
              f"{r['write_wait_s']:.2f} s for the writers",
              f"  rerun, no work    {r['rerun_nothing_to_do_s']:8.2f} s in-process, "
              + (f"{r['rerun_command_s']:.2f} s as a whole `vre run` command" if r.get("rerun_command_s")
                 else "the whole `vre run` command failed"),
              f"  peak memory       {r['peak_rss_mb']:8.0f} MB"]
    for name, b in r["stored_bytes_per_frame"].items():
        lines.append(f"  stored {name:<10} {b / 1e3:8.1f} kB/frame")
    if r.get("gpu"):
        lines.append(f"  gpu               {r['gpu']}")
    return "\n".join(lines)
