"""Bad input: over a hundred malformed recipes, sixteen broken videos or image folders, and two
cut files that read as complete shorter videos (known limits).

Every case ends `vre run` with exactly one line on stderr and a non-zero exit, never a traceback
or an "internal error", and never with a store that a rerun would take as finished. The cases are
generated in tests/reliability/malformed.py.
"""
from __future__ import annotations

import re
import signal
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import zarr

from conftest import vre
from reliability import malformed
from reliability.figures import record
from video_pipeline.cli import main

RECIPES = malformed.recipes()


@contextmanager
def deadline(seconds: int):
    """Fail instead of hanging (an input that makes the tool loop or explode)."""
    def expired(*_):
        raise TimeoutError(f"still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def one_error_line(capsys) -> str:
    """The single stderr line of a failed command; nothing else may have been printed."""
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert len(lines) == 1, f"expected one line, got:\n{captured.err}"
    assert lines[0].startswith("vre: error: "), lines[0]
    assert "internal error" not in lines[0] and "Traceback" not in captured.err
    assert captured.out == ""
    return lines[0]


@pytest.fixture(scope="module")
def small_clip(tmp_path_factory) -> Path:
    from video_pipeline.synth import make_clip

    return make_clip(tmp_path_factory.mktemp("inputs") / "clip.mp4", n_frames=8, size=(48, 64))


def test_enough_cases():
    families = {name.split(":")[0] for name, _ in RECIPES}
    assert len(RECIPES) >= 50 and len(malformed.VIDEO_CASES) >= 10
    assert {"wrong type", "unknown key", "cycle", "missing dep", "bad yaml", "huge number", "non-utf8"} <= families


@pytest.mark.parametrize("name,content", RECIPES, ids=[name for name, _ in RECIPES])
def test_malformed_recipe_is_one_line_naming_file_and_line(tmp_path, small_clip, capsys, name, content):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_bytes(content)
    out = tmp_path / "out.zarr"
    with deadline(30):
        code = main(["run", str(recipe), str(small_clip), "-o", str(out), "-q"])
    line = one_error_line(capsys)
    assert code == 2
    assert re.match(rf"vre: error: {re.escape(str(recipe))}:\d+: \S", line), line
    assert not out.exists()  # refused before any store was made
    record("malformed recipe", name, "refused", cases=1)


@pytest.mark.parametrize("name", ["bad yaml: python object tag", "huge number: shard_frames of 5000 digits",
                                  "non-utf8: utf-16 file"])
def test_malformed_recipe_through_the_real_command(tmp_path, small_clip, name):
    """The same through a `vre` process: what a user sees, with no traceback anywhere."""
    recipe = tmp_path / "recipe.yaml"
    recipe.write_bytes(dict(RECIPES)[name])
    res = vre("run", str(recipe), str(small_clip), "-o", str(tmp_path / "out.zarr"), "-q")
    assert res.returncode == 2 and res.stdout == ""
    assert res.stderr.count("\n") == 1 and res.stderr.startswith(f"vre: error: {recipe}:"), res.stderr


# ---------------------------------------------------------------------------------------- videos
@pytest.fixture(scope="module")
def broken(tmp_path_factory) -> dict[str, Path]:
    return malformed.broken_videos(tmp_path_factory.mktemp("broken"))


@pytest.fixture(scope="module")
def rgb_recipe(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("recipe") / "rgb.yaml"
    path.write_text("shard_frames: 4\nexperts:\n  rgb: {type: color/rgb}\n")
    return path


@pytest.mark.parametrize("name", malformed.VIDEO_CASES)
def test_broken_video_is_one_line_and_never_a_finished_store(tmp_path, broken, rgb_recipe, capsys, name):
    video = broken[name]
    out = tmp_path / "out.zarr"
    argv = ["run", str(rgb_recipe), str(video), "-o", str(out), "-q"]
    with deadline(60):
        code = main(argv)
    line = one_error_line(capsys)
    assert code == 2 and str(video) in line
    if not out.exists():
        record("broken video", name, "refused before any store", cases=1)
        return
    # frames before the break were stored; the rest is not flagged, and a rerun is not "done"
    root = zarr.open_group(str(out), mode="r")
    done = root["_frames/rgb"][:].astype(bool)
    n_frames = root.attrs["video_pipeline"]["video"]["n_frames"]
    assert not done.all() and len(done) == n_frames
    m = re.search(r"frame (\d+)", line)
    assert m and int(m[1]) == int(np.argmin(done)), line  # the message names the first missing frame
    with deadline(60):
        again = main(argv)
    assert again == 2 and str(video) in one_error_line(capsys)
    assert (zarr.open_group(str(out), mode="r")["_frames/rgb"][:].astype(bool) == done).all()
    record("broken video", name, "frames before the break stored, rerun fails again", cases=1,
           frames_stored=int(done.sum()), frames_in_index=n_frames)


@pytest.mark.parametrize("name", malformed.KNOWN_LIMITS)
def test_cuts_that_read_as_a_complete_shorter_video(tmp_path, broken, rgb_recipe, name):
    """Known limits (docs/reliability.md): nothing in these cut files says they are cut. The run
    succeeds and stores the frames present: all but the last are exactly the intact file's; the
    last may hold the concealed remains of a cut frame (raw H.264)."""
    from video_pipeline.video import Video

    out = tmp_path / "out.zarr"
    assert main(["run", str(rgb_recipe), str(broken[name]), "-o", str(out), "-q"]) == 0
    stored = zarr.open_group(str(out), mode="r")["rgb"][:]
    assert 0 < len(stored) < 24
    intact = Video.open(broken["good" + Path(name).suffix]).read(range(len(stored)))
    np.testing.assert_array_equal(stored[:-1], intact[:-1])
    last_error = float(np.abs(stored[-1].astype(np.float32) - intact[-1]).mean())
    record("broken video", name, "read as a complete shorter video (known limit)", cases=1,
           frames_stored=len(stored), last_frame_mean_abs_error=round(last_error, 1))
