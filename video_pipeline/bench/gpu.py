"""GPU figures of a recipe: how busy the GPU is during a run, and how close the run comes to the bare
speed of its learned experts on the same batches.

    python -m video_pipeline.bench.gpu RECIPE VIDEO [--frames A..B] [--device cuda] [--json]

One pipeline pass (as `vre run`, into a temporary store; expert loading and a one-batch warm-up are
timed apart), then a bare pass with the same loaded experts over the same frames, already decoded
in memory, in the same batches (per-expert batch sizes): no decoding, no store, no waiting.
Reported:
  pipeline_fps        frames / seconds of the pipeline pass (decode, experts, writes overlapped)
  bare_fps            frames / seconds the learned experts' calls take in the bare pass
  forward_fps         frames / seconds inside their torch modules' forward in the bare pass
  ratio_to_bare       pipeline_fps / bare_fps (1.0: decoding and writing cost the GPU nothing)
  busy_share          share of the pipeline pass during which the GPU ran a kernel (NVML
                      utilisation, sampled every 50 ms; None without an NVIDIA driver)
  forward_share       share of the pipeline pass spent inside the experts' forward (CUDA events)
NVML is read through ctypes from the driver's libnvidia-ml: no extra package.
"""
from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from video_pipeline.errors import VreError
from video_pipeline.expert import frame_steps
from video_pipeline.recipe import load_recipe
from video_pipeline.runner import (RunOptions, RunStats, Unit, UnitExecutor, execute, load_experts, open_target,
                                   prepare)

SAMPLE_S = 0.05


class _Utilization(ctypes.Structure):
    _fields_ = [("gpu", ctypes.c_uint), ("memory", ctypes.c_uint)]


class GpuSampler:
    """Samples every NVIDIA GPU's utilisation (percent of time a kernel ran) while in the `with`
    block. `share(uuid)` is the mean for one GPU as a fraction; without that GPU (or without NVML)
    the busiest GPU's, or None."""

    def __init__(self):
        self.samples: dict[str, list[int]] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        try:
            self._nvml = ctypes.CDLL("libnvidia-ml.so.1")
            if self._nvml.nvmlInit_v2() != 0:
                raise OSError("nvmlInit failed")
        except (OSError, AttributeError):
            self._nvml = None

    def _handles(self) -> dict[str, ctypes.c_void_p]:
        count = ctypes.c_uint()
        self._nvml.nvmlDeviceGetCount_v2(ctypes.byref(count))
        handles = {}
        for i in range(count.value):
            handle, uuid = ctypes.c_void_p(), ctypes.create_string_buffer(96)
            if self._nvml.nvmlDeviceGetHandleByIndex_v2(i, ctypes.byref(handle)) == 0 and \
                    self._nvml.nvmlDeviceGetUUID(handle, uuid, 96) == 0:
                handles[uuid.value.decode()] = handle
        return handles

    def _run(self, handles) -> None:
        util = _Utilization()
        while not self._stop.wait(SAMPLE_S):
            for uuid, handle in handles.items():
                if self._nvml.nvmlDeviceGetUtilizationRates(handle, ctypes.byref(util)) == 0:
                    self.samples.setdefault(uuid, []).append(util.gpu)

    def __enter__(self):
        if self._nvml is not None:
            self._thread = threading.Thread(target=self._run, args=(self._handles(),), daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def share(self, uuid: str | None = None) -> float | None:
        if uuid in self.samples:
            return float(np.mean(self.samples[uuid])) / 100
        means = [float(np.mean(s)) / 100 for s in self.samples.values() if s]
        return max(means) if means else None


def torch_uuid(device: str) -> str | None:
    """NVML's UUID ("GPU-...") of a torch CUDA device, or None."""
    import torch

    props = torch.cuda.get_device_properties(torch.device(device))
    uuid = getattr(props, "uuid", None)
    return None if uuid is None else ("" if str(uuid).startswith("GPU-") else "GPU-") + str(uuid)


class ForwardTimer:
    """Times every forward of the torch modules held by `experts` (attributes that are
    `torch.nn.Module`s): CUDA events for a module on a GPU, the wall clock otherwise.
    `seconds()` sums them."""

    def __init__(self, experts: Iterable):
        import torch

        self.torch = torch
        self.spans: list = []  # (start, end): both CUDA events or both perf_counter floats
        self.hooks = []
        for expert in experts:
            for module in vars(expert).values():
                if isinstance(module, torch.nn.Module):
                    on_gpu = any(p.is_cuda for p in module.parameters())
                    opened: list = []
                    self.hooks.append(module.register_forward_pre_hook(
                        lambda m, a, opened=opened, g=on_gpu: opened.append(self._mark(g))))
                    self.hooks.append(module.register_forward_hook(
                        lambda m, a, o, opened=opened, g=on_gpu: self.spans.append((opened.pop(), self._mark(g)))))

    def _mark(self, on_gpu: bool):
        if not on_gpu:
            return time.perf_counter()
        event = self.torch.cuda.Event(enable_timing=True)
        event.record()
        return event

    def seconds(self) -> float:
        if any(not isinstance(a, float) for a, _ in self.spans):
            self.torch.cuda.synchronize()
        return sum((b - a) if isinstance(a, float) else a.elapsed_time(b) / 1000 for a, b in self.spans)

    def reset(self) -> None:
        self.spans.clear()

    def remove(self) -> None:
        for hook in self.hooks:
            hook.remove()


def _sync() -> None:
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


def measure(recipe_path, video_path, frames=None, device: str | None = None) -> dict:
    """Pipeline pass, then bare pass (see the module docstring); returns the figures."""
    recipe = load_recipe(recipe_path)
    tmp = Path(tempfile.mkdtemp(prefix="vre-bench-gpu-"))
    out = tmp / "bench.zarr"
    try:
        options = RunOptions(frame_spec=tuple(frames or ()), device=device, progress=False)
        with contextlib.ExitStack() as held:
            video, store, selected = open_target(video_path, out, options, held)
            prepared = prepare(recipe, video, store, selected, options)
            units, size = prepared.units, prepared.size
            t0 = time.perf_counter()
            experts = load_experts(recipe, prepared.computing, prepared.weights, device)
            setup_s = time.perf_counter() - t0
            learned = [n for n in prepared.computing if experts[n].uses_torch]
            if not learned:
                raise VreError(f"{recipe_path}: no learned (torch) expert to measure")
            try:
                steps = frame_steps(experts.values())
                first = max(recipe.experts[name].batch_size for name in learned)  # one batch each
                warm_unit = Unit(units[0].shard, {k: v[:first] for k, v in units[0].compute.items()}, {})
                batch = next(video.batches([warm_unit.frames], size=size, steps=steps))
                t0 = time.perf_counter()
                UnitExecutor(recipe, experts, size, prepared.store, "stop", RunStats()).compute(warm_unit, batch)
                _sync()
                warmup_s = time.perf_counter() - t0

                timer = ForwardTimer(experts[n] for n in learned)
                stats = RunStats()
                with GpuSampler() as sampler:
                    t0 = time.perf_counter()
                    execute(recipe, experts, video, prepared.store, units, size, options, stats)
                    _sync()
                    pipeline_s = time.perf_counter() - t0
                forward_pipeline_s = timer.seconds()
                timer.reset()

                batches = list(video.batches([u.frames for u in units], size=size, steps=steps))
                bare = RunStats()
                executor = UnitExecutor(recipe, experts, size, prepared.store, "stop", bare)
                for unit, b in zip(units, batches):
                    executor.compute(unit, b)
                _sync()
                forward_bare_s = timer.seconds()
                timer.remove()
                uuid = torch_uuid(experts[learned[0]].device) if "cuda" in str(experts[learned[0]].device) else None
            finally:
                for expert in experts.values():
                    expert.teardown()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    n = stats.frames
    bare_s = sum(bare.expert_seconds[name] for name in learned)
    report = {
        "recipe": str(recipe_path), "video": str(video_path), "frames": n, "size": list(size),
        "learned_experts": learned, "device": str(experts[learned[0]].device),
        "batch_sizes": {name: recipe.experts[name].batch_size for name in learned},
        "setup_s": setup_s, "warmup_s": warmup_s, "pipeline_s": pipeline_s,
        "pipeline_fps": n / pipeline_s,
        "bare_fps": n / bare_s, "bare_expert_fps": {name: n / bare.expert_seconds[name] for name in learned},
        "forward_fps": n / forward_bare_s if forward_bare_s else None,
        "ratio_to_bare": (n / pipeline_s) / (n / bare_s),
        "busy_share": sampler.share(uuid),
        "forward_share": forward_pipeline_s / pipeline_s,
        "pipeline_expert_fps": {name: stats.expert_frames[name] / stats.expert_seconds[name]
                                for name in stats.expert_frames},
        "decode_wait_s": stats.decode_wait,
    }
    if report["forward_fps"]:
        report["ratio_to_forward"] = report["pipeline_fps"] / report["forward_fps"]
    return report


def format_report(r: dict) -> str:
    pct = lambda v: "n/a" if v is None else f"{100 * v:.0f}%"  # noqa: E731
    lines = [f"{r['recipe']} on {r['video']}: {r['frames']} frames at {r['size'][0]}x{r['size'][1]}, "
             f"learned experts {', '.join(r['learned_experts'])} on {r['device']} "
             f"(batch sizes {r['batch_sizes']})",
             f"  expert loading       {r['setup_s']:8.2f} s   warm-up {r['warmup_s']:.2f} s",
             f"  pipeline             {r['pipeline_fps']:8.1f} frames/s ({r['pipeline_s']:.2f} s, waited "
             f"{r['decode_wait_s']:.2f} s for decoding)",
             f"  bare expert calls    {r['bare_fps']:8.1f} frames/s  "
             + ", ".join(f"{k} {v:.1f}" for k, v in r["bare_expert_fps"].items()),
             f"  bare model forward   {r['forward_fps'] or 0:8.1f} frames/s",
             f"  pipeline / bare      {pct(r['ratio_to_bare']):>8}"
             + (f"   pipeline / forward {pct(r['ratio_to_forward'])}" if r.get("ratio_to_forward") else ""),
             f"  GPU busy (NVML)      {pct(r['busy_share']):>8}   inside forward {pct(r['forward_share'])}"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m video_pipeline.bench.gpu", description=__doc__.split("\n")[0])
    p.add_argument("recipe")
    p.add_argument("video")
    p.add_argument("--frames", nargs="+", metavar="A..B|I")
    p.add_argument("--device", help="auto|cpu|cuda|cuda:N (default: the recipe's)")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    try:
        report = measure(args.recipe, args.video, frames=args.frames, device=args.device)
    except VreError as err:
        print(f"bench.gpu: error: {err}", file=sys.stderr)
        return err.exit_code
    print(json.dumps(report, indent=1) if args.json else format_report(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
