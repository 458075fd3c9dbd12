"""Pipeline: one decode pass, every expert in dependency order per shard, threaded shard writes.

The front door: the CLI makes one `RunOptions` and the list of (video, store) pairs (`store_paths`)
once, then calls `run` per video (or `parallel.run_parallel` with all of them). For each video,
`open_target` locks and opens the store once and demuxes the video once (not at all when the store
holds the frame index of this very file), `prepare` plans and resolves the weights (each once, see
`Recipe.resolve_weights`), and `execute` runs units with loaded experts: the single-process run,
worker processes and Ray actors all call it.

Where a frame goes:
  1. `plan()` decides, per store shard, which frames each expert computes (not yet durable, or
     --overwrite) and which dependency frames are read back from the store (stored by an earlier run).
     The result is a list of `Unit`s, one per shard: the same planner serves every backend.
  2. `Video.batches` decodes each unit's frames in a background thread (bounded queue).
  3. `UnitExecutor.compute` runs the experts in dependency order on the unit; each output is handed
     to its dependents in memory (never recomputed, never re-read).
  4. `ShardWriter` threads compress + write each finished unit, then flag it done (`store.py`).
"""
from __future__ import annotations

import contextlib
import ctypes
import fcntl
import os
import shutil
import sys
import threading
import time
from collections import deque
from collections.abc import Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from video_pipeline import __version__
from video_pipeline.device import resolve_device
from video_pipeline.errors import DecodeError, ExpertError, StoreError, VreError, WeightsError
from video_pipeline.expert import Expert, frame_steps
from video_pipeline.graph import closure, dependents
from video_pipeline.imageops import resize
from video_pipeline.recipe import ExpertSpec, Recipe, sha256_of
from video_pipeline.store import ArraySpec, VideoStore, shard_groups
from video_pipeline.video import FrameBatch, FrameIndex, Video, fingerprint, parse_frames

ON_ERROR = ("stop", "skip")


@dataclass
class RunOptions:
    """What `vre run` was asked beyond the recipe."""

    frames: np.ndarray | None = None        # int64 [K] sorted frame indices; None = see frame_spec
    frame_spec: tuple[str, ...] = ()         # --frames tokens (A..B, numbers), read against each video
    stride: int = 1                          # --stride: every k-th frame of the selection
    only: tuple[str, ...] = ()               # compute only these experts (and missing deps)
    overwrite: bool = False
    device: str | None = None                # overrides the recipe's default device
    on_error: str = "stop"                   # stop | skip (skip the failing expert and dependents)
    progress: bool = True
    write_threads: int = 2
    expert_threads: int | None = None        # threads a frame-parallel expert's batch is split over
                                             # (None: the CPUs this process may run on)
    queue_size: int = 2
    workers: int = 1                         # local worker processes (parallel.py when > 1)
    ray: str | None = None                   # Ray cluster address ("auto": find or start one)

    def selected(self, n_frames: int) -> np.ndarray:
        """int64 [K]: the sorted frame indices to run of a video of `n_frames` frames."""
        if self.frames is not None:
            return np.asarray(self.frames, np.int64)
        if self.frame_spec or self.stride != 1:
            return parse_frames(list(self.frame_spec), self.stride, n_frames)
        return np.arange(n_frames, dtype=np.int64)


@dataclass
class Unit:
    """Work on one store shard: frame indices (sorted int64) per expert to compute / to load."""

    shard: int
    compute: dict[str, np.ndarray]
    load: dict[str, np.ndarray]

    @property
    def frames(self) -> np.ndarray:
        """Frames to decode: every frame some expert computes."""
        return np.unique(np.concatenate(list(self.compute.values())))


@dataclass
class RunStats:
    """Timings and counts of one run (printed by `vre run`, tabulated by `vre bench`)."""

    frames: int = 0
    units: int = 0
    expert_seconds: dict[str, float] = field(default_factory=dict)
    expert_frames: dict[str, int] = field(default_factory=dict)
    decode_wait: float = 0.0              # the main thread waiting for decoded frames
    write_wait: float = 0.0               # the main thread waiting for the writers (back-pressure)
    write_seconds: float = 0.0
    bytes_written: int = 0
    wall: float = 0.0
    skipped: dict[str, str] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------- planning
def plan(recipe: Recipe, store: VideoStore, frames: np.ndarray, only: tuple[str, ...] = (),
         overwrite: bool = False) -> list[Unit]:
    """Decide what to compute. Pure function of the recipe, the store's flags and the options.

    An expert computes frame f if f is selected and not durable (or --overwrite asked for it), or
    if a dependent computes f and f is not durable. A durable dependency frame that a dependent
    needs is loaded from the store instead of recomputed.
    """
    deps = recipe.deps
    asked = set(only) if only else set(recipe.experts)
    run_set = closure(asked, deps)
    selected = np.zeros(store.n_frames, dtype=bool)
    selected[frames] = True
    done = {n: np.zeros(store.n_frames, dtype=bool) if overwrite and n in asked else store.done_frames(n)
            for n in run_set}
    need = {n: np.zeros(store.n_frames, dtype=bool) for n in run_set}
    users = dependents({n: [d for d in deps[n]] for n in run_set})
    compute, load = {}, {}
    for name in reversed([n for n in recipe.experts if n in run_set]):
        need[name] = selected & ~done[name] if name in asked else need[name]
        for user in users[name]:
            need[name] |= compute[user]
        compute[name] = need[name] & ~done[name]
        load[name] = np.zeros_like(compute[name])
        for user in users[name]:
            load[name] |= compute[user] & done[name]
    units = []
    order = [n for n in recipe.experts if n in run_set]
    all_compute = np.flatnonzero(np.logical_or.reduce([compute[n] for n in order]))
    for shard in shard_groups(all_compute, store.shard_frames):
        lo, hi = shard * store.shard_frames, (shard + 1) * store.shard_frames
        c = {n: np.flatnonzero(compute[n][lo:hi]) + lo for n in order}
        ld = {n: np.flatnonzero(load[n][lo:hi]) + lo for n in order}
        units.append(Unit(shard, {n: v for n, v in c.items() if len(v)},
                          {n: v for n, v in ld.items() if len(v)}))
    return units


# ---------------------------------------------------------------------------------------- experts


def array_spec(spec: ExpertSpec, weights_attrs: dict | None) -> ArraySpec:
    """The store array of an expert, with its provenance attrs."""
    out = spec.output
    attrs = {"type": spec.type, "params": spec.params, "deps": list(spec.deps),
             "weights": weights_attrs, **out.to_attrs()}
    return ArraySpec(name=spec.name, channels=out.channels, dtype=out.dtype, attrs=attrs, codec=spec.codec)


def resolve_weights(recipe: Recipe, names: list[str]) -> dict:
    """The resolved weights of experts `names` (name -> ResolvedWeights or None); fails fast."""
    out = {}
    for name in names:
        try:
            out[name] = recipe.resolve_weights(name)
        except WeightsError as err:
            raise WeightsError(f"{recipe.path}:{recipe.experts[name].line}: {err}") from None
    return out


def load_experts(recipe: Recipe, names: list[str], weights: Mapping, device: str | None) -> dict[str, Expert]:
    """Bind and set up the experts `names` with their resolved `weights`: the instances validation
    built (already configured by their `output`) on a recipe's first load, fresh ones after that
    or for experts validation could not finish (see `Recipe.take_expert`)."""
    experts = {}
    for name in names:
        spec = recipe.experts[name]
        w = weights.get(name)
        expert, validated = recipe.take_expert(name)
        expert.bind(name, spec.deps, spec.weights, w.path if w else None, spec.dtype)
        if not validated:  # experts configure themselves from their dependencies' specs
            expert.output({d: recipe.experts[d].output for d in spec.deps})
        dev = resolve_device(spec.device or device or recipe.device) if expert.uses_torch else "cpu"
        try:
            expert.setup(dev)
        except VreError:
            raise
        except Exception as err:
            raise ExpertError(f"expert '{name}' ({spec.type}) failed to load on {dev}: "
                              f"{type(err).__name__}: {err}") from err
        experts[name] = expert
    return experts


@contextlib.contextmanager
def loaded_experts(recipe: Recipe, names: list[str], weights: Mapping, device: str | None):
    """`load_experts` for the body of a `with`; every expert is torn down at its end."""
    experts = load_experts(recipe, names, weights, device)
    try:
        yield experts
    finally:
        for expert in experts.values():
            expert.teardown()


def check_output(spec: ExpertSpec, out, n: int, size: tuple[int, int], frames: np.ndarray) -> np.ndarray:
    """Validate an expert's output at the boundary: shape [n,H,W,C], finite, cast to the spec dtype."""
    where = f"expert '{spec.name}' ({spec.type}) at frames {frames[0]}..{frames[-1]}"
    if not isinstance(out, np.ndarray):
        raise ExpertError(f"{where}: returned {type(out).__name__}, expected a numpy array")
    c = spec.output.channels
    if out.ndim != 4 or out.shape[0] != n or out.shape[3] != c:
        raise ExpertError(f"{where}: returned shape {tuple(out.shape)}, expected [{n}, H, W, {c}]")
    if out.dtype.kind == "f":
        bad = ~np.isfinite(out.reshape(n, -1)).all(axis=1)
        if bad.any():
            raise ExpertError(f"{where}: returned NaN/Inf at frame {frames[int(np.argmax(bad))]}")
    if out.shape[1:3] != size:
        out = resize(out, size, spec.output.kind)
    with np.errstate(over="ignore"):  # checked just below, as one clear error instead of a warning
        stored = out.astype(spec.output.dtype, copy=False)
    if stored.dtype.kind == "f" and stored.dtype.itemsize < out.dtype.itemsize:  # float32 -> float16 overflows to Inf
        bad = ~np.isfinite(stored.reshape(n, -1)).all(axis=1)
        if bad.any():
            raise ExpertError(f"{where}: returned values beyond the {stored.dtype} range "
                              f"(±{float(np.finfo(stored.dtype).max):g}) at frame {frames[int(np.argmax(bad))]}")
    return stored


def _as_slice(rows: np.ndarray) -> slice | np.ndarray:
    """Consecutive row numbers as a slice (views instead of copies), else the array itself."""
    if len(rows) and rows[-1] - rows[0] == len(rows) - 1:
        return slice(int(rows[0]), int(rows[-1]) + 1)
    return rows


def _take(arr: np.ndarray, rows: slice | np.ndarray, sl: slice) -> np.ndarray:
    """arr[rows][sl] without copying when `rows` is a slice."""
    if isinstance(rows, slice):
        start = rows.start + (sl.start or 0)
        return arr[start:min(start + (sl.stop - sl.start), rows.stop)]
    return arr[rows[sl]]


class BarProgress:
    """Moves a progress bar (tqdm, counting frames) within a unit: every expert batch advances it by
    that expert's share of the unit's frames, and the bar names the expert running; `finish` settles
    the unit at its frame count. Costs a few attribute writes per batch: tqdm redraws at most every
    `mininterval` seconds."""

    def __init__(self, bar):
        self.bar, self.moved, self.share = bar, 0.0, 1.0

    def start_unit(self, n_experts: int) -> None:
        self.share = 1.0 / max(1, n_experts)

    def running(self, name: str) -> None:
        self.bar.set_postfix_str(name, refresh=False)
        if time.time() - self.bar.last_print_t > self.bar.mininterval:
            self.bar.refresh()  # a slow first batch (a learned expert) shows its name at once

    def done(self, frames: int) -> None:
        self.moved += frames * self.share
        self.bar.update(frames * self.share)

    def finish(self, frames: int) -> None:
        self.bar.update(frames - self.moved)
        self.moved = 0.0


class FrameCount:
    """What BarProgress moves in a worker process: a count of frames (fractions within a unit) that
    the worker reports to the driver's bar; it draws nothing."""

    mininterval = float("inf")  # never asks for a redraw
    last_print_t = 0.0

    def __init__(self):
        self.n = 0.0

    def update(self, n: float) -> None:
        self.n += n

    def set_postfix_str(self, text: str, refresh: bool = True) -> None:
        pass

    def close(self) -> None:
        pass


class UnitExecutor:
    """Runs the experts of a recipe on decoded units, in dependency order, in memory."""

    def __init__(self, recipe: Recipe, experts: Mapping[str, Expert], size: tuple[int, int],
                 store: VideoStore, on_error: str, stats: RunStats, progress: BarProgress | None = None,
                 threads: int = 1):
        self.recipe, self.experts, self.size = recipe, experts, size
        self.store, self.on_error, self.stats = store, on_error, stats
        self.skipped: dict[str, str] = stats.skipped
        self.progress = progress
        self.threads = max(1, threads)  # for frame-parallel experts (Expert.frame_parallel)
        self.pool: ThreadPoolExecutor | None = None

    def close(self) -> None:
        """Stop the threads frame-parallel experts ran on."""
        if self.pool is not None:
            self.pool.shutdown(wait=True)
            self.pool = None

    def compute(self, unit: Unit, batch: FrameBatch) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Outputs {name: (frame indices [K], data [K,H,W,C])} of the experts computed on this unit."""
        available: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        results = {}
        for name, idx in unit.load.items():
            available[name] = (idx, self.store.read(name, idx))
        if self.progress is not None:
            self.progress.start_unit(sum(1 for n in unit.compute if n not in self.skipped))
        for name, spec in self.recipe.experts.items():
            idx = unit.compute.get(name)
            if idx is None or name in self.skipped:
                continue
            if any(d in self.skipped for d in spec.deps):
                self.skip(name, f"dependency '{next(d for d in spec.deps if d in self.skipped)}' was skipped")
                continue
            idx = idx[np.isin(idx, batch.indices)]  # a decode failure may cut the unit short
            if not len(idx):
                continue
            try:
                data = self.run_expert(spec, idx, batch, available)
            except ExpertError as err:
                if self.on_error == "stop":
                    raise
                self.skip(name, str(err))
                continue
            available[name] = results[name] = (idx, data)
        return results

    def run_expert(self, spec: ExpertSpec, idx: np.ndarray, batch: FrameBatch,
                   available: Mapping[str, tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
        """The expert's checked output on frames `idx` [K] of `batch`: [K, H, W, C], computed in
        calls of at most its batch size; a frame-parallel expert's calls run on `threads` threads
        (its batch split so that each thread gets a share)."""
        expert = self.experts[spec.name]
        pos = _as_slice(np.searchsorted(batch.indices, idx))
        dep_rows = {d: _as_slice(np.searchsorted(available[d][0], idx)) for d in spec.deps}
        step = spec.batch_size
        parallel = expert.frame_parallel and self.threads > 1 and len(idx) > 1
        if parallel:
            step = min(step, -(-len(idx) // self.threads))
        t0 = time.perf_counter()
        if self.progress is not None:
            self.progress.running(spec.name)

        def call(sl: slice) -> np.ndarray:
            frames = _take(batch.frames, pos, sl)
            deps = {d: _take(available[d][1], rows, sl) for d, rows in dep_rows.items()}
            if expert.needs_next_frame:
                partner, sign = batch.partners[expert.frame_step]
                deps["next_frames"], deps["next_sign"] = _take(partner, pos, sl), _take(sign, pos, sl)
            if spec.resolution and spec.resolution != self.size:
                frames = resize(frames, spec.resolution, "image")
                deps = {d: resize(v, spec.resolution, self.recipe.experts[d].output.kind
                                  if d in self.recipe.experts else "image") if v.ndim == 4 else v
                        for d, v in deps.items()}
            try:
                res = expert(frames, deps)
            except VreError:
                raise
            except Exception as err:
                raise ExpertError(f"expert '{spec.name}' ({spec.type}) failed at frames "
                                  f"{idx[sl][0]}..{idx[sl][-1]}: {type(err).__name__}: {err}") from err
            return check_output(spec, res, len(frames), self.size, idx[sl])

        calls = [slice(a, a + step) for a in range(0, len(idx), step)]
        if parallel:
            if self.pool is None:
                self.pool = ThreadPoolExecutor(self.threads, thread_name_prefix="vre-expert")
            results = self.pool.map(call, calls)
        else:
            results = map(call, calls)
        parts = []
        for part in results:  # in order, as each call finishes
            parts.append(part)
            if self.progress is not None:
                self.progress.done(len(part))
        out = parts[0] if len(parts) == 1 else np.concatenate(parts)
        self.stats.expert_seconds[spec.name] = self.stats.expert_seconds.get(spec.name, 0.0) + time.perf_counter() - t0
        self.stats.expert_frames[spec.name] = self.stats.expert_frames.get(spec.name, 0) + len(idx)
        return out

    def skip(self, name: str, reason: str) -> None:
        """--on-error skip: stop computing `name` for this run and record why in the store."""
        self.skipped[name] = reason
        self.store.record_skips({name: reason})


class ShardWriter:
    """Writer threads: compress + write a unit's arrays, then flag its frames durable.

    At most `depth` units wait in memory; `submit` blocks beyond that (back-pressure).
    """

    def __init__(self, store: VideoStore, threads: int, stats: RunStats):
        self.store, self.stats = store, stats
        self.pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="vre-writer")
        self.pending: deque[Future] = deque()
        self.depth = threads + 1
        self.lock = threading.Lock()

    def submit(self, shard: int, results: dict[str, tuple[np.ndarray, np.ndarray]]) -> None:
        t0 = time.perf_counter()
        while len(self.pending) >= self.depth:
            self.pending.popleft().result()
        self.stats.write_wait += time.perf_counter() - t0
        self.pending.append(self.pool.submit(self.write, shard, results))

    def write(self, shard: int, results) -> None:
        t0 = time.perf_counter()
        for name, (idx, data) in results.items():
            try:
                self.store.write_frames(name, idx, data)
                self.store.mark_done(name, idx)
            except OSError as err:
                raise StoreError(f"{self.store.path}/{name}: cannot write shard {shard} "
                                 f"(frames {idx[0]}..{idx[-1]}): {err.strerror or err}; free space or "
                                 f"choose another -o, then rerun to resume") from None
        with self.lock:
            self.stats.write_seconds += time.perf_counter() - t0
            self.stats.bytes_written += sum(d.nbytes for _, d in results.values())

    def close(self) -> None:
        """Wait for every pending write; re-raise the first failure."""
        t0 = time.perf_counter()
        try:
            while self.pending:
                self.pending.popleft().result()
            self.stats.write_wait += time.perf_counter() - t0
        finally:
            self.pool.shutdown(wait=True, cancel_futures=True)


# ---------------------------------------------------------------------------------------- store setup
class StoreLock:
    """An exclusive advisory lock on a store for the duration of a run.

    `flock` on the store directory itself: no extra file in the zarr hierarchy, and the kernel
    releases it if the process dies, so a killed run never blocks the next one.
    """

    def __init__(self, path: Path):
        self.path = path

    def __enter__(self):
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            self.fd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY)
        except OSError as err:
            raise StoreError(f"{self.path}: cannot create the store ({err.strerror}); "
                             f"choose another location with -o") from None
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self.fd)
            raise StoreError(f"{self.path}: another vre run is writing this store; wait for it to "
                             f"finish or use another -o") from None
        return self

    def __exit__(self, *exc):
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)


@contextmanager
def discarded_on_error(path: Path, fresh: bool):
    """Remove store folder `path` if `fresh` (this run made it) and the block fails: a run refused
    before its first frame (missing weights, a bad --only) leaves no empty store behind."""
    try:
        yield
    except BaseException:
        if fresh:
            remove_fresh_store(path)
        raise


def remove_fresh_store(path: Path, attempts: int = 10) -> None:
    """Delete the store folder a refused first run made. zarr runs a node's writes concurrently and
    goes on with the others after the first one fails (a full disk), so a folder can reappear
    just after the removal: removed again until it stays gone for 20 ms (a leftover folder holds
    no file, so `store.store_owner` would still let the next run write there)."""
    for _ in range(attempts):
        shutil.rmtree(path, ignore_errors=True)
        time.sleep(0.02)
        if not path.exists():
            return


def tune_malloc(arenas: int = 2) -> None:
    """glibc malloc settings for a frame pipeline, each unless its MALLOC_*_ variable says otherwise.

    - At most `arenas` arenas: glibc gives threads their own; with the decoder, writer and Blosc
      threads handing frame buffers to each other, freed memory stays scattered over them and the
      peak resident size grows with the video's length (cpu-fast recipe, 300 vs 3000 frames: +18%).
      With two it stays flat (+5%) at no measured speed cost.
    - Blocks up to 32 MiB (glibc's largest mmap threshold) come from the heap, and freed memory is
      kept up to 512 MiB: frames, outputs and compressed chunks of 0.5-2 MB are allocated and freed
      every frame, and by default many are mmap'ed and given back, each page faulted in and zeroed
      again (cpu-fast recipe, 300 frames: 112-159k page faults -> 56-70k).
    A no-op off Linux or off glibc.
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return
    # mallopt parameters: M_ARENA_MAX -8, M_MMAP_THRESHOLD -3, M_TRIM_THRESHOLD -1
    for variable, param, value in (("MALLOC_ARENA_MAX", -8, arenas), ("MALLOC_MMAP_THRESHOLD_", -3, 32 << 20),
                                   ("MALLOC_TRIM_THRESHOLD_", -1, 512 << 20)):
        if not os.environ.get(variable):
            try:
                libc.mallopt(param, value)
            except AttributeError:
                return


def same_weights(spec: ExpertSpec, recipe: Recipe, store: VideoStore) -> bool:
    """Whether the weights `spec` names are byte for byte those its stored array was made with: a
    recipe may name one file differently (relative or absolute, a moved recipe, a copy elsewhere)."""
    if spec.weights is None or spec.name not in store.names:
        return False
    made_with = (dict(store.array(spec.name).attrs).get("weights") or {}).get("sha256")
    if not made_with:
        return False
    try:
        return recipe.resolve_weights(spec.name).sha256 == made_with
    except VreError:
        return False


def reconcile(recipe: Recipe, store: VideoStore, video_info: dict, size: tuple[int, int],
              overwrite_names: set[str]) -> dict:
    """Check the recipe against what the store holds; return the merged recipe dict to record.

    Same video, resolution and shard size are required. An expert already stored under the same
    name must have the same identity (type, deps, params, weights, ...), unless it is overwritten.
    Experts of the store the recipe does not mention are kept as they are.
    """
    meta = store.meta
    new = recipe.to_dict()
    if not meta:
        return new
    where = str(store.path)
    check_same_video(store, video_info)
    if tuple(meta["resolution"]) != tuple(size):
        raise StoreError(f"{where}: stored at resolution {meta['resolution']}, the recipe asks "
                         f"{list(size)}; use another -o")
    if meta["shard_frames"] != recipe.shard_frames:
        raise StoreError(f"{where}: stored with shard_frames {meta['shard_frames']}, the recipe asks "
                         f"{recipe.shard_frames}; use another -o")
    stored = meta["recipe"]["experts"]
    for name, ident in new["experts"].items():
        old = stored.get(name)
        if old is None or old == ident or name in overwrite_names:
            continue
        diff = [k for k in ident if ident[k] != old.get(k)]
        if diff == ["weights"] and same_weights(recipe.experts[name], recipe, store):
            new["experts"][name] = old  # the same file named another way: the stored data stands
            continue
        raise StoreError(f"{where}: expert '{name}' is stored with a different recipe ("
                         + ", ".join(f"{k}: {old.get(k)!r} -> {ident[k]!r}" for k in diff)
                         + "); rerun with --overwrite --only " + name + " or use another -o")
    merged = dict(meta["recipe"])
    merged["experts"] = {**stored, **new["experts"]}
    return merged


# ---------------------------------------------------------------------------------------- the run
@dataclass
class Prepared:
    """A store made ready for a run: metadata reconciled, arrays created, work planned."""

    store: VideoStore
    video: Video
    size: tuple[int, int]
    units: list[Unit]
    computing: list[str]                 # experts with work to do, in dependency order
    weights: dict[str, object]           # name -> ResolvedWeights (or None)


def store_paths(videos: list[str | Path], output: str | Path | None) -> list[tuple[Path, Path]]:
    """The (video, store) pairs of `vre run VIDEO... [-o OUT]`: `-o` names the store of a single
    video; without it each video goes to `<stem>.zarr` in the working directory."""
    if len(videos) > 1 and output:
        raise VreError("-o names one store; with several videos, omit it (each gets <stem>.zarr)")
    pairs = [(Path(v), Path(output) if output else Path.cwd() / f"{Path(v).stem}.zarr") for v in videos]
    stores = [out.resolve() for _, out in pairs]
    for out in stores:
        if stores.count(out) > 1:
            clash = [str(v) for (v, _), o in zip(pairs, stores) if o == out]
            raise VreError(f"{' and '.join(clash)} would both be stored in {out}; run them separately "
                           f"with -o")
    return pairs


def open_target(video_path: str | Path, out: Path, options: RunOptions,
                held: contextlib.ExitStack) -> tuple[Video, VideoStore, np.ndarray, bool]:
    """Lock and open the store of a run, open its video and select the frames to run; the last
    value says whether this call made the store (see `discarded_on_error`).

    The store is opened once and the video demuxed once (not at all when the store holds the frame
    index of this very file). A bad video or frame selection fails before any store is created.
    The lock is released when `held` closes.
    """
    out = Path(out)
    store = None
    if (out / "zarr.json").is_file():
        held.enter_context(StoreLock(out))
        store = VideoStore.open(out, mode="a")
    video = open_video(video_path, store)
    frames = options.selected(video.n_frames)
    fresh = store is None and not out.exists()
    if store is None:
        held.enter_context(StoreLock(out))
        with discarded_on_error(out, fresh):
            store = VideoStore.open(out, mode="a")
    return video, store, frames, fresh


def prepare(recipe: Recipe, video: Video, store: VideoStore, frames: np.ndarray,
            options: RunOptions) -> Prepared:
    """Everything before the first decoded frame, on the store `open_target` opened (lock held).

    Checks the recipe against the store, records the metadata and frame index, plans the units for
    `frames`, resolves every needed weight (so a missing one fails before decoding) and creates
    the arrays.
    """
    for name in options.only:
        if name not in recipe.experts:
            raise VreError(f"--only {name}: not an expert of {recipe.path} "
                           f"(it has: {', '.join(recipe.experts)})")
    if options.on_error not in ON_ERROR:
        raise VreError(f"--on-error must be one of {', '.join(ON_ERROR)}")
    size = recipe.resolution or (video.height, video.width)
    check_memory(recipe, size, options)
    asked = set(options.only) if options.only else set(recipe.experts)
    info = video_facts(video)
    merged = reconcile(recipe, store, info, size, asked if options.overwrite else set())
    if options.overwrite:
        # Before the metadata names the new recipe, forget every frame that no longer matches it:
        # a kill anywhere then leaves the old expert or the new one partly, never old frames
        # flagged done under new params.
        for name in stale_experts((store.meta.get("recipe") or {}).get("experts") or {},
                                  merged["experts"], asked):
            if name not in store:
                continue
            if name in asked and _array_differs(store, recipe.experts[name], size):
                store.remove(name)  # a new shape: start its array afresh
            else:
                store.clear(name)
    store.init_meta(merged, sha256_of(merged), info, __version__, recipe.shard_frames, size)
    if not store.has_index(raw=True):  # absent, or compressed (stores made before): written raw
        store.save_index(video.index.to_arrays(), video.index.time_base)
    check_stored_data(store)
    units = plan(recipe, store, frames, options.only, options.overwrite)
    for name in closure(asked, recipe.deps):
        if recipe.experts[name].output is None:  # weights that validation could not resolve
            raise WeightsError(recipe.experts[name].pending_error)
    computing = [n for n in recipe.experts if any(n in u.compute for u in units)]
    weights = resolve_weights(recipe, computing)
    for name in computing:
        w = weights[name]
        store.ensure_array(array_spec(recipe.experts[name], w.to_attrs() if w else None), *size)
    return Prepared(store, video, size, units, computing, weights)


def run(recipe: Recipe, video_path: str | Path, out: str | Path, options: RunOptions | None = None) -> RunStats:
    """`vre run` on one video in this process: compute what the recipe asks and the store lacks,
    one decode pass. Skipped experts (`--on-error skip`) are in the returned stats and the store.

    Raises VreError subclasses for everything a user can cause; every finished shard is kept.
    """
    options = options or RunOptions()
    t_start = time.perf_counter()
    stats = RunStats()
    with contextlib.ExitStack() as held:
        video, store, frames, fresh = open_target(video_path, Path(out), options, held)
        with discarded_on_error(store.path, fresh):
            prepared = prepare(recipe, video, store, frames, options)
        if prepared.units:
            bar = held.enter_context(contextlib.closing(progress_bar(
                sum(len(u.frames) for u in prepared.units), store.path.name, options.progress)))
            learned = [n for n in prepared.computing if prepared.weights.get(n) is not None]
            if learned:
                bar.set_postfix_str(f"loading weights: {', '.join(learned)}")
            with loaded_experts(recipe, prepared.computing, prepared.weights, options.device) as experts:
                execute(recipe, experts, video, store, prepared.units, prepared.size, options, stats, bar)
    stats.wall = time.perf_counter() - t_start
    return stats


def check_stored_data(store: VideoStore) -> list[str]:
    """Every run's cheap integrity check of what the flags call done (see `VideoStore.check_shards`):
    deleted flag arrays are recreated, and the flags of missing, truncated or damaged shards are
    cleared so this run recomputes them; says so in one line on stderr. Returns the damage found."""
    found = list(store.repaired)
    for name in store.orphan_flags():  # flags over an array that is gone: never "done"
        store.remove(name)
        found.append(f"{name}: array missing, its flags removed")
    for name in store.names:
        if store.repair_flags(name):
            found.append(f"{name}: flags recreated")
        bad = store.check_shards(name)
        if bad:
            store.forget_shards(name, [s for s, _ in bad if s >= 0] or range(store.n_shards))
            found += [f"{name} shard {s} ({why})" for s, why in bad]
    if found:
        shown = "; ".join(found[:4]) + (f"; and {len(found) - 4} more" if len(found) > 4 else "")
        print(f"vre: {store.path}: stored data damaged, its frames will be recomputed: {shown}",
              file=sys.stderr)
    return found


def shard_memory(recipe: Recipe, size: tuple[int, int], options: RunOptions) -> int:
    """Bytes a run holds at its peak, about: decoded uint8 RGB frames of the `queue_size` units
    waiting plus the one computed, and every expert's stored output for that unit and the
    `write_threads + 1` units the writers hold (see ShardWriter)."""
    h, w = size
    frames = recipe.shard_frames * h * w * 3
    outputs = sum(recipe.shard_frames * h * w * spec.output.channels * np.dtype(spec.output.dtype).itemsize
                  for spec in recipe.experts.values() if spec.output is not None)
    return frames * (options.queue_size + 1) + outputs * (options.write_threads + 2)


def physical_memory() -> int | None:
    """Bytes of RAM of this machine (None where the system does not say)."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def check_memory(recipe: Recipe, size: tuple[int, int], options: RunOptions) -> None:
    """Refuse, with the estimate, a run whose shards would not fit in this machine's memory."""
    need, have = shard_memory(recipe, size, options), physical_memory()
    if have and need > have:
        raise VreError(f"{recipe.path}: shards of {recipe.shard_frames} frames at {size[0]}x{size[1]} need "
                       f"about {need / 2**30:.1f} GiB of memory (decoded frames and every expert's "
                       f"output, buffered while writing), this machine has {have / 2**30:.1f} GiB; lower "
                       f"shard_frames or resolution")


def stale_experts(stored: Mapping[str, dict], new: Mapping[str, dict], asked: set[str]) -> list[str]:
    """Names whose stored frames stop matching the recipe the store will record: asked experts whose
    identity (type, params, weights, deps, ...) changes, and every stored expert depending on one of
    them, directly or not (its frames were computed from the old data). Dependents first."""
    changed = {n for n in asked if n in stored and stored[n] != new.get(n)}
    deps = {n: list((new.get(n) or stored.get(n) or {}).get("deps") or []) for n in {*stored, *new}}
    stale, grew = set(changed), True
    while grew:
        grew = False
        for name in stored:
            if name not in stale and any(d in stale for d in deps.get(name, ())):
                stale.add(name)
                grew = True
    order = [n for n in stored if n in stale]
    return [n for n in order if n not in changed] + [n for n in order if n in changed]


def _array_differs(store: VideoStore, spec: ExpertSpec, size) -> bool:
    arr = store.array(spec.name)
    return tuple(arr.shape[1:]) != (*size, spec.output.channels) or str(arr.dtype) != spec.output.dtype


def video_facts(video: Video) -> dict:
    """The store's `video` attrs: the design's facts plus the file's fingerprint (size, mtime and a
    content hash, see `video.fingerprint`): size and mtime tell a rerun whether the stored frame
    index still describes the file, the content hash whether it is the same video at all."""
    info = dict(video.info())
    fp = fingerprint(video)
    info.update(file_size=fp["size"], file_mtime=fp["mtime"], content_sha256=fp["content_sha256"])
    return info


def check_same_video(store: VideoStore, info: dict) -> None:
    """StoreError, naming both, unless `info` (video_facts) describes the video the store was made
    from: same frame count and, where the store recorded one, the same content hash."""
    old = store.meta.get("video") or {}
    if not old:
        return
    def desc(v: dict) -> str:
        size = f", {v['file_size']} bytes" if v.get("file_size") is not None else ""
        digest = f", content {v['content_sha256'][:12]}" if v.get("content_sha256") else ""
        return f"{v.get('path')} ({v.get('n_frames')} frames{size}{digest})"
    if old.get("n_frames") != info["n_frames"] or (
            old.get("content_sha256") and old["content_sha256"] != info["content_sha256"]):
        raise StoreError(f"{store.path}: was made from {desc(old)}, not from {desc(info)}; a store never "
                         f"mixes two videos: use another -o")


def open_video(video_path: str | Path, store: VideoStore | None) -> Video:
    """Open the video, reusing the frame index `store` keeps from an earlier run on the same file
    (same size and mtime), and then also the size and frame rate the store recorded with it: the
    file is not probed (its content is still checked, see `video_facts`)."""
    video_path = Path(video_path)
    index = facts = None
    if store is not None and video_path.is_file():
        try:
            meta_video = store.meta.get("video", {})
            st = video_path.stat()
            if meta_video.get("file_size") == st.st_size and meta_video.get("file_mtime") == st.st_mtime:
                stored = store.load_index()
                if stored:
                    index, facts = FrameIndex.from_arrays(*stored), meta_video
        except VreError:
            index = facts = None
    return Video.open(video_path, index=index, facts=facts)


def execute(recipe: Recipe, experts: Mapping[str, Expert], video: Video, store: VideoStore,
            units: list[Unit], size: tuple[int, int], options: RunOptions, stats: RunStats,
            bar=None) -> None:
    """Decode, compute and write `units` with loaded `experts`; finished units stay durable whatever
    happens next. Every backend runs its units through this (`run`, worker processes, Ray actors).
    `bar`: the progress bar to move (default: a new one, shown if `options.progress`)."""
    if bar is None:
        bar = progress_bar(sum(len(u.frames) for u in units), store.path.name, options.progress)
    progress = BarProgress(bar) if options.progress else None
    threads = options.expert_threads or usable_cpus()
    executor = UnitExecutor(recipe, experts, size, store, options.on_error, stats, progress, threads)
    writer = ShardWriter(store, options.write_threads, stats)
    held = contextlib.ExitStack()
    if threads > 1 and any(e.frame_parallel for e in experts.values()):
        # frames are spread over threads instead: OpenCV's own threads, spinning while they wait
        # for each other's stripes, would cost ~30% more CPU for the same work
        held.enter_context(opencv_threads(1))
    batches: Iterator[FrameBatch] = video.batches([u.frames for u in units], size=size,
                                                  steps=frame_steps(experts.values()),
                                                  queue_size=options.queue_size)
    decode_error: DecodeError | None = None
    try:
        for unit in units:
            t0 = time.perf_counter()
            try:
                batch = next(batches)
            except DecodeError as err:
                decode_error = err
                break
            stats.decode_wait += time.perf_counter() - t0
            results = executor.compute(unit, batch)
            if results:
                writer.submit(unit.shard, results)
            stats.frames += len(batch.indices)
            stats.units += 1
            if progress is not None:
                progress.finish(len(batch.indices))
            else:
                bar.update(len(batch.indices))
            if len(batch.indices) < len(unit.frames):  # the reader stopped inside this unit
                try:
                    next(batches)
                except DecodeError as err:
                    decode_error = err
                except StopIteration:
                    pass
                break
    finally:
        batches.close()
        bar.close()
        writer.close()
        executor.close()
        held.close()
    if decode_error is not None:
        raise DecodeError(f"{decode_error} ({stats.frames} frames before it were processed and stored; "
                          f"the rest of the video was not)", decode_error.frame)


def usable_cpus() -> int:
    """The number of CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


@contextmanager
def opencv_threads(n: int):
    """OpenCV's thread count set to `n` for the duration (restored after)."""
    import cv2

    before = cv2.getNumThreads()
    cv2.setNumThreads(n)
    try:
        yield
    finally:
        cv2.setNumThreads(before)


def progress_bar(total: int, desc: str, enabled: bool):
    from tqdm import tqdm

    # frames are counted in fractions (each expert batch moves the bar): show whole frames
    return tqdm(total=total, desc=desc, unit="frame", disable=not enabled, dynamic_ncols=True,
                smoothing=0.1, bar_format="{l_bar}{bar}| {n:.0f}/{total_fmt} [{elapsed}<{remaining}, "
                                          "{rate_fmt}{postfix}]")
