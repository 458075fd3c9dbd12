"""Crash safety: `vre run`, `vre export` and `vre train` killed with SIGKILL at chosen writes and at
random moments, then rerun, end exactly as an uninterrupted run: identical arrays and files, no
temporary files left, flags that tell the truth, no finished frame lost or computed twice.

The kills come from tests/reliability/harness.py: a child stops itself at the chosen write (zarr's
temporary `*.partial` file half or fully written, or renamed in place; an `os.replace` of an export
file or a checkpoint) and is killed there; nothing else in the program changes.
"""
from __future__ import annotations

import json
import os
import random
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO
from reliability import storecheck
from reliability.figures import record
from reliability.harness import Harness
from reliability.synthetic import TRAIN_CONFIG, training_store
from video_pipeline.describe import describe_store
from video_pipeline.errors import VreError

PLUGIN = REPO / "tests" / "plugins" / "counting.py"
N_FRAMES, SHARD = 24, 4
RECIPE = f"""\
plugins: [{PLUGIN}]
shard_frames: {SHARD}
experts:
  rgb: {{type: color/rgb}}
  bright: {{type: test/brightness}}
  plus: {{type: test/plus-one, deps: [bright]}}
"""
ADDED = RECIPE + "  edges: {type: edges/canny}\n"
# Longer runs (every write of a run killed, more random moments, more training kill points), on
# demand: `VRE_SOAK=1 pytest -m slow tests/test_reliability_crash.py`
SOAK_ONLY = pytest.mark.skipif(not os.environ.get("VRE_SOAK"), reason="soak: set VRE_SOAK=1")
SOAK = [pytest.mark.slow, SOAK_ONLY]


@pytest.fixture(scope="module")
def harness():
    h = Harness()
    yield h
    h.close()


@pytest.fixture(scope="module")
def setup(tmp_path_factory, harness):
    """A 24-frame clip, the recipes, and the uninterrupted reference stores (with the trace of
    every write the reference run made)."""
    from video_pipeline.synth import make_clip

    root = tmp_path_factory.mktemp("crash")
    clip = make_clip(root / "clip.mp4", n_frames=N_FRAMES, size=(64, 96))
    (root / "r.yaml").write_text(RECIPE)
    (root / "added.yaml").write_text(ADDED)
    ref = root / "ref.zarr"
    res = harness.run(["run", root / "r.yaml", clip, "-o", ref, "-q"], trace=root / "trace.txt", trace_root=ref)
    assert res["rc"] == 0, res["stderr"]
    seconds = res["seconds"]
    ref_added = root / "ref_added.zarr"
    shutil.copytree(ref, ref_added)
    res = harness.run(["run", root / "added.yaml", clip, "-o", ref_added, "-q"])
    assert res["rc"] == 0, res["stderr"]
    return {"root": root, "clip": clip, "ref": ref, "ref_added": ref_added, "seconds": seconds,
            "writes": (root / "trace.txt").read_text().splitlines()}


def frames_run(stdout: str) -> int:
    """Frames a `vre run` decoded and computed, from its summary line."""
    m = re.search(r": (\d+) frames in ", stdout)
    return int(m[1]) if m else 0


def expected_work(done: dict[str, np.ndarray], names: list[str]) -> int:
    """Frames a rerun must compute: those some expert lacks (and only those)."""
    missing = np.zeros(N_FRAMES, bool)
    for name in names:
        missing |= ~done.get(name, np.zeros(N_FRAMES, bool))
    return int(missing.sum())


class KillMissed(AssertionError):
    """The run ended before its `kill_after` delay: nothing was killed."""


def kill_and_resume(harness, setup, tmp_path, case: str, stop: dict | None = None,
                    kill_after: float | None = None, recipe: str = "r.yaml", base: Path | None = None,
                    first: list[str] | None = None) -> dict:
    """Run `vre run` into a fresh store (a copy of `base` if given, after a `first` run if given),
    kill it as asked, check what the kill left, rerun, compare with the reference. Returns figures."""
    root, clip = setup["root"], setup["clip"]
    ref = setup["ref_added"] if recipe == "added.yaml" else setup["ref"]
    names = ["rgb", "bright", "plus"] + (["edges"] if recipe == "added.yaml" else [])
    out = tmp_path / "killed.zarr"
    if base is not None:
        shutil.copytree(base, out)
    if first is not None:
        res = harness.run(["run", root / "r.yaml", clip, "-o", out, "-q", *first])
        assert res["rc"] == 0, res["stderr"]
    argv = ["run", root / recipe, clip, "-o", out, "-q"]
    if stop is not None:
        stop = {**stop, "root": str(out)}
    killed = harness.run(argv, stop=stop, kill_after=kill_after)
    if stop is not None:
        assert killed["outcome"] == "stopped-and-killed", f"{case}: the kill point was not reached: {killed}"
    if kill_after is not None and killed["outcome"] != "killed":
        raise KillMissed(f"{case}: the run was not killed: {killed['outcome']} after {killed['seconds']} s")
    # what the kill left: flags that tell the truth, a store that `vre inspect` reads or refuses cleanly
    done = storecheck.durable(out, ref)
    if (out / "zarr.json").is_file():
        try:
            describe_store(out, as_json=True)
        except VreError:
            pass
    resumed = harness.run(argv)
    assert resumed["rc"] == 0, f"{case}: the rerun failed: {resumed['stderr']}"
    storecheck.assert_same_store(out, ref)
    lost = storecheck.lost(done, out)
    assert lost == 0
    recomputed = frames_run(resumed["stdout"])
    assert recomputed == expected_work(done, names), f"{case}: the rerun computed {recomputed} frames"
    durable_frames = sum(int(d.sum()) for d in done.values())
    record("run kill", case, killed["outcome"], kills=1, durable_at_kill=durable_frames,
           recomputed=recomputed, lost=lost)
    return {"durable": durable_frames, "recomputed": recomputed, "outcome": killed["outcome"]}


# Each point: (name, stop point). "put" points name a zarr object by its key in the store.
KILL_POINTS = [
    ("store root metadata half written", {"op": "put", "key": "zarr.json", "nth": 1, "phase": "half"}),
    ("video metadata written, before rename", {"op": "put", "key": "zarr.json", "nth": 2, "phase": "before-rename"}),
    ("frame index: pts described, values not written", {"op": "put", "key": "_index/pts/zarr.json", "nth": 1,
                                                         "phase": "after-rename"}),
    ("frame index: pts written, keyframes not", {"op": "put", "key": "_index/pts/c/0", "nth": 1,
                                                 "phase": "after-rename"}),
    ("modality array created, flags not", {"op": "put", "key": "rgb/zarr.json", "nth": 1, "phase": "after-rename"}),
    ("first shard half written", {"op": "put", "key": "rgb/c/*", "nth": 1, "phase": "half"}),
    ("third shard written, before rename", {"op": "put", "key": "bright/c/*", "nth": 3, "phase": "before-rename"}),
    ("shard renamed, frame flags not written", {"op": "put", "key": "plus/c/*", "nth": 2, "phase": "after-rename"}),
    ("frame flags written, shard flag not",
     {"op": "put", "key": "_frames/plus/c/*", "nth": 2, "phase": "after-rename"}),
    ("shard flag half written", {"op": "put", "key": "_progress/rgb/c/*", "nth": 3, "phase": "half"}),
    ("last shard flag (final progress update), before rename",
     {"op": "put", "key": f"_progress/plus/c/{N_FRAMES // SHARD - 1}", "nth": 1, "phase": "before-rename"}),
    ("last shard flag renamed: the run is complete",
     {"op": "put", "key": f"_progress/plus/c/{N_FRAMES // SHARD - 1}", "nth": 1, "phase": "after-rename"}),
]


@pytest.mark.parametrize("name,stop", KILL_POINTS, ids=[p[0] for p in KILL_POINTS])
def test_run_killed_at_a_write_resumes_to_the_reference(harness, setup, tmp_path, name, stop):
    kill_and_resume(harness, setup, tmp_path, name, stop=stop)


@pytest.mark.parametrize("phase", ["half", "before-rename"])
def test_killed_while_adding_an_expert_to_a_finished_store(harness, setup, tmp_path, phase):
    """The root metadata of a finished store is rewritten with the merged recipe: a kill there
    must not lose the finished modalities."""
    figures = kill_and_resume(harness, setup, tmp_path, f"merged recipe metadata rewrite, {phase}",
                              stop={"op": "put", "key": "zarr.json", "nth": 1, "phase": phase},
                              recipe="added.yaml", base=setup["ref"])
    assert figures["durable"] == 3 * N_FRAMES and figures["recomputed"] == N_FRAMES  # edges only


def test_killed_while_rewriting_a_shard_that_holds_finished_frames(harness, setup, tmp_path):
    """A frame-subset run stored frames 0 and 1; the full run rewrites their shard: killed with the
    new shard file written but not renamed, frames 0 and 1 are still there and flagged."""
    figures = kill_and_resume(harness, setup, tmp_path, "rewrite of a shard holding finished frames",
                              stop={"op": "put", "key": "rgb/c/0/0/0/0", "nth": 1, "phase": "before-rename"},
                              first=["--frames", "0..2"])
    assert figures["durable"] >= 2 * 3


@pytest.mark.parametrize("seed", range(3))
def test_run_killed_at_a_random_moment_resumes_to_the_reference(harness, setup, tmp_path, seed):
    """SIGKILL from outside after a random delay (no cooperation from the child), drawn within the
    reference run's duration. A run that ends before its delay killed nothing: it is run again on a
    fresh store with half the delay, so the test always checks a kill."""
    delay = random.Random(seed).uniform(0.05, setup["seconds"])
    for attempt in range(6):
        folder = tmp_path / f"attempt{attempt}"
        folder.mkdir()
        try:
            figures = kill_and_resume(harness, setup, folder, f"random moment {delay:.2f} s", kill_after=delay)
        except KillMissed:
            delay /= 2
            continue
        assert figures["outcome"] == "killed"
        return
    pytest.fail(f"no run was killed, the last after {delay * 2:.3f} s")


@pytest.mark.parametrize("seed", [pytest.param(s, marks=SOAK) for s in range(3, 40)])
def test_run_killed_at_more_random_moments(harness, setup, tmp_path, seed):
    test_run_killed_at_a_random_moment_resumes_to_the_reference(harness, setup, tmp_path, seed)


@pytest.mark.slow
@SOAK_ONLY
def test_run_killed_at_every_write_of_the_reference_run(harness, setup, tmp_path):
    """Soak: every write the reference run made, killed before its rename (then after it). A few
    are not reached in the killed run (two writer threads order their shards differently)."""
    seen: dict[str, int] = {}
    points = []
    for line in setup["writes"]:
        op, key = line.split(" ", 1)
        if op != "put":
            continue
        seen[key] = seen.get(key, 0) + 1
        points.append((key, seen[key]))
    not_reached = 0
    for i, (key, nth) in enumerate(points):
        for phase in ("before-rename", "after-rename"):
            case = tmp_path / f"{i}-{phase}"
            case.mkdir()
            try:
                kill_and_resume(harness, setup, case, f"write {i}: {key} #{nth} {phase}",
                                stop={"op": "put", "key": key, "nth": nth, "phase": phase})
            except AssertionError as err:
                if "the kill point was not reached" not in str(err):
                    raise
                not_reached += 1
    assert not_reached < len(points) // 4
    record("run kill", "every write of the reference run", "points not reached", not_reached=not_reached)


# ---------------------------------------------------------------------------------------- export
SPLITS = "train: {ref: [0..16]}\ntest: {ref: [16..]}\n"


@pytest.fixture(scope="module")
def exported(setup, harness):
    """The reference export of the reference store (one job: the kill points are in this process)."""
    root = setup["root"]
    (root / "splits.yaml").write_text(SPLITS)
    out = root / "export_ref"
    res = harness.run(["export", "dronescapes", setup["ref"], "-o", out, "--splits", root / "splits.yaml", "-j", "1"])
    assert res["rc"] == 0, res["stderr"]
    return out


def tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


EXPORT_POINTS = [
    ("first frame file written, before rename", {"op": "replace", "key": "*.npz", "nth": 1, "phase": "before"}),
    ("20th frame file renamed", {"op": "replace", "key": "*.npz", "nth": 20, "phase": "after"}),
    ("last frame file written, before rename",
     {"op": "replace", "key": "*.npz", "nth": 3 * N_FRAMES, "phase": "before"}),
    ("a modality description, before rename", {"op": "replace", "key": "*/*.json", "nth": 2, "phase": "before"}),
    ("the final split list, before rename", {"op": "replace", "key": "*.txt", "nth": 2, "phase": "before"}),
]


def export_kill_and_resume(harness, setup, exported, out: Path, case: str, stop=None, kill_after=None) -> None:
    argv = ["export", "dronescapes", setup["ref"], "-o", out, "--splits", setup["root"] / "splits.yaml", "-j", "1"]
    killed = harness.run(argv, stop={**stop, "root": str(out)} if stop else None, kill_after=kill_after)
    if stop is not None:
        assert killed["outcome"] == "stopped-and-killed", f"{case}: the kill point was not reached: {killed}"
    expected = tree(exported)
    before = tree(out) if out.exists() else {}
    kept = [k for k, v in before.items() if expected.get(k) == v]
    assert all(k in kept or ".partial" in k for k in before), f"{case}: a finished file differs"
    resumed = harness.run(argv)
    assert resumed["rc"] == 0, resumed["stderr"]
    summary = json.loads(resumed["stdout"])
    assert storecheck.leftovers(out) == []
    assert tree(out) == expected
    assert summary["unchanged"] == len(kept) and summary["written"] == len(expected) - len(kept)
    record("export kill", case, killed["outcome"], kills=1, files_kept=len(kept), files_written=summary["written"],
           lost=0)


@pytest.mark.parametrize("name,stop", EXPORT_POINTS, ids=[p[0] for p in EXPORT_POINTS])
def test_export_killed_at_a_write_resumes_to_the_reference(harness, setup, exported, tmp_path, name, stop):
    export_kill_and_resume(harness, setup, exported, tmp_path / "out", name, stop=stop)


@pytest.mark.parametrize("seed", range(2))
def test_export_killed_at_a_random_moment_resumes_to_the_reference(harness, setup, exported, tmp_path, seed):
    delay = random.Random(100 + seed).uniform(0.05, 0.8)
    export_kill_and_resume(harness, setup, exported, tmp_path / "out", f"random moment {delay:.2f} s",
                           kill_after=delay)


# ---------------------------------------------------------------------------------------- training
TIMING = ("samples_per_s", "data_wait_share", "epoch_seconds")


@pytest.fixture(scope="module")
def trainer(tmp_path_factory):
    """A harness with torch loaded, the training store and the uninterrupted reference run."""
    h = Harness(preload=("torch", "torch._dynamo", "video_pipeline.phgmae.train", "video_pipeline.dataset"))
    root = tmp_path_factory.mktemp("train")
    store = training_store(root / "syn.zarr")
    (root / "full.yaml").write_text(TRAIN_CONFIG.format(output="full", store=store))
    res = h.run(["train", root / "full.yaml", "--device", "cpu"], cwd=root)
    assert res["rc"] == 0, res["stderr"]
    records = [json.loads(line) for line in (root / "full" / "metrics.jsonl").read_text().splitlines()]
    improved = [r["epoch"] for r, before in zip(records, [None] + records)
                if before is None or r["best"] != before["best"]]
    yield {"harness": h, "root": root, "store": store, "improved": improved}
    h.close()


def checkpoint_state(path: Path) -> dict:
    import torch

    ckpt = torch.load(path, weights_only=True, map_location="cpu")
    return {"epoch": ckpt.get("epoch"), "step": ckpt.get("global_step"), "best": ckpt.get("best"),
            "state_dict": ckpt["state_dict"], "optimizer": ckpt.get("optimizer")}


def assert_same_checkpoint(a: Path, b: Path) -> None:
    import torch

    x, y = checkpoint_state(a), checkpoint_state(b)
    assert (x["epoch"], x["step"], x["best"]) == (y["epoch"], y["step"], y["best"]), f"{a} vs {b}"
    for key, value in x["state_dict"].items():
        assert torch.equal(value, y["state_dict"][key]), f"{a.name}: {key} differs"
    if x["optimizer"] is not None:
        for s, t in zip(x["optimizer"]["state"].values(), y["optimizer"]["state"].values()):
            assert all(torch.equal(s[k], t[k]) for k in s), f"{a.name}: optimizer state differs"


def train_records(folder: Path) -> list[dict]:
    return [{k: v for k, v in json.loads(line).items() if k not in TIMING}
            for line in (folder / "metrics.jsonl").read_text().splitlines()]


def training_points(improved: list[int]) -> list[tuple[str, dict]]:
    last_improving = max(e for e in improved if e >= 2)
    return [
        ("epoch 2, before its second optimizer step", {"op": "call", "target": "torch.optim:AdamW.step", "nth": 6}),
        ("epoch 2 logged, checkpoint not started",
         {"op": "call", "target": "video_pipeline.phgmae.train:save_checkpoint",
          "nth": 1 + sum(1 for e in improved if e < 2) + 1}),
        ("last.ckpt of epoch 2 written, before rename",
         {"op": "replace", "key": "last.ckpt", "nth": 2, "phase": "before"}),
        (f"last.ckpt of improving epoch {last_improving} renamed",
         {"op": "replace", "key": "last.ckpt", "nth": last_improving, "phase": "after"}),
        (f"best.ckpt of epoch {last_improving} renamed", {"op": "replace", "key": "best.ckpt", "nth": len(improved),
                                                          "phase": "after"}),
        (f"best.ckpt of epoch {last_improving} written, before rename",
         {"op": "replace", "key": "best.ckpt", "nth": len(improved), "phase": "before"}),
        ("last.ckpt of the final epoch renamed", {"op": "replace", "key": "last.ckpt", "nth": 4, "phase": "after"}),
    ]


@pytest.mark.parametrize("point", [0, 2, 4, 6] + [pytest.param(i, marks=SOAK) for i in (1, 3, 5)])
def test_training_killed_resumes_to_the_reference(trainer, tmp_path, point):
    name, stop = training_points(trainer["improved"])[point]
    h, root = trainer["harness"], trainer["root"]
    config = tmp_path / "cut.yaml"
    config.write_text(TRAIN_CONFIG.format(output="cut", store=trainer["store"]))
    out = tmp_path / "cut"
    killed = h.run(["train", config, "--device", "cpu"], cwd=tmp_path, stop={**stop, "root": str(out)})
    assert killed["outcome"] == "stopped-and-killed", f"{name}: the kill point was not reached: {killed}"
    resumed = h.run(["train", config, "--device", "cpu"], cwd=tmp_path)
    assert resumed["rc"] == 0, resumed["stderr"]
    assert storecheck.leftovers(out) == []
    assert_same_checkpoint(out / "last.ckpt", root / "full" / "last.ckpt")
    assert_same_checkpoint(out / "best.ckpt", root / "full" / "best.ckpt")
    assert train_records(out) == train_records(root / "full")
    record("train kill", name, killed["outcome"], kills=1, lost=0)
