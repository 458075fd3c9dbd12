"""Store codecs per kind: bytes per frame, write and read frames/s on one core.

    python -m video_pipeline.bench.codecs VIDEO [--frames 64]

rgb, hsv and Canny edges come from VIDEO (the registered experts); depth, normals and
semantic from the synthetic benchmark store (`bench.synthetic`). Each codec writes whole shards
through `VideoStore.write_frames` (the runner's path) and reads single frames through
`FrameReader` (the training loader's path), one frame after the other. Speeds are frames per
CPU-second of this process (`time.process_time`: Blosc's own threads included), so they hold on a
shared machine.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from video_pipeline import registry
from video_pipeline.bench.synthetic import make_bench_store
from video_pipeline.codecs import CodecSpec, codec_fits
from video_pipeline.store import ArraySpec, FrameReader, VideoStore
from video_pipeline.video import Video

CODECS = {"auto (default)": CodecSpec(), "zstd-1": CodecSpec("zstd", level=1), "zstd-5": CodecSpec("zstd", level=5),
          "lz4": CodecSpec("lz4"), "jpegxl": CodecSpec("jpegxl", effort=1)}
SHARD = 32


def modalities(video: Path, n: int) -> dict[str, tuple[np.ndarray, str]]:
    """{name: (data [n,540,960,C], kind)}: three from the video, three synthetic."""
    registry.load_entry_points()  # the experts, found as any plugin is (the core never imports them)
    rgb = Video.open(video).read(np.arange(n), size=(540, 960))
    out = {"rgb": (rgb, "image"), "hsv": (registry.get_expert("color/hsv")()(rgb, {}), "image"),
           "edges": (registry.get_expert("edges/canny")(low=100, high=200)(rgb, {}), "binary")}
    with tempfile.TemporaryDirectory() as tmp:
        synthetic = VideoStore.open(make_bench_store(Path(tmp) / "s.zarr", n), "r")
        for name in ("depth", "normals", "semantic"):
            out[name] = (synthetic.read(name, np.arange(n)), synthetic.array(name).attrs["kind"])
    return out


def measure(data: np.ndarray, kind: str, codec: CodecSpec, folder: Path) -> dict:
    """bytes/frame, write and read frames per CPU-second of one array stored with `codec`."""
    n, h, w, c = data.shape
    store = VideoStore.open(folder / "c.zarr", "w")
    store.init_meta({"experts": {}}, "bench", {"path": "synthetic", "n_frames": n, "fps": 30.0,
                                               "height": h, "width": w}, "bench", SHARD, (h, w))
    store.ensure_array(ArraySpec("x", c, str(data.dtype), {"kind": kind}, codec), h, w)
    t0 = time.process_time()
    for a in range(0, n, SHARD):
        store.write_frames("x", np.arange(a, min(a + SHARD, n)), data[a:a + SHARD])
    write = time.process_time() - t0
    reader = FrameReader(folder / "c.zarr", "x")
    t0 = time.process_time()
    for t in range(n):
        frame = reader.read(t)
    read = time.process_time() - t0
    assert np.array_equal(frame, data[-1]), "lossless codecs read back what was written"
    size = sum(f.stat().st_size for f in (folder / "c.zarr" / "x" / "c").rglob("*") if f.is_file())
    return {"kB_per_frame": size / n / 1e3, "raw_kB": data[0].nbytes / 1e3,
            "write_fps": n / max(write, 1e-9), "read_fps": n / max(read, 1e-9)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m video_pipeline.bench.codecs", description=__doc__.split("\n")[0])
    p.add_argument("video")
    p.add_argument("--frames", type=int, default=64)
    args = p.parse_args(argv)
    data = modalities(Path(args.video), args.frames)
    print("| kind | codec | kB/frame (raw) | ratio | write frames/s | read frames/s |")
    print("|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for name, (values, kind) in data.items():
            for label, codec in CODECS.items():
                if not codec_fits(codec, str(values.dtype), values.shape[-1]):
                    continue
                m = measure(values, kind, codec, Path(tmp))
                print(f"| {name} ({values.dtype}, {values.shape[-1]} ch) | {label} | {m['kB_per_frame']:.0f} "
                      f"({m['raw_kB']:.0f}) | {m['kB_per_frame'] / m['raw_kB']:.2f} | {m['write_fps']:.0f} | "
                      f"{m['read_fps']:.0f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
