"""Per-expert and recipe-wide `codec:`: validation, lossless round trips, plain-zarr readability."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import zarr

from conftest import write_recipe
from video_pipeline.codecs import CodecSpec, parse_codec
from video_pipeline.errors import RecipeError, StoreError
from video_pipeline.recipe import load_recipe
from video_pipeline.runner import RunOptions, run

pytest.importorskip("imagecodecs", reason="jpegxl needs imagecodecs")

RECIPE = """
{top}
experts:
  rgb:   {{type: color/rgb{rgb}}}
  edges: {{type: edges/canny{edges}}}
"""


def recipe(tmp_path, top="", rgb="", edges=""):
    return load_recipe(write_recipe(tmp_path / "r.yaml", RECIPE.format(top=top, rgb=rgb, edges=edges)))


@pytest.mark.parametrize("value, expected", [
    ("auto", CodecSpec()),
    ("zstd", CodecSpec("zstd", level=1)),
    ({"name": "zstd", "level": 9}, CodecSpec("zstd", level=9)),
    ("lz4", CodecSpec("lz4", level=1)),
    ({"name": "jpegxl", "effort": 3}, CodecSpec("jpegxl", effort=3)),
])
def test_codec_values(value, expected):
    assert parse_codec(value) == expected


@pytest.mark.parametrize("text, line, needle", [
    ("codec: brotli\n", 2, "unknown codec 'brotli' (known: auto, zstd, lz4, jpegxl)"),
    ("codec: {name: auto, level: 3}\n", 2, "auto takes no options, not level"),
    ("codec: {name: zstd, level: 30}\n", 2, "zstd level must be an integer in 1..22, got 30"),
    ("codec: {name: lz4, effort: 2}\n", 2, "lz4 takes level, not effort"),
    ("codec: 3\n", 2, "must be one of auto, zstd, lz4, jpegxl"),
])
def test_bad_codec_names_the_line(tmp_path, text, line, needle):
    path = write_recipe(tmp_path / "r.yaml", "\n" + text + "experts: {rgb: {type: color/rgb}}\n")
    with pytest.raises(RecipeError) as err:
        load_recipe(path)
    assert f"r.yaml:{line}: codec: " in str(err.value) and needle in str(err.value)


def test_jpegxl_only_for_uint8_images(tmp_path):
    path = write_recipe(tmp_path / "r.yaml", "experts:\n  flow:\n    type: flow/farneback\n    codec: jpegxl\n")
    with pytest.raises(RecipeError, match=r"r.yaml:4: experts.flow.codec: jpegxl stores uint8 images"):
        load_recipe(path)
    # recipe-wide: applies where it can store the output, the default elsewhere
    path = write_recipe(tmp_path / "r.yaml", "codec: jpegxl\nexperts:\n  rgb: {type: color/rgb}\n"
                                             "  flow: {type: flow/farneback}\n")
    experts = load_recipe(path).experts
    assert experts["rgb"].codec.name == "jpegxl" and experts["flow"].codec == CodecSpec()


def test_codec_is_part_of_identity_only_when_not_default(tmp_path):
    plain = recipe(tmp_path)
    assert "codec" not in plain.experts["rgb"].identity()
    # zstd level 1 was the default before "auto": stores made then resume under either recipe
    assert recipe(tmp_path, top="codec: zstd").sha256 == plain.sha256
    assert recipe(tmp_path, top="codec: auto").sha256 == plain.sha256
    assert recipe(tmp_path, rgb=", codec: lz4").sha256 == plain.sha256  # what auto picks for rgb
    lz4 = recipe(tmp_path, edges=", codec: lz4")
    assert lz4.experts["edges"].identity()["codec"] == {"name": "lz4", "level": 1}
    assert lz4.experts["rgb"].codec == CodecSpec()
    assert recipe(tmp_path, rgb=", codec: {name: zstd, level: 5}").experts["rgb"].identity()["codec"] == \
        {"name": "zstd", "level": 5}


def test_auto_picks_zstd_for_masks_and_lz4_for_camera_pixels(tmp_path, clip):
    """The default chain per kind, as stored: what plain zarr readers see in zarr.json."""
    out = tmp_path / "auto.zarr"
    run(recipe(tmp_path), clip, out, RunOptions(frames=np.arange(2), progress=False))
    group = zarr.open_group(out, mode="r")
    chains = {name: group[name].metadata.to_dict()["codecs"][0]["configuration"]["codecs"] for name in ("rgb", "edges")}
    assert [c["name"] for c in chains["rgb"]] == ["bytes", "blosc", "crc32c"]
    assert chains["rgb"][1]["configuration"]["cname"] == "lz4"
    assert chains["edges"][1]["configuration"]["cname"] == "zstd"
    assert chains["edges"][1]["configuration"]["shuffle"] == "bitshuffle"


def test_codecs_round_trip_losslessly_and_plain_zarr_reads_them(tmp_path, clip):
    frames = np.arange(0, 10)
    stores = {}
    for name, kw in {"zstd": {"top": "codec: zstd"}, "auto": {}, "lz4": {"top": "codec: lz4"},
                     "jxl": {"rgb": ", codec: {name: jpegxl, effort: 1}", "edges": ", codec: jpegxl"}}.items():
        stores[name] = tmp_path / f"{name}.zarr"
        run(recipe(tmp_path, **kw), clip, stores[name], RunOptions(frames=frames, progress=False))
    ref = zarr.open_group(stores["zstd"], mode="r")
    meta = zarr.open_group(stores["jxl"], mode="r")["rgb"].metadata.to_dict()
    assert meta["codecs"][0]["configuration"]["codecs"][0]["name"] == "video_pipeline.jpegxl"
    assert zarr.open_group(stores["zstd"], mode="r")["edges"].metadata.to_dict()["codecs"][0][
        "configuration"]["codecs"][1]["configuration"]["shuffle"] == "bitshuffle"
    for name in ("auto", "lz4", "jxl"):
        other = zarr.open_group(stores[name], mode="r")
        for m in ("rgb", "edges"):
            np.testing.assert_array_equal(other[m][:10], ref[m][:10])
    assert ref["rgb"][:10].std() > 10  # real content, not a fill value
    # a fresh interpreter with only zarr imported finds the codec through the entry point
    code = (f"import zarr, numpy; a = zarr.open_array({str(stores['jxl'] / 'rgb')!r}, mode='r'); "
            f"print(int(a[3].astype(numpy.int64).sum()))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert int(out.stdout) == int(ref["rgb"][3].astype(np.int64).sum())


def test_another_codec_on_a_stored_expert_is_refused(tmp_path, clip):
    out = tmp_path / "s.zarr"
    run(recipe(tmp_path), clip, out, RunOptions(frames=np.arange(4), progress=False))
    with pytest.raises(StoreError, match=r"expert 'rgb' is stored with a different recipe \(codec: None -> "
                                         r"\{'name': 'zstd', 'level': 5\}\)"):
        run(recipe(tmp_path, rgb=", codec: {name: zstd, level: 5}"), clip, out,
            RunOptions(frames=np.arange(4), progress=False))


def test_reading_a_recipe_does_not_import_zarr_and_the_old_codec_path_still_loads():
    """Recipes name codecs through codecs.py, which stays free of zarr (a rerun with nothing to do
    never loads it); the JPEG-XL codec lives in jpegxl.py, and the entry point installs made before
    the move name (`video_pipeline.codecs:JpegXlCodec`) still loads it."""
    probe = ("import sys; from video_pipeline.codecs import parse_codec; parse_codec('lz4'); "
             "print('zarr' in sys.modules); "
             "from importlib.metadata import EntryPoint; "
             "old = EntryPoint('video_pipeline.jpegxl', 'video_pipeline.codecs:JpegXlCodec', 'zarr.codecs').load(); "
             "from video_pipeline.jpegxl import JpegXlCodec; print(old is JpegXlCodec)")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert done.stdout.split() == ["False", "True"], done.stdout + done.stderr
