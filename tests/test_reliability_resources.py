"""Resource failures and concurrency: a full or read-only disk, experts returning garbage, two runs
on one store, reading a store while it is written.

A full disk is a small tmpfs mounted for the test when that is allowed (root, not in a container
that forbids it); the simulated failure (an OSError(ENOSPC) from zarr's file writes) runs always.
"""
from __future__ import annotations

import errno
import os
import re
import shutil
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import zarr

from conftest import REPO
from reliability import storecheck
from reliability.figures import record
from video_pipeline.cli import main
from video_pipeline.describe import describe_store
from video_pipeline.errors import VreError

PLUGIN = REPO / "tests" / "reliability" / "bad_experts.py"
COUNTING = REPO / "tests" / "plugins" / "counting.py"
N_FRAMES = 48


def one_error_line(capsys) -> str:
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("vre: error: "), captured.err
    assert "internal error" not in lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """A stamped 48-frame 180x320 clip, a recipe, and the uninterrupted reference store."""
    from video_pipeline.synth import make_clip

    root = tmp_path_factory.mktemp("resources")
    clip = make_clip(root / "clip.mp4", n_frames=N_FRAMES, size=(180, 320), stamp=True)
    recipe = root / "r.yaml"
    recipe.write_text(f"plugins: [{COUNTING}]\nshard_frames: 8\nexperts:\n  rgb: {{type: color/rgb}}\n"
                      f"  bright: {{type: test/brightness}}\n  plus: {{type: test/plus-one, deps: [bright]}}\n")
    ref = root / "ref.zarr"
    assert main(["run", str(recipe), str(clip), "-o", str(ref), "-q"]) == 0
    return {"root": root, "clip": clip, "recipe": recipe, "ref": ref}


# ---------------------------------------------------------------------------------------- full disk
@contextmanager
def small_filesystem(where: Path, size: str):
    """A tmpfs of `size` mounted at `where`; skips the test where mounting is not allowed."""
    where.mkdir()
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
                         capture_output=True, text=True)
    if res.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({res.stderr.strip() or 'not permitted'}); "
                    f"the simulated full disk test covers this")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def remount(where: Path, options: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{options}", str(where)], check=True)


@pytest.mark.parametrize("size,free", [("5m", None), ("600k", "8k")],
                         ids=["full after two of six shards", "full before the metadata"])
def test_full_disk_is_one_line_and_the_store_resumes(data, tmp_path, capsys, size, free):
    """The reference store takes 12 MB: 5 MB hold about two shards; 8 kB not even the metadata."""
    with small_filesystem(tmp_path / "fs", size) as fs:
        if free:
            filler = fs / "filler"
            with open(filler, "wb") as f:
                f.write(bytes(600 * 1024 - 8 * 1024))
        out = fs / "s.zarr"
        argv = ["run", str(data["recipe"]), str(data["clip"]), "-o", str(out), "-q"]
        assert main(argv) == 2
        line = one_error_line(capsys)
        assert str(out) in line and "No space left on device" in line and "rerun to resume" in line
        assert storecheck.leftovers(fs) == []
        done = storecheck.durable(out, data["ref"])
        remount(fs, "size=64m")
        assert main(argv) == 0
        storecheck.assert_same_store(out, data["ref"])
        assert storecheck.lost(done, out) == 0
    record("full disk", f"vre run on a {size} disk" + (f" with {free} free" if free else ""), "one line, resumed",
           cases=1, lost=0,
           durable_before=sum(int(d.sum()) for d in done.values()))


def test_full_disk_export_is_one_line_and_resumes(data, tmp_path, capsys):
    ref_out = tmp_path / "ref_export"
    assert main(["export", "dronescapes", str(data["ref"]), "-o", str(ref_out), "-j", "1"]) == 0
    capsys.readouterr()
    with small_filesystem(tmp_path / "fs", "1m") as fs:
        argv = ["export", "dronescapes", str(data["ref"]), "-o", str(fs / "out"), "-j", "1"]
        assert main(argv) == 2
        line = one_error_line(capsys)
        assert "No space left on device" in line and str(fs / "out") in line
        assert storecheck.leftovers(fs) == []
        remount(fs, "size=64m")
        assert main(argv) == 0
        assert {p.relative_to(fs / "out"): p.read_bytes() for p in (fs / "out").rglob("*") if p.is_file()} == \
               {p.relative_to(ref_out): p.read_bytes() for p in ref_out.rglob("*") if p.is_file()}
    record("full disk", "vre export", "one line, resumed", cases=1, lost=0)


def test_read_only_store_is_read_and_not_written(data, tmp_path, capsys):
    """A finished store on a read-only disk: inspect, stats, export and the dataset read it; a run
    refuses in one line."""
    from video_pipeline.dataset import StoreDataset

    with small_filesystem(tmp_path / "fs", "64m") as fs:
        shutil.copytree(data["ref"], fs / "s.zarr")
        remount(fs, "ro")
        assert '"frames_done": 48' in describe_store(fs / "s.zarr", as_json=True)
        with pytest.warns(UserWarning, match="statistics not cached"):
            assert main(["stats", str(fs / "s.zarr")]) == 0
        assert main(["export", "dronescapes", str(fs / "s.zarr"), "-o", str(tmp_path / "exp"), "-j", "1"]) == 0
        assert len(list((tmp_path / "exp" / "all" / "rgb").iterdir())) == N_FRAMES
        item = StoreDataset(fs / "s.zarr", modalities=["rgb", "bright"])[5]
        assert tuple(item["rgb"].shape) == (3, 180, 320)
        capsys.readouterr()
        assert main(["run", str(data["recipe"]), str(data["clip"]), "-o", str(fs / "s.zarr"), "-q"]) == 2
        assert "not writable" in one_error_line(capsys)
    record("full disk", "read-only store", "read, run refused in one line", cases=1)


@pytest.mark.parametrize("nth", [1, 20, 60, 97])
def test_simulated_write_failure_is_one_line_and_the_store_resumes(data, tmp_path, capsys, monkeypatch, nth):
    """The same without a mount: zarr's nth file write of the run's 98 fails with ENOSPC (1, 20: the
    metadata; 60: a shard in the middle; 97: the last shard's flags)."""
    import contextlib

    from zarr.storage import _local

    real = _local._atomic_write  # every object write: zarr's own and store.py's whole-shard writer
    count = {"n": 0}

    @contextlib.contextmanager
    def atomic_write(path, mode, exclusive=False):
        count["n"] += 1
        if count["n"] >= nth:
            raise OSError(errno.ENOSPC, "No space left on device")
        with real(path, mode, exclusive) as f:
            yield f

    out = tmp_path / "s.zarr"
    argv = ["run", str(data["recipe"]), str(data["clip"]), "-o", str(out), "-q"]
    monkeypatch.setattr(_local, "_atomic_write", atomic_write)
    assert main(argv) == 2
    line = one_error_line(capsys)
    assert "No space left on device" in line and str(out) in line
    monkeypatch.setattr(_local, "_atomic_write", real)
    done = storecheck.durable(out, data["ref"])
    assert main(argv) == 0
    storecheck.assert_same_store(out, data["ref"])
    assert storecheck.lost(done, out) == 0
    record("full disk", f"simulated ENOSPC at write {nth}", "one line, resumed", cases=1, lost=0,
           durable_before=sum(int(d.sum()) for d in done.values()))


# ---------------------------------------------------------------------------------------- bad experts
@pytest.mark.parametrize("fault,message", [
    ("nan", r"returned NaN/Inf at frame 13"), ("inf", r"returned NaN/Inf at frame 13"),
    ("-inf", r"returned NaN/Inf at frame 13"),
    ("overflow", r"returned values beyond the float16 range \(±65504\) at frame 13"),
    ("channels", r"returned shape \(4, 180, 320, 2\), expected \[4, H, W, 1\]"),
    ("frames", r"returned shape \(3, 180, 320, 1\), expected \[4, H, W, 1\]"),
    ("ndim", r"returned shape \(4, 180, 320\)"), ("list", r"returned list, expected a numpy array"),
    ("raise", r"RuntimeError: model crashed on frame 13"),
])
def test_bad_expert_output_is_caught_naming_expert_and_frame(data, tmp_path, capsys, fault, message):
    recipe = tmp_path / "bad.yaml"
    recipe.write_text(f"plugins: [{PLUGIN}]\nshard_frames: 8\nexperts:\n  rgb: {{type: color/rgb}}\n"
                      f"  bad: {{type: reliability/bad-at, batch_size: 4, params: {{frame: 13, fault: '{fault}'}}}}\n")
    out = tmp_path / "s.zarr"
    assert main(["run", str(recipe), str(data["clip"]), "-o", str(out), "-q"]) == 2
    line = one_error_line(capsys)
    assert "expert 'bad' (reliability/bad-at)" in line and "frames 12..15" in line, line
    assert re.search(message, line), line
    root = zarr.open_group(str(out), mode="r")
    done = root["_frames/bad"][:].astype(bool)
    assert done[:8].all() and not done[8:].any()  # the shards before are kept, nothing after
    assert np.isfinite(root["bad"][:8].astype(np.float32)).all()
    record("bad expert output", fault, "caught at the boundary", cases=1)


# ---------------------------------------------------------------------------------------- concurrency
def start_run(recipe: Path, clip: Path, out: Path, log: Path) -> subprocess.Popen:
    env = {**os.environ, "VRE_TEST_CALL_LOG": str(log)}
    return subprocess.Popen([sys.executable, "-m", "video_pipeline.cli", "run", str(recipe), str(clip),
                             "-o", str(out), "-q"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env)


def test_two_runs_on_one_store_never_both_write(data, tmp_path):
    """Started together: one computes every frame once; the other refuses in one line (or, if it
    came second, finds nothing to do)."""
    out, log = tmp_path / "s.zarr", tmp_path / "calls.log"
    procs = [start_run(data["recipe"], data["clip"], out, log) for _ in range(2)]
    outputs = [p.communicate(timeout=300) for p in procs]
    results = [(p.returncode, *output) for p, output in zip(procs, outputs)]
    refused = [r for r in results if r[0] != 0]
    assert len(refused) <= 1
    for code, stdout, stderr in refused:
        assert code == 2 and stderr.count("\n") == 1 and "another vre run is writing this store" in stderr
    calls: dict[str, int] = {}
    for line in log.read_text().splitlines():
        name, n = line.split()
        calls[name] = calls.get(name, 0) + int(n)
    assert calls == {"bright": N_FRAMES, "plus": N_FRAMES}  # no frame computed twice
    ref = zarr.open_group(str(data["ref"]), mode="r")
    got = zarr.open_group(str(out), mode="r")
    for name in ("rgb", "bright", "plus", "_frames/plus", "_progress/plus"):
        np.testing.assert_array_equal(got[name][:], ref[name][:])
    record("concurrency", "two vre run at once", "refused" if refused else "second found nothing to do", cases=1)


def gated_recipe(root: Path) -> Path:
    """The reference recipe plus an expert that stops the run in its second shard until the test
    creates `root/release` (it creates `root/release.waiting` when it stops)."""
    path = root / "gated.yaml"
    path.write_text(f"plugins: [{COUNTING}, {PLUGIN}]\nshard_frames: 8\nexperts:\n  rgb: {{type: color/rgb}}\n"
                    f"  bright: {{type: test/brightness}}\n  plus: {{type: test/plus-one, deps: [bright]}}\n"
                    f"  gate: {{type: reliability/gate, params: {{release: '{root / 'release'}'}}}}\n")
    return path


def wait_for(path: Path, proc: subprocess.Popen) -> None:
    deadline = time.time() + 120
    while not path.exists():
        assert proc.poll() is None and time.time() < deadline, proc.communicate()
        time.sleep(0.01)


def test_second_run_while_the_first_writes_refuses_in_one_line(data, tmp_path):
    out, log = tmp_path / "s.zarr", tmp_path / "calls.log"
    first = start_run(gated_recipe(tmp_path), data["clip"], out, log)
    wait_for(tmp_path / "release.waiting", first)
    second = start_run(gated_recipe(tmp_path), data["clip"], out, log)
    stdout, stderr = second.communicate(timeout=120)
    code = second.returncode
    assert code == 2 and stderr.count("\n") == 1 and f"{out}: another vre run is writing this store" in stderr
    (tmp_path / "release").touch()
    assert first.communicate(timeout=300) and first.returncode == 0
    got, ref = zarr.open_group(str(out), mode="r"), zarr.open_group(str(data["ref"]), mode="r")
    for name in ("rgb", "bright", "plus", "_frames/plus", "_progress/plus"):
        np.testing.assert_array_equal(got[name][:], ref[name][:])
    record("concurrency", "second vre run while the first writes", "refused in one line", cases=1)


def test_a_store_being_written_can_be_read(data, tmp_path):
    """A run held in its second shard, then let go: inspect, statistics and the torch dataset read
    the store all along without errors, and every frame the flags call done is the reference's."""
    from video_pipeline.dataset import StoreDataset, compute_stats

    out = tmp_path / "s.zarr"
    writer = start_run(gated_recipe(tmp_path), data["clip"], out, tmp_path / "calls.log")
    wait_for(tmp_path / "release.waiting", writer)
    ref = zarr.open_group(str(data["ref"]), mode="r")
    reads, seen = 0, set()
    while True:
        running = writer.poll() is None
        describe_store(out, as_json=True)
        compute_stats(out)
        dataset = StoreDataset(out, modalities=["rgb", "bright", "plus"], missing="drop")
        seen.add(len(dataset))
        for i in range(0, len(dataset), 5):
            item = dataset[i]
            frame = item["frame"]
            np.testing.assert_array_equal(item["bright"].numpy()[0], ref["bright"][frame][..., 0].astype(np.float32))
            np.testing.assert_array_equal(item["plus"].numpy()[0], ref["plus"][frame][..., 0].astype(np.float32))
            reads += 1
        (tmp_path / "release").touch()
        if not running:
            break
    _, stderr = writer.communicate(timeout=300)
    assert writer.returncode == 0, stderr
    assert min(seen) < N_FRAMES and max(seen) == N_FRAMES  # read half-written, then whole
    record("concurrency", "inspect, stats and dataset while a run writes", "no error", cases=1, reads=reads)


def test_a_file_renamed_away_while_inspect_lists_the_store(data, tmp_path, monkeypatch):
    """A writer renames its `*.partial` file between the moment inspect (or the statistics cache)
    lists a folder and the moment it reads the file's size: the interleaving, made certain."""
    from video_pipeline.dataset import compute_stats

    store = tmp_path / "s.zarr"
    shutil.copytree(data["ref"], store)
    real_walk = os.walk

    def walk_with_a_vanished_file(top, *args, **kwargs):
        for dirpath, dirnames, files in real_walk(top, *args, **kwargs):
            yield dirpath, dirnames, files + ["0.5d53020c2e2949ea809e6064d9236711.partial"]

    monkeypatch.setattr(os, "walk", walk_with_a_vanished_file)
    assert '"frames_done": 48' in describe_store(store, as_json=True)
    assert compute_stats(store)["bright"]["frames"] == N_FRAMES
    record("concurrency", "a temporary file vanishes while inspect lists the store", "no error", cases=1)
