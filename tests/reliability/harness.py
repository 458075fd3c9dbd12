"""Crash harness: runs `vre` commands in forked children of one warm process, and kills them.

A child runs `video_pipeline.cli.main(argv)` exactly as the `vre` command does. The parent ends it
in one of three ways:
  - `stop`: the child stops itself (SIGSTOP) at a chosen write, the parent sees it stopped and
    sends SIGKILL. The store is then exactly as a crash at that write leaves it. Points:
      {"op": "put", "root": STORE, "key": GLOB, "nth": K, "phase": "half" | "before-rename" | "after-rename"}
        the K-th zarr object written whose key (relative to STORE) matches GLOB: half of its bytes
        in zarr's temporary `*.partial` file, all of them but not yet renamed, or renamed in place;
      {"op": "replace", "root": DIR, "key": GLOB, "nth": K, "phase": "before" | "after"}
        the K-th `os.replace(tmp, dst)` with dst matching GLOB (export files, checkpoints);
      {"op": "call", "target": "module:Class.method", "nth": K}
        right before the K-th call of a function (e.g. an optimizer step).
    Nothing in the program is changed besides that pause: the store is what the program wrote.
  - `kill_after`: SIGKILL after that many seconds (a random point, no help from the child);
  - neither: the command runs to its end.
`trace` makes the child append every write ("put KEY" / "replace KEY") to a file: the list of
places a crash can happen.

Forking a process that has already imported numpy, zarr, PyAV and the package saves the ~1.5 s
start-up of each `vre` process, which is what lets the suite kill a run at dozens of points within
seconds. Protocol: one JSON job per line on stdin, one JSON result per line on stdout.
"""
from __future__ import annotations

import contextlib
import fnmatch
import importlib
import io
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

WARM = ["numpy", "zarr", "av", "cv2", "yaml", "tqdm", "joblib", "video_pipeline.cli", "video_pipeline.runner",
        "video_pipeline.recipe", "video_pipeline.store", "video_pipeline.video", "video_pipeline.export",
        "video_pipeline.describe", "experts.color", "experts.edges"]


# ---------------------------------------------------------------------------------------- child side
class _Stopper:
    """Counts the events matching one stop point and stops the process at the chosen one."""

    def __init__(self, point: dict | None, trace: str | None, trace_root: str | None):
        self.point, self.trace = point or {}, trace
        self.root = self.point.get("root") or trace_root
        self.seen = 0
        self.lock = threading.Lock()

    def matches(self, op: str, path) -> bool:
        """True once, for the event where the process must stop (traces every event)."""
        if not self.root:
            return False
        key = os.path.relpath(os.fspath(path), self.root)
        if key.startswith(".."):
            return False
        with self.lock:
            if self.trace:
                with open(self.trace, "a") as f:
                    f.write(f"{op} {key}\n")
            if self.point.get("op") != op or not fnmatch.fnmatchcase(key, self.point["key"]):
                return False
            self.seen += 1
            return self.seen == self.point.get("nth", 1)

    @staticmethod
    def stop() -> None:
        sys.stdout.flush()
        sys.stderr.flush()
        os.kill(os.getpid(), signal.SIGSTOP)
        time.sleep(60)  # not reached: the parent kills a stopped child


def _install(point: dict | None, trace: str | None, trace_root: str | None) -> None:
    """Patch the write primitives of zarr's LocalStore and os.replace to pause at `point`."""
    from zarr.storage import _local

    stopper = _Stopper(point, trace, trace_root)
    phase = (point or {}).get("phase")
    real_atomic = _local._atomic_write

    @contextlib.contextmanager
    def atomic_write(path, mode, exclusive=False):
        hit = stopper.matches("put", path)
        with real_atomic(path, mode, exclusive) as f:
            if hit and phase == "half":
                yield _HalfWriter(f, stopper.stop)
            else:
                yield f
            if hit and phase == "before-rename":
                f.flush()
                stopper.stop()
        if hit and phase == "after-rename":
            stopper.stop()

    _local._atomic_write = atomic_write
    real_replace = os.replace

    def replace(src, dst, *args, **kwargs):
        hit = stopper.matches("replace", dst)
        if hit and phase == "before":
            stopper.stop()
        out = real_replace(src, dst, *args, **kwargs)
        if hit and phase == "after":
            stopper.stop()
        return out

    os.replace = replace
    if (point or {}).get("op") == "call":
        module, _, qualname = point["target"].partition(":")
        owner = importlib.import_module(module)
        *path, attr = qualname.split(".")
        for part in path:
            owner = getattr(owner, part)
        real = getattr(owner, attr)
        calls = [0]

        def wrapper(*args, **kwargs):
            calls[0] += 1
            if calls[0] == point.get("nth", 1):
                stopper.stop()
            return real(*args, **kwargs)

        setattr(owner, attr, wrapper)


class _HalfWriter(io.RawIOBase):
    """A file whose one write puts half the bytes on disk, then stops the process."""

    def __init__(self, f, stop):
        self.f, self.stop_process = f, stop

    def write(self, data) -> int:
        view = memoryview(data).cast("B")
        self.f.write(view[: len(view) // 2])
        self.f.flush()
        self.stop_process()
        return len(view)


def _child(job: dict, out_path: str, err_path: str) -> None:
    """Run one `vre` command in this (forked) process and exit with its status."""
    code = 1
    try:
        with open(out_path, "wb") as out, open(err_path, "wb") as err:
            os.dup2(out.fileno(), 1)
            os.dup2(err.fileno(), 2)
        sys.stdout = io.TextIOWrapper(os.fdopen(1, "wb", closefd=False), line_buffering=True)
        sys.stderr = io.TextIOWrapper(os.fdopen(2, "wb", closefd=False), line_buffering=True)
        os.chdir(job.get("cwd") or os.getcwd())
        os.environ.update(job.get("env") or {})
        _install(job.get("stop"), job.get("trace"), job.get("trace_root"))
        from video_pipeline.cli import main

        code = main(job["argv"])
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else 1
    except BaseException:  # noqa: BLE001 - a traceback would be the finding: show it
        import traceback

        traceback.print_exc()
        code = 1
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


# ---------------------------------------------------------------------------------------- parent side
def _run_job(job: dict) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out_path, err_path = os.path.join(tmp, "out"), os.path.join(tmp, "err")
        t0 = time.perf_counter()
        pid = os.fork()
        if pid == 0:
            _child(job, out_path, err_path)
        outcome, rc = _watch(pid, job)
        with open(out_path, errors="replace") as f:
            stdout = f.read()
        with open(err_path, errors="replace") as f:
            stderr = f.read()
    return {"outcome": outcome, "rc": rc, "stdout": stdout, "stderr": stderr,
            "seconds": round(time.perf_counter() - t0, 3)}


def _watch(pid: int, job: dict) -> tuple[str, int | None]:
    """Wait for the child; kill it when it stops itself or when `kill_after` has passed.
    Returns (outcome, exit code or None)."""
    start = time.monotonic()
    kill_after = job.get("kill_after")
    while True:
        got, status = os.waitpid(pid, os.WUNTRACED | os.WNOHANG)
        if got == pid:
            if os.WIFSTOPPED(status):
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                return "stopped-and-killed", None
            return "exited", os.waitstatus_to_exitcode(status)
        elapsed = time.monotonic() - start
        if (kill_after is not None and elapsed >= kill_after) or elapsed >= job["timeout"]:
            os.kill(pid, signal.SIGKILL)
            _, status = os.waitpid(pid, 0)
            if os.waitstatus_to_exitcode(status) != -signal.SIGKILL:  # it ended just before
                return "exited", os.waitstatus_to_exitcode(status)
            return ("killed" if kill_after is not None and elapsed < job["timeout"] else "timeout"), None
        time.sleep(0.002)


def serve(preload: list[str]) -> None:
    for name in WARM + preload:
        importlib.import_module(name)
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        if line.strip():
            print(json.dumps(_run_job(json.loads(line))), flush=True)


# ---------------------------------------------------------------------------------------- test side
class Harness:
    """The test's handle on a warm harness process: `run(argv, ...)` returns the job's result dict
    {outcome: exited | stopped-and-killed | killed | timeout, rc, stdout, stderr, seconds}."""

    def __init__(self, preload: tuple[str, ...] = (), env: dict | None = None):
        self.proc = subprocess.Popen([sys.executable, __file__, *preload], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, env={**os.environ, **(env or {})})
        ready = self.proc.stdout.readline()
        if not ready:
            raise RuntimeError("the crash harness did not start")

    def run(self, argv: list[str], stop: dict | None = None, kill_after: float | None = None,
            cwd: str | Path | None = None, trace: str | Path | None = None, trace_root: str | Path | None = None,
            env: dict | None = None, timeout: float = 120) -> dict:
        job = {"argv": [str(a) for a in argv], "stop": stop, "kill_after": kill_after,
               "cwd": str(cwd) if cwd else None, "trace": str(trace) if trace else None,
               "trace_root": str(trace_root) if trace_root else None, "env": env, "timeout": timeout}
        self.proc.stdin.write(json.dumps(job) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("the crash harness died")
        return json.loads(line)

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


if __name__ == "__main__":
    serve(sys.argv[1:])
