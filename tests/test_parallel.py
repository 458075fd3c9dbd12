"""`vre run --workers N`: the same store as one worker, several videos at once, interrupts, errors."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import zarr

from conftest import REPO, vre, write_recipe
from video_pipeline.parallel import JOBS_PER_WORKER, default_workers, split_jobs, worker_device
from video_pipeline.recipe import load_recipe
from video_pipeline.runner import RunOptions, Unit, run

COUNTING = REPO / "tests" / "plugins" / "counting.py"

# Experts that show which process ran them, declare a torch model, or kill their process once.
WORKER_PLUGIN = '''
import os
import numpy as np
from video_pipeline import Expert, OutputSpec, register_expert


@register_expert("test/pid-log")
class PidLog(Expert):
    """Appends "<pid> <frames>" to `log` per call; writes zeros."""

    def __init__(self, log: str = ""):
        self.log = log

    def output(self, deps):
        return OutputSpec(channels=1, kind="binary")

    def __call__(self, frames, deps):
        with open(self.log, "a") as f:
            f.write(f"{os.getpid()} {len(frames)}\\n")
        return np.zeros((*frames.shape[:3], 1), np.uint8)


@register_expert("test/learned")
class Learned(Expert):
    """Declares a torch model (for device placement); appends "<pid> <CUDA_VISIBLE_DEVICES>
    <device>" to `log` per call; writes zeros."""

    uses_torch = True

    def __init__(self, log: str = ""):
        self.log = log

    def output(self, deps):
        return OutputSpec(channels=1, kind="depth")

    def __call__(self, frames, deps):
        with open(self.log, "a") as f:
            f.write(f"{os.getpid()} {os.environ.get('CUDA_VISIBLE_DEVICES')} {self.device}\\n")
        return np.zeros((*frames.shape[:3], 1), np.float16)


@register_expert("test/exit-at")
class ExitAt(Expert):
    """Ends its process with exit code `code` on its `call`-th call, if it is the first process to
    get there (it creates the `marker` file); otherwise the frames' red channel."""

    def __init__(self, call: int = 2, marker: str = "", code: int = 3):
        self.call, self.marker, self.code, self.calls = call, marker, code, 0

    def output(self, deps):
        return OutputSpec(channels=1, kind="image")

    def __call__(self, frames, deps):
        self.calls += 1
        if self.calls == self.call:
            try:
                os.close(os.open(self.marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            except FileExistsError:
                pass
            else:
                os._exit(self.code)
        return frames[..., :1].copy()
'''


def store_recipe(tmp_path: Path, experts: str, shard_frames: int = 8, name: str = "r.yaml") -> Path:
    plugin = tmp_path / "worker_experts.py"
    plugin.write_text(WORKER_PLUGIN)
    return write_recipe(tmp_path / name, f"plugins: [{COUNTING}, {plugin}]\nshard_frames: {shard_frames}\n"
                                         f"experts:\n{experts}")


def basic_experts(log: Path, delay: float = 0.0) -> str:
    return ("  rgb: {type: color/rgb}\n  hsv: {type: color/hsv}\n  edges: {type: edges/canny}\n"
            f"  bright: {{type: test/brightness, params: {{delay: {delay}}}}}\n"
            "  plus: {type: test/plus-one, deps: [bright]}\n"
            f"  pid: {{type: test/pid-log, params: {{log: {log}}}}}\n")


def array_names(group: zarr.Group, prefix: str = "") -> list[str]:
    names = []
    for key, member in group.members():
        names += [prefix + key] if isinstance(member, zarr.Array) else array_names(member, f"{prefix}{key}/")
    return sorted(names)


def assert_same_store(a_path: Path, b_path: Path) -> None:
    """Every array (modalities, flags, frame index) equal, with the same attrs and metadata."""
    a, b = zarr.open_group(str(a_path), mode="r"), zarr.open_group(str(b_path), mode="r")
    assert array_names(a) == array_names(b)
    for name in array_names(a):
        np.testing.assert_array_equal(a[name][:], b[name][:], err_msg=name)
        assert dict(a[name].attrs) == dict(b[name].attrs), name
    meta_a, meta_b = (dict(g.attrs["video_pipeline"]) for g in (a, b))
    meta_a.pop("created"), meta_b.pop("created")
    assert meta_a == meta_b


def logged_pids(log: Path) -> dict[int, int]:
    """pid -> frames that process computed."""
    out: dict[int, int] = {}
    for line in log.read_text().split("\n"):
        if line:
            pid, n = map(int, line.split())
            out[pid] = out.get(pid, 0) + n
    return out


def kill_midway(cmd: list[str], flags: Path, n_shards: int, sig: int) -> tuple[int, str]:
    """Run `vre` `cmd`, send it `sig` once some but not all shards of `flags` are durable;
    returns (exit status, stderr)."""
    # SIGINT back to its default in the child: a test run started in the background (`cmd &`)
    # inherits it ignored, and Python then installs no KeyboardInterrupt handler
    proc = subprocess.Popen([sys.executable, "-m", "video_pipeline.cli", *cmd],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if flags.exists() and 1 <= len(list(flags.rglob("c/*"))) < n_shards:
            break
        time.sleep(0.01)
    assert proc.poll() is None, f"the run ended before it could be interrupted: {proc.communicate()}"
    proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=60)
    return proc.returncode, stderr


def wait_gone(pids, timeout: float = 10.0) -> None:
    """Assert every process in `pids` ends within `timeout` seconds."""
    deadline = time.time() + timeout
    alive = set(pids)
    while alive and time.time() < deadline:
        for pid in list(alive):
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                alive.discard(pid)
        time.sleep(0.05)
    assert not alive, f"worker processes {alive} outlived their driver"


# ---------------------------------------------------------------------------------------- tests
def test_jobs_are_contiguous_cover_every_unit_once_and_balance():
    units = [Unit(s, {"a": np.arange(8 * s, 8 * s + 8)}, {}) for s in range(10)]
    jobs = split_jobs(units, target=0, n_workers=2, first_id=5)
    assert len(jobs) == min(10, JOBS_PER_WORKER * 2) and [j.id for j in jobs] == list(range(5, 5 + len(jobs)))
    assert [u.shard for j in jobs for u in j.units] == list(range(10))
    sizes = [len(j.units) for j in jobs]
    assert sizes == sorted(sizes, reverse=True)
    load = [0, 0]  # two workers taking the next job whenever free end up with equal shares
    for size in sizes:
        load[int(np.argmin(load))] += size
    assert load == [5, 5]
    assert split_jobs([], 0, 2) == []


def test_one_worker_per_visible_gpu_for_learned_experts(tmp_path, monkeypatch):
    learned = load_recipe(store_recipe(tmp_path, "  rgb: {type: color/rgb}\n  d: {type: test/learned}\n"))
    plain = load_recipe(store_recipe(tmp_path, "  rgb: {type: color/rgb}\n", name="plain.yaml"))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,5,7")
    assert default_workers(learned, None) == 3 and default_workers(learned, "cpu") == 1
    assert default_workers(learned, "cuda:1") == 1 and default_workers(plain, None) == 1
    assert [worker_device(learned, ["d"], None, k) for k in range(4)] == ["cuda:0", "cuda:1", "cuda:2", "cuda:0"]
    assert worker_device(learned, ["d"], "cuda:1", 2) == "cuda:1" and worker_device(plain, ["rgb"], None, 1) is None
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    assert default_workers(learned, None) == 1 and worker_device(learned, ["d"], "auto", 1) == "auto"


def test_two_workers_write_the_single_worker_store(tmp_path, clip):
    log = tmp_path / "pids.log"
    recipe = store_recipe(tmp_path, basic_experts(log))
    ref, out = tmp_path / "ref.zarr", tmp_path / "w2.zarr"
    run(load_recipe(recipe), clip, ref, RunOptions(progress=False))
    log.unlink()
    r = vre("run", str(recipe), str(clip), "-o", str(out), "--workers", "2", "-q")
    assert r.returncode == 0, r.stderr
    assert f"{out}: 48 frames" in r.stdout
    assert_same_store(ref, out)
    pids = logged_pids(log)
    assert len(pids) == 2 and sum(pids.values()) == 48  # two processes, each frame computed once


def test_several_videos_at_once(tmp_path):
    from video_pipeline.synth import make_clip

    clips = [make_clip(tmp_path / f"{name}.mp4", n_frames=20, size=(64, 96), seed=seed)
             for name, seed in (("a", 1), ("b", 2))]
    recipe = store_recipe(tmp_path, "  rgb: {type: color/rgb}\n  bright: {type: test/brightness}\n"
                                    "  plus: {type: test/plus-one, deps: [bright]}\n")
    for clip in clips:
        run(load_recipe(recipe), clip, tmp_path / "ref" / f"{clip.stem}.zarr", RunOptions(progress=False))
    work = tmp_path / "work"
    work.mkdir()
    r = vre("run", str(recipe), *map(str, clips), "--workers", "2", "-q", cwd=work)
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("20 frames") == 2
    for clip in clips:
        assert_same_store(tmp_path / "ref" / f"{clip.stem}.zarr", work / f"{clip.stem}.zarr")
    again = vre("run", str(recipe), *map(str, clips), "--workers", "2", cwd=work)
    assert again.returncode == 0 and again.stdout.count("nothing to do") == 2


def test_killed_driver_takes_its_workers_and_a_single_worker_resumes(tmp_path, clip):
    log = tmp_path / "pids.log"
    recipe = store_recipe(tmp_path, basic_experts(log, delay=0.03))
    ref, out = tmp_path / "ref.zarr", tmp_path / "killed.zarr"
    code, _ = kill_midway(["run", str(recipe), str(clip), "-o", str(out), "--workers", "2", "-q"],
                          out / "_progress" / "plus", 6, signal.SIGKILL)
    assert code == -signal.SIGKILL
    wait_gone(logged_pids(log))  # no orphan goes on writing
    partial = zarr.open_group(str(out), mode="r")["_progress/plus"][:]
    assert 0 < partial.sum() < 6
    run(load_recipe(recipe), clip, out, RunOptions(progress=False))
    run(load_recipe(recipe), clip, ref, RunOptions(progress=False))
    assert_same_store(ref, out)
    assert not list(out.rglob("*.partial"))


def test_ctrl_c_stops_the_workers_keeping_finished_shards(tmp_path, clip):
    log = tmp_path / "pids.log"
    recipe = store_recipe(tmp_path, basic_experts(log, delay=0.03))
    out = tmp_path / "s.zarr"
    code, stderr = kill_midway(["run", str(recipe), str(clip), "-o", str(out), "--workers", "2", "-q"],
                               out / "_progress" / "plus", 6, signal.SIGINT)
    assert code == 130 and stderr.count("\n") == 1 and "interrupted" in stderr, stderr
    wait_gone(logged_pids(log), timeout=1.0)  # the driver ended them before exiting
    assert zarr.open_group(str(out), mode="r")["_progress/plus"][:].sum() >= 1


def test_worker_errors_are_one_line(tmp_path, clip):
    recipe = store_recipe(tmp_path, "  rgb: {type: color/rgb}\n"
                                    "  bad: {type: test/fail-at, params: {fail_call: 2}}\n")
    r = vre("run", str(recipe), str(clip), "-o", str(tmp_path / "a.zarr"), "--workers", "2", "-q")
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert "expert 'bad' (test/fail-at) failed at frames" in r.stderr and "boom" in r.stderr
    assert zarr.open_group(str(tmp_path / "a.zarr"), mode="r")["_progress/rgb"][:].sum() >= 1

    recipe = store_recipe(tmp_path, "  rgb: {type: color/rgb}\n"
                                    f"  dies: {{type: test/exit-at, params: {{marker: {tmp_path / 'm'}}}}}\n",
                          name="dies.yaml")
    r = vre("run", str(recipe), str(clip), "-o", str(tmp_path / "b.zarr"), "--workers", "2", "-q")
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert "worker process vre-worker-" in r.stderr and "exited with code 3" in r.stderr


def test_a_worker_reports_frames_within_a_unit(tmp_path, clip, monkeypatch):
    """A worker moves its count per expert batch, as the single-process bar moves, so the driver's
    bar is not stuck while a slow expert works through a shard (8 frames, batches of 2)."""
    import contextlib

    from video_pipeline import parallel
    from video_pipeline.runner import open_target, prepare

    plugin = REPO / "tests" / "plugins" / "counting.py"
    recipe = load_recipe(write_recipe(tmp_path / "r.yaml", f"plugins: [{plugin}]\nshard_frames: 8\nexperts:\n"
                                      "  bright: {type: test/brightness, batch_size: 2, params: {delay: 0.02}}\n"))
    options = RunOptions(frame_spec=("0..16",), progress=False)
    with contextlib.ExitStack() as held:
        video, store, frames, _ = open_target(clip, tmp_path / "w.zarr", options, held)
        prepared = prepare(recipe, video, store, frames, options)
        spec = parallel.WorkerSpec(str(recipe.path), recipe.sha256, tuple(prepared.computing), prepared.weights,
                                   None, "stop", None)
        worker = parallel.Worker(spec, [parallel.Target(str(clip), str(store.path), prepared.size)])
        monkeypatch.setattr(parallel, "PROGRESS_S", 0.005)
        reports = []
        result = worker.run(parallel.Job(0, 0, tuple(prepared.units)), reports.append)
        worker.close()
    assert result.error is None and result.stats.frames == 16
    totals = np.cumsum(reports)
    assert totals[-1] == 16 and any(t % 8 for t in totals), reports   # some report lies inside a shard


def test_the_driver_bar_says_workers_load_weights_until_the_first_frames_arrive():
    from types import SimpleNamespace

    from video_pipeline import parallel

    run = SimpleNamespace(targets=[SimpleNamespace(store="/x/a.zarr")], jobs=[SimpleNamespace(n_frames=10)],
                          options=RunOptions(progress=True),
                          prepared=[SimpleNamespace(computing=["rgb", "seg"], weights={"seg": object(), "rgb": None})])
    bar = parallel._bar(run)
    try:
        assert bar.postfix == "workers loading weights: seg"
        parallel._advance(bar, 0)
        assert bar.postfix == "workers loading weights: seg" and bar.n == 0
        parallel._advance(bar, 3)
        assert not bar.postfix and bar.n == 3
    finally:
        bar.close()
