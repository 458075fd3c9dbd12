"""Whole shards written and frames read without zarr's generic path: plain zarr reads exactly the
same values, for every codec and dtype, a video's short last shard, and shards later rewritten
in part through zarr."""
from __future__ import annotations

import numpy as np
import pytest
import zarr

from video_pipeline.codecs import CodecSpec
from video_pipeline.shards import ShardIO
from video_pipeline.store import ArraySpec, FrameReader, VideoStore

CASES = [("rgb", "uint8", 3, "image", None), ("edges", "uint8", 1, "binary", None),
         ("depth", "float16", 1, "depth", None), ("lz4", "uint8", 3, "image", CodecSpec("lz4")),
         ("jxl", "uint8", 3, "image", CodecSpec("jpegxl"))]


def make_store(path, n=11, shard_frames=4, size=(12, 20)):
    store = VideoStore.open(path, "w")
    store.init_meta({"experts": {}}, "test", {"path": "synthetic", "n_frames": n, "fps": 1.0,
                                              "height": size[0], "width": size[1]}, "test", shard_frames, size)
    return store


@pytest.mark.parametrize("name, dtype, channels, kind, codec", CASES)
def test_direct_shards_read_back_through_plain_zarr(tmp_path, name, dtype, channels, kind, codec):
    if codec and codec.name == "jpegxl":
        pytest.importorskip("imagecodecs")
    store = make_store(tmp_path / "s.zarr")
    rng = np.random.default_rng(1)
    data = (rng.random((11, 12, 20, channels)) * (255 if dtype == "uint8" else 3)).astype(dtype)
    store.ensure_array(ArraySpec(name, channels, dtype, {"kind": kind}, codec), 12, 20)
    assert ShardIO.of(store.array(name)) is not None
    for a in (0, 4, 8):  # whole shards; the last one holds frames 8..10 of a 4-frame shard
        idx = np.arange(a, min(a + 4, 11))
        store.write_frames(name, idx, data[idx])
    plain = zarr.open_array(tmp_path / "s.zarr" / name, mode="r")
    np.testing.assert_array_equal(plain[:], data)
    reader = FrameReader(tmp_path / "s.zarr", name)
    for t in (0, 5, 10):
        np.testing.assert_array_equal(reader.read(t), data[t])
    # a part of a shard rewritten through zarr's path keeps the directly written rest
    store.write_frames(name, np.array([5]), data[[9]])
    expected = data.copy()
    expected[5] = data[9]
    np.testing.assert_array_equal(plain[:], expected)
    np.testing.assert_array_equal(FrameReader(tmp_path / "s.zarr", name).read(5), data[9])
