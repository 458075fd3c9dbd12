"""Leak safety: an output among the inputs (directly or by store provenance) is refused in one
line, validation scores only hidden nodes (an identity network scores like chance on a label it
is shown), and `monitor: auto` is the per-scene mIoU of the class output."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from tests.test_phgmae_train import CLASSES, PALETTE, synthetic_store, write_config
from video_pipeline.cli import main as vre_main
from video_pipeline.errors import RecipeError
from video_pipeline.phgmae.config import load_config
from video_pipeline.phgmae.engine import Node, NodeLayout, StepSetup, evaluate
from video_pipeline.phgmae.losses import LossSpec
from video_pipeline.phgmae.masking import MaskPolicy
from video_pipeline.phgmae.train import resolve_monitor
from video_pipeline.store import ArraySpec, VideoStore

pytestmark = pytest.mark.usefixtures("one_thread")


def test_an_input_reading_the_outputs_modality_is_refused(tmp_path):
    text = write_config(tmp_path, tmp_path / "s.zarr", epochs=1).read_text()
    bad = tmp_path / "bad.yaml"
    bad.write_text(text.replace("inputs: [rgb, depth]", "inputs: [rgb, depth, labels]").replace(
        "modalities: {semantic_output: semantic}", "modalities: {semantic_output: semantic, labels: semantic}"))
    with pytest.raises(RecipeError, match=r"bad.yaml:\d+: data.inputs: 'labels' reads 'semantic', the modality of "
                                          r"the output 'semantic_output'"):
        load_config(bad)


def test_an_input_derived_from_the_output_by_provenance_is_refused(tmp_path, capsys):
    store = synthetic_store(tmp_path / "s.zarr", n=4)
    maps = np.zeros((4, 32, 48, 1), np.uint8)
    s = VideoStore.open(store, "r+")
    s.write_array(ArraySpec("roads", 1, "uint8", {"kind": "binary", "channels": 1, "deps": ["semantic"]}), maps)
    s.write_array(ArraySpec("roads_smooth", 1, "uint8", {"kind": "binary", "channels": 1, "deps": ["roads"]}), maps)
    config = write_config(tmp_path, store, epochs=1, output="run")
    config.write_text(config.read_text().replace("inputs: [rgb, depth]", "inputs: [rgb, depth, roads_smooth]"))
    assert vre_main(["train", str(config)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "'roads_smooth' is computed from the output 'semantic_output'" in err
    assert "roads_smooth <- roads <- semantic" in err and not (tmp_path / "run" / "last.ckpt").exists()


class Identity(nn.Module):
    """Predicts every node as its own input: a one-hot label in, the same label out."""

    def forward(self, x):
        return x * 10.0


def test_a_label_among_the_inputs_scores_like_chance_for_an_identity_network(tmp_path):
    """The leak of issue 15: `semantic` listed as a (maskable) input with masked_only false. Scored
    where it was visible, an identity network would look perfect; validation scores only the
    samples where it was hidden, so it scores what a constant prediction scores."""
    rng = np.random.default_rng(0)
    labels = torch.from_numpy(rng.integers(0, 4, (16, 8, 8)))
    layout = NodeLayout((Node("rgb", "regression", 3, "rgb"),
                         Node("semantic", "class", 4, "semantic", tuple(CLASSES), tuple(map(tuple, PALETTE)))),
                        (), None, "standardization", (8, 8))
    batch = {"rgb": torch.randn(16, 3, 8, 8), "semantic": labels, "present": torch.ones(16, 2, dtype=torch.bool),
             "store": ["a"] * 16}
    policy = MaskPolicy(("rgb", "semantic"), probability=0.5, always_visible=("rgb",))
    specs = {"rgb": LossSpec("l2"), "semantic": LossSpec("ce")}
    setup = StepSetup(layout, policy, specs, only_masked=False, device=torch.device("cpu"))
    val = evaluate(Identity(), [batch], setup, torch.Generator().manual_seed(0))
    miou = val["nodes"]["semantic"]["miou"]
    assert miou is not None and miou < 0.2        # chance: the constant class 0 gets IoU ~0.25, others 0
    # the same network scored where it saw the label (the old behaviour) would be perfect
    x = torch.cat([batch["rgb"], torch.nn.functional.one_hot(labels, 4).permute(0, 3, 1, 2).float()], 1)
    assert (Identity()(x)[:, 3:].argmax(1) == labels).all()


def test_monitor_auto_is_the_per_scene_miou_of_the_class_output(tmp_path):
    layout = NodeLayout((Node("rgb", "regression", 3, "rgb"), Node("semantic_output", "class", 4, "semantic")),
                        ("semantic_output",))
    assert resolve_monitor("auto", layout) == "semantic_output.miou_scenes"
    assert resolve_monitor("auto", NodeLayout((Node("rgb", "regression", 3, "rgb"),))) == "loss"
    assert resolve_monitor("semantic_output.loss", layout) == "semantic_output.loss"
    text = write_config(tmp_path, tmp_path / "s.zarr", epochs=1).read_text().replace("monitor: semantic_output.miou\n", "")
    (tmp_path / "d.yaml").write_text(text)
    assert load_config(tmp_path / "d.yaml").monitor == "auto"
