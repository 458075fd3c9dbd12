"""`vre import`: the public Dronescapes tree and VRE output folders, losslessly and byte-exactly."""
from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path

import numpy as np
import pytest
from conftest import write_store
from layouts import (BARSANA, COCO, COMANA, MAPILLARY, PUBLIC_LISTS, VRE_CONFIG, H, W, public_frame, public_tree,
                     savez, vre_frame, vre_output)

from video_pipeline.cli import main as vre_main
from video_pipeline.dataset import StoreDataset
from video_pipeline.errors import VreError
from video_pipeline.export import export_dronescapes
from video_pipeline.importer import import_dronescapes, import_vre
from video_pipeline.store import VideoStore


def files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_public_tree_import_then_export_is_byte_identical(tmp_path):
    src = tmp_path / "dronescapes"
    kept = public_tree(src)
    summary = import_dronescapes(src, tmp_path / "stores")
    assert summary["skipped"] == []
    assert sorted(summary["ignored"]) == ["README.md", "test_set/rgb/.DS_Store", "train_set/.task_statistics.npz"]
    assert all(not s["not_byte_exact"] for s in summary["stores"].values())

    stores = [tmp_path / "stores" / f"{v}.zarr" for v in (BARSANA, COMANA)]
    export_dronescapes(stores, tmp_path / "out", None, 1, None)
    out = files(tmp_path / "out")
    for rel, data in kept.items():
        assert out.get(rel) == data, rel  # every frame file (part0/part1 kept) and both split lists
    extra = set(out) - set(kept)
    assert extra and all(rel.endswith(".json") and rel.count("/") == 1 for rel in extra)  # descriptions only

    barsana = VideoStore.open(stores[0])
    assert barsana.frame_numbers().tolist() == [0, 1, 2, 3, 4, 5]
    assert barsana.meta["splits"] == {"test_files_3": [4, 5], "test_set": [4, 5], "test_set_annotated_only": [4],
                                      "train_files_6": [0, 1, 2, 3], "train_set": [0, 1, 2, 3]}
    arrays = {name: barsana.array(name) for name in barsana.names}
    assert arrays["depth_sfm_manual202204"].dtype == np.float32  # float32 ground truth stays float32
    assert arrays["depth_sfm_manual202204"].attrs["quantity"] == "metric_depth"
    assert arrays["depth_marigold"].dtype == np.float16 and arrays["depth_marigold"].attrs["quantity"] == "relative_depth"
    assert len(arrays[MAPILLARY].attrs["classes"]) == 65 and arrays[MAPILLARY].attrs["classes"][0] == "Bird"
    assert len(arrays[COCO].attrs["classes"]) == 133 and arrays[COCO].dtype == np.uint8
    assert arrays[COCO].attrs["file"]["dtype"] == "uint16"
    assert arrays["semantic_segprop8"].attrs["classes"][7] == "hill"
    truth = public_frame(BARSANA, 5)
    for name, (arr, _) in truth.items():
        stored = arrays[name][5]
        np.testing.assert_array_equal(stored[..., 0] if arr.ndim == 2 else stored, arr)
    ds = StoreDataset(stores[0], split="test_set", modalities=[COCO], one_hot=True)
    onehot = ds[1][COCO].numpy()
    assert onehot.shape == (133, H, W) and (onehot.sum(0) == 1).all()  # no pixel lost to an all-zero vector


def test_class_ids_beyond_the_class_set_are_refused_until_named(tmp_path):
    src = tmp_path / "data"
    labels = np.arange(H * W, dtype=np.uint8).reshape(H, W) % 41
    savez(src / "train_set" / "semantic_custom" / "v_3.npz", labels, True)
    savez(src / "train_set" / "rgb" / "v_3.npz", np.zeros((H, W, 3), np.uint8), False)
    with pytest.raises(VreError, match=r"semantic_custom: class ids up to 40 .* 8 classes .*--classes "
                                       r"semantic_custom=dronescapes\|mapillary\|coco"):
        import_dronescapes(src, tmp_path / "stores")
    assert not (tmp_path / "stores").exists()  # refused before anything was written
    with pytest.raises(VreError, match="--classes names nope"):
        import_dronescapes(src, tmp_path / "stores", {"nope": "coco"})
    import_dronescapes(src, tmp_path / "stores", {"semantic_custom": "coco"})
    attrs = VideoStore.open(tmp_path / "stores" / "v.zarr").array("semantic_custom").attrs
    assert len(attrs["classes"]) == 133 and attrs["classes"][40] == "wine glass"


def test_import_stays_in_its_tree_and_checks_values(tmp_path):
    src = tmp_path / "data"
    outside = tmp_path / "elsewhere"
    savez(outside / "v_9.npz", np.zeros((H, W, 3), np.uint8), False)
    savez(src / "train_set" / "rgb" / "v_1.npz", np.zeros((H, W, 3), np.uint8), False)
    depth = np.ones((H, W), np.float32)
    savez(src / "train_set" / "depth" / "v_1.npz", depth, False)
    depth[3, 4] = np.inf
    savez(src / "train_set" / "depth" / "v_2.npz", depth, False)
    flow = np.zeros((H, W, 2), np.float64)
    savez(src / "train_set" / "flow" / "v_1.npz", flow, False)
    flow[0, 0, 0] = 1e300  # beyond float32: stored as float32 only when exact
    savez(src / "train_set" / "flow" / "v_2.npz", flow, False)
    (src / "train_set" / "edges").mkdir()
    (src / "train_set" / "edges" / "v_1.npz").write_bytes(b"PK\x03\x04 cut short")  # the only file: named
    os.symlink(outside, src / "train_set" / "rgb" / "part9")
    os.symlink(outside / "v_9.npz", src / "train_set" / "rgb" / "v_9.npz")
    summary = import_dronescapes(src, tmp_path / "stores")
    why = {Path(s["path"]).relative_to(src).as_posix(): s["why"] for s in summary["skipped"]}
    assert set(why) == {"train_set/rgb/part9", "train_set/rgb/v_9.npz", "train_set/depth/v_2.npz",
                        "train_set/flow/v_2.npz", "train_set/edges/v_1.npz"}
    assert "no file of modality 'edges' is readable" in why["train_set/edges/v_1.npz"]
    assert "out of the source tree" in why["train_set/rgb/part9"] and "Inf" in why["train_set/depth/v_2.npz"]
    assert "do not fit float32 exactly" in why["train_set/flow/v_2.npz"]
    store = VideoStore.open(tmp_path / "stores" / "v.zarr")
    assert store.frame_numbers().tolist() == [1, 2] and store.done_frames("depth").tolist() == [True, False]
    assert store.array("flow").dtype == np.float32 and store.done_frames("flow").tolist() == [True, False]

    savez(src / "train_set" / "normals" / "v_1.npz", np.zeros((H // 2, W // 2, 3), np.float16), False)
    with pytest.raises(VreError, match=r"v: modality '.*' is 6x10 but '.*' is 12x20; a store holds one resolution"):
        import_dronescapes(src, tmp_path / "stores2")


def test_vre_output_imports_with_its_metadata_and_exports_the_same_values(tmp_path):
    src = vre_output(tmp_path / "vre_out", frames=[2, 5, 9], n_video=12)
    (tmp_path / "cfg.yaml").write_text(VRE_CONFIG)
    summary = import_vre(src, tmp_path / "flight.zarr", tmp_path / "cfg.yaml")
    assert summary["skipped"] == []
    assert sorted(summary["ignored"]) == [
        ".logs/graph-a2ADcbdK1v-2026-12-03T13:07:25.820", ".logs/logs-a2ADcbdK1v-2026-12-03T13:07:25.820.txt",
        "rgb/png/", "semantic_mask2former_mapillary_49189528_0/npz/2_extra.npz"]
    store = VideoStore.open(tmp_path / "flight.zarr")
    assert store.n_frames == 12 and store.frame_numbers().tolist() == list(range(12))  # dense, like vre run
    assert store.done_frames("hsv").nonzero()[0].tolist() == [2, 5, 9]
    assert store.meta["video"]["fps"] == 29.97 and store.meta["video"]["path"] == "/videos/flight.mp4"
    sem = store.array(MAPILLARY.replace("swin_", "")).attrs
    assert sem["kind"] == "semantic" and len(sem["classes"]) == 65 and sem["source"] == "vre/semantic-segmentation/mask2former"
    assert sem["params"] == {"model_id": "49189528_0", "disk_data_argmax": True}
    normals = store.array("normals_svd(depth_marigold)").attrs
    assert normals["kind"] == "normals" and normals["deps"] == ["depth_marigold"]
    assert store.array("depth_marigold").attrs["quantity"] == "relative_depth"
    assert store.array("hsv").dtype == np.float32 and store.array("edges_canny").dtype == np.float32

    summary = export_dronescapes([tmp_path / "flight.zarr"], tmp_path / "out", None, 1, None)
    for frame in (2, 5, 9):
        for name, arr in vre_frame(frame).items():
            exported = np.load(tmp_path / "out" / "all" / name / f"flight_{frame}.npz")["arr_0"]
            assert exported.dtype == arr.dtype and exported.shape == arr.shape, name
            np.testing.assert_array_equal(exported, arr)
            vre_file = src / name / "npz" / f"{frame}.npz"  # even the bytes: VRE's zip facts are kept
            assert (tmp_path / "out" / "all" / name / f"flight_{frame}.npz").read_bytes() == vre_file.read_bytes()


def test_vre_output_without_config_and_a_killed_run(tmp_path, capsys):
    src = vre_output(tmp_path / "vre_out", frames=[0, 1], n_video=4, killed=3)
    assert vre_main(["import", "vre", str(src), "-o", str(tmp_path / "s.zarr")]) == 3
    captured = capsys.readouterr()
    summary = json.loads(captured.out)
    assert {Path(s["path"]).name for s in summary["skipped"]} == {"3.npz"}
    assert "does not list frame 3" in summary["skipped"][0]["why"]
    assert captured.err.startswith("ignored 4 entries that are not frame files: ")
    store = VideoStore.open(tmp_path / "s.zarr")
    assert store.n_frames == 4 and store.done_frames("rgb").tolist() == [True, True, False, False]
    assert len(store.array("semantic_mask2former_mapillary_49189528_0").attrs["classes"]) == 65  # from its name
    (src / "rgb" / ".repr_metadata.json").unlink()
    assert vre_main(["import", "dronescapes", str(src), "-o", str(tmp_path / "x")]) == 2
    assert "vre import vre" in capsys.readouterr().err


def test_export_writes_what_vre_readers_expect(tmp_path):
    rng = np.random.default_rng(0)
    hsv = rng.integers(0, 256, (3, H, W, 3), dtype=np.uint8)
    edges = (rng.random((3, H, W, 1)) > 0.5).astype(np.uint8)
    depth = rng.random((3, H, W, 1)).astype(np.float16)
    write_store(tmp_path / "v.zarr", {"hsv": (hsv, {"type": "color/hsv", "kind": "image"}),
                                      "canny": (edges, {"type": "edges/canny", "kind": "binary"}),
                                      "depth": (depth, {"type": "depth/hf", "kind": "depth",
                                                        "quantity": "inverse_depth"})})
    (tmp_path / "splits.yaml").write_text("train: {v: [0, 1]}\ntest: {v: [2]}\n")
    export_dronescapes([tmp_path / "v.zarr"], tmp_path / "out", tmp_path / "splits.yaml", 1, None)
    out = tmp_path / "out"
    h = np.load(out / "train" / "hsv" / "v_1.npz")["arr_0"]
    assert h.dtype == np.float32 and h.shape == (H, W, 3) and 0 <= h.min() and h.max() <= 1
    np.testing.assert_allclose(h, hsv[1] / 255, atol=1e-7)
    e = np.load(out / "test" / "canny" / "v_2.npz")["arr_0"]
    assert e.dtype == np.float32 and e.shape == (H, W, 1)
    np.testing.assert_array_equal(e, edges[2])
    desc = json.loads((out / "test" / "depth.json").read_text())
    assert desc["quantity"] == "inverse_depth" and "larger is nearer" in desc["quantity_meaning"]
    assert (out / "train.txt").read_text() == "v/0\nv/1\n" and (out / "test.txt").read_text() == "v/2\n"
    with zipfile.ZipFile(out / "test" / "depth" / "v_2.npz") as zf:
        assert zf.infolist()[0].compress_type == zipfile.ZIP_DEFLATED  # as VRE writes (compress: true)


def test_lists_of_the_public_tree_name_their_splits(tmp_path):
    src = tmp_path / "data"
    public_tree(src)
    (src / "train_files_6.txt").write_text((src / "train_files_6.txt").read_text() + "# a comment\n")
    summary = import_dronescapes(src, tmp_path / "stores")
    assert [Path(s["path"]).name for s in summary["skipped"]] == ["train_files_6.txt"]
    ds = StoreDataset(tmp_path / "stores" / f"{COMANA}.zarr", split="train_files_6", modalities=["rgb"])
    assert [item["frame"] for item in ds] == [10, 11]
    assert len(PUBLIC_LISTS["train_files_6.txt"]) == 6


def test_split_lists_serve_as_split_files(tmp_path, capsys):
    src = tmp_path / "data"
    public_tree(src)
    import_dronescapes(src, tmp_path / "stores")
    stores = [str(tmp_path / "stores" / f"{v}.zarr") for v in (BARSANA, COMANA)]
    assert vre_main(["export", "dronescapes", *stores, "-o", str(tmp_path / "out"), "--modalities", "rgb",
                     "--splits", str(src / "train_files_6.txt"), "--splits", str(src / "test_files_3.txt")]) == 0
    assert json.loads(capsys.readouterr().out)["splits"] == {"test_files_3": 3, "train_files_6": 6}
    assert sorted(p.name for p in (tmp_path / "out" / "test_files_3" / "rgb").iterdir()) == [
        f"{BARSANA}_4.npz", f"{BARSANA}_5.npz", f"{COMANA}_12.npz"]
    ds = StoreDataset(stores[1], split="train_files_6", splits_file=src / "train_files_6.txt", modalities=["rgb"])
    assert [item["frame"] for item in ds] == [10, 11]
    (tmp_path / "bad.txt").write_text(f"{BARSANA}/1\n{BARSANA}:2\n")
    with pytest.raises(VreError, match=r"bad\.txt:2: .* is not <video>/<frame>"):
        export_dronescapes([Path(stores[0])], tmp_path / "o2", tmp_path / "bad.txt", 1, None)
