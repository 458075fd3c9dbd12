"""The runner end to end: store layout, hand-off, resume, overwrite, additions, failures."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import zarr

from conftest import REPO, vre, write_recipe
from video_pipeline.errors import DecodeError, ExpertError, StoreError, VreError
from video_pipeline.recipe import load_recipe
from video_pipeline.runner import RunOptions, run
from video_pipeline.video import Video

PLUGIN = REPO / "tests" / "plugins" / "counting.py"


def recipe_file(tmp_path: Path, experts: str, shard_frames: int = 8, name: str = "r.yaml") -> Path:
    return write_recipe(tmp_path / name, f"plugins: [{PLUGIN}]\nshard_frames: {shard_frames}\n"
                                         f"experts:\n{experts}")


BASIC = """\
  rgb: {type: color/rgb}
  hsv: {type: color/hsv}
  bright: {type: test/brightness}
  plus: {type: test/plus-one, deps: [bright]}
"""


def counting():
    return sys.modules[next(m for m in sys.modules if m.startswith("vre_plugin_counting"))].CALLS


def test_store_layout_and_in_memory_handoff(tmp_path, clip):
    out = tmp_path / "clip.zarr"
    recipe = load_recipe(recipe_file(tmp_path, BASIC))
    counting().clear()
    stats = run(recipe, clip, out, RunOptions(progress=False))
    assert stats.frames == 48
    # each expert ran once per frame: the dependency was handed over, not recomputed
    assert sum(counting()["bright"]) == 48 and sum(counting()["plus"]) == 48

    root = zarr.open_group(str(out), mode="r")
    meta = root.attrs["video_pipeline"]
    assert meta["video"]["n_frames"] == 48 and meta["video"]["height"] == 180
    assert set(meta["recipe"]["experts"]) == {"rgb", "hsv", "bright", "plus"}
    rgb = root["rgb"]
    assert rgb.shape == (48, 180, 320, 3) and rgb.dtype == np.uint8
    assert rgb.chunks == (1, 180, 320, 3) and rgb.shards == (8, 180, 320, 3)
    assert rgb.metadata.dimension_names == ("frame", "y", "x", "rgb_channel")
    assert root["bright"].dtype == np.float16
    assert root["plus"].attrs["deps"] == ["bright"] and root["plus"].attrs["type"] == "test/plus-one"
    np.testing.assert_allclose(root["plus"][:].astype(np.float32),
                               root["bright"][:].astype(np.float32) + 1, atol=1e-2)
    assert root["_progress/rgb"][:].tolist() == [1] * 6
    # rgb is the decoded video
    np.testing.assert_array_equal(rgb[5], Video.open(clip).read([5])[0])
    # plain xarray reads the whole store as one Dataset: each modality has its own channel dimension
    xr = pytest.importorskip("xarray")
    ds = xr.open_zarr(str(out), consolidated=False)
    assert ds["hsv"].dims == ("frame", "y", "x", "hsv_channel") and ds.sizes["plus_channel"] == 1
    np.testing.assert_array_equal(ds["rgb"][5].values, rgb[5])
    da = pytest.importorskip("dask.array")
    assert da.from_zarr(str(out), component="plus").shape == (48, 180, 320, 1)


def test_rerun_does_nothing_and_overwrite_recomputes(tmp_path, clip):
    out = tmp_path / "s.zarr"
    recipe = load_recipe(recipe_file(tmp_path, BASIC))
    run(recipe, clip, out, RunOptions(progress=False))
    counting().clear()
    stats = run(recipe, clip, out, RunOptions(progress=False))
    assert stats.frames == 0 and counting() == {}
    stats = run(recipe, clip, out, RunOptions(progress=False, overwrite=True, only=("plus",)))
    # plus is recomputed; its dependency is read back from the store, not recomputed
    assert sum(counting()["plus"]) == 48 and "bright" not in counting()


def test_a_finished_store_rerun_reads_its_files_and_writes_nothing(tmp_path, clip):
    """A rerun with nothing to do decides from the store's zarr.json files, its flag chunks and its
    frame index (1-D arrays stored raw): it does not import zarr, and it writes nothing. The raw
    reads equal zarr's; an index stored compressed (stores made before) still loads, through zarr."""
    from video_pipeline.store import VideoStore

    recipe, out = recipe_file(tmp_path, BASIC), tmp_path / "s.zarr"
    assert vre("run", str(recipe), str(clip), "-o", str(out), "-q").returncode == 0
    files = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
    probe = ("import sys; from video_pipeline.cli import main; "
             f"code = main(['run', {str(recipe)!r}, {str(clip)!r}, '-o', {str(out)!r}]); "
             "print('exit', code, 'zarr imported:', 'zarr' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert "nothing to do" in done.stdout and "exit 0 zarr imported: False" in done.stdout, done.stdout + done.stderr
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == files  # not one file written or added

    store, root = VideoStore.open(out), zarr.open_group(str(out), mode="r")
    for name in ("rgb", "plus"):
        np.testing.assert_array_equal(store.done_frames(name), root[f"_frames/{name}"][:].astype(bool))
        np.testing.assert_array_equal(store.done_shards(name), root[f"_progress/{name}"][:].astype(bool))
    index, time_base = store.load_index()
    assert set(index) == {"pts", "keyframe", "counted", "truncated"} and len(index["pts"]) == 48
    for key, values in index.items():
        np.testing.assert_array_equal(values, root[f"_index/{key}"][:])
        assert root[f"_index/{key}"].compressors == ()
    # the index as stores made before kept it (zarr's default compression): read through zarr
    grp = zarr.open_group(str(out), mode="a")
    for key, values in index.items():
        grp.create_array(f"_index/{key}", data=values, overwrite=True)
    assert grp["_index/pts"].compressors != ()
    again, _ = VideoStore.open(out).load_index()
    assert all(np.array_equal(again[k], index[k]) for k in index)
    # a flag chunk cut short (a damaged disk, a hand edit) counts as nothing done there: recomputed
    (out / "_frames" / "plus" / "c" / "1").write_bytes(b"\x01\x01")
    loaded = load_recipe(recipe)
    counting().clear()
    assert run(loaded, clip, out, RunOptions(progress=False)).frames == 8
    assert sum(counting()["plus"]) == 8 and VideoStore.open(out).done_frames("plus").all()
    # that run, holding the store, wrote the index raw again: reruns read it without zarr once more
    assert zarr.open_group(str(out), mode="r")["_index/pts"].compressors == ()
    np.testing.assert_array_equal(VideoStore.open(out).load_index()[0]["pts"], index["pts"])


def test_adding_an_expert_computes_only_it(tmp_path, clip):
    out = tmp_path / "s.zarr"
    run(load_recipe(recipe_file(tmp_path, "  bright: {type: test/brightness}\n")), clip, out,
        RunOptions(progress=False))
    before = zarr.open_group(str(out), mode="r")["bright"][:]
    counting().clear()
    bigger = load_recipe(recipe_file(tmp_path, BASIC, name="bigger.yaml"))
    run(bigger, clip, out, RunOptions(progress=False))
    assert "bright" not in counting() and sum(counting()["plus"]) == 48
    root = zarr.open_group(str(out), mode="r")
    np.testing.assert_array_equal(root["bright"][:], before)
    assert set(root.attrs["video_pipeline"]["recipe"]["experts"]) == {"rgb", "hsv", "bright", "plus"}


def test_changed_recipe_is_refused_naming_the_difference(tmp_path, clip):
    out = tmp_path / "s.zarr"
    run(load_recipe(recipe_file(tmp_path, "  e: {type: edges/canny}\n")), clip, out, RunOptions(progress=False))
    changed = load_recipe(recipe_file(tmp_path, "  e: {type: edges/canny, params: {low: 5}}\n", name="c.yaml"))
    with pytest.raises(StoreError, match=r"expert 'e' is stored with a different recipe \(params"):
        run(changed, clip, out, RunOptions(progress=False))
    run(changed, clip, out, RunOptions(progress=False, overwrite=True))
    assert zarr.open_group(str(out), mode="r")["e"].attrs["params"]["low"] == 5


def test_frame_subsets_fill_only_those_frames(tmp_path, clip):
    out = tmp_path / "s.zarr"
    recipe = load_recipe(recipe_file(tmp_path, "  rgb: {type: color/rgb}\n"))
    run(recipe, clip, out, RunOptions(progress=False, frames=np.array([1, 5, 9, 30])))
    root = zarr.open_group(str(out), mode="r")
    assert np.flatnonzero(root["_frames/rgb"][:]).tolist() == [1, 5, 9, 30]
    assert root["_progress/rgb"][:].sum() == 0  # no shard is complete
    assert (root["rgb"][0] == 255).all() and not (root["rgb"][5] == 255).all()
    stats = run(recipe, clip, out, RunOptions(progress=False))
    assert stats.frames == 44 and root["_progress/rgb"][:].all()


def test_image_folder_is_a_video(tmp_path):
    import cv2

    folder = tmp_path / "frames"
    folder.mkdir()
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (5, 24, 32, 3), dtype=np.uint8)
    for i, img in enumerate(images):
        cv2.imwrite(str(folder / f"img_{i:03d}.png"), img[..., ::-1])
    out = tmp_path / "f.zarr"
    run(load_recipe(recipe_file(tmp_path, "  rgb: {type: color/rgb}\n")), folder, out, RunOptions(progress=False))
    np.testing.assert_array_equal(zarr.open_group(str(out), mode="r")["rgb"][:], images)


@pytest.mark.parametrize("bad", ["raise", "nan", "shape"])
def test_expert_failure_stops_keeping_finished_shards(tmp_path, clip, bad):
    out = tmp_path / "s.zarr"
    recipe = load_recipe(recipe_file(tmp_path, f"  rgb: {{type: color/rgb}}\n"
                                               f"  bad: {{type: test/fail-at, params: {{fail_call: 3, bad_output: {bad}}}}}\n"))
    with pytest.raises(ExpertError, match=r"expert 'bad' \(test/fail-at\) (at|failed at) frames 16\.\.23"):
        run(recipe, clip, out, RunOptions(progress=False))
    root = zarr.open_group(str(out), mode="r")
    assert root["_progress/rgb"][:].tolist()[:2] == [1, 1]  # shards before the failure are durable
    assert root["_progress/bad"][:].tolist()[:2] == [1, 1]


def test_on_error_skip_records_why(tmp_path, clip):
    out = tmp_path / "s.zarr"
    recipe = load_recipe(recipe_file(tmp_path, "  rgb: {type: color/rgb}\n  bad: {type: test/fail-at}\n"
                                               "  after: {type: test/plus-one, deps: [bad]}\n"))
    stats = run(recipe, clip, out, RunOptions(progress=False, on_error="skip"))
    assert set(stats.skipped) == {"bad", "after"}
    root = zarr.open_group(str(out), mode="r")
    assert root["_progress/rgb"][:].all()
    assert "boom" in root["bad"].attrs["skipped"]
    assert "bad" in root.attrs["video_pipeline"]["skipped"]


def test_truncated_video_stores_what_decodes(tmp_path):
    from video_pipeline.synth import make_clip, truncate

    clip = make_clip(tmp_path / "c.mp4", n_frames=48, size=(96, 128))
    cut = truncate(clip, tmp_path / "cut.mp4", 0.6)
    out = tmp_path / "t.zarr"
    recipe = load_recipe(recipe_file(tmp_path, "  rgb: {type: color/rgb}\n"))
    try:
        run(recipe, cut, out, RunOptions(progress=False))
        n_stored = int(zarr.open_group(str(out), mode="r")["_frames/rgb"][:].sum())
        assert n_stored == zarr.open_group(str(out), mode="r").attrs["video_pipeline"]["video"]["n_frames"]
    except DecodeError as err:
        n_stored = int(zarr.open_group(str(out), mode="r")["_frames/rgb"][:].sum())
        assert n_stored == err.frame and f"frame {err.frame}" in str(err)
    assert 10 < n_stored < 48


def test_sigkill_then_resume_equals_uninterrupted(tmp_path, clip):
    recipe = recipe_file(tmp_path, "  rgb: {type: color/rgb}\n  bright: {type: test/brightness, params: {delay: 0.02}}\n"
                                   "  plus: {type: test/plus-one, deps: [bright]}\n")
    ref, killed = tmp_path / "ref.zarr", tmp_path / "killed.zarr"
    assert vre("run", str(recipe), str(clip), "-o", str(ref), "-q").returncode == 0
    proc = subprocess.Popen([sys.executable, "-m", "video_pipeline.cli", "run", str(recipe), str(clip),
                             "-o", str(killed), "-q"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 60
    while time.time() < deadline:  # kill once some (not all) shards are durable
        flags = killed / "_progress" / "plus" / "c"
        written = [f for f in flags.glob("*") if not f.name.endswith(".partial")] if flags.exists() else []
        if 1 <= len(written) < 6:
            break
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    partial = zarr.open_group(str(killed), mode="r")["_progress/plus"][:]
    assert 0 < partial.sum() < 6
    done = vre("run", str(recipe), str(clip), "-o", str(killed), "-q")
    assert done.returncode == 0, done.stderr
    a, b = zarr.open_group(str(ref), mode="r"), zarr.open_group(str(killed), mode="r")
    for name in ("rgb", "bright", "plus", "_progress/plus", "_frames/plus"):
        np.testing.assert_array_equal(a[name][:], b[name][:])
    assert not list(killed.rglob("*.partial"))


def test_cli_errors_are_one_line(tmp_path, clip):
    r = vre("run", str(tmp_path / "missing.yaml"), str(clip))
    assert r.returncode != 0 and r.stderr.count("\n") == 1 and "recipe file not found" in r.stderr
    recipe = recipe_file(tmp_path, "  rgb: {type: color/rgb}\n")
    r = vre("run", str(recipe), str(tmp_path / "nope.mp4"), cwd=tmp_path)
    assert r.returncode != 0 and r.stderr.count("\n") == 1 and "nope.mp4" in r.stderr
    assert not (tmp_path / "nope.zarr").exists()
    (tmp_path / "blocker").write_text("a file where a folder should be")  # unwritable, even as root
    r = vre("run", str(recipe), str(clip), "-o", str(tmp_path / "blocker" / "x.zarr"))
    assert r.returncode != 0 and "x.zarr" in r.stderr and r.stderr.count("\n") == 1


def test_missing_weights_fail_before_decoding_but_do_not_block_other_experts(tmp_path, clip, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    recipe = load_recipe(recipe_file(tmp_path, "  rgb: {type: color/rgb}\n"
                                               "  seg: {type: semantic/hf, weights: nobody/no-such-model}\n"
                                               "  road: {type: map/binary, deps: [seg], params: {classes: [road]}}\n"))
    out = tmp_path / "w.zarr"
    with pytest.raises(VreError, match="expert 'seg'.*nobody/no-such-model"):
        run(recipe, clip, out, RunOptions(progress=False))
    assert not out.exists()  # nothing computed, nothing decoded, no empty store left behind
    run(recipe, clip, out, RunOptions(progress=False, only=("rgb",)))
    assert zarr.open_group(str(out), mode="r")["_progress/rgb"][:].all()


def test_the_same_weights_named_another_way_keep_the_stored_data(tmp_path):
    """A recipe that names the stored weights by another path (relative vs absolute, a copy) is the
    same recipe: nothing is recomputed. Different bytes under the same name are refused."""
    import shutil

    import torch

    from conftest import shared_path
    from video_pipeline.synth import make_clip

    released = shared_path("weights", "phgmae_distil_safeuav_430k.ckpt")
    clip = make_clip(tmp_path / "clip.mp4", n_frames=2, size=(48, 64))
    (tmp_path / "w").mkdir()
    shutil.copy(released, tmp_path / "w" / "distil.ckpt")
    first = tmp_path / "a.yaml"
    first.write_text("experts:\n  semantic: {type: semantic/phgmae-distil, weights: w/distil.ckpt}\n")
    out = tmp_path / "s.zarr"
    assert run(load_recipe(first), clip, out, RunOptions(progress=False, device="cpu")).frames == 2
    (tmp_path / "elsewhere").mkdir()
    moved = tmp_path / "elsewhere" / "b.yaml"
    moved.write_text(f"experts:\n  semantic: {{type: semantic/phgmae-distil, weights: {released}}}\n")
    assert run(load_recipe(moved), clip, out, RunOptions(progress=False, device="cpu")).frames == 0
    stored = zarr.open_group(str(out), mode="r").attrs["video_pipeline"]["recipe"]["experts"]["semantic"]
    assert stored["weights"] == "w/distil.ckpt"  # the provenance of the data as it was made

    ckpt = torch.load(released, map_location="cpu", weights_only=True)
    key = next(k for k, v in ckpt["state_dict"].items() if v.is_floating_point())
    ckpt["state_dict"][key] = ckpt["state_dict"][key] + 1
    torch.save(ckpt, tmp_path / "elsewhere" / "other.ckpt")
    moved.write_text("experts:\n  semantic: {type: semantic/phgmae-distil, weights: other.ckpt}\n")
    with pytest.raises(StoreError, match=r"expert 'semantic' is stored with a different recipe \(weights"):
        run(load_recipe(moved), clip, out, RunOptions(progress=False, device="cpu"))


def test_the_progress_bar_moves_per_expert_batch_names_the_expert_and_the_weights_loading(tmp_path, clip, monkeypatch):
    """Shards of 8 frames, experts in batches of 2: the bar moves within a shard (counts that are no
    multiple of 8) and names the expert running; before the experts load, 'loading weights'."""
    import io

    from tqdm import tqdm

    from video_pipeline import runner as runner_mod

    (tmp_path / "w.bin").write_bytes(b"weights")
    recipe = load_recipe(recipe_file(tmp_path, "  bright: {type: test/brightness, batch_size: 2, weights: w.bin}\n"
                                               "  plus: {type: test/plus-one, deps: [bright], batch_size: 2}\n"))
    shown = io.StringIO()
    bars = []

    def bar(total, desc, enabled):
        bars.append(tqdm(total=total, desc=desc, file=shown, mininterval=0, miniters=0,
                         bar_format="{n:.2f}/{total} {postfix}"))
        return bars[-1]

    real_load = runner_mod.load_experts
    at_load = []
    monkeypatch.setattr(runner_mod, "progress_bar", bar)
    monkeypatch.setattr(runner_mod, "load_experts", lambda *a, **k: (at_load.append(bars[-1].postfix), real_load(*a, **k))[1])
    run(recipe, clip, tmp_path / "p.zarr", RunOptions(frames=np.arange(16)))
    assert at_load == ["loading weights: bright"]
    states = [s.strip() for s in shown.getvalue().split("\r") if s.strip()]
    counts = [float(s.split("/")[0]) for s in states]
    assert counts == sorted(counts) and counts[-1] == 16
    assert any(0 < c < 8 for c in counts) and any(8 < c < 16 for c in counts)   # within each shard
    assert any(s.endswith("bright") for s in states) and any(s.endswith("plus") for s in states)
