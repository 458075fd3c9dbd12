"""The benchmark reports hold the figures a user reads to find a bottleneck (no timing asserted)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import write_recipe
from video_pipeline.bench.codecs import measure
from video_pipeline.bench.pipeline import bench, format_report
from video_pipeline.codecs import CodecSpec


def test_vre_bench_reports_cpu_and_where_the_main_thread_waited(tmp_path, clip):
    recipe = write_recipe(tmp_path / "r.yaml", "shard_frames: 8\nexperts:\n  rgb: {type: color/rgb}\n"
                                               "  edges: {type: edges/canny, codec: lz4}\n")
    report = json.loads(bench(recipe, clip, frames=["0..16"], as_json=True))
    assert report["frames"] == 16 and report["cores"] >= 1 and report["cpu_s"] > 0
    assert 0 <= report["decode_wait_s"] <= report["wall_s"] and 0 <= report["write_wait_s"] <= report["wall_s"]
    assert set(report["stored_bytes_per_frame"]) == {"rgb", "edges"}
    # the finished store rerun as a whole command (a new process): it found nothing to do
    assert report["rerun_command_s"] is not None and report["rerun_command_s"] > report["rerun_nothing_to_do_s"]
    text = format_report(report)
    assert "ms/frame" in text and "of" in text and "waiting for decoded frames" in text
    assert "as a whole `vre run` command" in text


@pytest.mark.parametrize("codec", [CodecSpec(), CodecSpec("lz4"), CodecSpec("jpegxl")])
def test_codec_bench_measures_a_lossless_round_trip(tmp_path, codec):
    if codec.name == "jpegxl":
        pytest.importorskip("imagecodecs")
    frames = np.zeros((10, 36, 64, 3), np.uint8)
    for t in range(10):  # a bright square moving over a dark field: compressible by every codec
        frames[t, 8:24, 3 * t:3 * t + 16] = (200, 120, 40)
    m = measure(frames, "image", codec, tmp_path)  # asserts the read-back itself
    assert 0 < m["kB_per_frame"] < m["raw_kB"] and m["write_fps"] > 0 and m["read_fps"] > 0
