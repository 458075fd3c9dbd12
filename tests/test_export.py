"""Dronescapes export and import: layout, file formats, round trips, reruns, skipped files."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from test_dataset import make_data, write_store

from video_pipeline.cli import main as vre_main
from video_pipeline.dataset import StoreDataset
from video_pipeline.errors import RecipeError, StoreError, VreError
from video_pipeline.export import export_dronescapes, load_splits
from video_pipeline.importer import import_dronescapes
from video_pipeline.npzfile import ZipFacts, npz_bytes, read_array
from video_pipeline.store import VideoStore

SPLITS = "train: {va: [0..6, 9], vb: all}\ntest: {va: [6..], vb: [2]}\n"


def tree(root: Path) -> dict[str, bytes]:
    """Every file under `root` by relative path."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def two_stores(tmp_path):
    """va: 12 frames, depth done on 0..9 only; vb: 5 frames."""
    a, b = make_data(n=12, seed=3), make_data(n=5, seed=4)
    write_store(tmp_path / "va.zarr", a, done={"depth": np.arange(10)})
    write_store(tmp_path / "vb.zarr", b)
    (tmp_path / "splits.yaml").write_text(SPLITS)
    return tmp_path, a, b


def test_export_writes_the_dronescapes_layout(two_stores):
    root, a, b = two_stores
    out = root / "out"
    summary = export_dronescapes([root / "va.zarr", root / "vb.zarr"], out, root / "splits.yaml", 1, None)
    assert summary["splits"] == {"test": 7, "train": 12} and summary["missing"] == {"va": {"depth": 2}}
    assert json.loads(json.dumps(summary)) == summary
    assert sorted(p.name for p in out.iterdir()) == ["test", "test.txt", "train", "train.txt"]
    assert (out / "test.txt").read_text().splitlines() == [f"va/{f}" for f in range(6, 12)] + ["vb/2"]
    assert sorted(p.name for p in (out / "train" / "rgb").iterdir())[:3] == ["va_0.npz", "va_1.npz", "va_2.npz"]
    assert not (out / "test" / "depth" / "va_10.npz").exists()  # never computed: not exported
    files = {name: np.load(out / "test" / name / "va_7.npz") for name in a}
    assert all(list(f.keys()) == ["arr_0"] for f in files.values())
    arrays = {name: f["arr_0"] for name, f in files.items()}
    assert arrays["semantic"].dtype == np.uint8 and arrays["semantic"].shape == (32, 48)
    np.testing.assert_array_equal(arrays["semantic"], a["semantic"][7, ..., 0])
    assert arrays["roads"].dtype == bool and arrays["roads"].shape == (32, 48)
    np.testing.assert_array_equal(arrays["roads"], a["roads"][7, ..., 0] == 1)
    assert arrays["depth"].dtype == np.float16 and arrays["depth"].shape == (32, 48, 1)
    assert arrays["normals"].dtype == np.float16
    np.testing.assert_array_equal(arrays["rgb"], a["rgb"][7])
    np.testing.assert_array_equal(arrays["feat"], a["feat"][7])  # float32 features keep their dtype
    desc = json.loads((out / "test" / "semantic.json").read_text())
    assert desc["type"] == "test/semantic" and desc["classes"][0] == "land" and desc["file"]["dtype"] == "uint8"
    assert desc["params"] == {"k": 1} and desc["kind"] == "semantic"


def test_export_without_splits_puts_everything_in_all(two_stores):
    root, a, _ = two_stores
    summary = export_dronescapes([root / "va.zarr"], root / "out", None, 1, ["rgb", "semantic"])
    assert summary["splits"] == {"all": 12}
    assert sorted(p.name for p in (root / "out" / "all").iterdir()) == ["rgb", "rgb.json", "semantic",
                                                                         "semantic.json"]
    assert len((root / "out" / "all.txt").read_text().splitlines()) == 12


def test_rerun_skips_identical_files_and_parallel_output_is_identical(two_stores):
    root, *_ = two_stores
    stores = [root / "va.zarr", root / "vb.zarr"]
    first = export_dronescapes(stores, root / "one", root / "splits.yaml", 1, None)
    rerun = export_dronescapes(stores, root / "one", root / "splits.yaml", 1, None)
    assert rerun["written"] == 0 and rerun["unchanged"] == first["written"]
    victim = root / "one" / "train" / "depth" / "va_3.npz"
    victim.write_bytes(b"corrupt")
    assert export_dronescapes(stores, root / "one", root / "splits.yaml", 1, None)["written"] == 1
    export_dronescapes(stores, root / "two", root / "splits.yaml", 2, None)
    assert tree(root / "two") == tree(root / "one")


def test_round_trip_store_export_import_export_is_byte_identical(two_stores):
    root, a, b = two_stores
    stores = [root / "va.zarr", root / "vb.zarr"]
    # a sparse export: only the frames the splits name
    (root / "splits.yaml").write_text("train: {va: [1..4, 9], vb: [0, 4]}\ntest: {va: [6..8, 3]}\n")
    export_dronescapes(stores, root / "first", root / "splits.yaml", 1, None)
    summary = import_dronescapes(root / "first", root / "stores")
    assert summary["skipped"] == []
    assert summary["stores"]["va"]["frames"] == 6 and summary["stores"]["va"]["splits"] == {"test": 3, "train": 4}
    export_dronescapes([root / "stores" / "va.zarr", root / "stores" / "vb.zarr"], root / "second",
                       root / "splits.yaml", 1, None)
    assert tree(root / "second") == tree(root / "first")

    imported = VideoStore.open(root / "stores" / "va.zarr")
    numbers = imported.frame_numbers()
    assert numbers.tolist() == [1, 2, 3, 6, 7, 9]
    assert imported.meta["splits"] == {"test": [3, 6, 7], "train": [1, 2, 3, 9]}
    original = VideoStore.open(root / "va.zarr")
    for name in a:
        assert imported.array(name).dtype == original.array(name).dtype
        np.testing.assert_array_equal(imported.array(name)[:], original.array(name)[numbers])
        assert imported.done_frames(name).all()
        kept = {k: v for k, v in imported.array(name).attrs.items() if k not in ("source", "file")}
        assert kept == dict(original.array(name).attrs)

    test_split = StoreDataset(root / "stores" / "va.zarr", split="test", modalities=["rgb", "semantic"])
    assert [item["frame"] for item in test_split] == [3, 6, 7]
    np.testing.assert_array_equal(test_split[1]["semantic"].numpy(), a["semantic"][6, ..., 0])


def write_npz(path: Path, arr: np.ndarray, compressed: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    (np.savez_compressed if compressed else np.savez)(path, arr)


def test_import_public_layout_reports_and_skips_bad_files(tmp_path):
    rng = np.random.default_rng(0)
    src = tmp_path / "data"
    video = "barsana_DJI_0500_0501_combined_sliced_2700_14700"
    frames = {"train_set": [60, 120], "test_set": [1200, 1260]}
    truth = {}
    for split, numbers in frames.items():
        for f in numbers:
            rgb = rng.integers(0, 256, (18, 30, 3), dtype=np.uint8)
            depth = rng.random((18, 30)).astype(np.float32)
            sem = rng.integers(0, 8, (18, 30), dtype=np.uint8)
            normals = rng.random((18, 30, 3)).astype(np.float32)
            buildings = rng.random((18, 30)) > 0.5
            truth[f] = {"rgb": rgb, "depth_marigold": depth, "semantic_segprop8": sem,
                        "normals_svd(depth_marigold)": normals, "buildings": buildings}
            write_npz(src / split / "rgb" / "part0" / f"{video}_{f}.npz", rgb)
            write_npz(src / split / "depth_marigold" / f"{video}_{f}.npz", depth)
            write_npz(src / split / "semantic_segprop8" / f"{video}_{f}.npz", sem, compressed=True)
            write_npz(src / split / "normals_svd(depth_marigold)" / f"{video}_{f}.npz", normals)
            write_npz(src / split / "buildings" / f"{video}_{f}.npz", buildings, compressed=True)
    # the annotated-only variant repeats some frames: identical copies are fine, a differing one is not
    write_npz(src / "test_set_annotated_only" / "semantic_segprop8" / f"{video}_1200.npz",
              truth[1200]["semantic_segprop8"], compressed=True)
    write_npz(src / "test_set_annotated_only" / "semantic_segprop8" / f"{video}_1260.npz",
              (truth[1260]["semantic_segprop8"] + 1) % 8, compressed=True)
    write_npz(src / "train_set" / "depth_marigold" / f"{video}_180.npz", np.zeros((9, 15), np.float32))
    (src / "train_set" / "rgb" / "part0" / f"{video}_240.npz").write_bytes(b"not a zip")
    (src / "train_set" / "rgb" / "notes.md").write_text("hello")
    (src / "README.md").write_text("hello")

    summary = import_dronescapes(src, tmp_path / "stores")
    assert sorted(summary["ignored"]) == ["README.md", "train_set/rgb/notes.md"]  # named, not failures
    why = {Path(s["path"]).relative_to(src).as_posix(): s["why"] for s in summary["skipped"]}
    assert set(why) == {f"train_set/rgb/part0/{video}_240.npz",
                        f"train_set/depth_marigold/{video}_180.npz",
                        f"test_set_annotated_only/semantic_segprop8/{video}_1260.npz"}
    assert "does not match" in why[f"train_set/depth_marigold/{video}_180.npz"]
    assert "differs from" in why[f"test_set_annotated_only/semantic_segprop8/{video}_1260.npz"]
    assert "not an .npz or .npy file" in why[f"train_set/rgb/part0/{video}_240.npz"]

    store = VideoStore.open(tmp_path / "stores" / f"{video}.zarr")
    numbers = store.frame_numbers().tolist()
    assert numbers == [60, 120, 180, 240, 1200, 1260]
    assert store.meta["splits"] == {"test_set": [1200, 1260], "test_set_annotated_only": [1200, 1260],
                                    "train_set": [60, 120, 180, 240]}
    assert store.array("depth_marigold").dtype == np.float32 and store.array("depth_marigold").attrs["kind"] == "depth"
    assert store.array("buildings").attrs["kind"] == "binary" and store.array("buildings").dtype == np.uint8
    assert store.array("semantic_segprop8").attrs["classes"][1] == "forest"
    assert store.array("normals_svd(depth_marigold)").attrs["kind"] == "normals"
    assert store.done_frames("depth_marigold").tolist() == [True, True, False, False, True, True]
    assert store.done_frames("rgb").tolist() == [True, True, False, False, True, True]
    ds = StoreDataset(store.path, split="test_set", modalities=["rgb", "depth_marigold", "semantic_segprop8",
                                                                 "buildings"])
    assert [item["frame"] for item in ds] == [1200, 1260]
    item = ds[1]
    np.testing.assert_array_equal(item["semantic_segprop8"].numpy(), truth[1260]["semantic_segprop8"])
    np.testing.assert_array_equal(item["depth_marigold"][0].numpy(), truth[1260]["depth_marigold"])  # float32 kept
    np.testing.assert_array_equal(item["buildings"][0].numpy(), truth[1260]["buildings"])


def test_import_refuses_a_split_folder_and_foreign_stores(tmp_path):
    write_npz(tmp_path / "data" / "test_set" / "rgb" / "v_1.npz", np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(VreError, match="directly in a split folder"):
        import_dronescapes(tmp_path / "data" / "test_set", tmp_path / "stores")
    write_store(tmp_path / "stores" / "v.zarr", {"rgb": make_data(n=2)["rgb"]})
    with pytest.raises(StoreError, match="not made by `vre import`"):
        import_dronescapes(tmp_path / "data", tmp_path / "stores")
    with pytest.raises(VreError, match="no <split>/<modality>"):
        import_dronescapes(tmp_path / "stores", tmp_path / "other")


def test_split_file_errors_name_the_line(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("train:\n  va: [0..5, 7]\ntest:\n  va: [9..3]\n")
    with pytest.raises(RecipeError, match=r"s\.yaml:4: 9\.\.3 selects no frame"):
        load_splits(path)
    path.write_text("train:\n  va: [0..5, seven]\n")
    with pytest.raises(RecipeError, match=r"s\.yaml:2: 'seven' is not a frame selection"):
        load_splits(path)
    path.write_text("../up: {va: all}\n")
    with pytest.raises(RecipeError, match="must be a folder name"):
        load_splits(path)


def test_export_errors(two_stores):
    root, *_ = two_stores
    with pytest.raises(StoreError, match="has no modality 'flow'"):
        export_dronescapes([root / "va.zarr"], root / "out", None, 1, ["rgb", "flow"])
    write_store(root / "copy" / "va.zarr", make_data(n=3))
    with pytest.raises(VreError, match="both video 'va'"):
        export_dronescapes([root / "va.zarr", root / "copy" / "va.zarr"], root / "out", None, 1, None)
    store = VideoStore.open(root / "vb.zarr", "r+")
    store.array("depth").attrs["params"] = {"k": 5}
    with pytest.raises(VreError, match="params differ"):
        export_dronescapes([root / "va.zarr", root / "vb.zarr"], root / "out", None, 1, None)


def test_npz_bytes_are_deterministic_and_readable(tmp_path):
    arr = np.arange(12, dtype=np.float16).reshape(3, 4)
    data = npz_bytes(arr)
    assert data == npz_bytes(arr.copy())
    assert npz_bytes(arr, ZipFacts(date_time=(2023, 1, 2, 3, 4, 6))) != data  # the facts are in the bytes
    (tmp_path / "x.npz").write_bytes(data)
    np.testing.assert_array_equal(np.load(tmp_path / "x.npz")["arr_0"], arr)
    np.testing.assert_array_equal(read_array(data), arr)


def test_cli_export_and_import(two_stores, capsys):
    root, *_ = two_stores
    assert vre_main(["export", "dronescapes", str(root / "va.zarr"), "-o", str(root / "out"), "-j", "1",
                     "--splits", str(root / "splits.yaml")]) == 0
    assert json.loads(capsys.readouterr().out)["splits"] == {"test": 6, "train": 7}
    assert vre_main(["import", "dronescapes", str(root / "out"), "-o", str(root / "stores")]) == 0
    assert json.loads(capsys.readouterr().out)["stores"]["va"]["frames"] == 12
    (root / "out" / "stray.bin").write_bytes(b"x")  # named on stderr, not a failure
    assert vre_main(["import", "dronescapes", str(root / "out"), "-o", str(root / "stores")]) == 0
    assert capsys.readouterr().err == "ignored 1 entries that are not frame files: stray.bin\n"
    (root / "out" / "train" / "rgb" / "va_99.npz").write_bytes(b"x")  # a frame file it cannot read
    assert vre_main(["import", "dronescapes", str(root / "out"), "-o", str(root / "stores")]) == 3
    assert vre_main(["export", "dronescapes", str(root / "va.zarr"), "-o", str(root / "o2"),
                     "--modalities", "nope"]) == 2
    assert "has no modality 'nope'" in capsys.readouterr().err
