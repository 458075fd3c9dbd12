"""masking.learned (phgmae/guided.py): the update rule, the paired masks, config errors, and
`vre train` runs on a store where one input determines the output and another is pure noise."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from tests.conftest import write_store
from tests.test_phgmae_train import interrupt_then_resume, records
from video_pipeline.errors import RecipeError
from video_pipeline.phgmae import inference as inf
from video_pipeline.phgmae import train as train_mod
from video_pipeline.phgmae.config import LearnedMaskingConfig, load_config
from video_pipeline.phgmae.guided import update
from video_pipeline.phgmae.masking import paired_masks

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: one thread is fastest

CLASSES = ["low", "mid", "high"]


def signal_noise_store(path, n: int = 12, size=(32, 48), seed: int = 0):
    """label: a 3-class map of random discs and boxes; signal: label / 2 plus a little noise (it
    determines the label); noise: independent of everything, a random offset per frame plus
    per-pixel noise. (Only per-pixel noise would be mostly averaged away by the convolutions of a
    tiny model after a few steps: its effect on the loss is then near zero, of either sign, and
    nothing to test a direction with; an offset per frame cannot be averaged away.)"""
    rng = np.random.default_rng(seed)
    h, w = size
    label = np.zeros((n, h, w), np.uint8)
    for t in range(n):
        for _ in range(5):
            c, y, x, r = (int(v) for v in (rng.integers(1, 3), rng.integers(0, h), rng.integers(0, w),
                                           rng.integers(4, 10)))
            if rng.random() < 0.5:
                cv2.circle(label[t], (x, y), r, c, -1)
            else:
                cv2.rectangle(label[t], (x - r, y - r // 2), (x + r, y + r // 2), c, -1)
    signal = (label / 2 + 0.05 * rng.standard_normal((n, h, w)))[..., None].astype(np.float16)
    noise = (2 * rng.standard_normal((n, 1, 1, 1)) + rng.standard_normal((n, h, w, 1))).astype(np.float16)
    return write_store(path, {
        "signal": (signal, {"kind": "depth", "channels": 1}),
        "noise": (noise, {"kind": "depth", "channels": 1}),
        "label": (label[..., None], {"kind": "semantic", "channels": 1, "classes": CLASSES,
                                     "palette": [[0, 0, 0], [128, 128, 128], [255, 255, 255]]})})


CONFIG = """\
output: {output}
seed: 2
epochs: {epochs}
batch_size: 3
steps_per_epoch: 4
data:
  train: {{stores: [{store}], frames: 0..8}}
  validation: {{stores: [{store}], frames: 8..12}}
  inputs: [signal, noise]
  outputs: [label]
  num_workers: 0
model:
  parameters: {{num_filters: 4}}
masking:
  probability: 0.5
  learned: {{masks: 8, rate: {rate}}}
optimizer: {{lr: {lr}}}
schedule: {{type: constant}}
"""


def write_config(folder, store, epochs: int = 4, output: str = "run", rate: float = 0.5, lr: float = 0.01):
    path = folder / f"{output}.yaml"
    path.write_text(CONFIG.format(output=output, epochs=epochs, store=store, rate=rate, lr=lr))
    return path


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    # seed 2 of the store and the run; the directions the tests check held for each of seeds 0..7
    return signal_noise_store(tmp_path_factory.mktemp("guided") / "sn.zarr", seed=2)


@pytest.fixture(scope="module")
def learned_run(store, tmp_path_factory):
    """An uninterrupted 4-epoch run with learned masking (the reference of the resume test too)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    folder = tmp_path_factory.mktemp("learned")
    assert train_mod.main(write_config(folder, store)) == 0
    torch.set_num_threads(before)
    return folder


# ---------------------------------------------------------------------------------------- pure parts
def test_update_steps_against_the_effect_and_clips():
    p = {"useful": 0.5, "noise": 0.5, "harmful": 0.5, "unmeasured": 0.3, "tiny": 0.5}
    g = {"useful": 0.2, "noise": -0.02, "harmful": -3.0, "unmeasured": None, "tiny": 1e-6}
    out = update(p, g, loss=0.5, rate=0.5, low=0.05, high=0.95)
    assert out["useful"] == pytest.approx(0.5 - 0.5 * 0.2 / 0.5)      # helps: hidden less
    assert out["noise"] == pytest.approx(0.5 + 0.5 * 0.02 / 0.5)      # does not help: hidden more
    assert out["harmful"] == 0.95                                      # clipped at max
    assert out["unmeasured"] == 0.3 and out["tiny"] < 0.5
    assert update({"a": 0.1}, {"a": 10.0}, 1.0, 0.5, 0.05, 0.95)["a"] == 0.05  # clipped at min
    assert update(p, g, loss=0.0, rate=0.5, low=0.05, high=0.95) == p          # nothing to lower
    assert update(p, g, loss=None, rate=0.5, low=0.05, high=0.95) == p
    assert set(out) == set(p) and p["useful"] == 0.5                           # the input is not changed


def test_paired_masks_flip_one_column_and_run_each_mask_once():
    base = torch.tensor([[True, False, False, True], [False, False, True, True], [True, True, False, True]])
    unique, index = paired_masks(base, [0, 1, 2])
    assert index.shape == (3, 3, 2) and len(unique) == len(set(map(tuple, unique.tolist())))
    assert len(unique) <= 3 * (3 + 1)
    for r in range(3):
        for f, c in enumerate([0, 1, 2]):
            for h in (0, 1):
                want = base[r].clone()
                want[c] = bool(h)
                assert torch.equal(unique[index[r, f, h]], want)


# ---------------------------------------------------------------------------------------- config
@pytest.mark.parametrize("old, new, key", [
    ("  probability: 0.5\n", "  count: [0, 1]\n", "masking.learned needs the probability policy"),
    ("rate: 0.5}", "rate: 0.5, min: 0.6, max: 0.4}", "masking.learned: min and max"),
    ("rate: 0.5}", "rate: 0}", "masking.learned.rate must be > 0"),
    ("rate: 0.5}", "rate: -1}", "masking.learned.rate must be > 0"),
    ("rate: 0.5}", "rate: 0.5, every: 0}", "masking.learned.every must be >= 1"),
    ("rate: 0.5}", "rate: 0.5, step: 1}", "masking.learned: unknown key 'step'"),
    ("rate: 0.5}", "rate: fast}", "masking.learned.rate must be a number"),
    ("  probability: 0.5\n", "  probability: 0.99\n", "masking.probability of 'signal' is 0.99, outside"),
])
def test_config_errors_are_one_line_naming_the_key(tmp_path, old, new, key):
    text = write_config(tmp_path, tmp_path / "s.zarr").read_text()
    assert old in text
    bad = tmp_path / "bad.yaml"
    bad.write_text(text.replace(old, new, 1))
    with pytest.raises(RecipeError) as err:
        load_config(bad)
    message = str(err.value)
    line = text.splitlines().index("  learned: {masks: 8, rate: 0.5}") + 1
    if "probability of" in key:
        line -= 1
    assert message.startswith(f"{bad}:{line}: ") and key in message and "\n" not in message, message


def test_config_learned_true_is_the_defaults_and_no_free_node_is_an_error(tmp_path):
    text = write_config(tmp_path, tmp_path / "s.zarr").read_text()
    path = tmp_path / "on.yaml"
    path.write_text(text.replace("{masks: 8, rate: 0.5}", "true"))
    assert load_config(path).masking.learned == LearnedMaskingConfig()
    path.write_text(text.replace("{masks: 8, rate: 0.5}", "false"))
    assert load_config(path).masking.learned is None
    path.write_text(text.replace("  probability: 0.5\n", "  always_visible: [signal, noise]\n"))
    with pytest.raises(RecipeError, match=r"on.yaml:\d+: masking.learned needs a free node"):
        load_config(path)


# ---------------------------------------------------------------------------------------- training
def test_the_informative_input_is_masked_less_and_the_noise_more(learned_run, capsys):
    recs = records(learned_run / "run")
    assert [r["epoch"] for r in recs] == [1, 2, 3, 4]
    for r in recs:
        assert set(r["masking"]) == set(r["masking_effect"]) == {"signal", "noise"}
        assert all(0.05 <= p <= 0.95 for p in r["masking"].values())
    # hiding the signal raises the label's loss; hiding the noise lowers it
    assert sum(r["masking_effect"]["signal"] for r in recs) > 0 > sum(r["masking_effect"]["noise"] for r in recs)
    final = recs[-1]["masking"]
    assert final["signal"] < 0.5 < final["noise"], final
    ckpt = torch.load(learned_run / "run" / "last.ckpt", weights_only=True)
    assert ckpt["learned_masking"] == final
    assert ckpt["hyper_parameters"]["cfg"]["train"]["masking"]["probability"] == 0.5  # the config stays as given


def test_resume_with_learned_masking_equals_an_uninterrupted_run(learned_run, store, tmp_path, monkeypatch):
    cut = write_config(tmp_path, store, output="cut")
    interrupt_then_resume(cut, monkeypatch)
    a = torch.load(learned_run / "run" / "last.ckpt", weights_only=True)
    b = torch.load(tmp_path / "cut" / "last.ckpt", weights_only=True)
    assert a["epoch"] == b["epoch"] == 4 and a["learned_masking"] == b["learned_masking"]
    for key, value in a["state_dict"].items():
        assert torch.equal(value, b["state_dict"][key]), key
    timing = ("samples_per_s", "data_wait_share", "epoch_seconds")
    strip = [{k: v for k, v in r.items() if k not in timing} for r in records(learned_run / "run")]
    assert strip == [{k: v for k, v in r.items() if k not in timing} for r in records(tmp_path / "cut")]


def test_an_ensemble_of_the_checkpoint_uses_the_learned_probabilities(learned_run):
    loaded = inf.load(learned_run / "run" / "last.ckpt")
    learned = torch.load(learned_run / "run" / "last.ckpt", weights_only=True)["learned_masking"]
    assert loaded.masking["probability"] == learned and loaded.train["masking"]["probability"] == 0.5
    policy = inf.ensemble_policy(loaded.layout, [], loaded.masking)
    assert {n: policy.node_probability(n) for n in policy.free} == learned
    # the passes are drawn with those probabilities: over many, each input is hidden about that often
    masks = inf.ensemble_masks(policy, 4001, seed=0)[1:]
    hidden = masks.float().mean(0)
    both = learned["signal"] * learned["noise"]
    for node, p in learned.items():
        # a row that would hide both inputs gets one of them back, chosen uniformly
        assert float(hidden[loaded.layout.names.index(node)]) == pytest.approx(p - both / 2, abs=0.03), (node, p)
    assert bool(masks[:, loaded.layout.names.index("label")].all())
