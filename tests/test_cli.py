"""The `vre` command's small subcommands: experts, inspect, demo."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from conftest import vre
from video_pipeline import registry


def test_experts_lists_every_registered_type_with_params_and_outputs():
    r = vre("experts", "--json")
    assert r.returncode == 0, r.stderr
    infos = {i["type"]: i for i in json.loads(r.stdout)}
    builtin = {t for t in registry.list_experts() if registry.origin(t).startswith("experts.")}
    assert len(builtin) == 21 and builtin <= set(infos)  # (this process may also hold test plugins)
    assert infos["edges/canny"]["params"]["low"] == {"type": "int", "default": 100, "required": False}
    assert infos["edges/canny"]["output"]["kind"] == "binary"
    assert infos["map/binary"]["params"]["classes"]["required"] is True
    text = vre("experts", "normals/svd").stdout
    assert "window: int (default 11)" in text and "deps: 1 (depth)" in text
    bad = vre("experts", "normals/sdv")
    assert bad.returncode != 0 and "did you mean 'normals/svd'" in bad.stderr


def test_demo_makes_a_clip_and_a_store_then_inspect_reads_it(tmp_path):
    r = vre("demo", "-o", str(tmp_path))
    assert r.returncode == 0, r.stderr
    store = tmp_path / "demo.zarr"
    assert str(store) in r.stdout and "48/48" in r.stdout
    info = json.loads(vre("inspect", str(store), "--json").stdout)
    assert set(info["modalities"]) == {"rgb", "hsv", "edges", "flow"}
    assert all(m["frames_done"] == 48 for m in info["modalities"].values())
    missing = vre("inspect", str(tmp_path / "nope.zarr"))
    assert missing.returncode != 0 and "not a video-pipeline store" in missing.stderr


OPEN_WITH_XARRAY = textwrap.dedent("""
    import sys, warnings
    import numpy as np, xarray as xr
    warnings.simplefilter("ignore")
    ds = xr.open_zarr(sys.argv[1])
    assert not any(m.startswith(("video_pipeline", "experts")) for m in sys.modules), "package imported"
    print(sorted(ds.data_vars), dict(ds.sizes))
    flow = ds["flow"].values
    assert flow.shape == (48, 180, 320, 2) and not np.isnan(flow).all()
""")


def test_a_demo_store_opens_as_one_xarray_dataset_without_this_package(tmp_path, capsys):
    from video_pipeline import cli

    pytest.importorskip("xarray")
    assert cli.main(["demo", "-o", str(tmp_path)]) == 0
    store = tmp_path / "demo.zarr"
    r = subprocess.run([sys.executable, "-c", OPEN_WITH_XARRAY, str(store)], capture_output=True,
                       text=True, timeout=120, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "['edges', 'flow', 'hsv', 'rgb']" in r.stdout and "'flow_channel': 2" in r.stdout
    # a store written before per-modality channel names (every array's last axis `channel`) still
    # opens with this package's tools
    meta = store / "hsv" / "zarr.json"
    meta.write_text(json.dumps({**json.loads(meta.read_text()), "dimension_names": ["frame", "y", "x", "channel"]}))
    capsys.readouterr()
    assert cli.main(["inspect", str(store), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["modalities"]["hsv"]["frames_done"] == 48
    assert cli.main(["preview", str(store), "-o", str(tmp_path / "p.png"), "--frames", "3"]) == 0


def test_experts_shows_choices_and_says_when_weights_are_required():
    from video_pipeline.describe import describe_experts

    text = describe_experts("semantic/phgmae-distil")
    assert "output: 'labels'|'probabilities' (default 'labels')" in text
    assert "weights: REQUIRED" in text
    assert "weights: REQUIRED" not in describe_experts("depth/hf")  # it has default weights
    assert "normalization: 'relative'|'raw'|'reciprocal'" in describe_experts("depth/hf")


def parsers(parser, path=""):
    """(command path, parser) of every subcommand, nested ones included."""
    import argparse

    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield f"{path} {name}".strip(), sub
                yield from parsers(sub, f"{path} {name}".strip())


def test_every_command_shows_an_example_and_every_positional_has_help():
    import argparse

    from video_pipeline.cli import build_parser

    found = dict(parsers(build_parser()))
    assert {"run", "view", "import vre", "analyze agreement"} <= set(found)
    for path, parser in found.items():
        text = parser.format_help()
        assert "example:\n  vre " + path.split()[0] in text, f"`vre {path} -h` shows no example"
        for action in parser._actions:
            if not action.option_strings and not isinstance(action, argparse._SubParsersAction):
                assert action.help, f"`vre {path}`: positional '{action.dest}' has no help text"


def test_frames_before_the_video_debug_after_the_command_and_a_bundled_recipe_by_name(tmp_path, clip, capsys):
    from video_pipeline import cli
    from video_pipeline.errors import StoreError
    from video_pipeline.store import VideoStore

    assert cli.frames_last(["run", "r.yaml", "--frames", "0..2", "v.mp4", "-o", "x"]) == \
        ["run", "r.yaml", "v.mp4", "-o", "x", "--frames", "0..2"]
    assert cli.frames_last(["run", "r.yaml", "--frames", "1", "5", "..9", "v.mp4"]) == \
        ["run", "r.yaml", "v.mp4", "--frames", "1", "5", "..9"]
    out = tmp_path / "q.zarr"
    assert cli.main(["run", "quickstart", "--frames", "0..3", str(clip), "-o", str(out), "-q", "--preview"]) == 0
    assert f"preview: {tmp_path / 'q.preview.mp4'}" in capsys.readouterr().out  # the collage at the end
    assert (tmp_path / "q.preview.mp4").stat().st_size > 0
    store = VideoStore.open(out)
    assert store.meta["recipe"]["experts"].keys() >= {"rgb", "hsv", "edges", "flow"}   # quickstart.yaml
    assert store.done_frames("rgb").nonzero()[0].tolist() == [0, 1, 2]
    with pytest.raises(StoreError):  # --debug after the command: the traceback, not one line
        cli.main(["inspect", str(tmp_path / "none.zarr"), "--debug"])
    assert cli.main(["inspect", str(tmp_path / "none.zarr")]) == 2
    assert "vre: error:" in capsys.readouterr().err
