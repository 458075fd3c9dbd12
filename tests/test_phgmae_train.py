"""PHG-MAE trainer: config errors, overfitting a synthetic store, checkpoints, resume, and the
released PHG-MAE-Distil checkpoint through the trainer's model vs the semantic/phgmae-distil expert."""
from __future__ import annotations

import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from tests.conftest import shared_path, write_store
from video_pipeline.errors import RecipeError, VreError
from video_pipeline.phgmae import train as train_mod
from video_pipeline.phgmae.config import ScheduleConfig, load_config
from video_pipeline.phgmae.engine import (NodeLayout, StepSetup, TrainingError, dataset_statistics,
                                          forward_nodes, layout_from_dataset, lr_at, node_inputs,
                                          train_one_epoch, transfer_weights)
from video_pipeline.phgmae.losses import LossSpec
from video_pipeline.phgmae.masking import MaskPolicy
from video_pipeline.phgmae.model import build_model, model_from_checkpoint, to_checkpoint
from video_pipeline.store import VideoStore
from video_pipeline.weights import load_checkpoint

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: one thread is fastest

CLASSES = ["land", "water", "road", "sky"]
PALETTE = [[0, 255, 0], [0, 0, 255], [255, 255, 255], [0, 255, 255]]
COLOURS = np.array([[60, 140, 50], [40, 60, 160], [150, 150, 150], [120, 200, 230]], np.float32)
TIMING = ("samples_per_s", "data_wait_share", "epoch_seconds")


def synthetic_store(path: Path, n: int = 8, size=(32, 48), seed: int = 0) -> Path:
    """rgb (class colour + noise), depth (class / 3 + noise) and a 4-class semantic map of random
    discs and boxes: every node carries the classes, so the model can learn them from any input."""
    rng = np.random.default_rng(seed)
    h, w = size
    sem = np.zeros((n, h, w), np.uint8)
    for t in range(n):
        for _ in range(5):
            c, y, x, r = int(rng.integers(1, 4)), int(rng.integers(0, h)), int(rng.integers(0, w)), int(rng.integers(4, 10))
            if rng.random() < 0.5:
                cv2.circle(sem[t], (x, y), r, c, -1)
            else:
                cv2.rectangle(sem[t], (x - r, y - r // 2), (x + r, y + r // 2), c, -1)
    rgb = np.clip(COLOURS[sem] + rng.normal(0, 12, (n, h, w, 3)), 0, 255).astype(np.uint8)
    depth = (sem / 3 + 0.1 * rng.random((n, h, w)))[..., None].astype(np.float16)
    return write_store(path, {
        "rgb": (rgb, {"kind": "image", "channels": 3}),
        "depth": (depth, {"kind": "depth", "channels": 1}),
        "semantic": (sem[..., None], {"kind": "semantic", "channels": 1, "classes": CLASSES,
                                      "palette": PALETTE})})


CONFIG = """\
output: {output}
seed: 0
epochs: {epochs}
batch_size: 4
steps_per_epoch: 4
data:
  train: {{stores: [{store}]}}
  validation: {{stores: [{store}]}}
  inputs: [rgb, depth]
  outputs: [semantic_output]
  modalities: {{semantic_output: semantic}}
  crop: {crop}
  num_workers: 0
model:
  parameters: {{num_filters: 6}}
masking:
  probability: 0.5
  always_visible: [rgb]
optimizer: {{lr: 0.01}}
schedule: {{type: {schedule}, warmup_steps: 2}}
monitor: semantic_output.miou
"""


def write_config(folder: Path, store: Path, epochs: int, crop="null", schedule="constant",
                 output="run", extra: str = "") -> Path:
    path = folder / f"{output}.yaml"
    path.write_text(CONFIG.format(output=output, epochs=epochs, store=store, crop=crop,
                                  schedule=schedule) + extra)
    return path


def interrupt_then_resume(config: Path, monkeypatch) -> None:
    """Train `config`, stopped (KeyboardInterrupt) right after its 2nd epoch is saved, then run it
    again, which picks up its last.ckpt by itself."""
    real_draw = train_mod.draw_curves

    def interrupt_after_epoch_2(log, out):
        real_draw(log, out)
        if len(records(out)) == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(train_mod, "draw_curves", interrupt_after_epoch_2)
    with pytest.raises(KeyboardInterrupt):
        train_mod.main(config)
    monkeypatch.setattr(train_mod, "draw_curves", real_draw)
    assert train_mod.main(config) == 0


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    return synthetic_store(tmp_path_factory.mktemp("phgmae") / "syn.zarr")


@pytest.fixture(scope="module")
def overfit_run(store, tmp_path_factory) -> Path:
    """A 15-epoch run (60 steps) of a 150k-parameter-class model on the 8 training frames."""
    one_thread_before = torch.get_num_threads()
    torch.set_num_threads(1)
    folder = tmp_path_factory.mktemp("overfit")
    assert train_mod.main(write_config(folder, store, epochs=15)) == 0
    torch.set_num_threads(one_thread_before)
    return folder / "run"


def records(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


# ---------------------------------------------------------------------------------------- config
@pytest.mark.parametrize("patch, line, message", [
    (("  num_workers: 0\n", "  num_workers: 0\n  colour: red\n"), 14, "unknown key 'colour'"),
    (("epochs: 3\n", "epochs: three\n"), 3, "epochs must be an integer"),
    (("always_visible: [rgb]", "always_visible: [semantic_output]"), 18, "is an output"),
    (("always_visible: [rgb]", "always_visible: [lidar]"), 18, "'lidar' is not a node"),
    (("outputs: [semantic_output]", "outputs: [rgb]"), 10, "listed twice"),
    (("crop: null", "crop: [8]"), 12, "data.crop must be list of int or null, got [8]"),
    (("type: constant", "type: cyclic"), 20, "cycle_steps"),
    (("monitor: semantic_output.miou", "monitor: depth.accuracy"), 21, "monitor must be"),
    (("  train: {stores: [", "  train: {frames: 5..2, stores: ["), 7, "selects no frame"),
    (("model:\n  parameters: {num_filters: 6}", "model:\n  parameters: {num_filters: 6, in_channels: 3}"),
     15, "set by the trainer"),
])
def test_config_errors_name_the_line(tmp_path, patch, line, message):
    text = write_config(tmp_path, tmp_path / "s.zarr", epochs=3).read_text()
    assert patch[0] in text
    bad = tmp_path / "bad.yaml"
    bad.write_text(text.replace(patch[0], patch[1], 1))
    with pytest.raises(RecipeError) as err:
        load_config(bad)
    assert str(err.value).startswith(f"{bad}:{line}: ") and message in str(err.value), str(err.value)


def test_config_defaults_and_paths(tmp_path):
    path = write_config(tmp_path, Path("stores/s.zarr"), epochs=3)
    cfg = load_config(path)
    assert cfg.nodes == ["rgb", "depth", "semantic_output"] and cfg.modality("semantic_output") == "semantic"
    assert cfg.resolve(cfg.data.train.stores[0]) == tmp_path / "stores" / "s.zarr"
    assert cfg.data.normalization == "standardization" and cfg.losses.masked_only
    assert cfg.optimizer.betas == (0.9, 0.999) and cfg.grad_clip == 1.0
    json.dumps(cfg.to_dict())  # what goes into checkpoints is plain data


def test_missing_store_is_one_line_naming_the_config(tmp_path):
    path = write_config(tmp_path, tmp_path / "absent.zarr", epochs=1)
    with pytest.raises(VreError, match=r"run.yaml: data.train: .*absent.zarr: not a video-pipeline store"):
        train_mod.main(path)


def test_lr_schedules():
    cos = ScheduleConfig("cosine", warmup_steps=10, min_lr=0.1)
    lrs = [lr_at(s, 110, 1.0, cos) for s in range(110)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert lrs[10] == pytest.approx(1.0) and lrs[-1] == pytest.approx(0.1)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))
    cyc = ScheduleConfig("cyclic", min_lr=0.0, cycle_steps=10)
    assert [lr_at(s, 100, 1.0, cyc) for s in (0, 5, 10, 15)] == pytest.approx([0.0, 1.0, 0.0, 1.0])
    assert lr_at(50, 100, 0.5, ScheduleConfig("constant")) == 0.5


# ---------------------------------------------------------------------------------------- training
def test_overfits_a_small_store(overfit_run):
    recs = records(overfit_run)
    assert [r["epoch"] for r in recs] == list(range(1, 16))
    sem = recs[-1]["validation"]["nodes"]["semantic_output"]
    assert min(v for v in sem["iou"].values()) >= 0.9, sem["iou"]
    assert sem["miou_scenes"] == pytest.approx(sem["scene_miou"]["syn"])
    assert recs[-1]["validation"]["loss"] < 0.5 * recs[0]["validation"]["loss"]
    for r in recs:
        assert r["samples_per_s"] > 0 and 0 <= r["data_wait_share"] <= 1
        assert math.isfinite(r["train"]["loss"])
    best = max(range(len(recs)), key=lambda i: recs[i]["validation"]["nodes"]["semantic_output"]["miou"])
    assert recs[-1]["best"] == recs[best]["validation"]["nodes"]["semantic_output"]["miou"]
    for png in ("loss.png", "miou.png"):
        img = cv2.imread(str(overfit_run / png))
        assert img is not None and img.shape == (400, 640, 3) and img.std() > 10


def test_checkpoint_round_trip(overfit_run, store, tmp_path):
    ckpt = torch.load(overfit_run / "best.ckpt", weights_only=True)
    assert ckpt["hyper_parameters"]["cfg"]["data"]["parameters"]["task_names"] == ["rgb", "depth", "semantic_output"]
    model, meta = model_from_checkpoint(ckpt)
    layout = NodeLayout.from_checkpoint(ckpt)
    assert meta.train_size == (32, 48) and layout.node("semantic_output").classes == tuple(CLASSES)
    assert layout.node("semantic_output").kind == "class" and layout.outputs == ("semantic_output",)
    # save again -> load -> identical outputs
    torch.save(to_checkpoint(model, ckpt["hyper_parameters"]["cfg"], ckpt["hyper_parameters"]["statistics"]),
               tmp_path / "again.ckpt")
    again, _ = model_from_checkpoint(torch.load(tmp_path / "again.ckpt", weights_only=True))
    x = torch.randn(2, layout.total_channels, 32, 48)
    with torch.no_grad():
        assert torch.equal(model(x), again(x))
    # the checkpoint's statistics normalize the store as in training: the class map is predicted
    from video_pipeline.dataset import StoreDataset

    ds = StoreDataset(store, modalities=["rgb", "depth", "semantic"], normalization={
        "rgb": "standardization", "depth": "standardization", "semantic": "none"},
        statistics=dataset_statistics(layout, ["rgb", "depth"]))
    batch = torch.utils.data.default_collate([ds[i] for i in range(4)])
    x, _ = node_inputs(batch, layout, "cpu")
    with torch.no_grad():
        pred = forward_nodes(model, x, torch.tensor([[False, True, True]] * 4), layout)["semantic_output"]
    assert (pred.argmax(1) == batch["semantic"]).float().mean() > 0.95


def test_resume_equals_an_uninterrupted_run(store, tmp_path, monkeypatch):
    full = write_config(tmp_path, store, epochs=4, crop="[24, 32]", schedule="cosine", output="full")
    assert train_mod.main(full) == 0
    cut = write_config(tmp_path, store, epochs=4, crop="[24, 32]", schedule="cosine", output="cut")
    interrupt_then_resume(cut, monkeypatch)
    a = torch.load(tmp_path / "full" / "last.ckpt", weights_only=True)
    b = torch.load(tmp_path / "cut" / "last.ckpt", weights_only=True)
    assert a["epoch"] == b["epoch"] == 4 and a["global_step"] == b["global_step"] == 16
    for key, value in a["state_dict"].items():
        assert torch.equal(value, b["state_dict"][key]), key
    for s, t in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values()):
        assert torch.equal(s["exp_avg"], t["exp_avg"])
    strip = [{k: v for k, v in r.items() if k not in TIMING} for r in records(tmp_path / "full")]
    assert strip == [{k: v for k, v in r.items() if k not in TIMING} for r in records(tmp_path / "cut")]
    # a changed config does not silently resume
    changed = tmp_path / "cut.yaml"
    changed.write_text(changed.read_text().replace("lr: 0.01", "lr: 0.02"))
    with pytest.raises(VreError, match="optimizer.lr"):
        train_mod.main(changed)


def test_non_finite_loss_stops_with_a_clear_message(store):
    class Exploding(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.ones(()))

        def forward(self, x):
            return x * self.w * float("inf")

    from video_pipeline.dataset import StoreDataset

    ds = StoreDataset(store, modalities=["rgb", "depth", "semantic"])
    layout = layout_from_dataset(ds, ["rgb", "depth", "semantic_output"], ["semantic_output"])
    specs = {"rgb": LossSpec("l2"), "depth": LossSpec("l2"), "semantic_output": LossSpec("ce")}
    setup = StepSetup(layout, MaskPolicy(tuple(layout.names), probability=0.5, never_visible=("semantic_output",)),
                      specs, True, torch.device("cpu"))
    model = Exploding()
    batches = [torch.utils.data.default_collate([ds[0], ds[1]])]
    with pytest.raises(TrainingError, match=r"epoch 3, step 7: the loss is nan .*semantic_output"):
        train_one_epoch(model, batches, setup, torch.optim.AdamW(model.parameters()),
                        torch.amp.GradScaler("cpu", enabled=False), lambda s: 1e-3, 7,
                        torch.Generator().manual_seed(0), 1.0, where="epoch 3, ")


# ---------------------------------------------------------------------------------------- weights
def test_init_from_a_checkpoint_with_other_nodes(overfit_run, store):
    """A model with a new node starts from a checkpoint: shared nodes' channels are copied, so with
    the new node masked it computes exactly what the checkpoint's model computes."""
    ckpt = torch.load(overfit_run / "last.ckpt", weights_only=True)
    src_model, _ = model_from_checkpoint(ckpt)
    src = NodeLayout.from_checkpoint(ckpt)
    extra = type(src.nodes[0])("edges", "regression", 1, "edges")
    layout = NodeLayout((src.nodes[0], extra, *src.nodes[1:]), src.outputs, src.statistics, size=src.size)
    model_cfg = {"type": "safeuav", "parameters": {"num_filters": 6, "in_channels": 9, "out_channels": 9}}
    model = build_model(model_cfg)
    assert transfer_weights(model, model_cfg, layout, ckpt) == ["rgb", "depth", "semantic_output"]
    model.eval()
    x = torch.randn(2, 9, 32, 48)
    mask = torch.tensor([[False, True, False, True]] * 2)      # edges (new) and semantic masked
    with torch.no_grad():
        new = forward_nodes(model, x, mask, layout)
        old = forward_nodes(src_model, x[:, [0, 1, 2, 4, 5, 6, 7, 8]], mask[:, [0, 2, 3]], src)
    for node in src.names:
        assert torch.allclose(new[node], old[node], atol=1e-5), node
    bigger = {"type": "safeuav", "parameters": {"num_filters": 8, "in_channels": 9, "out_channels": 9}}
    with pytest.raises(TrainingError, match="use the checkpoint's model"):
        transfer_weights(build_model(bigger), bigger, layout, ckpt)


def test_released_checkpoint_in_the_trainer_matches_the_expert(tmp_path):
    """The released PHG-MAE-Distil checkpoint, loaded into the trainer's model and fed real drone
    frames through the dataset, predicts what semantic/phgmae-distil predicts; fine-tuned for a step
    by `vre train`, its checkpoint runs in that expert and still agrees with the trainer's model."""
    weights = shared_path("weights", "phgmae_distil_safeuav_430k.ckpt")
    photos = sorted(shared_path("data", "uav_toledo").glob("*.jpg"))[:3]
    from experts.semantic import DRONESCAPES_CLASSES, DRONESCAPES_PALETTE, PhgmaeDistil
    from video_pipeline.dataset import StoreDataset

    frames = np.stack([cv2.resize(cv2.imread(str(p))[..., ::-1], (320, 240), interpolation=cv2.INTER_AREA)
                       for p in photos])

    def expert_labels(ckpt_path: Path) -> np.ndarray:
        expert = PhgmaeDistil(size=[240, 320]).bind("semantic", weights=str(ckpt_path), weights_path=ckpt_path)
        expert.setup("cpu")
        return expert(frames, {})

    labels = expert_labels(weights)
    path = write_store(tmp_path / "toledo.zarr", {
        "rgb": (frames, {"kind": "image", "channels": 3}),
        "semantic": (labels, {"kind": "semantic", "channels": 1, "classes": list(DRONESCAPES_CLASSES),
                              "palette": [list(c) for c in DRONESCAPES_PALETTE]})})

    def trainer_predictions(ckpt: dict) -> torch.Tensor:
        src = NodeLayout.from_checkpoint(ckpt)
        ds = StoreDataset(path, modalities=["rgb", "semantic"],
                          normalization={"rgb": "standardization", "semantic": "none"},
                          statistics=dataset_statistics(src, ["rgb"]))
        layout = layout_from_dataset(ds, ["rgb", "semantic_output"], ["semantic_output"])
        cfg = ckpt["hyper_parameters"]["cfg"]["model"]
        model = build_model(cfg)
        transfer_weights(model, cfg, layout, ckpt)
        batch = torch.utils.data.default_collate([ds[i] for i in range(len(ds))])
        x, _ = node_inputs(batch, layout, "cpu")
        with torch.no_grad():
            out = forward_nodes(model.eval(), x, torch.tensor([[False, True]] * len(ds)), layout)
        return out["semantic_output"].argmax(1)

    released = load_checkpoint(weights)
    agree = (trainer_predictions(released).numpy() == labels[..., 0]).mean()
    assert agree > 0.999, agree

    # fine-tune from the released weights with `vre train` (one step), then back into the expert
    config = tmp_path / "finetune.yaml"
    config.write_text(f"""\
output: finetune
epochs: 1
batch_size: 2
steps_per_epoch: 1
data:
  train: {{stores: [toledo.zarr], frames: 0..2}}
  validation: {{stores: [toledo.zarr], frames: 2..3}}
  inputs: [rgb]
  outputs: [semantic_output]
  modalities: {{semantic_output: semantic}}
  crop: [120, 160]
  num_workers: 0
model: {{parameters: {{num_filters: 10}}, init: {weights}}}
masking: {{always_visible: [rgb]}}
losses: {{nodes: {{semantic_output: {{type: ce}}}}}}
optimizer: {{lr: 0.001}}
""")
    assert train_mod.main(config) == 0
    tuned_path = tmp_path / "finetune" / "last.ckpt"
    tuned = torch.load(tuned_path, weights_only=True)
    assert tuned["hyper_parameters"]["statistics"]["rgb"] == released["hyper_parameters"]["statistics"]["rgb"]
    assert any(not torch.equal(tuned["state_dict"][k], v) for k, v in released["state_dict"].items())
    agree = (trainer_predictions(tuned).numpy() == expert_labels(tuned_path)[..., 0]).mean()
    assert agree > 0.999, agree


def test_mean_fill_masks_nodes_with_their_training_mean(tmp_path):
    """masking.fill: mean: the checkpoint records each node's mean in the model's input space (class
    nodes: the class shares), masked channels take it, and a checkpoint read back keeps it."""
    from video_pipeline.phgmae.engine import Node, apply_mask
    from video_pipeline.phgmae.inference import load

    store = synthetic_store(tmp_path / "s.zarr", n=6)
    config = write_config(tmp_path, store, epochs=1)
    config.write_text(config.read_text().replace("always_visible: [rgb]", "always_visible: [rgb]\n  fill: mean"))
    assert train_mod.main(config, device="cpu") == 0
    layout = load(tmp_path / "run" / "last.ckpt").layout
    sem = layout.fill["semantic_output"]
    labels = VideoStore.open(store).read("semantic", np.arange(6))[..., 0]
    shares = np.bincount(labels.ravel(), minlength=4) / labels.size
    assert sum(sem) == pytest.approx(1.0) and np.allclose(sem, shares, atol=0.05)    # crops: about the shares
    assert abs(layout.fill["depth"][0]) < 0.3 and len(layout.fill["rgb"]) == 3          # standardized: about 0
    x = torch.ones(1, layout.total_channels, 2, 2)
    out = apply_mask(x, torch.tensor([[False, True, True]]), layout)
    assert torch.allclose(out[0, 4:, 0, 0], torch.tensor(sem, dtype=torch.float32))
    assert (out[0, :3] == 1).all() and out[0, 3, 0, 0] == pytest.approx(layout.fill["depth"][0])
    plain = NodeLayout((Node("a", "regression", 1, "a"),))
    assert apply_mask(torch.ones(1, 1, 1, 1), torch.tensor([[True]]), plain).item() == 0.0
