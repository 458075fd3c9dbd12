"""MR-MAE analyses on a synthetic store where one input carries the classes and another is pure
noise: the importance matrix ranks them, the robustness curve falls when the informative input goes
missing, both are written as CSV + PNG; and agreement between stored modalities."""
from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.conftest import write_store
from tests.test_phgmae_ensemble import CLASSES, PALETTE
from video_pipeline.errors import VreError
from video_pipeline.phgmae import analysis
from video_pipeline.phgmae.inference import load

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: one thread is fastest

COLOURS = np.array([[60, 140, 50], [40, 60, 160], [150, 150, 150], [120, 200, 230]], np.float32)

CONFIG = """\
output: run
seed: 0
epochs: 10
batch_size: 4
steps_per_epoch: 4
data:
  train: {{stores: [{store}], frames: 0..8}}
  validation: {{stores: [{store}], frames: 8..12}}
  inputs: [rgb, noise]
  outputs: [semantic_output]
  modalities: {{semantic_output: semantic}}
  num_workers: 0
model:
  parameters: {{num_filters: 4}}
masking:
  probability: 0.5
optimizer: {{lr: 0.02}}
schedule: {{type: constant, warmup_steps: 2}}
"""


def informative_store(path: Path, n: int = 12, size=(24, 32), seed: int = 0) -> Path:
    """rgb = class colour + a little noise (it tells the class); noise = uniform noise (it does not);
    semantic = 4 classes in 8x8 blocks."""
    rng = np.random.default_rng(seed)
    h, w = size
    sem = np.kron(rng.integers(0, 4, (n, h // 8, w // 8)), np.ones((1, 8, 8), np.int64)).astype(np.uint8)
    rgb = np.clip(COLOURS[sem] + rng.normal(0, 8, (n, h, w, 3)), 0, 255).astype(np.uint8)
    noise = rng.random((n, h, w, 3)).astype(np.float16)
    return write_store(path, {
        "rgb": (rgb, {"kind": "image", "channels": 3}),
        "noise": (noise, {"kind": "features", "channels": 3}),
        "semantic": (sem[..., None], {"kind": "semantic", "channels": 1, "classes": CLASSES, "palette": PALETTE})})


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path]:
    """(store, checkpoint): a tiny PHG-MAE trained by `vre train` for 40 steps."""
    from video_pipeline.phgmae.train import main as train_main

    folder = tmp_path_factory.mktemp("analysis")
    store = informative_store(folder / "syn.zarr")
    config = folder / "train.yaml"
    config.write_text(CONFIG.format(store=store))
    torch.set_num_threads(1)
    assert train_main(config, device="cpu") == 0
    return store, folder / "run" / "last.ckpt"


def test_importance_ranks_the_informative_modality_above_noise(trained, tmp_path):
    store, ckpt = trained
    result = analysis.importance(load(ckpt), [store], masks=8, seed=0)
    assert result["frames"] == "8..12"                                   # the checkpoint's validation frames
    assert result["targets"] == ["rgb", "noise", "semantic_output"] and result["inputs"] == ["rgb", "noise"]
    row = dict(zip(result["inputs"], result["importance"][result["targets"].index("semantic_output")]))
    assert row["rgb"] > 0.5 and row["rgb"] > 4 * abs(row["noise"]), row
    assert result["importance"][0][0] is None and result["samples"][0][0] == 0    # rgb from rgb: not measured
    csv_path, png = analysis.write_importance(result, tmp_path / "out")
    rows = list(csv.DictReader(csv_path.open()))
    assert len(rows) == 6 and {r["input"] for r in rows} == {"rgb", "noise"}
    sem_rgb = next(r for r in rows if r["target"] == "semantic_output" and r["input"] == "rgb")
    difference = float(sem_rgb["loss_masked"]) - float(sem_rgb["loss_visible"])
    assert difference == pytest.approx(float(sem_rgb["importance"]), rel=1e-4)
    assert Image.open(png).size[0] > 200


def test_robustness_falls_when_the_informative_input_goes_missing(trained, tmp_path, capsys):
    store, ckpt = trained
    args = argparse.Namespace(analysis="robustness", checkpoint=str(ckpt), store=[str(store)], output=str(tmp_path),
                              frames=None, masks=4, ensemble_k=3, seed=0, batch_size=2, device="cpu")
    assert analysis.main(args) == 0
    result = json.loads((tmp_path / "robustness.json").read_text())
    assert result["free"] == ["rgb", "noise"]
    by_subset = {tuple(r["subset"]): r for r in result["rows"]}
    assert set(by_subset) == {(), ("rgb",), ("noise",), ("rgb", "noise")}
    assert by_subset[("noise",)]["single"] > by_subset[("rgb",)]["single"] + 0.2
    assert by_subset[()]["ensemble"] is not None
    levels = dict(map(tuple, result["levels"]["semantic_output"]["single"]))
    assert sorted(levels) == [0, 1, 2] and levels[0] > levels[2]
    assert (tmp_path / "robustness.csv").read_text().startswith("masked,subset,node,metric,single,ensemble")
    assert Image.open(tmp_path / "robustness.png").size == (640, 400)
    assert "semantic_output single" in capsys.readouterr().out


def test_agreement_of_stored_modalities(tmp_path, capsys):
    target = np.zeros((2, 4, 8, 1), np.uint8)
    target[:, :, 4:] = 1
    pred = target.copy()
    pred[0, 0, :2] = 1                                   # 2 of 64 pixels wrong: land predicted as water
    probs = np.stack([1 - pred[..., 0], pred[..., 0], 0 * pred[..., 0], 0 * pred[..., 0]], -1).astype(np.float16)
    semantic = {"kind": "semantic", "classes": CLASSES}
    store = write_store(tmp_path / "a.zarr", {"target": (target, {**semantic, "channels": 1}),
                                              "pred": (probs, {**semantic, "channels": 4}),
                                              "depth": (target.astype(np.float16), {"kind": "depth"}),
                                              "depth2": (target.astype(np.float16) + 0.5, {"kind": "depth"})})
    r = analysis.agreement([store], "pred", "target")["overall"]
    assert r["pixel_agreement"] == pytest.approx(62 / 64)
    assert r["iou"]["land"] == pytest.approx(30 / 32, abs=1e-4)
    assert r["iou"]["water"] == pytest.approx(32 / 34, abs=1e-4)
    assert r["iou"]["road"] is None and r["miou"] == pytest.approx((30 / 32 + 32 / 34) / 2)
    assert analysis.agreement([store], "pred", "target", ["1"])["overall"]["pixel_agreement"] == 1.0
    assert analysis.agreement([store], "depth2", "depth")["overall"]["mean_abs_diff"] == pytest.approx(0.5)
    args = argparse.Namespace(analysis="agreement", store=[str(store)], prediction="pred", target="target",
                              frames=None, json=False)
    assert analysis.main(args) == 0
    assert "pixel agreement 96.88" in capsys.readouterr().out


def test_analyses_need_the_right_nodes(trained, tmp_path):
    store, ckpt = trained
    bare = write_store(tmp_path / "bare.zarr", {"rgb": (np.zeros((2, 24, 32, 3), np.uint8), {"kind": "image"})})
    with pytest.raises(VreError, match="robustness needs an output node"):
        analysis.robustness(load(ckpt), [bare])


def test_importance_leaves_out_always_visible_inputs(tmp_path):
    """rgb is always visible in this checkpoint's training: a mask hiding it was never trained on, so
    it is no input of the importance matrix (only depth is)."""
    from tests.test_phgmae_ensemble import small_store, tiny_checkpoint

    store = small_store(tmp_path / "s.zarr", n=2)
    result = analysis.importance(load(tiny_checkpoint(tmp_path / "m.ckpt")), [store], frames="0..2", masks=4)
    assert result["inputs"] == ["depth"] and result["targets"] == ["depth", "semantic_output"]


def test_loss_matrix_and_per_location_importance(trained, tmp_path, capsys):
    """MR-MAE's loss matrix: the semantic loss with rgb alone visible is far below noise alone; the
    per-pixel importance of rgb for the semantic node is positive where it is measured, above noise."""
    store, ckpt = trained
    m = analysis.loss_matrix(load(ckpt), [store])
    assert m["columns"] == ["rgb", "noise"] and m["targets"] == ["rgb", "noise", "semantic_output"]
    sem = dict(zip(m["columns"], m["loss"][2]))
    assert sem["rgb"] < 0.5 * sem["noise"] and m["loss"][0][0] is None
    args = argparse.Namespace(analysis="importance", checkpoint=str(ckpt), store=[str(store)], output=str(tmp_path),
                              frames=None, masks=6, ensemble_k=0, seed=0, batch_size=2, device="cpu",
                              map="semantic_output")
    assert analysis.main(args) == 0
    maps = np.load(tmp_path / "importance_map_semantic_output.npz")
    assert maps["rgb"].shape == (24, 32) and np.nanmean(maps["rgb"]) > 0.5
    assert np.nanmean(maps["rgb"]) > 4 * abs(np.nanmean(maps["noise"]))
    assert Image.open(tmp_path / "importance_map_semantic_output_rgb.png").size == (32, 24)
    args.analysis, args.map = "loss-matrix", None
    assert analysis.main(args) == 0
    assert (tmp_path / "loss_matrix.csv").read_text().startswith("target,rgb,noise")
