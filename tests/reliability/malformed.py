"""Malformed inputs for the fuzzing tests: recipes (as bytes) and broken videos (as files).

Recipes are generated from one valid recipe by families of mutations: wrong types, unknown keys,
cycles, missing dependencies, bad YAML, huge numbers, bad names, non-UTF-8 bytes. Every one is
invalid and must end `vre run` with one line naming the recipe file.
"""
from __future__ import annotations

from pathlib import Path

import av
import numpy as np

VALID = {  # top-level key -> YAML text of its value
    "shard_frames": "8",
    "experts": "\n  rgb: {type: color/rgb}\n  edges: {type: edges/canny, params: {low: 50, high: 150}}\n",
}


def recipe(top: dict[str, str] | None = None, experts: str | None = None) -> bytes:
    """The valid recipe with top-level values replaced (None drops the key) or another experts block."""
    keys = {**VALID, **(top or {})}
    if experts is not None:
        keys["experts"] = experts
    return "".join(f"{k}: {v}\n" for k, v in keys.items() if v is not None).encode()


def expert(spec: str, name: str = "e", before: str = "  rgb: {type: color/rgb}\n") -> bytes:
    """A recipe whose experts are `rgb` plus `name: spec`."""
    return recipe(experts=f"\n{before}  {name}: {spec}\n")


def recipes() -> list[tuple[str, bytes]]:
    """(case name, file content) for every malformed recipe."""
    cases: list[tuple[str, bytes]] = []

    def add(family: str, name: str, content: bytes | str) -> None:
        cases.append((f"{family}: {name}", content if isinstance(content, bytes) else content.encode()))

    # wrong types of top-level values
    for value in ["540x960", "540", "[540]", "[540, 960, 3]", "[0, 960]", "[-4, 960]", "[1.5, 2]",
                  "[true, 2]", "{h: 1, w: 2}"]:
        add("wrong type", f"resolution {value}", recipe({"resolution": value}))
    for value in ["'8'", "0", "-1", "3.5", "true", "[8]", ".inf", ".nan", "null"]:
        add("wrong type", f"shard_frames {value}", recipe({"shard_frames": value}))
    for value in ["0", "tpu", "'cuda:'", "cuda:x", "[cpu]"]:
        add("wrong type", f"device {value}", recipe({"device": value}))
    for value in ["plugin.py", "[1]", "[{a: b}]"]:
        add("wrong type", f"plugins {value}", recipe({"plugins": value}))
    for value in ["[]", "{}", "rgb", "null", "5", "[rgb, edges]"]:
        add("wrong type", f"experts {value}", recipe(experts=value))
    # wrong types inside an expert
    for spec in ["color/rgb", "[type, color/rgb]", "{type: 5}", "{type: [color/rgb]}", "{type: ''}",
                 "{type: color}", "{type: color/rgb/x}", "{type: color/rgb, deps: 5}",
                 "{type: color/rgb, deps: {a: b}}", "{type: color/rgb, deps: [5]}",
                 "{type: edges/canny, params: [1, 2]}", "{type: edges/canny, params: low=3}",
                 "{type: edges/canny, params: {low: fast}}", "{type: edges/canny, params: {low: [1]}}",
                 "{type: edges/canny, params: {low: 1.5}}", "{type: edges/canny, params: {low: true}}",
                 "{type: flow/farneback, params: {pyr_scale: .nan}}",
                 "{type: flow/farneback, params: {pyr_scale: -.inf}}",
                 "{type: color/rgb, batch_size: '4'}", "{type: color/rgb, batch_size: 0}",
                 "{type: color/rgb, device: 5}", "{type: color/rgb, dtype: int8}", "{type: color/rgb, dtype: 16}",
                 "{type: color/rgb, weights: 5}", "{type: color/rgb, weights: [a, b]}",
                 "{type: color/rgb, resolution: [1]}", "{type: color/rgb, resolution: big}"]:
        add("wrong type", f"expert {spec}", expert(spec))
    # unknown keys
    add("unknown key", "top-level frames", recipe({"frames": "0..10"}))
    add("unknown key", "top-level typo expert", recipe({"expert": "{}"}))
    add("unknown key", "expert param (singular)", expert("{type: edges/canny, param: {low: 1}}"))
    add("unknown key", "expert weigths", expert("{type: color/rgb, weigths: x}"))
    add("unknown key", "unknown parameter", expert("{type: edges/canny, params: {lo: 1}}"))
    # dependency graph
    add("cycle", "self", expert("{type: edges/canny, deps: [e]}"))
    add("cycle", "two experts", recipe(experts="\n  a: {type: normals/svd, deps: [b]}\n"
                                               "  b: {type: normals/svd, deps: [a]}\n"))
    add("cycle", "three experts", recipe(experts="\n  a: {type: normals/svd, deps: [c]}\n"
                                                 "  b: {type: normals/svd, deps: [a]}\n"
                                                 "  c: {type: normals/svd, deps: [b]}\n"))
    binary = "{type: map/binary, deps: [%s], params: {classes: [x]}}"
    add("cycle", "behind a valid expert", recipe(experts=f"\n  rgb: {{type: color/rgb}}\n  a: {binary % 'b'}\n"
                                                         f"  b: {binary % 'a'}\n"))
    add("missing dep", "unknown name", expert("{type: normals/svd, deps: [depth]}"))
    add("missing dep", "dependency not given", expert("{type: normals/svd}"))
    add("missing dep", "wrong kind of dependency", expert("{type: normals/svd, deps: [rgb]}"))
    add("missing dep", "listed twice", expert("{type: map/vote, deps: [rgb, rgb]}"))
    add("missing dep", "plugin type not loaded", expert("{type: test/never-registered}"))
    add("missing dep", "plugin file missing", recipe({"plugins": "[no_such_plugin.py]"}))
    # names
    for name in ["_private", "'a b'", "'a/b'", "'..'", "déjà", "next_frames", "zarr.json", "a" * 300, "123",
                 '"rgb\\n"']:
        add("bad name", f"expert named {name[:20]}", expert("{type: color/rgb}", name=name))
    # bad YAML
    add("bad yaml", "unclosed bracket", "experts:\n  rgb: {type: color/rgb\n")
    add("bad yaml", "tab indentation", "experts:\n\trgb: {type: color/rgb}\n")
    add("bad yaml", "bad indentation", "experts:\n  rgb:\n      type: color/rgb\n    deps: []\n")
    add("bad yaml", "unterminated string", "experts:\n  rgb: {type: 'color/rgb}\n")
    add("bad yaml", "duplicate key", "experts:\n  rgb: {type: color/rgb}\n  rgb: {type: color/hsv}\n")
    add("bad yaml", "undefined alias", "experts:\n  rgb: *nope\n")
    add("bad yaml", "two documents", "experts: {rgb: {type: color/rgb}}\n---\nexperts: {}\n")
    add("bad yaml", "python object tag", "experts: !!python/object/apply:os.system [echo hi]\n")
    add("bad yaml", "python name tag", "experts:\n  rgb: {type: !!python/name:os.system }\n")
    add("bad yaml", "binary tag", "experts:\n  rgb: {type: !!binary AAAA}\n")
    add("bad yaml", "merge of a scalar", "base: &b 3\nexperts:\n  rgb: {<<: *b, type: color/rgb}\n")
    add("bad yaml", "nested 20000 deep", "experts: " + "[" * 20000 + "]" * 20000 + "\n")
    add("bad yaml", "alias bomb in a parameter",
        "experts:\n  rgb: {type: color/rgb}\n  m: {type: map/binary, deps: [rgb], params: {classes: "
        "[&a [" + ", ".join(["x"] * 100) + "], " + ", ".join(["*a"] * 100) + "]}}\n")
    add("bad yaml", "a date that does not exist", recipe({"device": "2024-13-45"}))
    add("bad yaml", "only a comment", "# nothing here\n")
    add("bad yaml", "a list", "- rgb\n- edges\n")
    add("bad yaml", "a scalar", "color/rgb\n")
    # huge numbers
    add("huge number", "shard_frames 10^30", recipe({"shard_frames": "1" + "0" * 30}))
    add("huge number", "shard_frames of 5000 digits", recipe({"shard_frames": "9" * 5000}))
    add("huge number", "resolution 10^6", recipe({"resolution": "[1000000, 1000000]"}))
    add("huge number", "batch_size 1e308", expert("{type: color/rgb, batch_size: 1e308}"))
    add("huge number", "parameter 1.0e+400", expert("{type: flow/farneback, params: {scale: 1.0e+400}}"))
    add("huge number", "parameter 10^40", expert("{type: edges/canny, params: {low: " + "1" + "0" * 40 + "}}"))
    # encodings
    add("non-utf8", "latin-1 byte in a comment", b"# caf\xe9\n" + recipe())
    add("non-utf8", "utf-16 file", recipe().decode().encode("utf-16"))
    add("non-utf8", "binary junk", bytes(np.random.default_rng(0).integers(0, 256, 512, dtype=np.uint8)))
    add("non-utf8", "NUL byte", recipe().replace(b"rgb}", b"rgb\x00}"))
    add("non-utf8", "overlong encoding", b"experts:\n  rgb: {type: color/rgb\xc0\xaf}\n")
    add("non-utf8", "lone surrogate", b"experts:\n  \xed\xa0\x80: {type: color/rgb}\n")
    add("empty", "empty file", b"")
    add("empty", "whitespace only", b"  \n\n  \n")
    return cases


# ---------------------------------------------------------------------------------------- videos
VIDEO_CASES = ("empty.mp4", "text-renamed.mp4", "random-bytes.mp4", "header-only.mp4", "truncated-2pct.mp4",
               "truncated-30pct.mp4", "truncated-55pct.mp4", "truncated-80pct.mp4", "truncated-97pct.mp4",
               "zeroed-middle.mp4", "audio-only.m4a",
               "dangling-symlink.mp4", "mixed-size-images", "cut-image-in-folder", "text-named-png-in-folder",
               "folder-without-images")
# Cut files that nothing tells from a complete shorter video (docs/reliability.md, known limits):
# Matroska keeps no frame table up front, so FFmpeg only logs "File ended prematurely" and drops the
# partial block; a raw H.264 stream has no container at all, and its last, cut frame is decoded
# with the missing part concealed (FFmpeg's frame-threaded decoder flags it corrupt only sometimes).
KNOWN_LIMITS = ("truncated-50pct.mkv", "truncated-60pct.h264")


def broken_videos(folder: Path) -> dict[str, Path]:
    """Path of each of VIDEO_CASES (videos and image folders that cannot be read whole), of
    KNOWN_LIMITS, and of the intact clips ("good.mp4", "good.mkv", "good.h264") they are cut from:
    24 frames 64x96 (`synth.scene_frames(24, (64, 96), seed=1)`)."""
    from video_pipeline import synth

    folder.mkdir(parents=True, exist_ok=True)
    frames = synth.scene_frames(24, (64, 96), seed=1)
    data = synth.write_clip(frames, folder / "good.mp4").read_bytes()
    mkv = synth.write_clip(frames, folder / "good.mkv").read_bytes()
    h264 = synth.write_clip(frames, folder / "good.h264").read_bytes()
    mdat = data.find(b"mdat") + 8
    middle = bytearray(data)
    at = mdat + (len(data) - mdat) // 2
    middle[at:at + 4000] = bytes(4000)
    files = {
        "empty.mp4": b"",
        "text-renamed.mp4": b"this is a shopping list, not a video\n" * 50,
        "random-bytes.mp4": bytes(np.random.default_rng(1).integers(0, 256, 20000, dtype=np.uint8)),
        "header-only.mp4": data[:mdat],
        **{f"truncated-{int(f * 100)}pct.mp4": data[:int(len(data) * f)] for f in (0.02, 0.3, 0.55, 0.8, 0.97)},
        "zeroed-middle.mp4": bytes(middle),
    }
    out = {}
    for name, content in files.items():
        out[name] = folder / name
        out[name].write_bytes(content)
    out["audio-only.m4a"] = _audio_only(folder / "audio-only.m4a")
    out["dangling-symlink.mp4"] = folder / "dangling-symlink.mp4"
    out["dangling-symlink.mp4"].symlink_to(folder / "no-such-target.mp4")
    mixed = out["mixed-size-images"] = synth.write_image_folder(frames[:6], folder / "mixed-size-images")
    synth.write_image_folder([np.zeros((32, 48, 3), np.uint8)], folder / "small")
    (folder / "small" / "frame_00000.png").rename(mixed / "frame_00003b.png")
    cut = out["cut-image-in-folder"] = synth.write_image_folder(frames[:10], folder / "cut-image-in-folder")
    png = (cut / "frame_00006.png").read_bytes()
    (cut / "frame_00006.png").write_bytes(png[:len(png) // 3])
    text = out["text-named-png-in-folder"] = synth.write_image_folder(frames[:5], folder / "text-named-png-in-folder")
    (text / "frame_00002.png").write_text("not a png")
    empty = out["folder-without-images"] = folder / "folder-without-images"
    empty.mkdir()
    (empty / "notes.txt").write_text("no images here")
    for name, content in (("truncated-50pct.mkv", mkv[:len(mkv) // 2]),
                          ("truncated-60pct.h264", h264[:int(len(h264) * 0.6)])):
        out[name] = folder / name
        out[name].write_bytes(content)
    assert tuple(out) == VIDEO_CASES + KNOWN_LIMITS
    return {**out, **{f"good{ext}": folder / f"good{ext}" for ext in (".mp4", ".mkv", ".h264")}}


def _audio_only(path: Path) -> Path:
    """An AAC file with one second of silence: a container without a video track."""
    with av.open(str(path), "w") as c:
        stream = c.add_stream("aac", rate=8000)
        stream.layout = "mono"
        for i in range(8):
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            frame.sample_rate, frame.pts = 8000, i * 1024
            for packet in stream.encode(frame):
                c.mux(packet)
        for packet in stream.encode():
            c.mux(packet)
    return path

