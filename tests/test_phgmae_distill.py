"""Distillation: config errors, a tiny RGB-only student learning a teacher's soft outputs, its
report, and its checkpoint running through the semantic/phgmae-distil expert and `vre run`."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from experts.semantic import DRONESCAPES_CLASSES, DRONESCAPES_PALETTE, PhgmaeDistil
from tests.conftest import write_store
from video_pipeline.cli import main as vre_main
from video_pipeline.errors import RecipeError
from video_pipeline.phgmae.distill import load_distill_config
from video_pipeline.phgmae.model import model_from_checkpoint
from video_pipeline.store import VideoStore
from video_pipeline.weights import load_checkpoint

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: one thread is fastest

CONFIG = """\
output: student
teacher: teacher_probs
labels: semantic
data:
  train: {{stores: [{store}], frames: 0..8}}
  validation: {{stores: [{store}], frames: 8..12}}
  num_workers: 0
student:
  parameters: {{num_filters: 4}}
loss: {{temperature: 2.0, hard_weight: 0.5}}
optimizer: {{lr: 0.03}}
schedule: {{type: constant, warmup_steps: 2}}
epochs: 16
batch_size: 4
steps_per_epoch: 4
"""


def colours(k: int) -> np.ndarray:
    """A distinct RGB colour per class (the palette, darkened so white and bright classes differ)."""
    return np.asarray(DRONESCAPES_PALETTE, np.float32) * 0.7 + np.arange(k)[:, None] * 6


def teacher_store(path: Path, n: int = 12, size=(24, 32), seed: int = 0) -> Path:
    """rgb = class colour + noise; semantic: 8 Dronescapes classes in 8x8 blocks; teacher_probs: a
    softened one-hot of the classes (0.72 on the class, 0.04 on the others)."""
    rng = np.random.default_rng(seed)
    h, w = size
    sem = np.kron(rng.integers(0, 8, (n, h // 8, w // 8)), np.ones((1, 8, 8), np.int64)).astype(np.uint8)
    rgb = np.clip(colours(8)[sem] + rng.normal(0, 6, (n, h, w, 3)), 0, 255).astype(np.uint8)
    probs = (np.eye(8)[sem] * 0.68 + 0.04).astype(np.float16)
    semantic = {"kind": "semantic", "classes": list(DRONESCAPES_CLASSES),
                "palette": [list(c) for c in DRONESCAPES_PALETTE]}
    return write_store(path, {"rgb": (rgb, {"kind": "image", "channels": 3}),
                              "semantic": (sem[..., None], {**semantic, "channels": 1}),
                              "teacher_probs": (probs, {**semantic, "channels": 8})})


@pytest.fixture(scope="module")
def distilled(tmp_path_factory) -> tuple[Path, Path]:
    """(store, output folder) of a distillation by `vre distill`."""
    folder = tmp_path_factory.mktemp("distill")
    store = teacher_store(folder / "syn.zarr")
    config = folder / "distill.yaml"
    config.write_text(CONFIG.format(store=store))
    torch.set_num_threads(1)
    assert vre_main(["distill", str(config), "--device", "cpu"]) == 0
    return store, folder / "student"


def test_the_student_learns_the_teacher_and_reports_on_it(distilled):
    _, out = distilled
    report = json.loads((out / "report.json").read_text())
    assert report["parameters"] == sum(p.numel() for p in model_from_checkpoint(
        load_checkpoint(out / "best.ckpt"))[0].parameters())
    assert report["parameters"] < 1_000_000 and report["frames_per_s"] > 0
    assert report["size"] == [24, 32] and report["device"] == "cpu"
    assert report["agreement_pixel"] > 0.8 and report["agreement_miou"] > 0.6, report
    assert report["teacher_miou"] == 1.0                     # the teacher's top class is the label
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(records) == 16 and records[-1]["train"]["loss"] < records[0]["train"]["loss"]
    assert (out / "agreement.png").stat().st_size > 0 and (out / "last.ckpt").exists()


def test_the_student_checkpoint_runs_as_a_phgmae_distil_expert(distilled):
    store, out = distilled
    ckpt = load_checkpoint(out / "best.ckpt")
    model, meta = model_from_checkpoint(ckpt)
    assert meta.nodes == ("rgb", "semantic_output") and meta.train_size == (24, 32)
    frames = VideoStore.open(store).read("rgb", np.arange(8, 12))
    expert = PhgmaeDistil().bind("semantic", weights_path=out / "best.ckpt")
    expert.setup("cpu")
    labels = expert(frames, {})
    mean, std = (torch.tensor(meta.statistics["rgb"][i]).view(1, 3, 1, 1) for i in (2, 3))
    x = torch.zeros(4, 11, 24, 32)
    x[:, :3] = (torch.from_numpy(frames).permute(0, 3, 1, 2).float() - mean) / std
    with torch.no_grad():
        direct = model(x)[:, 3:].argmax(1).numpy()
    assert labels.shape == (4, 24, 32, 1) and np.mean(labels[..., 0] == direct) > 0.99
    truth = VideoStore.open(store).read("semantic", np.arange(8, 12))[..., 0]
    assert np.mean(labels[..., 0] == truth) > 0.8


def test_the_student_checkpoint_runs_in_vre_run(distilled, tmp_path):
    from video_pipeline.synth import make_clip

    _, out = distilled
    clip = make_clip(tmp_path / "clip.mp4", n_frames=3, size=(48, 64))
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"experts:\n  semantic: {{type: semantic/phgmae-distil, weights: {out / 'best.ckpt'}}}\n")
    assert vre_main(["run", str(recipe), str(clip), "-o", str(tmp_path / "c.zarr"), "-q", "--device", "cpu"]) == 0
    s = VideoStore.open(tmp_path / "c.zarr")
    assert s.array("semantic").shape == (3, 48, 64, 1) and s.done_frames("semantic").all()


@pytest.mark.parametrize("old, new, message", [
    ("labels: semantic\n", "", "hard_weight needs `labels`"),
    ("teacher: teacher_probs", "teacher: rgb", "must differ from data.rgb"),
    ("epochs: 16", "epochs: 0", "epochs must be >= 1"),
    ("{num_filters: 4}", "{num_filters: 4, in_channels: 3}", "set from the classes"),
    ("epochs: 16", "epochs: 16\ncolour: 3", "unknown key 'colour'"),
])
def test_config_errors_name_the_file_and_line(tmp_path, old, new, message):
    path = tmp_path / "d.yaml"
    path.write_text(CONFIG.format(store="s.zarr").replace(old, new))
    with pytest.raises(RecipeError, match=message) as err:
        load_distill_config(path)
    assert str(err.value).startswith(f"{path}:")


def test_a_teacher_must_hold_probabilities(tmp_path, capsys):
    store = teacher_store(tmp_path / "s.zarr", n=4)
    config = tmp_path / "d.yaml"
    text = CONFIG.format(store=store).replace("0..8", "0..2").replace("8..12", "2..4")
    config.write_text(text.replace("teacher: teacher_probs", "teacher: semantic")
                      .replace("labels: semantic", "labels: teacher_probs"))
    assert vre_main(["distill", str(config), "--device", "cpu"]) == 2
    assert "must hold class probabilities" in capsys.readouterr().err
