"""Issue 14: the tool never loses, mixes or silently corrupts a user's data, and never writes over or
deletes a file it did not create. One test (or more) per found case, through the real command."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import pytest

from reliability.figures import record
from video_pipeline.cli import main
from video_pipeline.store import VideoStore

RECIPE = "shard_frames: 4\nexperts:\n  rgb: {type: color/rgb}\n  edges: {type: edges/canny, params: {low: 100, high: 200}}\n"


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def vre_main(capsys, *argv: str) -> tuple[int, str, str]:
    """`vre ARGV` in this process: (exit code, stdout, stderr)."""
    code = main(["run" if argv[0] == "run" else argv[0], *argv[1:]])
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture
def small_clip(tmp_path_factory) -> Path:
    from video_pipeline.synth import make_clip

    return make_clip(tmp_path_factory.mktemp("small") / "flight.mp4", n_frames=10, size=(48, 64))


# ------------------------------------------------------------------------- 1: preview never overwrites
def test_preview_default_never_overwrites_the_source_video(tmp_path, small_clip, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    video = tmp_path / "flight.mp4"
    video.write_bytes(small_clip.read_bytes())
    (tmp_path / "r.yaml").write_text(RECIPE)
    before = sha(video)
    assert vre_main(capsys, "run", "r.yaml", "flight.mp4", "-q")[0] == 0
    code, out, err = vre_main(capsys, "preview", "flight.zarr")
    assert code == 0, err
    assert out.strip().endswith("flight.preview.mp4") and (tmp_path / "flight.preview.mp4").is_file()
    assert sha(video) == before
    # an earlier preview is ours to replace; the source video, or any other file, is not
    assert vre_main(capsys, "preview", "flight.zarr")[0] == 0
    for target in ("flight.mp4", "notes.png"):
        if target == "notes.png":
            (tmp_path / target).write_bytes(b"a user's picture")
        kept = sha(tmp_path / target)
        code, _, err = vre_main(capsys, "preview", "flight.zarr", "-o", target, "--frames", "1")
        assert code == 2 and len(err.strip().splitlines()) == 1 and target in err, err
        assert sha(tmp_path / target) == kept
    assert vre_main(capsys, "preview", "flight.zarr", "-o", "mine.png", "--frames", "1")[0] == 0
    assert vre_main(capsys, "preview", "flight.zarr", "-o", "mine.png", "--frames", "2")[0] == 0
    # and the store still holds the video's frames: a rerun has nothing to do
    code, out, _ = vre_main(capsys, "run", "r.yaml", "flight.mp4", "-q")
    assert code == 0 and "nothing to do" in out
    record("user files", "preview default and -o at the source video or a user's file", "kept", cases=3, deleted=0)


# ------------------------------------------------------------------------- 4: -o at a user's folder
def test_output_at_a_users_folder_is_refused_and_nothing_deleted(tmp_path, small_clip, capsys):
    folder = tmp_path / "mine"
    (folder / "sub").mkdir(parents=True)
    user_files = {folder / "draft.partial": b"1", folder / "sub" / "x.0123456789abcdef0123456789abcdef.partial": b"2",
                  folder / "notes.txt": b"3"}
    for path, data in user_files.items():
        path.write_bytes(data)
    (tmp_path / "r.yaml").write_text(RECIPE)
    code, _, err = vre_main(capsys, "run", str(tmp_path / "r.yaml"), str(small_clip), "-o", str(folder), "-q")
    assert code == 2 and "not a store written by vre" in err and len(err.strip().splitlines()) == 1
    assert sorted(p for p in folder.rglob("*") if p.is_file()) == sorted(user_files)
    assert all(p.read_bytes() == d for p, d in user_files.items())
    # a folder that is our store: only zarr's own temporaries are cleaned up
    store = tmp_path / "s.zarr"
    assert vre_main(capsys, "run", str(tmp_path / "r.yaml"), str(small_clip), "-o", str(store), "-q")[0] == 0
    ours = store / "rgb" / "c" / "0" / "0.0123456789abcdef0123456789abcdef.partial"
    ours.write_bytes(b"left by a killed writer")
    theirs = store / "rgb" / "keep.partial"
    theirs.write_bytes(b"a user's file")
    assert vre_main(capsys, "run", str(tmp_path / "r.yaml"), str(small_clip), "-o", str(store), "-q")[0] == 0
    assert not ours.exists() and theirs.read_bytes() == b"a user's file"
    # folders without a file (what a refused first run can leave when zarr finishes a write it had
    # started after the store was removed) are no one's: a run writes there; one file anywhere, even
    # one named like zarr's temporaries, and the folder is refused, untouched
    empty = tmp_path / "left.zarr"
    (empty / "rgb" / "c").mkdir(parents=True)
    assert vre_main(capsys, "run", str(tmp_path / "r.yaml"), str(small_clip), "-o", str(empty), "-q")[0] == 0
    assert VideoStore.open(empty).done_frames("rgb").all()
    deep = tmp_path / "deep"
    kept = deep / "rgb" / "c" / "x.0123456789abcdef0123456789abcdef.partial"
    kept.parent.mkdir(parents=True)
    kept.write_bytes(b"not ours to delete")
    code, _, err = vre_main(capsys, "run", str(tmp_path / "r.yaml"), str(small_clip), "-o", str(deep), "-q")
    assert code == 2 and "not a store written by vre" in err and kept.read_bytes() == b"not ours to delete"
    record("user files", "-o at a user's folder with *.partial files; a user's file in a store", "kept",
           cases=4, deleted=0)


def test_store_replace_and_bench_keep_refuse_foreign_folders(tmp_path):
    from video_pipeline.errors import StoreError, VreError
    from video_pipeline.bench.pipeline import bench

    folder = tmp_path / "user"
    folder.mkdir()
    (folder / "a.txt").write_text("x")
    with pytest.raises(StoreError, match="not a store written by vre"):
        VideoStore.open(folder, "w")
    assert (folder / "a.txt").read_text() == "x"
    (tmp_path / "file").write_text("y")
    with pytest.raises(StoreError, match="not a folder"):
        VideoStore.open(tmp_path / "file", "a")
    with pytest.raises(VreError, match="--keep"):
        bench(os.devnull, os.devnull, keep=str(folder))
    assert (folder / "a.txt").read_text() == "x"
    record("user files", "store replace, -o a file, bench --keep at a user's folder", "kept", cases=3, deleted=0)


def test_demo_keeps_a_users_file_named_like_its_clip(tmp_path, monkeypatch):
    from video_pipeline.demo import make_demo_clip
    from video_pipeline.errors import VreError

    first = make_demo_clip(tmp_path / "demo.mp4").read_bytes()
    assert make_demo_clip(tmp_path / "demo.mp4").read_bytes() == first  # an earlier demo's clip: kept
    (tmp_path / "demo.mp4").write_bytes(b"my own video")
    with pytest.raises(VreError, match="not the demo clip"):
        make_demo_clip(tmp_path / "demo.mp4")
    assert (tmp_path / "demo.mp4").read_bytes() == b"my own video"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demo.mp4"]
    record("user files", "demo over a user's demo.mp4", "kept", cases=1, deleted=0)


# ------------------------------------------------------------------------- 3: overwrite is atomic
PLUGIN = Path(__file__).parent / "plugins" / "counting.py"
OLD_EDGES = (f"plugins: [{PLUGIN}]\nshard_frames: 4\nexperts:\n  rgb: {{type: color/rgb}}\n"
             "  edges: {type: edges/canny, params: {low: 100, high: 200}}\n"
             "  roads: {type: test/plus-one, deps: [edges]}\n")
NEW_EDGES = OLD_EDGES.replace("low: 100", "low: 20")
OVERWRITE_KILLS = [  # (case, stop point): the metadata naming the new params, a new shard, the array attrs
    ("new recipe recorded", {"op": "put", "key": "zarr.json", "nth": 1, "phase": "after-rename"}),
    ("edges attrs rewritten", {"op": "put", "key": "edges/zarr.json", "nth": 1, "phase": "after-rename"}),
    ("first new edges shard renamed", {"op": "put", "key": "edges/c/*", "nth": 1, "phase": "after-rename"}),
    ("second new edges shard flagged", {"op": "put", "key": "_frames/edges/c/*", "nth": 2, "phase": "after-rename"}),
]


@pytest.fixture(scope="module")
def harness():
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from reliability.harness import Harness

    h = Harness()
    yield h
    h.close()


def test_kill_during_overwrite_with_new_params_never_labels_old_frames_new(tmp_path, small_clip, harness):
    """`--overwrite --only edges` with changed params, killed at deterministic points: every frame
    flagged done afterwards holds new-params data (or the store still says the old params), the
    dependent `roads` map is never left flagged over old edges, and a plain rerun completes the store
    exactly as a fresh run of the new recipe makes it."""
    from reliability import storecheck

    import zarr

    old_recipe, new_recipe = tmp_path / "old.yaml", tmp_path / "new.yaml"
    old_recipe.write_text(OLD_EDGES)
    new_recipe.write_text(NEW_EDGES)
    fresh = tmp_path / "fresh.zarr"
    assert harness.run(["run", new_recipe, small_clip, "-o", fresh, "-q"])["rc"] == 0
    base = tmp_path / "base.zarr"
    res = harness.run(["run", old_recipe, small_clip, "-o", base, "-q"])
    assert res["rc"] == 0, res["stderr"]
    for case, stop in OVERWRITE_KILLS:
        out = tmp_path / f"{case.replace(' ', '_')}.zarr"
        import shutil

        shutil.copytree(base, out)
        argv = ["run", new_recipe, small_clip, "-o", out, "-q", "--overwrite", "--only", "edges"]
        killed = harness.run(argv, stop={**stop, "root": str(out)})
        assert killed["outcome"] == "stopped-and-killed", (case, killed)
        recorded = storecheck.meta(out)["recipe"]["experts"]["edges"]["params"]["low"]
        group = zarr.open_group(str(out), mode="r")
        if recorded == 20:  # the metadata says the new params: what is flagged must be new data
            for name in ("edges", "roads"):
                done = np.flatnonzero(group[f"_frames/{name}"][:])
                np.testing.assert_array_equal(group[name].get_orthogonal_selection(done),
                                              zarr.open_group(str(fresh), mode="r")[name].get_orthogonal_selection(done),
                                              err_msg=f"{case}: {name} frames flagged done hold old data")
        resumed = harness.run(["run", new_recipe, small_clip, "-o", out, "-q"])
        assert resumed["rc"] == 0, (case, resumed["stderr"])
        assert "nothing to do" not in resumed["stdout"], case
        storecheck.assert_same_store(out, fresh)
        record("overwrite kill", case, "never old frames labelled new; resumed to the new reference", cases=1,
               silent=0)


# ------------------------------------------------------------------------- 2: a store knows its video
def test_another_video_at_the_same_path_or_of_the_same_length_is_refused(tmp_path, capsys):
    from video_pipeline.synth import make_clip

    (tmp_path / "r.yaml").write_text(RECIPE)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a = make_clip(tmp_path / "a" / "flight.mp4", n_frames=10, size=(48, 64), seed=1)
    b = make_clip(tmp_path / "b" / "flight.mp4", n_frames=10, size=(48, 64), seed=2)
    assert a.read_bytes() != b.read_bytes()
    store = tmp_path / "s.zarr"
    assert vre_main(capsys, "run", str(tmp_path / "r.yaml"), str(a), "-o", str(store), "-q", "--frames", "0..4")[0] == 0
    stored = VideoStore.open(store).meta["video"]
    assert len(stored["content_sha256"]) == 64 and stored["file_size"] == a.stat().st_size
    # a second video of the same length
    code, _, err = vre_main(capsys, "run", str(tmp_path / "r.yaml"), str(b), "-o", str(store), "-q")
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert str(a) in err and str(b) in err and "never mixes two videos" in err
    # new content at the same path, even with the old size and modification time
    kept = a.read_bytes()
    st = a.stat()
    a.write_bytes(b.read_bytes()[: len(kept)].ljust(len(kept), b"\0"))
    os.utime(a, ns=(st.st_atime_ns, st.st_mtime_ns))
    code, _, err = vre_main(capsys, "run", str(tmp_path / "r.yaml"), str(a), "-o", str(store), "-q")
    assert code == 2 and "never mixes two videos" in err, err
    assert VideoStore.open(store).done_frames("rgb").sum() == 4
    # the same video copied elsewhere (new path and mtime, same content) resumes
    a.write_bytes(kept)
    copy = tmp_path / "copy.mp4"
    copy.write_bytes(kept)
    code, out, err = vre_main(capsys, "run", str(tmp_path / "r.yaml"), str(copy), "-o", str(store), "-q")
    assert code == 0 and "6 frames" in out, err
    record("other video", "same length; new content at the same path, size and mtime", "refused naming both",
           cases=2, silent=0)


# ------------------------------------------------------------------------- 5: data is verified
def test_damaged_shards_are_found_and_recomputed(tmp_path, small_clip, capsys):
    """A deleted shard, a truncated one, a garbage index, a deleted `_progress/<name>`: the next plain
    run finds them cheaply and recomputes them. A flipped byte inside a chunk fails its crc32c: every
    reader refuses in one line, `vre verify` unflags the shard and the run recomputes it."""
    import zarr

    from reliability import storecheck
    from video_pipeline.errors import StoreError
    from video_pipeline.store import FrameReader

    (tmp_path / "r.yaml").write_text(RECIPE)
    ref, out = tmp_path / "ref.zarr", tmp_path / "s.zarr"
    for path in (ref, out):
        assert vre_main(capsys, "run", str(tmp_path / "r.yaml"), str(small_clip), "-o", str(path), "-q")[0] == 0
    meta = zarr.open_array(str(out / "rgb"), mode="r").metadata.to_dict()
    assert meta["codecs"][0]["configuration"]["codecs"][-1] == {"name": "crc32c"}  # every zarr v3 reader knows it
    shard = lambda name, s: out / name / "c" / str(s) / "0" / "0" / "0"  # noqa: E731
    shard("rgb", 1).unlink()
    data = shard("edges", 0).read_bytes()
    shard("edges", 0).write_bytes(data[: len(data) // 2])
    data = bytearray(shard("edges", 2).read_bytes())
    data[-10] ^= 0xFF  # inside the index
    shard("edges", 2).write_bytes(bytes(data))
    import shutil

    shutil.rmtree(out / "_progress" / "rgb")
    code, stdout, err = vre_main(capsys, "run", str(tmp_path / "r.yaml"), str(small_clip), "-o", str(out), "-q")
    assert code == 0 and "10 frames" in stdout, (stdout, err)  # 4 + 4 + 2 frames recomputed
    assert "rgb shard 1 (missing)" in err and "edges shard 0 (index checksum mismatch)" in err and "rgb: flags recreated" in err
    assert "edges shard 2 (index checksum mismatch)" in err and len(err.strip().splitlines()) == 1
    storecheck.assert_same_store(out, ref)

    data = bytearray(shard("rgb", 0).read_bytes())
    data[200] ^= 0xFF  # inside the first chunk's compressed bytes
    shard("rgb", 0).write_bytes(bytes(data))
    assert "nothing to do" in vre_main(capsys, "run", str(tmp_path / "r.yaml"), str(small_clip), "-o", str(out), "-q")[1]
    with pytest.raises(StoreError, match="shard 0 of 'rgb' is damaged .checksum mismatch.; run `vre verify"):
        VideoStore.open(out).read("rgb", np.arange(4))
    with pytest.raises(StoreError, match="shard 0 of 'rgb' is damaged"):
        FrameReader(out, "rgb").read(0)
    code, _, err = vre_main(capsys, "export", "dronescapes", str(out), "-o", str(tmp_path / "exp"), "-j", "1")
    assert code == 2 and "shard 0 of 'rgb' is damaged" in err and len(err.strip().splitlines()) == 1
    code, _, err = vre_main(capsys, "verify", str(out))
    assert code == 3 and "rgb shard 0 (frame 0: checksum mismatch)" in err and len(err.strip().splitlines()) == 1
    code, stdout, _ = vre_main(capsys, "run", str(tmp_path / "r.yaml"), str(small_clip), "-o", str(out), "-q")
    assert code == 0 and "4 frames" in stdout
    storecheck.assert_same_store(out, ref)
    assert vre_main(capsys, "verify", str(out))[0] == 0
    np.testing.assert_array_equal(FrameReader(out, "rgb").read(3), zarr.open_array(str(ref / "rgb"))[3])


# ------------------------------------------------------------------------- 7: tiny inputs, bounded cost
def alias_bomb(levels: int = 9) -> str:
    """A flow list whose last element expands to 9**levels strings, a few hundred bytes of YAML."""
    parts = ["&a0 [x, x, x, x, x, x, x, x, x]"]
    parts += [f"&a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, levels)]
    return "[" + ", ".join(parts) + "]"


@pytest.mark.parametrize("where", ["resolution", "shard_frames", "device", "params"])
def test_yaml_alias_bombs_end_in_one_short_line(tmp_path, capsys, where):
    bomb = alias_bomb()
    experts = "experts:\n  rgb: {type: color/rgb" + (f", params: {{x: {bomb}}}" if where == "params" else "") + "}\n"
    text = (f"{where}: {bomb}\n" if where != "params" else "") + experts
    assert len(text) < 600
    (tmp_path / "bomb.yaml").write_text(text)
    code, _, err = vre_main(capsys, "run", str(tmp_path / "bomb.yaml"), str(tmp_path / "v.mp4"), "-q")
    assert code == 2 and len(err) < 400 and "YAML aliases" in err, err[:400]
    line = 1 if where != "params" else 2
    assert f"bomb.yaml:{line}:" in err
    assert not (tmp_path / "v.zarr").exists()


def test_error_messages_show_a_bounded_excerpt(tmp_path, capsys):
    (tmp_path / "long.yaml").write_text("resolution: [" + ", ".join(["12345"] * 2000) + "]\nexperts:\n  rgb: {type: color/rgb}\n")
    code, _, err = vre_main(capsys, "run", str(tmp_path / "long.yaml"), str(tmp_path / "v.mp4"), "-q")
    assert code == 2 and "long.yaml:1: resolution must be [HEIGHT, WIDTH]" in err and len(err) < 300, err[:400]


def test_a_shard_that_cannot_fit_in_memory_is_refused_with_the_estimate(tmp_path, small_clip, capsys, monkeypatch):
    from video_pipeline import runner

    monkeypatch.setattr(runner, "physical_memory", lambda: 16 * 2**30)
    (tmp_path / "big.yaml").write_text("resolution: [16384, 16384]\nshard_frames: 32\nexperts:\n  rgb: {type: color/rgb}\n")
    code, _, err = vre_main(capsys, "run", str(tmp_path / "big.yaml"), str(small_clip), "-o", str(tmp_path / "s.zarr"), "-q")
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "shards of 32 frames at 16384x16384 need about 168.0 GiB" in err and "16.0 GiB" in err
    assert not (tmp_path / "s.zarr").exists() or not any((tmp_path / "s.zarr").iterdir())


# ------------------------------------------------------------------------- 8: one line, never internal
def test_damaged_metadata_and_array_descriptions_end_in_one_line(tmp_path, small_clip, capsys):
    import shutil

    from reliability import storecheck

    (tmp_path / "r.yaml").write_text(RECIPE)
    ref = tmp_path / "ref.zarr"
    assert vre_main(capsys, "run", str(tmp_path / "r.yaml"), str(small_clip), "-o", str(ref), "-q")[0] == 0
    damage = {
        "attrs video a string": lambda s: _edit_attrs(s, lambda m: {**m, "video": "garbage"}),
        "attrs a list": lambda s: _edit_attrs(s, lambda m: [1, 2]),
        "attrs shard_frames negative": lambda s: _edit_attrs(s, lambda m: {**m, "shard_frames": -4}),
        "array zarr.json garbage": lambda s: (s / "rgb" / "zarr.json").write_text("{garbage"),
        "flags zarr.json a list": lambda s: (s / "_frames" / "edges" / "zarr.json").write_text("[]"),
        "index zarr.json empty": lambda s: (s / "_index" / "zarr.json").write_text(""),
    }
    for case, hurt in damage.items():
        store = tmp_path / f"{case.replace(' ', '_')}.zarr"
        shutil.copytree(ref, store)
        hurt(store)
        for argv in (["inspect", str(store)], ["export", "dronescapes", str(store), "-o", str(tmp_path / "x"), "-j", "1"]):
            code, _, err = vre_main(capsys, *argv)
            assert code == 2 and len(err.strip().splitlines()) == 1 and "zarr.json: damaged" in err, (case, argv, err)
            assert "internal error" not in err
        code, out, err = vre_main(capsys, "run", str(tmp_path / "r.yaml"), str(small_clip), "-o", str(store), "-q")
        if case.startswith("attrs"):  # the store cannot say what it holds: refused, never "nothing to do"
            assert code == 2 and "damaged store metadata" in err and "nothing to do" not in out, (case, err)
        else:  # one node of ours unreadable: removed and recomputed
            assert code == 0 and "removed, to be recomputed" in err, (case, out, err)
            storecheck.assert_same_store(store, ref)
    (tmp_path / "afile").write_text("mine")
    code, _, err = vre_main(capsys, "export", "dronescapes", str(ref), "-o", str(tmp_path / "afile"))
    assert code == 2 and "is not a folder" in err and (tmp_path / "afile").read_text() == "mine"


def _edit_attrs(store: Path, edit) -> None:
    import json

    node = json.loads((store / "zarr.json").read_text())
    node["attributes"]["video_pipeline"] = edit(node["attributes"]["video_pipeline"])
    (store / "zarr.json").write_text(json.dumps(node))


@pytest.mark.parametrize("where", ["import", "call"])
def test_plugin_calling_sys_exit_never_ends_in_silent_success(tmp_path, small_clip, capsys, where):
    plugin = tmp_path / "quits.py"
    body = ("import sys\nimport numpy as np\nfrom video_pipeline import Expert, OutputSpec, register_expert\n"
            + ("sys.exit(0)\n" if where == "import" else "")
            + "@register_expert('test/quits-" + where + "')\nclass Quits(Expert):\n"
            "    def output(self, deps):\n        return OutputSpec(channels=1, kind='depth')\n"
            "    def __call__(self, frames, deps):\n        sys.exit(0)\n")
    plugin.write_text(body)
    (tmp_path / "q.yaml").write_text(f"plugins: [{plugin}]\nshard_frames: 4\nexperts:\n  rgb: {{type: color/rgb}}\n"
                                     f"  q: {{type: test/quits-{where}}}\n")
    code, out, err = vre_main(capsys, "run", str(tmp_path / "q.yaml"), str(small_clip), "-o", str(tmp_path / "s.zarr"), "-q")
    assert code != 0 and len(err.strip().splitlines()) == 1 and "sys.exit" in err.replace("SystemExit", "sys.exit"), err
    assert "frames in" not in out


# ------------------------------------------------------------------------- 6: the decoder decides
# An AVI in the DivX/Xvid packed-bitstream style (B-frames in the previous frame's packet, a
# placeholder packet in their place), 12 frames of 64x48 made by FFmpeg's libxvid encoder:
#   ffmpeg -f lavfi -i testsrc=size=64x48:rate=25 -frames:v 12 -c:v libxvid -bf 2 -vtag XVID packed_xvid.avi
PACKED_AVI = Path(__file__).parent / "data" / "packed_xvid.avi"


def test_packed_bitstream_avi_stores_every_frame_the_decoder_gives(tmp_path, capsys):
    import av
    import zarr

    video = PACKED_AVI
    with av.open(str(video)) as c:
        sizes = [p.size for p in c.demux(video=0) if p.size]
        assert min(sizes) < 10  # placeholder packets: packets are not frames
    with av.open(str(video)) as c:
        decoded = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    (tmp_path / "r.yaml").write_text(RECIPE)
    code, out, err = vre_main(capsys, "run", str(tmp_path / "r.yaml"), str(video), "-o", str(tmp_path / "s.zarr"), "-q")
    assert code == 0, err
    rgb = zarr.open_group(str(tmp_path / "s.zarr"), mode="r")["rgb"]
    assert rgb.shape[0] == len(decoded)
    np.testing.assert_array_equal(rgb[:], np.stack(decoded))


def test_resolution_change_mid_stream_ends_in_one_line_keeping_earlier_frames(tmp_path, capsys):
    from fractions import Fraction

    import av

    from video_pipeline.synth import scene_frames

    path = tmp_path / "changes.ts"
    with av.open(str(path), "w", format="mpegts") as out:
        stream = out.add_stream("libx264", rate=24)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        second = av.CodecContext.create("libx264", "w")
        second.width, second.height, second.pix_fmt = 128, 96, "yuv420p"
        second.time_base, second.framerate = Fraction(1, 24), 24
        n = 0
        for ctx, size in ((stream.codec_context, (48, 64)), (second, (96, 128))):
            for f in [*scene_frames(8, size, n, False), None]:
                frame = None
                if f is not None:
                    frame = av.VideoFrame.from_ndarray(f, format="rgb24")
                    frame.pts, frame.time_base = n, Fraction(1, 24)
                    n += 1
                for packet in ctx.encode(frame):
                    packet.stream = stream
                    out.mux(packet)
    (tmp_path / "r.yaml").write_text(RECIPE)
    for _ in range(2):  # and the same on every rerun: never taken for finished
        code, _, err = vre_main(capsys, "run", str(tmp_path / "r.yaml"), str(path), "-o", str(tmp_path / "s.zarr"), "-q")
        assert code == 2 and len(err.strip().splitlines()) == 1, err
        assert "frame 8" in err and "changes resolution" in err and "64x48 to 128x96" in err
    store = VideoStore.open(tmp_path / "s.zarr")
    assert store.done_frames("rgb").tolist() == [True] * 8 + [False] * 8


def test_a_jpeg_cut_short_in_an_image_folder_ends_in_one_line_keeping_earlier_frames(tmp_path, capsys):
    import cv2

    from video_pipeline.synth import scene_frames

    folder = tmp_path / "images"
    folder.mkdir()
    for i, f in enumerate(scene_frames(6, (48, 64), 1, False)):
        cv2.imwrite(str(folder / f"f{i:02d}.jpg"), f[..., ::-1])
    data = (folder / "f03.jpg").read_bytes()
    (folder / "f03.jpg").write_bytes(data[: len(data) // 2])
    (tmp_path / "r.yaml").write_text(RECIPE)
    code, _, err = vre_main(capsys, "run", str(tmp_path / "r.yaml"), str(folder), "-o", str(tmp_path / "s.zarr"), "-q")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "frame 3" in err and "f03.jpg is cut short" in err
    assert VideoStore.open(tmp_path / "s.zarr").done_frames("rgb").tolist() == [True] * 3 + [False] * 3


def test_readers_refuse_a_missing_or_truncated_shard_before_any_rerun(tmp_path, small_clip, capsys):
    """Without a rerun of `vre run`, a deleted or cut shard under a done flag is never exported,
    counted in statistics or handed to training as fill values."""
    from video_pipeline.dataset import StoreDataset
    from video_pipeline.errors import StoreError

    (tmp_path / "r.yaml").write_text(RECIPE)
    store = tmp_path / "s.zarr"
    assert vre_main(capsys, "run", str(tmp_path / "r.yaml"), str(small_clip), "-o", str(store), "-q")[0] == 0
    (store / "rgb" / "c" / "1" / "0" / "0" / "0").unlink()
    data = (store / "edges" / "c" / "0" / "0" / "0" / "0").read_bytes()
    (store / "edges" / "c" / "0" / "0" / "0" / "0").write_bytes(data[:40])
    for argv in (["export", "dronescapes", str(store), "-o", str(tmp_path / "x"), "-j", "1"], ["stats", str(store)]):
        code, _, err = vre_main(capsys, *argv)
        assert code == 2 and len(err.strip().splitlines()) == 1 and "is damaged" in err, (argv, err)
    with pytest.raises(StoreError, match="shard 1 of 'rgb' is damaged .missing."):
        StoreDataset(store, modalities=["rgb"])
    with pytest.raises(StoreError, match="shard 0 of 'edges' is damaged .truncated"):
        StoreDataset(store, modalities=["edges"])
    assert vre_main(capsys, "run", str(tmp_path / "r.yaml"), str(small_clip), "-o", str(store), "-q")[0] == 0
    assert len(StoreDataset(store, modalities=["rgb", "edges"])) == 10


def test_another_image_folder_at_the_same_path_is_refused(tmp_path, capsys):
    import cv2

    from video_pipeline.synth import scene_frames

    folder = tmp_path / "images"
    folder.mkdir()
    (tmp_path / "r.yaml").write_text(RECIPE)

    def fill(seed):
        for i, f in enumerate(scene_frames(6, (48, 64), seed, False)):
            cv2.imwrite(str(folder / f"f{i:02d}.png"), f[..., ::-1])

    fill(1)
    store = tmp_path / "s.zarr"
    argv = ("run", str(tmp_path / "r.yaml"), str(folder), "-o", str(store), "-q")
    assert vre_main(capsys, *argv, "--frames", "0..2")[0] == 0
    fill(2)  # same names, same count: other pictures
    code, _, err = vre_main(capsys, *argv)
    assert code == 2 and "never mixes two videos" in err and len(err.strip().splitlines()) == 1, err
    fill(1)  # the original pictures again (new mtimes): resumes
    code, out, err = vre_main(capsys, *argv)
    assert code == 0 and "4 frames" in out, err
