"""Inference-time ensembles: masks always hide what is unavailable, each aggregation on hand-made
passes, learned pass weights, and written modalities that carry their provenance and read back."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import write_store
from video_pipeline.cli import main as vre_main
from video_pipeline.errors import VreError
from video_pipeline.phgmae import ensemble as ens
from video_pipeline.phgmae import inference as inf
from video_pipeline.phgmae.engine import Node, NodeLayout, apply_mask
from video_pipeline.phgmae.model import build_model, to_checkpoint
from video_pipeline.store import VideoStore

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: one thread is fastest

CLASSES = ["land", "water", "road", "sky"]
PALETTE = [[0, 255, 0], [0, 0, 255], [255, 255, 255], [0, 255, 255]]


# ---------------------------------------------------------------------------------------- helpers
def small_store(path: Path, n: int = 6, size=(16, 24), seed: int = 0) -> Path:
    """rgb, depth and a 4-class semantic map of random blocks."""
    rng = np.random.default_rng(seed)
    h, w = size
    sem = np.kron(rng.integers(0, 4, (n, h // 4, w // 4)), np.ones((1, 4, 4), np.int64)).astype(np.uint8)
    rgb = (sem[..., None] * 60 + rng.integers(0, 20, (n, h, w, 3))).astype(np.uint8)
    depth = (sem / 4 + 0.05 * rng.random((n, h, w)))[..., None].astype(np.float16)
    return write_store(path, {
        "rgb": (rgb, {"kind": "image", "channels": 3}),
        "depth": (depth, {"kind": "depth", "channels": 1, "quantity": "relative_depth"}),
        "semantic": (sem[..., None], {"kind": "semantic", "channels": 1, "classes": CLASSES, "palette": PALETTE})})


def layout_of(size=(16, 24), extra_inputs=()) -> NodeLayout:
    nodes = [Node("rgb", "regression", 3, "rgb"), Node("depth", "regression", 1, "depth"),
             *extra_inputs, Node("semantic_output", "class", 4, "semantic", tuple(CLASSES),
                                 tuple(tuple(c) for c in PALETTE))]
    stats = {n.name: [[0.0] * n.channels, [1.0] * n.channels, [0.0] * n.channels, [1.0] * n.channels] for n in nodes}
    stats["rgb"] = [[0.0] * 3, [255.0] * 3, [100.0] * 3, [60.0] * 3]
    stats["depth"] = [[0.0], [1.0], [0.4], [0.3]]
    return NodeLayout(tuple(nodes), ("semantic_output",), stats, "standardization", tuple(size))


def tiny_checkpoint(path: Path, layout: NodeLayout | None = None, masking: dict | None = None,
                    validation_frames: str | None = None, seed: int = 0) -> Path:
    """A randomly initialised SafeUAV (num_filters 2) checkpoint in the format `vre train` writes."""
    layout = layout or layout_of()
    c = layout.total_channels
    model_cfg = {"type": "safeuav", "parameters": {"in_channels": c, "out_channels": c, "num_filters": 2}}
    torch.manual_seed(seed)
    train = {"masking": masking if masking is not None else {"probability": 0.5, "always_visible": ["rgb"]},
             "data": {"validation": {"frames": validation_frames}}}
    torch.save(to_checkpoint(build_model(model_cfg), layout.cfg(model_cfg, train), layout.statistics), path)
    return path


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("ensemble")
    return small_store(folder / "s.zarr"), tiny_checkpoint(folder / "m.ckpt", validation_frames="3..6")


# ---------------------------------------------------------------------------------------- masks
@pytest.mark.parametrize("masking", [{"probability": 0.5, "always_visible": ["rgb"]},
                                     {"count": [0, 3]},
                                     {"probability": {"rgb": 0.9, "depth": 0.2, "edges": 0.7, "hsv": 0.5}},
                                     {}])
@pytest.mark.parametrize("hidden", [["depth"], ["rgb"], ["rgb", "edges"], []])
def test_every_mask_hides_the_unavailable_nodes_and_the_outputs(masking, hidden):
    extra = (Node("edges", "regression", 1, "edges"), Node("hsv", "regression", 3, "hsv"))
    layout = layout_of(extra_inputs=extra)
    policy = inf.ensemble_policy(layout, hidden, masking)
    masks = inf.ensemble_masks(policy, 64, seed=3)
    names = layout.names
    assert masks.shape == (64, len(names)) and masks.dtype == torch.bool
    must_hide = [names.index(n) for n in [*hidden, "semantic_output"]]
    assert masks[:, must_hide].all()
    assert (~masks).any(1).all()                                            # each pass sees something
    assert masks[0].tolist() == [n in must_hide for n in range(len(names))]  # pass 0: the full hyperedge
    free = [names.index(n) for n in names if n not in [*hidden, "semantic_output"]]
    if len(free) > 1:
        assert masks[1:, free].any() and (~masks[1:, free]).any()            # the others vary
    if masking.get("always_visible") and "rgb" not in hidden:
        assert not masks[:, names.index("rgb")].any()
    assert torch.equal(masks, inf.ensemble_masks(policy, 64, seed=3))       # seeded


def test_nothing_available_is_an_error():
    with pytest.raises(VreError, match="no input node is available"):
        inf.ensemble_policy(layout_of(), ["rgb", "depth"], {"probability": 0.5})
    with pytest.raises(VreError, match="-k must be at least 1"):
        inf.ensemble_masks(inf.ensemble_policy(layout_of(), [], {}), 0, 0)


def test_available_names_nodes_or_modalities_and_drops_what_stores_lack(setup, tmp_path):
    store, ckpt = setup
    loaded = inf.load(ckpt)
    opened = [VideoStore.open(store)]
    assert ens.make_plan(loaded, opened, None, 4, "mean", 0).available == ("rgb", "depth")
    assert ens.make_plan(loaded, opened, None, 4, "mean", 0, available=["rgb"]).available == ("rgb",)
    no_depth = write_store(tmp_path / "nd.zarr", {"rgb": (np.zeros((2, 16, 24, 3), np.uint8), {"kind": "image"})})
    plan = ens.make_plan(loaded, [*opened, VideoStore.open(no_depth)], None, 4, "mean", 0)
    assert plan.available == ("rgb",) and plan.masks[:, 1].all()
    with pytest.raises(VreError, match="--available hsv: not a node"):
        ens.make_plan(loaded, opened, None, 4, "mean", 0, available=["hsv"])
    with pytest.raises(VreError, match="vote needs a class node"):
        ens.make_plan(loaded, opened, ["depth"], 4, "vote", 0)


# ---------------------------------------------------------------------------------------- aggregation
def passes() -> torch.Tensor:
    """Class probabilities [K=3, B=1, C=3, H=1, W=2] of three passes at two pixels."""
    p = torch.tensor([[[0.6, 0.3, 0.1], [0.2, 0.2, 0.6]],
                      [[0.5, 0.1, 0.4], [0.1, 0.8, 0.1]],
                      [[0.1, 0.8, 0.1], [0.3, 0.3, 0.4]]])          # [K, pixel, C]
    return p.permute(0, 2, 1).reshape(3, 1, 3, 1, 2)


def pixel(t: torch.Tensor, i: int) -> list[float]:
    return t[0, :, 0, i].tolist()


def entropy(p) -> float:
    return -sum(v * math.log(v) for v in p if v > 0)


def test_mean_median_and_vote_of_class_probabilities():
    mean, unc = ens.aggregate(passes(), True, "mean")
    assert pixel(mean, 0) == pytest.approx([0.4, 0.4, 0.2])
    assert pixel(mean, 1) == pytest.approx([0.2, 1.3 / 3, 1.1 / 3])
    assert pixel(unc, 0) == pytest.approx([entropy([0.4, 0.4, 0.2])], rel=1e-5)
    median, unc = ens.aggregate(passes(), True, "median")
    assert pixel(median, 0) == pytest.approx([0.5 / 0.9, 0.3 / 0.9, 0.1 / 0.9])   # medians 0.5, 0.3, 0.1
    assert pixel(median, 1) == pytest.approx([0.2 / 0.9, 0.3 / 0.9, 0.4 / 0.9])
    assert torch.allclose(median.sum(1), torch.ones(1, 1, 2))
    vote, unc = ens.aggregate(passes(), True, "vote")
    assert pixel(vote, 0) == pytest.approx([2 / 3, 1 / 3, 0.0])                    # tops: 0, 0, 1
    assert pixel(vote, 1) == pytest.approx([0.0, 1 / 3, 2 / 3])                    # tops: 2, 1, 2
    assert pixel(unc, 1) == pytest.approx([entropy([1 / 3, 2 / 3])], rel=1e-5)
    agree = passes()[:1].expand(4, -1, -1, -1, -1)
    assert ens.aggregate(agree, True, "vote")[1].abs().max() < 1e-6                # unanimous: no uncertainty
    weighted, _ = ens.aggregate(passes(), True, "mean", torch.tensor([1.0, 0.0, 0.0]))
    assert torch.allclose(weighted, passes()[0])


def test_median_of_disagreeing_one_hot_passes_is_uniform():
    one_hot = torch.eye(3).view(3, 1, 3, 1, 1)            # three passes, three different sure classes
    median, unc = ens.aggregate(one_hot, True, "median")
    assert torch.allclose(median.flatten(), torch.full((3,), 1 / 3))
    assert float(unc) == pytest.approx(math.log(3), rel=1e-5)


def test_regression_mean_median_variance_and_no_vote():
    values = torch.tensor([1.0, 2.0, 6.0, 3.0]).view(4, 1, 1, 1, 1)
    mean, var = ens.aggregate(values, False, "mean")
    assert float(mean) == 3.0 and float(var) == pytest.approx((4 + 1 + 9 + 0) / 4)
    median, _ = ens.aggregate(values, False, "median")
    assert float(median) == 2.5                                            # even count: middle pair
    two = torch.stack([torch.zeros(1, 2, 1, 1), torch.tensor([2.0, 4.0]).view(1, 2, 1, 1)])
    assert float(ens.aggregate(two, False, "mean")[1]) == pytest.approx((1 + 4) / 2)  # channels averaged
    weighted, var = ens.aggregate(values, False, "mean", torch.tensor([0.0, 0.0, 1.0, 0.0]))
    assert float(weighted) == 6.0 and float(var) == 0.0
    with pytest.raises(VreError, match="vote aggregation needs a class node"):
        ens.aggregate(values, False, "vote")
    with pytest.raises(VreError, match="weights apply to the mean"):
        ens.aggregate(values, False, "median", torch.full((4,), 0.25))


def test_learned_weights_favour_the_passes_that_match_the_target():
    labels = torch.randint(0, 3, (500,), generator=torch.Generator().manual_seed(0))
    right = torch.nn.functional.one_hot(labels, 3).float() * 0.8 + 0.2 / 3
    wrong = torch.nn.functional.one_hot((labels + 1) % 3, 3).float() * 0.8 + 0.2 / 3
    w = ens.learn_weights(torch.stack([wrong, right, wrong]), labels, classes=True)
    assert w.sum() == pytest.approx(1.0) and w[1] > 0.95
    g = torch.Generator().manual_seed(0)
    target = torch.randn(500, 2, generator=g)
    noisy = [target + s * torch.randn(500, 2, generator=g) for s in (1.0, 0.1, 2.0)]
    w = ens.learn_weights(torch.stack(noisy), target, classes=False)
    assert w.sum() == pytest.approx(1.0) and w[1] > 0.95
    assert ens.project_to_simplex(torch.tensor([0.5, 2.0, -1.0])).tolist() == [0.0, 1.0, 0.0]
    assert ens.project_to_simplex(torch.tensor([0.3, 0.3, 0.3])).tolist() == pytest.approx([1 / 3] * 3)


def test_min_confidence_blanks_unsure_pixels():
    probs = torch.tensor([[0.9, 0.5], [0.1, 0.5]]).view(1, 2, 1, 2)
    out = ens.confident(probs, 0.6)
    assert out[0, :, 0, 0].tolist() == pytest.approx([0.9, 0.1]) and torch.isnan(out[0, :, 0, 1]).all()
    assert ens.confident(probs, None) is probs


# ---------------------------------------------------------------------------------------- written modalities
def test_ensemble_writes_modalities_with_provenance_that_read_back(setup, capsys):
    from video_pipeline.dataset import StoreDataset

    store, ckpt = setup
    assert vre_main(["ensemble", str(ckpt), str(store), "-k", "3", "--seed", "5", "--batch-size", "4"]) == 0
    out = capsys.readouterr().out
    assert "pass 0: sees rgb, depth" in out and "6 frames" in out
    s = VideoStore.open(store)
    arr, unc = s.array("ensemble_semantic_output"), s.array("ensemble_semantic_output_uncertainty")
    assert arr.shape == (6, 16, 24, 4) and arr.dtype == np.float16 and unc.shape == (6, 16, 24, 1)
    attrs = dict(arr.attrs)
    assert attrs["type"] == "phgmae/ensemble" and attrs["kind"] == "semantic" and attrs["classes"] == CLASSES
    assert attrs["weights"]["id"] == str(ckpt) and len(attrs["weights"]["sha256"]) == 64
    params = attrs["params"]
    assert (params["k"], params["seed"], params["aggregation"], params["node"]) == (3, 5, "mean", "semantic_output")
    assert params["masks"][0] == ["rgb", "depth"] and all("rgb" in m for m in params["masks"])
    assert attrs["deps"] == ["rgb", "depth"] and dict(unc.attrs)["measure"] == "entropy"
    probs = arr[:].astype(np.float32)
    assert np.allclose(probs.sum(-1), 1.0, atol=5e-3)
    u = unc[:].astype(np.float32)
    assert (u >= -1e-3).all() and (u <= math.log(4) + 1e-2).all()
    assert s.done_frames("ensemble_semantic_output").all() and s.done_shards("ensemble_semantic_output").all()
    # read back like any expert output: a soft class node of the next round
    ds = StoreDataset(store, modalities=["rgb", "ensemble_semantic_output"])
    assert ds.specs["ensemble_semantic_output"].classes == tuple(CLASSES)
    assert ds[0]["ensemble_semantic_output"].shape == (4, 16, 24)
    from video_pipeline.describe import describe_store

    assert "phgmae/ensemble" in describe_store(str(store))
    # the same command again: nothing to do; another K: refused without --overwrite
    assert vre_main(["ensemble", str(ckpt), str(store), "-k", "3", "--seed", "5"]) == 0
    assert "0 frames" in capsys.readouterr().out
    assert vre_main(["ensemble", str(ckpt), str(store), "-k", "2"]) == 2
    assert "use --overwrite" in capsys.readouterr().err
    assert vre_main(["ensemble", str(ckpt), str(store), "-k", "2", "--overwrite", "--frames", "0..2"]) == 0
    assert dict(s.array("ensemble_semantic_output").attrs)["params"]["k"] == 2
    assert s.done_frames("ensemble_semantic_output").tolist() == [True, True] + [False] * 4


def test_single_available_input_is_the_model_on_that_input_alone(setup, tmp_path):
    from video_pipeline.phgmae.model import model_from_checkpoint
    from video_pipeline.weights import load_checkpoint

    store, ckpt = setup
    assert vre_main(["ensemble", str(ckpt), str(store), "-k", "2", "--available", "rgb", "--name", "rgb_only",
                     "--aggregation", "median", "--frames", "1", "2"]) == 0
    s = VideoStore.open(store)
    assert dict(s.array("rgb_only").attrs)["params"]["masks"] == [["rgb"], ["rgb"]]
    model, _ = model_from_checkpoint(load_checkpoint(ckpt))
    layout = inf.load(ckpt).layout
    rgb = torch.from_numpy(s.read("rgb", np.array([1, 2])).astype(np.float32)).permute(0, 3, 1, 2)
    x = torch.zeros(2, layout.total_channels, 16, 24)
    x[:, :3] = (rgb - 100.0) / 60.0
    x[:, 3] = 123.0                                                      # whatever depth holds: masked
    mask = torch.tensor([[False, True, True]] * 2)
    with torch.no_grad():
        expected = model(apply_mask(x, mask, layout))[:, 4:].softmax(1).permute(0, 2, 3, 1).numpy()
    assert np.allclose(s.read("rgb_only", np.array([1, 2])).astype(np.float32), expected, atol=2e-3)
    assert not s.done_frames("rgb_only")[[0, 3, 4, 5]].any()


def test_learned_aggregation_fits_weights_on_the_validation_frames(setup, capsys):
    store, ckpt = setup
    assert vre_main(["ensemble", str(ckpt), str(store), "-k", "3", "--aggregation", "learned",
                     "--name", "learned"]) == 0
    weights = dict(VideoStore.open(store).array("learned").attrs)["params"]["pass_weights"]
    assert len(weights) == 3 and sum(weights) == pytest.approx(1.0, abs=1e-4) and min(weights) >= 0
    assert "weight[semantic_output]" in capsys.readouterr().out


def test_learned_aggregation_needs_targets(setup, tmp_path):
    store, _ = setup
    ckpt = tiny_checkpoint(tmp_path / "m.ckpt", validation_frames="3..6")
    bare = write_store(tmp_path / "bare.zarr", {
        "rgb": (np.zeros((2, 16, 24, 3), np.uint8), {"kind": "image"}),
        "depth": (np.zeros((2, 16, 24, 1), np.float16), {"kind": "depth"})})
    loaded = inf.load(ckpt)
    plan = ens.make_plan(loaded, [VideoStore.open(bare)], None, 2, "learned", 0)
    with pytest.raises(VreError, match="no validation frame with the target 'semantic'"):
        ens.fit_plan(plan, loaded, [bare])


def test_ensemble_user_errors(setup, tmp_path, capsys):
    store, ckpt = setup
    assert vre_main(["ensemble", str(tmp_path / "none.ckpt"), str(store)]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert vre_main(["ensemble", str(ckpt), str(store), "--available", "nope"]) == 2
    assert "--available nope" in capsys.readouterr().err
    assert vre_main(["ensemble", str(ckpt), str(tmp_path / "missing.zarr")]) == 2
    assert "not a video-pipeline store" in capsys.readouterr().err


def test_node_min_confidence_and_fit_frames(setup):
    """The options proposed for the CLI (--node, --min-confidence, --fit-frames), through `main`."""
    import argparse

    store, ckpt = setup
    args = argparse.Namespace(checkpoint=str(ckpt), store=[str(store)], k=3, aggregation="learned", available=None,
                              name="plain", seed=0, frames=["0..4"], batch_size=2, device="cpu", overwrite=False,
                              node=["semantic_output"], min_confidence=None, fit_frames=["4..6"])
    assert ens.main(args) == 0
    s = VideoStore.open(store)
    top = s.read("plain", np.arange(4)).astype(np.float32).max(-1)
    threshold = float(np.median(top))
    args.name, args.min_confidence = "pseudo", threshold
    assert ens.main(args) == 0
    params = dict(s.array("pseudo").attrs)["params"]
    assert params["min_confidence"] == threshold and len(params["pass_weights"]) == 3
    assert params["pass_weights"] == dict(s.array("plain").attrs)["params"]["pass_weights"]
    probs = s.read("pseudo", np.arange(4)).astype(np.float32)
    blank = np.isnan(probs).all(-1)
    assert (np.isnan(probs).any(-1) == blank).all()                      # whole pixels, never single classes
    assert np.mean(blank == (top < threshold)) > 0.95                   # float16 rounding aside
    assert 0.3 < blank.mean() < 0.7
    assert np.isfinite(s.read("pseudo_uncertainty", np.arange(4))).all()
    args.node, args.name = ["depth"], "depth_guess"
    args.aggregation, args.min_confidence = "median", None
    assert ens.main(args) == 0
    depth = s.array("depth_guess")
    assert depth.shape == (6, 16, 24, 1) and dict(depth.attrs)["kind"] == "depth"
    assert dict(depth.attrs)["quantity"] == "relative_depth"  # what the modality held
    assert dict(depth.attrs)["params"]["available"] == ["rgb"]          # a predicted node is never shown
    assert dict(s.array("depth_guess_uncertainty").attrs)["measure"] == "variance"


def test_confident_pseudo_labels_train_the_next_round(tmp_path):
    """The semi-supervised round of docs/training.md: an ensemble with --min-confidence writes NaN
    on unsure pixels, and a `vre train` naming that modality as its target trains on the rest (a NaN
    reaching the KL loss would stop the run with a non-finite loss)."""
    import json

    store = small_store(tmp_path / "s.zarr", n=6, size=(16, 24))
    ckpt = tiny_checkpoint(tmp_path / "round1.ckpt")
    assert vre_main(["ensemble", str(ckpt), str(store), "-k", "3", "--name", "plain", "--device", "cpu"]) == 0
    top = VideoStore.open(store).read("plain", np.arange(6)).astype(np.float32).max(-1)
    assert vre_main(["ensemble", str(ckpt), str(store), "-k", "3", "--name", "pseudo",
                     "--min-confidence", str(float(np.median(top))), "--device", "cpu"]) == 0
    probs = VideoStore.open(store).read("pseudo", np.arange(6)).astype(np.float32)
    blank = np.isnan(probs).all(-1)
    assert 0 < blank.mean() < 1, "the threshold must blank some pixels and keep others"
    config = tmp_path / "round2.yaml"
    config.write_text(f"""\
output: {tmp_path / 'round2'}
seed: 0
epochs: 2
batch_size: 2
steps_per_epoch: 2
data:
  train: {{stores: [{store}], frames: 0..4}}
  validation: {{stores: [{store}], frames: 4..6}}
  inputs: [rgb, depth]
  outputs: [semantic_output]
  modalities: {{semantic_output: pseudo}}
  num_workers: 0
model: {{parameters: {{num_filters: 2}}}}
masking: {{probability: 0.5, always_visible: [rgb]}}
losses: {{nodes: {{semantic_output: {{type: kl, temperature: 1}}}}}}
optimizer: {{lr: 0.01}}
""")
    assert vre_main(["train", str(config), "--device", "cpu"]) == 0
    rows = [json.loads(line) for line in (tmp_path / "round2" / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 2
    for r in rows:
        assert math.isfinite(r["train"]["loss"]) and r["train"]["loss"] > 0
        assert math.isfinite(r["validation"]["nodes"]["semantic_output"]["loss"])


# ---------------------------------------------------------------------------------------- released checkpoint
def test_released_checkpoint_is_a_class_model_with_its_masking_policy(tmp_path, capsys):
    """The released PHG-MAE-Distil file: semantic_output is a class node (the 8 classes its metrics
    name) and its output, rgb always visible (included_tasks), drop_task_percent 50 read; `vre
    ensemble` runs it with vote, writing probabilities and an entropy, like a checkpoint of `vre train`."""
    from PIL import Image

    from tests.conftest import shared_path

    ckpt = shared_path("weights", "phgmae_distil_safeuav_430k.ckpt")
    loaded = inf.load(ckpt)
    node = loaded.layout.node("semantic_output")
    assert node.kind == "class" and node.classes[:2] == ("land", "forest") and len(node.classes) == 8
    assert loaded.layout.outputs == ("semantic_output",)
    assert loaded.masking == {"probability": 0.5, "always_visible": ["rgb"], "never_visible": ["semantic_output"]}
    photo = np.asarray(Image.open(shared_path("data", "uav_toledo", "DJI_0061.jpg")).resize((96, 72)))
    store = write_store(tmp_path / "real.zarr", {"rgb": (photo[None], {"kind": "image"})})
    assert vre_main(["ensemble", str(ckpt), str(store), "-k", "1", "--aggregation", "vote"]) == 0
    assert "pass 0: sees rgb" in capsys.readouterr().out                    # rgb is never hidden
    s = VideoStore.open(store)
    probs = s.read("ensemble_semantic_output", np.arange(1)).astype(np.float32)
    attrs = dict(s.array("ensemble_semantic_output").attrs)
    assert probs.shape == (1, 72, 96, 8) and attrs["kind"] == "semantic" and attrs["classes"][6] == "sky"
    assert attrs["params"]["aggregation"] == "vote" and np.allclose(probs.sum(-1), 1.0, atol=2e-3)
    assert (probs.max(-1) == 1.0).mean() > 0.8     # a vote: one-hot (blended at class edges by the resize)
    assert dict(s.array("ensemble_semantic_output_uncertainty").attrs)["measure"] == "entropy"


def test_pseudo_labels_are_appended_to_the_labelled_frames(tmp_path):
    """--labels: frames with labels keep them (one-hot, uncertainty 0); only the unlabelled frames
    get the ensemble's probabilities, so a round-2 target adds samples and replaces none."""
    store = small_store(tmp_path / "s.zarr", n=6, size=(16, 24))
    VideoStore.open(store, "r+").clear("semantic", np.arange(3, 6))             # frames 3..5 unlabelled
    ckpt = tiny_checkpoint(tmp_path / "round1.ckpt")
    assert vre_main(["ensemble", str(ckpt), str(store), "-k", "3", "--name", "pseudo", "--labels", "semantic",
                     "--device", "cpu"]) == 0
    s = VideoStore.open(store)
    probs = s.read("pseudo", np.arange(6)).astype(np.float32)
    labels = s.read("semantic", np.arange(3))[..., 0]
    assert np.array_equal(probs[:3], np.eye(4, dtype=np.float32)[labels])
    assert (s.read("pseudo_uncertainty", np.arange(3)) == 0).all()
    assert not np.isin(probs[3:], [0.0, 1.0]).all() and np.allclose(probs[3:].sum(-1), 1, atol=5e-3)
    assert dict(s.array("pseudo").attrs)["params"]["labels"] == "semantic"
    assert vre_main(["ensemble", str(ckpt), str(store), "--node", "depth", "--labels", "semantic"]) == 2
