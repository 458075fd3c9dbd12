"""StoreDataset's batch path (`__getitems__`, what a DataLoader calls): the same values as the item
path and as plain zarr, in DataLoader workers whose shared-memory batches are reused only once the
main process has dropped them (video_pipeline.slabs)."""
from __future__ import annotations

import json
import os
import runpy
import sys

import numpy as np
import pytest
import torch
import zarr
from test_dataset import CLASSES, H, SHARD, T, W, make_data, write_store

from video_pipeline import dataset as ds_mod
from video_pipeline.codecs import parse_codec
from video_pipeline.dataset import StoreDataset
from video_pipeline.errors import StoreError
from video_pipeline.store import ArraySpec, VideoStore

NAMES = ("rgb", "depth", "normals", "semantic", "probs", "feat")


def write_coded_store(path, data: dict, codec: str | None, done: dict | None = None):
    """`write_store` with every array in `codec` (None: the default zstd) where it fits."""
    n, h, w = next(iter(data.values())).shape[:3]
    store = VideoStore.open(path, "w")
    store.init_meta({"experts": {k: {"type": f"test/{k}"} for k in data}}, "sha", {
        "path": "clip.mp4", "n_frames": n, "fps": 30.0, "height": h, "width": w}, "test", SHARD, (h, w))
    kinds = {"rgb": "image", "depth": "depth", "normals": "normals", "semantic": "semantic", "probs": "semantic"}
    for name, arr in data.items():
        kind = kinds.get(name, "features")
        attrs = {"type": f"test/{name}", "kind": kind, "channels": arr.shape[-1],
                 "classes": CLASSES[:arr.shape[-1]] if name == "probs" else CLASSES if kind == "semantic" else []}
        frames = np.asarray(done[name] if done and name in done else np.arange(n), np.int64)
        spec = ArraySpec(name, arr.shape[-1], str(arr.dtype), attrs, parse_codec(codec) if codec else None)
        store.write_array(spec, arr[frames], frames)
    return store


def zarr_frames(path, name: str, frames) -> np.ndarray:
    """The frames through plain zarr (no code of this package)."""
    return zarr.open_array(str(path / name), mode="r")[np.asarray(frames)]


def stacked(ds: StoreDataset, indices) -> dict:
    return torch.utils.data.default_collate([ds[i] for i in indices])


def assert_batches_equal(a: dict, b: dict) -> None:
    assert list(a) == list(b)
    for key in a:
        if isinstance(a[key], torch.Tensor):
            assert a[key].dtype == b[key].dtype and a[key].shape == b[key].shape, key
            assert torch.equal(a[key].nan_to_num(7.0), b[key].nan_to_num(7.0)), key
        else:
            assert a[key] == b[key], key


@pytest.mark.parametrize("codec", ["zstd", "lz4"])
def test_batches_equal_items_and_plain_zarr_for_shuffled_indices_across_shards(tmp_path, codec):
    data = {k: v for k, v in make_data(n=14).items() if k in NAMES}
    done = {"depth": np.array([0, 1, 2, 3, 5, 9, 10, 11, 12, 13])}  # a hole and an unwritten shard (4..8)
    write_coded_store(tmp_path / "a.zarr", data, codec, done)
    ds = StoreDataset(tmp_path / "a.zarr", modalities=list(NAMES), compact=True, missing="fill_nan")
    rng = np.random.default_rng(3)
    for _ in range(3):
        indices = [int(i) for i in rng.permutation(len(ds))[:9]]  # several shards, any order
        batch = torch.utils.data.default_collate(ds.__getitems__(indices))
        assert_batches_equal(batch, stacked(ds, indices))
        for name in NAMES:
            expected = zarr_frames(tmp_path / "a.zarr", name, indices)
            np.testing.assert_array_equal(batch[name].numpy(), expected)  # NaN where not computed
        assert batch["present"][:, 1].tolist() == [i in done["depth"] for i in indices]


@pytest.mark.parametrize("options", [
    dict(normalization="standardization", one_hot=["semantic"]),
    dict(normalization={"depth": "min_max"}, missing="fill_zero", resolution=(20, 30)),
    dict(normalization="min_max", crop=(10, 12), compact=True),
    dict(crop=(9, 20), missing="fill_nan"),
])
def test_batches_equal_items_for_every_option(tmp_path, options):
    data = make_data(n=10)
    write_store(tmp_path / "a.zarr", data, done={"depth": np.arange(6)})
    write_store(tmp_path / "b.zarr", make_data(n=7, seed=5))
    kwargs = {"modalities": ["rgb", "depth", "semantic", "probs", "roads"], "missing": "fill_nan", **options}
    by_items, by_batch = StoreDataset([tmp_path / "a.zarr", tmp_path / "b.zarr"], **kwargs), \
        StoreDataset([tmp_path / "a.zarr", tmp_path / "b.zarr"], **kwargs)
    torch.manual_seed(11)
    by_items[0], by_batch[0]  # noqa: B018  the crop generators start from the same seed
    for indices in ([16, 2, 9, 3, 11], [0, 15, 6], list(range(17))):
        assert_batches_equal(torch.utils.data.default_collate(by_batch.__getitems__(indices)),
                             stacked(by_items, indices))


def test_other_collate_functions_get_the_items(store_data_lz4):
    path = store_data_lz4
    ds = StoreDataset(path, modalities=["rgb", "depth", "semantic"], compact=True)
    items = ds.__getitems__([3, 7])
    assert [dict(x).keys() for x in items] == [ds[3].keys()] * 2
    for item, i in zip(items, (3, 7)):
        for key, value in ds[i].items():
            assert torch.equal(item[key], value) if isinstance(value, torch.Tensor) else item[key] == value
    items[1]["frame"] = 70  # a changed item: default_collate stacks the items, with the change
    assert torch.utils.data.default_collate(items)["frame"].tolist() == [3, 70]
    items = ds.__getitems__([3, 7])
    assert torch.utils.data.default_collate(items[::-1])["frame"].tolist() == [7, 3]
    assert type(torch.utils.data.default_collate(ds.__getitems__([1, 2]))) is dict
    loader = torch.utils.data.DataLoader(ds, batch_size=3, num_workers=1, collate_fn=_as_they_come,
                                         multiprocessing_context="fork", timeout=60)  # fail, never hang
    for items in loader:  # the items themselves, sent from a worker
        assert type(items) is list and all(type(x) is dict for x in items)
        for item in items:
            assert torch.equal(item["rgb"], ds[item["frame"]]["rgb"])


def _as_they_come(items):
    return items


def test_a_damaged_shard_raises_the_one_line_error_in_a_batch(store_data_lz4):
    path = store_data_lz4
    shard = path / "rgb" / "c" / "1" / "0" / "0" / "0"
    raw = bytearray(shard.read_bytes())
    raw[300] ^= 0xFF  # inside frame 4's compressed bytes
    shard.write_bytes(bytes(raw))
    ds = StoreDataset(path, modalities=["depth", "rgb"], compact=True)
    with pytest.raises(StoreError, match=r"shard 1 of 'rgb' is damaged \(frame 4: checksum mismatch\); run `vre verify"):
        ds.__getitems__([0, 4])
    with pytest.raises(StoreError, match=r"shard 1 of 'rgb' is damaged \(frame 4: checksum mismatch\)"):
        ds[4]
    shard.write_bytes(bytes(raw[: len(raw) // 2]))
    with pytest.raises(StoreError, match=r"shard 1 of 'rgb' is damaged \(index checksum mismatch\)"):
        ds.__getitems__([1, 5])


@pytest.fixture
def store_data_lz4(tmp_path):
    write_coded_store(tmp_path / "a.zarr", make_data(), "lz4")
    return tmp_path / "a.zarr"


class _Traced(StoreDataset):
    """Batches also carry [worker id, shared buffers its pool has made so far]."""

    def _read_batch(self, indices, pool):
        batch, slabs = super()._read_batch(indices, pool)
        batch["made"] = torch.tensor([torch.utils.data.get_worker_info().id, pool.created])
        return batch, slabs


@pytest.mark.parametrize("compact", [True, False])
def test_worker_batches_are_right_and_reused_only_once_dropped(store_data_lz4, compact):
    path = store_data_lz4
    ds = _Traced(path, modalities=["rgb", "depth", "semantic"], compact=compact)
    expected = {name: zarr_frames(path, name, np.arange(T)) for name in ("rgb", "depth", "semantic")}
    loader = torch.utils.data.DataLoader(ds, batch_size=2, shuffle=True, num_workers=2, timeout=60,
                                         multiprocessing_context="fork", persistent_workers=True)

    def check(batch):
        frames = batch["frame"].numpy()
        rgb = batch["rgb"].numpy() if compact else (batch["rgb"] * 1).to(torch.uint8).numpy().transpose(0, 2, 3, 1)
        np.testing.assert_array_equal(rgb, expected["rgb"][frames])
        depth = batch["depth"].numpy() if compact else batch["depth"].numpy().transpose(0, 2, 3, 1)
        np.testing.assert_array_equal(depth, expected["depth"][frames].astype(depth.dtype))
        semantic = batch["semantic"].numpy()
        np.testing.assert_array_equal(semantic if not compact else semantic[..., 0], expected["semantic"][frames, ..., 0])

    made = {}
    for _ in range(4):  # 24 batches dropped as they come: their buffers come back
        for batch in loader:
            check(batch)
            worker, count = batch["made"].tolist()
            made[worker] = count
    assert len(made) == 2 and max(made.values()) <= 3 * 5, f"buffers were not reused: {made}"
    held = [batch for _ in range(3) for batch in loader]  # all 18 held: none may be overwritten
    for batch in held:
        check(batch)
    assert sum(b["made"][1] for b in held[-2:]) > sum(made.values()), "held batches need new buffers"
    del loader


def test_python_m_dataset_bench_runs_the_loader_benchmark(tmp_path, monkeypatch, capsys):
    """`python -m video_pipeline.dataset --bench ARGS` runs `python -m video_pipeline.bench.loader
    ARGS` (run here in this process rather than in two more interpreters)."""
    from video_pipeline.bench import loader

    write_coded_store(tmp_path / "a.zarr", make_data(n=8), "lz4")
    args = [str(tmp_path / "a.zarr"), "--workers", "0", "--batch-size", "2", "--seconds", "0.05",
            "--compact", "--device", "none"]
    ran = []
    monkeypatch.setattr(os, "execv", lambda exe, argv: ran.append(argv))
    monkeypatch.setattr(sys, "argv", ["dataset.py", "--bench", *args])
    runpy.run_path(ds_mod.__file__, run_name="__main__")
    assert ran == [[sys.executable, "-m", "video_pipeline.bench.loader", *args]]
    assert loader.main(ran[0][3:]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["samples"] > 0 and result["batch_shapes"]["rgb"] == [H, W, 3, "uint8"]
    assert 0 < result["main_cpu_ms_per_sample"] <= result["cpu_ms_per_sample"]
    assert loader.main([*args[:-1], "copy"]) == 0  # batches also read out once, as pin_memory does
    assert json.loads(capsys.readouterr().out)["device"] == "copy"
    monkeypatch.setattr(sys, "argv", ["dataset.py"])
    with pytest.raises(SystemExit) as exit_:
        runpy.run_path(ds_mod.__file__, run_name="__main__")
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "--bench" in err and len(err.strip().splitlines()) == 1


def test_threads_sharing_a_dataset_read_right_values(store_data_lz4):
    from concurrent.futures import ThreadPoolExecutor

    path = store_data_lz4
    expected = zarr_frames(path, "rgb", np.arange(T))
    for compact in (True, False):
        ds = StoreDataset(path, modalities=["rgb", "depth"], compact=compact)
        batches = [[i, (i + 5) % T, (i + 7) % T] for i in range(T)] * 3
        with ThreadPoolExecutor(3) as pool:
            results = list(pool.map(lambda b: torch.utils.data.default_collate(ds.__getitems__(b)), batches))
        for indices, batch in zip(batches, results):
            rgb = batch["rgb"] if compact else batch["rgb"].permute(0, 2, 3, 1).to(torch.uint8)
            np.testing.assert_array_equal(rgb.numpy(), expected[indices])


def test_a_damaged_shard_read_in_a_loader_worker_is_the_same_one_line_error(store_data_lz4):
    path = store_data_lz4
    shard = path / "rgb" / "c" / "1" / "0" / "0" / "0"
    raw = bytearray(shard.read_bytes())
    raw[300] ^= 0xFF
    shard.write_bytes(bytes(raw))
    ds = StoreDataset(path, modalities=["rgb"], compact=True)
    with pytest.raises(StoreError) as in_process:
        ds.__getitems__([4])
    loader = torch.utils.data.DataLoader(ds, batch_size=4, num_workers=1, multiprocessing_context="fork",
                                         timeout=60)
    with pytest.raises(StoreError) as from_worker:
        list(loader)
    assert str(from_worker.value) == str(in_process.value) and "\n" not in str(from_worker.value)
    assert "shard 1 of 'rgb' is damaged (frame 4: checksum mismatch); run `vre verify" in str(from_worker.value)


def test_only_torch_worker_reports_of_the_same_error_are_shortened():
    from video_pipeline.errors import VreError, worker_message

    report = "Caught {} in DataLoader worker process 1.\nOriginal Traceback (most recent call last):\n  File ...\n{}: a: b"
    assert str(StoreError(report.format("StoreError", "video_pipeline.errors.StoreError"))) == "a: b"
    other = report.format("StoreError", "builtins.ValueError")
    assert worker_message(other) == other and str(VreError("plain: text")) == "plain: text"
    assert VreError().args == () and StoreError("x", 3).args == ("x", 3)
