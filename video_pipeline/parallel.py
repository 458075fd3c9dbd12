"""Parallel backends of `vre run`: local worker processes (`--workers N`) and Ray (`--ray [ADDRESS]`).

Both follow one scheme, with the planner and resume rules of the single-process runner:
  1. The driver locks and opens every store with `runner.open_target` and calls `runner.prepare`
     on it (recipe check, plan, weights, arrays), as a single-process run does, then cuts each
     store's units (one per shard) into contiguous *jobs*.
  2. A worker (a spawned process, or a Ray actor) re-loads the recipe from its file (plugins
     included), loads the experts once and keeps them, and runs each job it is handed with
     `runner.execute`: it decodes its own frames and writes its own shards straight to the store,
     flagging a shard only once it is written. Only job descriptors (frame indices), progress counts
     and run statistics cross process boundaries; frames and outputs never do.
  3. Workers report finished frames to one progress bar in the driver. The first error stops the
     run as one line; a Ray actor that dies has its job retried on another actor. Whatever happens,
     finished shards stay durable, so a later run (of any backend) resumes.
"""
from __future__ import annotations

import contextlib
import glob
import logging
import multiprocessing as mp
import multiprocessing.connection
import os
import signal
import sys
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from video_pipeline import errors, registry
from video_pipeline.errors import DecodeError, RecipeError, VreError, WeightsError
from video_pipeline.recipe import Recipe, load_recipe
from video_pipeline.runner import (FrameCount, Prepared, RunOptions, RunStats, Unit, discarded_on_error,
                                   execute, load_experts, open_target, prepare, progress_bar,
                                   resolve_weights, tune_malloc, usable_cpus)
from video_pipeline.store import VideoStore
from video_pipeline.video import FrameIndex, Video

JOBS_PER_WORKER = 3     # jobs per worker and store: enough to balance, few enough to keep decode runs long
MAX_ATTEMPTS = 3        # a Ray job whose actor dies is tried this many times in all
PROGRESS_S = 0.25       # how often a worker reports its finished frames


# ---------------------------------------------------------------------------------------- descriptors
@dataclass(frozen=True)
class Target:
    """One video and its store, as every worker sees them (absolute paths)."""

    video: str
    store: str
    size: tuple[int, int]


@dataclass(frozen=True)
class WorkerSpec:
    """What a worker needs to load: the recipe file, the experts and their resolved weights."""

    recipe_path: str
    recipe_sha256: str                  # the driver's recipe: a worker refuses a file changed since
    experts: tuple[str, ...]            # experts with work in some store, in dependency order
    weights: dict                       # name -> ResolvedWeights or None (resolved by the driver)
    device: str | None                  # --device
    on_error: str
    threads: int | None                 # CPU threads for OpenCV/torch per worker; None: their default


@dataclass(frozen=True)
class Job:
    """Contiguous units of one store, run by one worker in one decode pass."""

    id: int
    target: int
    units: tuple[Unit, ...]

    @property
    def n_frames(self) -> int:
        return sum(len(u.frames) for u in self.units)


@dataclass
class JobResult:
    """What a worker hands back: its statistics, or the error that stopped the job
    (class name, one-line message, frame for decode errors, traceback)."""

    job: int
    stats: RunStats
    error: tuple[str, str, int | None, str] | None = None


def split_jobs(units: Sequence[Unit], target: int, n_workers: int, first_id: int = 0) -> list[Job]:
    """Cut a store's units (in shard order) into at most JOBS_PER_WORKER * n_workers contiguous jobs,
    larger ones first: handed out in order, the small jobs at the end even out the workers."""
    if not units:
        return []
    n_jobs = min(len(units), JOBS_PER_WORKER * n_workers)
    bounds = np.cumsum([0] + [len(p) for p in np.array_split(np.arange(len(units)), n_jobs)])
    return [Job(first_id + i, target, tuple(units[a:b])) for i, (a, b) in enumerate(zip(bounds, bounds[1:]))]


def visible_gpus() -> int:
    """NVIDIA GPUs this process may use, without importing torch (a rerun with nothing to do must
    start fast): CUDA_VISIBLE_DEVICES when set, else the driver's /dev/nvidiaN devices."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        ids = [v for v in visible.split(",") if v.strip()]
        return len(ids[:next((i for i, v in enumerate(ids) if v.strip() == "-1"), len(ids))])
    return len(glob.glob("/dev/nvidia[0-9]*"))


def default_workers(recipe: Recipe, device: str | None) -> int:
    """Workers when `--workers` is not given: one per visible GPU for a recipe with learned
    experts on a machine with several GPUs (and no device pinned), else 1."""
    if not _has_learned(recipe, list(recipe.experts)) or (device or recipe.device) not in ("auto", "cuda"):
        return 1
    return max(1, visible_gpus())


def worker_device(recipe: Recipe, names: Sequence[str], device: str | None, slot: int) -> str | None:
    """The `--device` of worker `slot`: on a machine with several visible GPUs, worker k runs the
    learned experts on GPU k mod count; a device named by --device or the recipe is kept."""
    count = visible_gpus()
    if count < 2 or not _has_learned(recipe, names) or (device or recipe.device) not in ("auto", "cuda"):
        return device
    return f"cuda:{slot % count}"


def _has_learned(recipe: Recipe, names: Sequence[str]) -> bool:
    return any(registry.get_expert(recipe.experts[n].type).uses_torch for n in names)


# ---------------------------------------------------------------------------------------- the worker
class Worker:
    """A worker's state: the recipe, its experts (loaded on the first job, kept for the next ones),
    the opened stores and videos. Runs in a spawned process or as a Ray actor."""

    def __init__(self, spec: WorkerSpec, targets: Sequence[Target], slot: int = 0):
        tune_malloc()
        self.spec, self.targets, self.slot = spec, list(targets), slot
        self.recipe: Recipe | None = None
        self.experts: dict = {}
        self.opened: dict[int, tuple[VideoStore, Video]] = {}

    def run(self, job: Job, report: Callable[[int], object]) -> JobResult:
        """Run one job; `report(n)` is called with the frames finished since its last call.
        Errors are returned, never raised: the driver decides what the user sees."""
        stats = RunStats()
        try:
            self._load()
            store, video = self._open(job.target)
            # a worker's share of the CPUs, also for frame-parallel experts
            options = RunOptions(on_error=self.spec.on_error, progress=True, expert_threads=self.spec.threads)
            count = FrameCount()  # moved per expert batch, as the single-process bar is
            with _reporting(count, report):
                execute(self.recipe, self.experts, video, store, list(job.units),
                        self.targets[job.target].size, options, stats, count)
        except Exception as err:  # noqa: BLE001 - handed back to the driver, which raises it
            return JobResult(job.id, stats, (type(err).__name__, str(err), getattr(err, "frame", None),
                                             traceback.format_exc()))
        return JobResult(job.id, stats)

    def close(self) -> None:
        for expert in self.experts.values():
            expert.teardown()
        self.experts = {}

    def _load(self) -> None:
        if self.recipe is not None:
            return
        spec = self.spec
        recipe = load_recipe(spec.recipe_path)
        if recipe.sha256 != spec.recipe_sha256:
            raise RecipeError(f"{spec.recipe_path}: changed while the run was starting; rerun it")
        if spec.threads:
            import cv2

            cv2.setNumThreads(spec.threads)
        weights = {name: self._local_weights(recipe, name, w) for name, w in spec.weights.items()}
        device = worker_device(recipe, spec.experts, spec.device, self.slot)
        self.experts = load_experts(recipe, list(spec.experts), weights, device)
        if spec.threads and "torch" in sys.modules:
            sys.modules["torch"].set_num_threads(spec.threads)
        self.recipe = recipe

    @staticmethod
    def _local_weights(recipe: Recipe, name: str, resolved):
        """The driver's resolved weights, or (on a node without that path) resolved again here,
        which must give the same checksum."""
        if resolved is None or Path(resolved.path).exists():
            return resolved
        here = resolve_weights(recipe, [name])[name]
        if here.sha256 != resolved.sha256:
            raise WeightsError(f"expert '{name}': weights on this node ({here.path}, sha256 {here.sha256}) "
                               f"differ from the driver's ({resolved.sha256}); make every node use the same files")
        return here

    def _open(self, target: int) -> tuple[VideoStore, Video]:
        if target not in self.opened:
            t = self.targets[target]
            # "r+": the driver holds the lock, and partial files are its to clean up
            store = VideoStore.open(t.store, "r+")
            video = Video.open(t.video, index=FrameIndex.from_arrays(*store.load_index()))
            self.opened[target] = (store, video)
        return self.opened[target]


@contextlib.contextmanager
def _reporting(count: FrameCount, report: Callable[[int], object]):
    """Call `report(n)` with the whole frames `count` gained, every PROGRESS_S while the body runs
    and once at its end."""
    sent = 0
    stop = threading.Event()

    def flush():
        nonlocal sent
        n = int(count.n + 1e-6)  # fractions of a unit add up to whole frames up to rounding
        if n > sent:
            report(n - sent)
            sent = n

    def pump():
        while not stop.wait(PROGRESS_S):
            flush()

    thread = threading.Thread(target=pump, name="vre-progress", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        flush()


def _rebuild_error(error: tuple[str, str, int | None, str]) -> Exception:
    """A worker's error as the exception the driver raises (VreErrors keep their class)."""
    name, message, frame, trace = error
    cls = getattr(errors, name, None)
    if cls is DecodeError:
        return DecodeError(message, frame)
    if isinstance(cls, type) and issubclass(cls, VreError):
        return cls(message)
    err = RuntimeError(f"in a worker: {name}: {message}")
    err.add_note(trace)  # shown with --debug
    return err


# ---------------------------------------------------------------------------------------- the driver
@dataclass
class _Run:
    """The driver's view of a run: targets, their prepared stores, jobs and collected results."""

    recipe: Recipe
    targets: list[Target]
    prepared: list[Prepared]
    jobs: list[Job]
    options: RunOptions
    stats: list[RunStats] = field(default_factory=list)
    decode_errors: list[DecodeError] = field(default_factory=list)

    def split(self, n_workers: int) -> None:
        """Cut every store's units into jobs for `n_workers` workers."""
        self.jobs = []
        for t, prepared in enumerate(self.prepared):
            self.jobs += split_jobs(prepared.units, t, n_workers, first_id=len(self.jobs))

    @property
    def n_units(self) -> int:
        return sum(len(p.units) for p in self.prepared)

    def collect(self, result: JobResult) -> None:
        """Merge a job's statistics; raise its error (decode errors wait until the end: the other
        jobs go on, as every frame before the break is worth storing)."""
        target = self.jobs[result.job].target  # job ids are positions in `jobs`
        merge_stats(self.stats[target], result.stats)
        if result.error is None:
            return
        err = _rebuild_error(result.error)
        if not isinstance(err, DecodeError):
            raise err
        self.decode_errors.append(err)


def merge_stats(into: RunStats, part: RunStats) -> None:
    """Add `part`'s counts and timings to `into`."""
    into.frames += part.frames
    into.units += part.units
    for name, s in part.expert_seconds.items():
        into.expert_seconds[name] = into.expert_seconds.get(name, 0.0) + s
    for name, n in part.expert_frames.items():
        into.expert_frames[name] = into.expert_frames.get(name, 0) + n
    into.decode_wait += part.decode_wait
    into.write_seconds += part.write_seconds
    into.bytes_written += part.bytes_written
    for name, why in part.skipped.items():
        into.skipped.setdefault(name, why)  # keep the first reason reported


def run_parallel(recipe: Recipe, targets: Sequence[tuple[Path, Path]],
                 options: RunOptions) -> list[tuple[Path, RunStats]]:
    """`vre run` with `options.workers` > 1 local workers, or on Ray (`options.ray`), over every
    (video, store) pair of `targets` (`runner.store_paths`). Returns (store, its statistics) per
    pair, each with the whole run's wall time; skipped experts are recorded in their stores."""
    t_start = time.perf_counter()
    pool = _Pool(options.workers) if options.ray is None else None  # starts while stores are prepared
    try:
        with contextlib.ExitStack() as held:
            run = _Run(recipe, [], [], [], options)
            with contextlib.ExitStack() as refused:  # before any frame: no store made here is left
                opened = []
                for video_path, out in targets:
                    video, store, frames, fresh = open_target(video_path, Path(out).resolve(), options, held)
                    refused.enter_context(discarded_on_error(store.path, fresh))
                    opened.append((video_path, video, store, frames))
                for video_path, video, store, frames in opened:
                    prepared = prepare(recipe, video, store, frames, options)
                    run.targets.append(Target(str(Path(video_path).resolve()), str(store.path),
                                              tuple(prepared.size)))
                    run.prepared.append(prepared)
                    run.stats.append(RunStats())
            if pool is not None:
                held.callback(pool.close)  # workers end before the locks are released
                if run.n_units:
                    pool.run(run)
            elif run.n_units:
                _run_ray(run, options.ray, options.workers)
            for prepared, stats in zip(run.prepared, run.stats):
                prepared.store.record_skips(stats.skipped)
    finally:
        if pool is not None:
            pool.close()
    wall = time.perf_counter() - t_start
    if run.decode_errors:
        first = min(run.decode_errors, key=lambda e: e.frame)
        total = sum(s.frames for s in run.stats)
        reason = str(first).rsplit(" (", 1)[0]  # the worker's own count of frames does not apply
        raise DecodeError(f"{reason} ({total} frames were processed and stored; the frames from "
                          f"{first.frame} on were not)", first.frame)
    for stats in run.stats:
        stats.wall = wall
    return [(Path(t.store), stats) for t, stats in zip(run.targets, run.stats)]


def _worker_spec(run: _Run, threads: int | None) -> WorkerSpec:
    names = {n for p in run.prepared for n in p.computing}
    weights = {}
    for p in run.prepared:
        weights.update(p.weights)
    order = tuple(n for n in run.recipe.experts if n in names)
    return WorkerSpec(str(Path(run.recipe.path).resolve()), run.recipe.sha256, order,
                      {n: weights[n] for n in order}, run.options.device, run.options.on_error, threads)


def _bar(run: _Run):
    """The driver's bar over every job's frames; until the first frames arrive it says which
    weights the workers are loading."""
    desc = Path(run.targets[0].store).name if len(run.targets) == 1 else f"{len(run.targets)} videos"
    bar = progress_bar(sum(j.n_frames for j in run.jobs), desc, run.options.progress)
    learned = sorted({n for p in run.prepared for n in p.computing if p.weights.get(n) is not None})
    if learned and run.options.progress:
        bar.set_postfix_str(f"workers loading weights: {', '.join(learned)}")
    return bar


def _advance(bar, frames: int) -> None:
    """Move the driver's bar by the frames workers reported (the loading note goes with the first)."""
    if frames:
        if getattr(bar, "postfix", None):
            bar.set_postfix_str("", refresh=False)
        bar.update(frames)


# ---------------------------------------------------------------------------------------- local processes
class _Pool:
    """Local worker processes, spawned before the driver prepares the stores so that their start-up
    (imports) overlaps with it. `run` hands out the jobs, one per worker at a time, each worker over
    its own pipe (spec and jobs out; progress and results back); `close` ends them."""

    def __init__(self, n: int):
        ctx = mp.get_context("spawn")
        self.workers = []  # (process, the driver's end of its pipe)
        self.finished = False
        try:
            for slot in range(n):
                ours, theirs = ctx.Pipe()
                proc = ctx.Process(target=_process_main, args=(slot, theirs), name=f"vre-worker-{slot}",
                                   daemon=True)
                proc.start()
                theirs.close()
                self.workers.append((proc, ours))
        except BaseException:
            self.close()
            raise

    def run(self, run: _Run) -> None:
        n = min(len(self.workers), run.n_units)
        run.split(n)
        spec = _worker_spec(run, threads=max(1, usable_cpus() // n))
        todo = deque(run.jobs)
        active = {}  # sentinel or connection -> (process, connection) of workers holding a job
        for proc, conn in self.workers:
            if todo:
                conn.send((spec, run.targets))
                conn.send(todo.popleft())
                active[conn] = active[proc.sentinel] = (proc, conn)
            else:
                conn.send(None)
        remaining = len(run.jobs)
        with contextlib.closing(_bar(run)) as bar:
            while remaining:
                for ready in mp.connection.wait(list(active)):
                    if ready not in active:
                        continue  # its worker was retired earlier in this loop
                    proc, conn = active[ready]
                    try:
                        kind, payload = conn.recv()
                    except (EOFError, OSError):  # the pipe broke or the sentinel fired: it is gone
                        proc.join()
                        raise _worker_died(proc) from None
                    if kind == "progress":
                        _advance(bar, payload)
                        continue
                    remaining -= 1
                    run.collect(payload)
                    if todo:
                        conn.send(todo.popleft())
                    else:
                        conn.send(None)
                        del active[conn], active[proc.sentinel]
        self.finished = True

    def close(self) -> None:
        """After `run`, wait for the workers to end; otherwise (an error, Ctrl-C, nothing to do)
        stop them now."""
        for proc, _ in self.workers:
            if not self.finished and proc.is_alive():
                proc.terminate()
        for proc, conn in self.workers:
            proc.join(30 if self.finished else 5)
            if proc.is_alive():
                proc.kill()
                proc.join()
            conn.close()


def _worker_died(proc) -> VreError:
    """The error for a worker process that ended while holding a job."""
    code = proc.exitcode
    if code == -signal.SIGKILL:
        how = "was killed (signal 9: out of memory?)"
    elif code is not None and code < 0:
        how = f"was killed by signal {-code}"
    else:
        how = f"exited with code {code}"
    return VreError(f"worker process {proc.name} {how}; finished shards are kept, rerun to resume")


def _process_main(slot: int, conn) -> None:
    """A local worker process: receives (spec, targets), then runs the jobs it receives until a
    None, reporting on `conn`. Only one thread sends at a time: progress reports stop before a
    job's result is sent."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group: the driver decides
    # The driver stops a worker with SIGTERM: exit through Python, so pending shard writes finish
    # and the multiprocessing finalizers run (no leaked-semaphore warnings from libraries' locks).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    if "fork" in mp.get_all_start_methods():
        # A spawned child defaults to spawn: the locks libraries make (tqdm, Blosc) would then be
        # named semaphores that a worker killed mid-job leaks, with a warning at the driver's exit.
        mp.set_start_method("fork", force=True)
    _exit_with_parent()
    first = conn.recv()
    if first is None:  # the driver found nothing for this worker to do
        return
    worker = Worker(*first, slot)
    try:
        while (job := conn.recv()) is not None:
            result = worker.run(job, lambda n: conn.send(("progress", n)))
            conn.send(("done", result))
    finally:
        worker.close()


def _exit_with_parent() -> None:
    """End this process as soon as the driver is gone (even killed): no orphan goes on writing to a
    store that a later run may already be resuming."""
    parent = mp.parent_process()

    def watch():
        mp.connection.wait([parent.sentinel])
        os._exit(1)

    threading.Thread(target=watch, name="vre-parent-watch", daemon=True).start()


# ---------------------------------------------------------------------------------------- Ray
class _Progress:
    """Ray actor: sums the frames the workers report; the driver takes the count."""

    def __init__(self):
        self.n = 0

    def add(self, n: int) -> None:
        self.n += n

    def take(self) -> int:
        n, self.n = self.n, 0
        return n


class _RayWorker(Worker):
    """The Ray actor: a Worker reporting progress to the `_Progress` actor."""

    def run_job(self, job: Job, progress) -> JobResult:
        return self.run(job, progress.add.remote)


def _run_ray(run: _Run, address: str, n_workers: int) -> None:
    """Run the jobs as tasks of Ray actors, one job per actor at a time; a job whose actor dies is
    retried (its unfinished units) on another actor."""
    try:
        import ray
        from ray.exceptions import RayError, RayTaskError
    except ImportError:
        raise VreError("--ray needs Ray: pip install 'video-pipeline[ray]'") from None
    started = not ray.is_initialized()
    if started:
        try:  # no address: connect to a running instance (RAY_ADDRESS, the latest local) or start one
            ray.init(address=None if address == "auto" else address, include_dashboard=False,
                     logging_level=logging.ERROR)  # our own errors say what went wrong
        except (ConnectionError, ValueError, RuntimeError) as err:
            raise VreError(f"--ray {address}: cannot connect to a Ray cluster ({str(err).splitlines()[0]}); "
                           f"start one with `ray start --head` or give its address") from None
    actors, running, progress = [], {}, None  # running: object ref -> (actor, job, attempt)
    try:
        resources = ray.cluster_resources()
        gpus = int(resources.get("GPU", 0))
        names = {n for p in run.prepared for n in p.computing}
        use_gpu = gpus > 0 and _has_learned(run.recipe, list(names)) and \
            (run.options.device or run.recipe.device) not in ("cpu", "mps")
        n = n_workers if n_workers > 1 else (gpus if use_gpu else int(resources.get("CPU", 1)))
        n = max(1, min(n, run.n_units))
        run.split(n)
        # a CPU actor holds one CPU: one thread for OpenCV/torch; a GPU actor keeps their defaults
        spec = _worker_spec(run, threads=None if use_gpu else 1)
        actor_cls = ray.remote(_RayWorker).options(num_cpus=1, num_gpus=1 if use_gpu else 0)
        progress = ray.remote(_Progress).options(num_cpus=0).remote()
        actors += [actor_cls.remote(spec, run.targets, slot) for slot in range(n)]
        free = list(actors)
        todo = deque((job, 1) for job in run.jobs)
        spare = n  # replacement actors the run may still start
        with contextlib.closing(_bar(run)) as bar:
            while todo or running:
                while free and todo:
                    actor, (job, attempt) = free.pop(), todo.popleft()
                    running[actor.run_job.remote(job, progress)] = (actor, job, attempt)
                done, _ = ray.wait(list(running), num_returns=1, timeout=PROGRESS_S)
                _advance(bar, ray.get(progress.take.remote()))
                for ref in done:
                    actor, job, attempt = running.pop(ref)
                    try:
                        result = ray.get(ref)
                    except RayTaskError as err:  # Worker.run returns errors: this is a bug
                        raise RuntimeError(f"in a Ray worker: {str(err).splitlines()[0]}") from err
                    except RayError as err:  # the actor died (crash, node lost): retry elsewhere
                        left = _unfinished(run, job)
                        if left.units and attempt >= MAX_ATTEMPTS:
                            raise VreError(f"{run.targets[job.target].store}: shards {job.units[0].shard}.."
                                           f"{job.units[-1].shard} failed on {attempt} Ray actors (last: "
                                           f"{type(err).__name__}); finished shards are kept, rerun to "
                                           f"resume") from None
                        if left.units:
                            todo.appendleft((left, attempt + 1))
                            bar.total += left.n_frames  # its frames are counted again
                            bar.refresh()
                        if spare:
                            spare -= 1
                            actors.append(actor_cls.remote(spec, run.targets, len(actors)))
                            free.append(actors[-1])
                        continue
                    free.append(actor)
                    run.collect(result)
            _advance(bar, ray.get(progress.take.remote()))
    finally:
        for actor in actors:
            ray.kill(actor)
        if running:  # wait until the killed actors are really gone, so none still writes
            ray.wait(list(running), num_returns=len(running), timeout=30)
        if progress is not None:
            ray.kill(progress)
        if started:
            ray.shutdown()


def _unfinished(run: _Run, job: Job) -> Job:
    """`job` without the units that are durable in the store by now (all of them stay under
    --overwrite, whose frames were durable before the run)."""
    if run.options.overwrite:
        return job
    store = run.prepared[job.target].store
    done = {name: store.done_frames(name) for name in {n for u in job.units for n in u.compute}}
    left = tuple(u for u in job.units if not all(done[n][idx].all() for n, idx in u.compute.items()))
    return replace(job, units=left)
