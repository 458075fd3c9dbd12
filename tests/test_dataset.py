"""StoreDataset and store statistics on small stores written through VideoStore (and one `vre run`)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import zarr

from video_pipeline import dataset as ds_mod
from video_pipeline.dataset import StoreDataset, compute_stats, format_stats
from video_pipeline.errors import VreError
from video_pipeline.store import ArraySpec, FrameReader, VideoStore

T, H, W, SHARD = 12, 32, 48, 4
CLASSES = ["land", "forest", "residential", "road", "little-objects", "water", "sky", "hill"]
KINDS = {"rgb": "image", "depth": "depth", "normals": "normals", "semantic": "semantic", "roads": "binary",
         "probs": "semantic", "feat": "features"}


def make_data(n: int = T, seed: int = 0, size=(H, W)) -> dict[str, np.ndarray]:
    """Random frames of every kind the store holds: {name: [n, H, W, C]}."""
    rng = np.random.default_rng(seed)
    h, w = size
    probs = rng.random((n, h, w, 3)).astype(np.float16)
    return {"rgb": rng.integers(0, 256, (n, h, w, 3), dtype=np.uint8),
            "depth": (rng.random((n, h, w, 1)) * 80 + 5).astype(np.float16),
            "normals": (rng.random((n, h, w, 3)) * 2 - 1).astype(np.float16),
            "semantic": rng.integers(0, 8, (n, h, w, 1), dtype=np.uint8),
            "roads": rng.integers(0, 2, (n, h, w, 1), dtype=np.uint8),
            "probs": probs / probs.sum(axis=-1, keepdims=True),
            "feat": rng.normal(3.0, 2.0, (n, h, w, 2)).astype(np.float32)}


def write_store(path: Path, data: dict[str, np.ndarray], done: dict[str, np.ndarray] | None = None,
                shard: int = SHARD) -> VideoStore:
    """A store holding `data`; `done[name]` (frame indices) limits which frames are written/flagged."""
    n, h, w = next(iter(data.values())).shape[:3]
    store = VideoStore.open(path, "w")
    store.init_meta({"experts": {k: {"type": f"test/{k}"} for k in data}}, "sha", {
        "path": "clip.mp4", "n_frames": n, "fps": 30.0, "height": h, "width": w}, "test", shard, (h, w))
    for name, arr in data.items():
        kind = KINDS.get(name, "features")
        attrs = {"type": f"test/{name}", "params": {"k": 1}, "deps": [], "weights": None, "kind": kind,
                 "channels": arr.shape[-1], "dtype": str(arr.dtype),
                 "classes": CLASSES[:arr.shape[-1]] if name == "probs" else CLASSES if kind == "semantic" else [],
                 "palette": [], "value_range": None}
        frames = np.asarray(done[name] if done and name in done else np.arange(n), np.int64)
        store.write_array(ArraySpec(name, arr.shape[-1], str(arr.dtype), attrs), arr[frames], frames)
    return store


@pytest.fixture
def store_data(tmp_path):
    data = make_data()
    write_store(tmp_path / "a.zarr", data)
    return tmp_path / "a.zarr", data


# ---------------------------------------------------------------------------------------- reads
def test_frame_reader_equals_zarr_including_unwritten_chunks_and_shards(tmp_path):
    data = make_data(n=14)
    done = {n: np.array([0, 1, 3, 9]) for n in data}  # shard 2 never written, holes inside shards
    store = write_store(tmp_path / "a.zarr", data, done)
    for name in data:
        reader = FrameReader(store.path, name)
        assert reader.layout.frames == SHARD, "the store's own layout must be read directly"
        for t in range(14):
            expected = store.array(name)[t]
            np.testing.assert_array_equal(reader.read(t), expected)
        assert np.isnan(reader.read(5)).all() if data[name].dtype != np.uint8 else (reader.read(5) == 255).all()


def test_frame_reader_falls_back_to_zarr_for_other_layouts(tmp_path):
    arr = zarr.create_array(str(tmp_path / "plain"), shape=(5, 8, 6, 2), chunks=(2, 4, 6, 2), dtype="float32",
                            fill_value=float("nan"))
    values = np.random.default_rng(1).random((5, 8, 6, 2)).astype(np.float32)
    arr[:] = values
    reader = FrameReader(tmp_path, "plain")
    assert reader.layout is None
    for t in range(5):
        np.testing.assert_array_equal(reader.read(t), values[t])


# ---------------------------------------------------------------------------------------- items
def test_items_hold_every_modality_in_the_documented_layout(store_data):
    path, data = store_data
    ds = StoreDataset(path)
    assert len(ds) == T and ds.modalities == list(data)
    item = ds[5]
    assert item["store"] == "a" and item["frame"] == 5 and item["present"].tolist() == [True] * len(data)
    for name in ("rgb", "depth", "normals", "roads", "feat", "probs"):
        assert item[name].dtype == torch.float32
        np.testing.assert_array_equal(item[name].numpy(), data[name][5].transpose(2, 0, 1).astype(np.float32))
    assert item["semantic"].dtype == torch.int64 and item["semantic"].shape == (H, W)
    np.testing.assert_array_equal(item["semantic"].numpy(), data["semantic"][5, ..., 0])


def test_one_hot_class_maps(store_data):
    path, data = store_data
    item = StoreDataset(path, modalities=["semantic"], one_hot=True)[3]
    assert item["semantic"].shape == (8, H, W) and item["semantic"].dtype == torch.float32
    np.testing.assert_array_equal(item["semantic"].argmax(0).numpy(), data["semantic"][3, ..., 0])
    assert (item["semantic"].sum(0) == 1).all()
    with pytest.raises(VreError, match="not a class map"):
        StoreDataset(path, modalities=["depth"], one_hot=["depth"])


@pytest.mark.parametrize("mode", ["none", "min_max", "standardization"])
def test_normalization_uses_statistics_of_the_whole_array(store_data, mode):
    path, data = store_data
    ds = StoreDataset(path, modalities=["rgb", "depth", "semantic"], normalization=mode)
    item = ds[7]
    for name in ("rgb", "depth"):
        full = data[name].astype(np.float64).reshape(-1, data[name].shape[-1])
        x = data[name][7].astype(np.float64).transpose(2, 0, 1)
        if mode == "min_max":
            lo, hi = full.min(0), full.max(0)
            expected = (x - lo[:, None, None]) / (hi - lo)[:, None, None]
        elif mode == "standardization":
            expected = (x - full.mean(0)[:, None, None]) / full.std(0)[:, None, None]
        else:
            expected = x
        np.testing.assert_allclose(item[name].numpy(), expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(item["semantic"].numpy(), data["semantic"][7, ..., 0])  # never normalized


def test_per_modality_normalization_and_given_statistics(store_data):
    path, data = store_data
    ds = StoreDataset(path, modalities=["rgb", "depth"], normalization={"depth": "standardization"},
                      statistics={"depth": {"min": [0], "max": [1], "mean": [10.0], "std": [2.0]}})
    item = ds[2]
    np.testing.assert_array_equal(item["rgb"].numpy(), data["rgb"][2].transpose(2, 0, 1))
    np.testing.assert_allclose(item["depth"].numpy()[0], (data["depth"][2, ..., 0].astype(np.float32) - 10) / 2,
                               rtol=1e-6)
    assert ds.statistics == {"depth": {"min": [0], "max": [1], "mean": [10.0], "std": [2.0]}}
    with pytest.raises(VreError, match="not one of"):
        StoreDataset(path, modalities=["rgb"], normalization="zscore")
    with pytest.raises(VreError, match="does not read"):
        StoreDataset(path, modalities=["rgb"], normalization={"depth": "min_max"})


# ---------------------------------------------------------------------------------------- missing data
@pytest.fixture
def gappy(tmp_path):
    """depth lacks frames 4, 5; `extra` exists in a second store only."""
    data = make_data()
    write_store(tmp_path / "a.zarr", {k: data[k] for k in ("rgb", "depth", "semantic")},
                done={"depth": np.array([0, 1, 2, 3, 6, 7, 8, 9, 10, 11])})
    return tmp_path / "a.zarr", data


def test_missing_raise_names_store_modality_and_frame(gappy):
    path, _ = gappy
    with pytest.raises(VreError, match=r"a\.zarr: modality 'depth' is not computed at frame 4 \(2 missing"):
        StoreDataset(path)
    with pytest.raises(VreError, match="'feat' is in none of the stores"):
        StoreDataset(path, modalities=["rgb", "feat"])


def test_missing_drop_removes_the_samples(gappy):
    path, _ = gappy
    ds = StoreDataset(path, missing="drop")
    assert len(ds) == 10 and [ds[i]["frame"] for i in range(len(ds))] == [0, 1, 2, 3, 6, 7, 8, 9, 10, 11]
    assert len(StoreDataset(path, modalities=["rgb"], missing="drop")) == T


@pytest.mark.parametrize("mode", ["fill_zero", "fill_nan"])
def test_missing_fill_and_present_mask(gappy, mode):
    path, data = gappy
    ds = StoreDataset(path, missing=mode, normalization="standardization")
    item = ds[4]
    assert item["present"].tolist() == [True, False, True]
    if mode == "fill_zero":
        assert (item["depth"] == 0).all()
    else:
        assert torch.isnan(item["depth"]).all()
    assert item["depth"].shape == (1, H, W)
    assert torch.isfinite(item["rgb"]).all() and ds[3]["present"].all()
    compact = StoreDataset(path, missing=mode, normalization="standardization", compact=True)
    batch = torch.utils.data.default_collate([compact[i] for i in range(T)])
    floats = compact.to_float(batch)
    reference = torch.stack([ds[i]["depth"] for i in range(T)])
    assert torch.allclose(floats["depth"], reference, equal_nan=True)
    assert floats["present"][:, 1].tolist() == [i not in (4, 5) for i in range(T)]


def test_missing_class_map_fill(tmp_path):
    data = make_data()
    write_store(tmp_path / "a.zarr", {"rgb": data["rgb"], "semantic": data["semantic"]},
                done={"semantic": np.arange(6)})
    assert (StoreDataset(tmp_path / "a.zarr", missing="fill_nan")[8]["semantic"] == 255).all()
    assert (StoreDataset(tmp_path / "a.zarr", missing="fill_zero")[8]["semantic"] == 0).all()
    one_hot = StoreDataset(tmp_path / "a.zarr", missing="fill_nan", one_hot=True)[8]["semantic"]
    assert one_hot.shape == (8, H, W) and torch.isnan(one_hot).all()


# ---------------------------------------------------------------------------------------- selection
def test_multi_store_indexing_and_merged_statistics(tmp_path):
    a, b = make_data(n=12, seed=1), make_data(n=7, seed=2)
    write_store(tmp_path / "va.zarr", {"rgb": a["rgb"], "depth": a["depth"]})
    write_store(tmp_path / "vb.zarr", {"rgb": b["rgb"], "depth": b["depth"], "extra": b["feat"]})
    ds = StoreDataset([tmp_path / "va.zarr", tmp_path / "vb.zarr"], modalities=["rgb", "depth"],
                      normalization="standardization")
    assert len(ds) == 19
    keys = [(ds[i]["store"], ds[i]["frame"]) for i in range(19)]
    assert keys == [("va", f) for f in range(12)] + [("vb", f) for f in range(7)]
    both = np.concatenate([a["depth"], b["depth"]]).astype(np.float64)
    np.testing.assert_allclose(ds.statistics["depth"]["mean"], [both.mean()], rtol=1e-10)
    np.testing.assert_allclose(ds.statistics["depth"]["std"], [both.std()], rtol=1e-9)
    np.testing.assert_allclose(ds[15]["depth"][0].numpy(),
                               (b["depth"][3, ..., 0] - both.mean()) / both.std(), rtol=1e-4, atol=1e-4)
    union = StoreDataset([tmp_path / "va.zarr", tmp_path / "vb.zarr"], missing="fill_zero")
    assert union.modalities == ["rgb", "depth", "extra"]
    assert union[0]["present"].tolist() == [True, True, False] and union[12]["present"].all()


def test_frame_selection_by_range_list_and_split_file(store_data, tmp_path):
    path, _ = store_data
    assert [i["frame"] for i in StoreDataset(path, frames=range(2, 9, 3))] == [2, 5, 8]
    assert [i["frame"] for i in StoreDataset(path, frames=[11, 0, 4])] == [0, 4, 11]
    with pytest.raises(VreError, match="has no frame 40"):
        StoreDataset(path, frames=[3, 40])
    splits = tmp_path / "splits.yaml"
    splits.write_text("train: {a: [0..6, 9]}\ntest: {a: 6..9, other_video: all}\n")
    assert [i["frame"] for i in StoreDataset(path, split="test", splits_file=splits)] == [6, 7, 8]
    assert [i["frame"] for i in StoreDataset(path, split="train", splits_file=splits, frames=range(4, 12))] == [4, 5, 9]
    with pytest.raises(VreError, match="has no split 'val'"):
        StoreDataset(path, split="val", splits_file=splits)


def test_resolution_resizes_every_modality(store_data):
    path, data = store_data
    item = StoreDataset(path, resolution=(16, 24), modalities=["rgb", "semantic", "depth"])[1]
    assert item["rgb"].shape == (3, 16, 24) and item["depth"].shape == (1, 16, 24)
    assert item["semantic"].shape == (16, 24)
    assert set(item["semantic"].unique().tolist()) <= set(np.unique(data["semantic"][1]).tolist())


def test_random_crops_are_aligned_across_modalities(tmp_path):
    yy, xx = np.mgrid[0:H, 0:W]
    rgb = np.stack([xx, yy, np.zeros_like(xx)], axis=-1).astype(np.uint8)
    data = {"rgb": np.repeat(rgb[None], 6, axis=0),
            "depth": np.repeat((yy * W + xx)[None, ..., None], 6, axis=0).astype(np.float16),
            "semantic": np.repeat(((xx + yy) % 8)[None, ..., None], 6, axis=0).astype(np.uint8)}
    write_store(tmp_path / "a.zarr", data)
    ds = StoreDataset(tmp_path / "a.zarr", crop=(10, 12))
    corners = set()
    for _ in range(4):
        for i in range(len(ds)):
            item = ds[i]
            x, y = item["rgb"][0], item["rgb"][1]
            assert item["depth"].shape == (1, 10, 12)
            assert torch.equal(item["depth"][0], y * W + x)
            assert torch.equal(item["semantic"], ((x + y) % 8).long())
            corners.add((int(y[0, 0]), int(x[0, 0])))
    assert len(corners) > 3, "the crop window must move between samples"
    with pytest.raises(VreError, match="larger than the frames"):
        StoreDataset(tmp_path / "a.zarr", crop=(40, 12))


@pytest.mark.parametrize("method,workers", [("fork", 2), ("spawn", 1)])  # a spawned worker costs seconds
def test_dataloader_workers_with_each_start_method(store_data, method, workers):
    path, data = store_data
    ds = StoreDataset(path, modalities=["rgb", "depth", "semantic"], normalization="min_max")
    ds[0]  # the parent reads first: workers must not reuse its readers
    loader = torch.utils.data.DataLoader(ds, batch_size=5, num_workers=workers, multiprocessing_context=method)
    batches = list(loader)
    assert [f for b in batches for f in b["frame"].tolist()] == list(range(T))
    rgb = torch.cat([b["rgb"] for b in batches])
    assert rgb.shape == (T, 3, H, W)
    np.testing.assert_allclose(rgb.numpy(), data["rgb"].transpose(0, 3, 1, 2) / 255.0, rtol=1e-6)
    assert [s for b in batches for s in b["store"]] == ["a"] * T


def test_compact_items_convert_to_the_float_form_on_a_device(store_data):
    path, _ = store_data
    kwargs = dict(modalities=["rgb", "depth", "semantic", "probs"], normalization="standardization",
                  one_hot=["semantic"])
    full, compact = StoreDataset(path, **kwargs), StoreDataset(path, compact=True, **kwargs)
    item = compact[3]
    assert item["rgb"].dtype == torch.uint8 and item["rgb"].shape == (H, W, 3)
    assert item["depth"].dtype == torch.float16
    loader = torch.utils.data.DataLoader(compact, batch_size=4)
    for i, batch in enumerate(loader):
        floats = compact.to_float(batch, "cpu")
        for name in kwargs["modalities"]:
            reference = torch.stack([full[4 * i + k][name] for k in range(4)])
            assert floats[name].shape == reference.shape and floats[name].dtype == reference.dtype
            assert torch.allclose(floats[name], reference, atol=1e-6), name


def test_end_to_end_store_from_vre_run(clip, tmp_path):
    from video_pipeline.recipe import load_recipe
    from video_pipeline.runner import RunOptions, run

    recipe = tmp_path / "r.yaml"
    recipe.write_text("resolution: [90, 160]\nshard_frames: 8\nexperts:\n  rgb: {type: color/rgb}\n"
                      "  edges: {type: edges/canny}\n")
    run(load_recipe(recipe), clip, tmp_path / "clip.zarr",
        RunOptions(frames=np.arange(0, 20), progress=False))
    ds = StoreDataset(tmp_path / "clip.zarr", missing="drop", normalization="min_max")
    assert len(ds) == 20 and ds.specs["edges"].kind == "binary"
    item = ds[19]
    assert item["rgb"].shape == (3, 90, 160) and 0 <= item["rgb"].min() and item["rgb"].max() <= 1
    stats = compute_stats(tmp_path / "clip.zarr")
    assert stats["edges"]["frames"] == 20 and stats["edges"]["histogram"]["labels"] == ["0", "1"]


# ---------------------------------------------------------------------------------------- statistics
def test_statistics_equal_numpy_on_the_full_array(store_data):
    path, data = store_data
    stats = compute_stats(path)
    for name, arr in data.items():
        flat = arr.astype(np.float64).reshape(-1, arr.shape[-1])
        s = stats[name]
        assert s["frames"] == T and s["count"] == [len(flat)] * arr.shape[-1]
        np.testing.assert_array_equal(s["min"], flat.min(0))
        np.testing.assert_array_equal(s["max"], flat.max(0))
        np.testing.assert_allclose(s["mean"], flat.mean(0), rtol=1e-12)
        np.testing.assert_allclose(s["std"], flat.std(0), rtol=1e-9)
    hist = stats["semantic"]["histogram"]
    assert hist["labels"] == CLASSES and hist["other"] == 0
    assert hist["counts"] == np.bincount(data["semantic"].ravel(), minlength=8).tolist()
    assert stats["roads"]["histogram"]["counts"] == np.bincount(data["roads"].ravel(), minlength=2).tolist()
    assert "histogram" not in stats["probs"]  # probabilities are not a class map
    text = format_stats(path, stats)
    assert "semantic" in text and "little-objects" in text and "channel" in text
    assert json.loads(json.dumps(stats)) == stats


def test_statistics_ignore_frames_not_computed_and_nan(tmp_path):
    data = make_data()
    data["depth"][2, 0, 0, 0] = np.nan
    store = write_store(tmp_path / "a.zarr", data, done={"depth": np.arange(6)})
    s = compute_stats(store.path)["depth"]
    values = data["depth"][:6].astype(np.float64).ravel()
    values = values[np.isfinite(values)]
    assert s["frames"] == 6 and s["count"] == [len(values)]
    np.testing.assert_allclose([s["mean"][0], s["std"][0]], [values.mean(), values.std()], rtol=1e-10)


def test_statistics_are_cached_and_invalidated_when_the_array_changes(store_data, monkeypatch):
    path, data = store_data
    calls = []
    real = ds_mod.measure
    monkeypatch.setattr(ds_mod, "measure", lambda store, name: calls.append(name) or real(store, name))
    first = compute_stats(path)["depth"]
    assert calls.count("depth") == 1
    assert VideoStore.open(path).array("depth").attrs["statistics"] == first
    assert compute_stats(path)["depth"] == first and calls.count("depth") == 1  # served from the cache
    store = VideoStore.open(path, "r+")
    new = data["depth"][:SHARD] * 2  # a rerun with --overwrite: same frames and flags, new data
    store.write_frames("depth", np.arange(SHARD), new)
    second = compute_stats(path)["depth"]
    assert calls.count("depth") == 2
    expected = np.concatenate([new, data["depth"][SHARD:]]).astype(np.float64)
    np.testing.assert_allclose(second["mean"], [expected.mean()], rtol=1e-12)
    store.array("depth").attrs["params"] = {"k": 2}  # provenance changed
    compute_stats(path)
    assert calls.count("depth") == 3
    compute_stats(path, recompute=True)
    assert calls.count("depth") == 4


def test_statistics_of_a_read_only_store_are_computed_with_a_warning(store_data, monkeypatch):
    path, data = store_data

    def read_only(*args, mode="r", **kwargs):
        if mode != "r":
            raise PermissionError(13, "Permission denied")
        return zarr.open_array(*args, mode=mode, **kwargs)

    monkeypatch.setattr(zarr, "open_array", read_only)
    with pytest.warns(UserWarning, match="depth: statistics not cached"):
        s = ds_mod.modality_stats(VideoStore.open(path), "depth")
    np.testing.assert_allclose(s["mean"], [data["depth"].astype(np.float64).mean()], rtol=1e-12)
    assert "statistics" not in VideoStore.open(path).array("depth").attrs


def test_vre_stats_command(store_data, capsys):
    from video_pipeline.cli import main

    path, _ = store_data
    assert main(["stats", str(path)]) == 0
    out = capsys.readouterr().out
    assert "rgb" in out and "forest" in out
    assert main(["stats", "--json", str(path)]) == 0
    assert json.loads(capsys.readouterr().out)["depth"]["frames"] == T
