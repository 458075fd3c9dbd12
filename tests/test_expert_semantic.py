"""semantic/phgmae-distil with the released checkpoint on real drone photos, and semantic/hf with tiny
randomly initialised SegFormer and Mask2Former models loaded through the expert's normal path."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import run_device

from experts.semantic import (DRONESCAPES_CLASSES, DRONESCAPES_PALETTE, HFSemantic, PhgmaeDistil,
                              label_palette)
from video_pipeline import weights
from video_pipeline.errors import WeightsError

SHARED = Path(__file__).resolve().parents[1] / ".." / "shared"
CHECKPOINT = "weights/phgmae_distil_safeuav_430k.ckpt"
TOLEDO = SHARED / "data" / "uav_toledo"
LABELS = {"ground": 0, "tree": 1, "house": 2, "road": 3, "car": 4}


def shared(relative: str) -> Path:
    path = SHARED / relative
    if not path.exists():
        pytest.skip(f"{path} is absent (real data/weights live in ../shared on development machines)")
    return path


def bound(expert, spec: str, base_dir: Path | None = None, name: str = "semantic"):
    """The expert bound to its weights resolved the way the runner resolves them."""
    resolved = weights.resolve(spec, expert=name, base_dir=base_dir)
    return expert.bind(name, weights=spec, weights_path=resolved.path)


@pytest.fixture(scope="module")
def toledo() -> np.ndarray:
    """uint8 [4, 270, 480, 3]: four real nadir drone photos over farmland, houses and roads."""
    shared("data/uav_toledo")
    files = sorted(TOLEDO.glob("*.jpg"))[::12][:4]
    frames = [cv2.cvtColor(cv2.imread(str(f)), cv2.COLOR_BGR2RGB) for f in files]
    return np.stack([cv2.resize(f, (480, 270), interpolation=cv2.INTER_AREA) for f in frames])


# ------------------------------------------------------------------------ semantic/phgmae-distil
@pytest.fixture(scope="module")
def distil_labels(toledo):
    shared(CHECKPOINT)
    expert = bound(PhgmaeDistil(size=[270, 480]), CHECKPOINT, base_dir=SHARED)  # relative, as in a recipe
    expert.setup(run_device())
    yield expert, expert(toledo, {})
    expert.teardown()


def test_distil_on_real_drone_photos_sees_farmland_houses_and_roads(distil_labels, toledo):
    expert, labels = distil_labels
    spec = expert.output({})
    assert spec.classes == DRONESCAPES_CLASSES and spec.palette == DRONESCAPES_PALETTE
    assert labels.shape == (4, 270, 480, 1) and labels.dtype == np.uint8
    share = np.bincount(labels.ravel(), minlength=8) / labels.size
    by_name = dict(zip(DRONESCAPES_CLASSES, share))
    # Nadir views of fields, tree lines, houses and a road: ground classes dominate, no sky, no water.
    ground = by_name["land"] + by_name["forest"] + by_name["residential"] + by_name["road"]
    assert ground > 0.85, by_name
    assert by_name["land"] + by_name["forest"] > 0.5, by_name
    assert by_name["residential"] > 0.02 and by_name["road"] > 0.005, by_name
    assert by_name["sky"] + by_name["water"] < 0.08, by_name
    # Wrong RGB scaling collapses the map onto one class; the right one does not.
    assert share.max() < 0.8, by_name


def test_distil_probabilities_agree_with_labels(distil_labels, toledo):
    expert, labels = distil_labels
    probs_expert = PhgmaeDistil(output="probabilities", size=[270, 480])
    probs_expert.bind("semantic", weights_path=expert.weights_path)
    probs_expert.setup(run_device())
    probs = probs_expert(toledo[:2], {})
    spec = probs_expert.output({})
    assert spec.channels == 8 and spec.dtype == "float16" and spec.value_range == (0.0, 1.0)
    assert probs.shape == (2, 270, 480, 8) and probs.dtype == np.float16
    assert np.allclose(probs.astype(np.float32).sum(-1), 1.0, atol=1e-2)
    assert np.mean(probs.argmax(-1) == labels[:2, ..., 0]) > 0.99


def test_distil_runs_at_the_checkpoint_training_size_by_default(distil_labels, toledo):
    expert, labels = distil_labels
    default = PhgmaeDistil().bind("semantic", weights_path=expert.weights_path)
    default.setup(run_device())
    small = np.ascontiguousarray(toledo[:1, ::2, ::2])                  # 135x240, run at 540x960
    out = default(small, {})
    assert out.shape == (1, 135, 240, 1) and out.dtype == np.uint8
    assert np.mean(out[0, ..., 0] == labels[0, ::2, ::2, 0]) > 0.5      # same scene, other scale


def test_distil_needs_a_phgmae_checkpoint(tmp_path):
    expert = PhgmaeDistil().bind("semantic")
    with pytest.raises(WeightsError, match="needs weights"):
        expert.setup(run_device())
    import torch

    torch.save({"state_dict": {}}, tmp_path / "other.ckpt")
    expert = bound(PhgmaeDistil(), str(tmp_path / "other.ckpt"))
    with pytest.raises(WeightsError, match="not a usable PHG-MAE checkpoint") as err:
        expert.setup(run_device())
    assert "\n" not in str(err.value)


# ------------------------------------------------------------------------------- semantic/hf
@pytest.fixture(scope="module")
def segformer(tmp_path_factory) -> Path:
    import torch
    import transformers as tf

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("segformer")
    config = tf.SegformerConfig(num_encoder_blocks=2, depths=[1, 1], sr_ratios=[2, 1], hidden_sizes=[8, 16],
                                patch_sizes=[7, 3], strides=[4, 2], num_attention_heads=[1, 1],
                                mlp_ratios=[2, 2], decoder_hidden_size=16,
                                id2label={i: c for c, i in LABELS.items()}, label2id=LABELS)
    model = tf.SegformerForSemanticSegmentation(config)
    with torch.no_grad():  # decisive random classes, so float16 probabilities keep their argmax
        model.decode_head.classifier.weight.mul_(100)
    model.save_pretrained(path)
    tf.SegformerImageProcessor(size={"height": 64, "width": 64}).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def mask2former(tmp_path_factory) -> Path:
    import torch
    import transformers as tf

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("mask2former")
    backbone = tf.SwinConfig(image_size=64, patch_size=4, embed_dim=8, depths=[1, 1, 1, 1],
                             num_heads=[1, 1, 1, 1], window_size=4,
                             out_features=["stage1", "stage2", "stage3", "stage4"])
    config = tf.Mask2FormerConfig(backbone_config=backbone, feature_size=32, mask_feature_size=32,
                                  hidden_dim=32, encoder_feedforward_dim=32, dim_feedforward=32,
                                  encoder_layers=1, decoder_layers=2, num_attention_heads=2, num_queries=6,
                                  id2label={i: c for c, i in LABELS.items()}, label2id=LABELS)
    tf.Mask2FormerForUniversalSegmentation(config).save_pretrained(path)
    tf.Mask2FormerImageProcessor(size={"shortest_edge": 64, "longest_edge": 128}).save_pretrained(path)
    return path


def frames(n: int, h: int, w: int) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (n, h, w, 3), dtype=np.uint8)


def hf_reference(path: Path, x: np.ndarray) -> np.ndarray:
    """Class map [N, H, W] from transformers' own processor, model and semantic post-processing."""
    import torch
    import transformers as tf

    processor = tf.AutoImageProcessor.from_pretrained(path)
    auto = tf.AutoModelForUniversalSegmentation if "mask2former" in path.name else \
        tf.AutoModelForSemanticSegmentation
    model = auto.from_pretrained(path).eval()
    with torch.no_grad():
        out = model(**processor(images=list(x), return_tensors="pt"))
    maps = processor.post_process_semantic_segmentation(out, target_sizes=[x.shape[1:3]] * len(x))
    return np.stack([m.numpy() for m in maps])


@pytest.mark.parametrize("model", ["segformer", "mask2former"])
def test_hf_class_maps_match_transformers_post_processing(model, request):
    path = request.getfixturevalue(model)
    x = frames(3, 64, 128)                          # no padding: both paths see the same pixels
    expert = bound(HFSemantic(), str(path))
    spec = expert.output({})
    assert spec.classes == tuple(LABELS) and spec.palette == label_palette(5)
    assert spec.channels == 1 and spec.dtype == "uint8"
    expert.setup(run_device())
    labels = expert(x, {})
    assert labels.shape == (3, 64, 128, 1) and labels.dtype == np.uint8 and labels.max() < 5
    # transformers resizes Mask2Former scores through 384x384 first: allow a few border pixels.
    # the reference runs in float32; on CUDA the expert autocasts to float16, which flips near-ties
    exact = 0.999 if run_device() == "cpu" else 0.99
    assert np.mean(labels[..., 0] == hf_reference(path, x)) > (exact if model == "segformer" else 0.95)


@pytest.mark.parametrize("model", ["segformer", "mask2former"])
def test_hf_probabilities_at_any_frame_size(model, request):
    path = request.getfixturevalue(model)
    x = frames(2, 45, 80)                           # Mask2Former pads this to a multiple of 32
    expert = bound(HFSemantic(output="probabilities"), str(path))
    spec = expert.output({})
    assert spec.channels == 5 and spec.dtype == "float16" and spec.value_range == (0.0, 1.0)
    expert.setup(run_device())
    probs = expert(x, {})
    assert probs.shape == (2, 45, 80, 5) and probs.dtype == np.float16
    assert probs.min() >= 0 and np.allclose(probs.astype(np.float32).sum(-1), 1.0, atol=1e-2)
    labels_expert = bound(HFSemantic(), str(path))
    labels_expert.setup(run_device())
    assert np.mean(probs.argmax(-1) == labels_expert(x, {})[..., 0]) > 0.99


def test_hf_needs_resolved_weights_with_class_names(tmp_path):
    with pytest.raises(WeightsError, match="must be resolved"):
        HFSemantic().bind("seg").output({})
    (tmp_path / "config.json").write_text('{"model_type": "segformer", "id2label": {"0": "a", "2": "c"}}')
    with pytest.raises(WeightsError, match="ids 0..K-1"):
        bound(HFSemantic(), str(tmp_path)).output({})
    (tmp_path / "config.json").write_text('{"model_type": "oneformer", "id2label": {"0": "a"}}')
    with pytest.raises(WeightsError, match="model type 'oneformer'"):
        bound(HFSemantic(), str(tmp_path)).setup(run_device())


def test_label_palette_is_the_pascal_voc_colour_map():
    assert label_palette(6) == ((0, 0, 0), (128, 0, 0), (0, 128, 0), (128, 128, 0), (0, 0, 128), (128, 0, 128))
    assert len(set(label_palette(255))) == 255


def test_phgmae_distil_masks_with_the_fill_a_checkpoint_records(tmp_path):
    """A checkpoint trained with `masking.fill: mean` records its fill values: the expert's masked
    semantic channels hold them, so it computes exactly the masked pass of phgmae/inference."""
    import torch

    from video_pipeline.phgmae.engine import Node, NodeLayout
    from video_pipeline.phgmae.inference import load, run_passes
    from video_pipeline.phgmae.model import build_model, to_checkpoint

    nodes = (Node("rgb", "regression", 3, "rgb"),
             Node("semantic_output", "class", 8, "semantic", DRONESCAPES_CLASSES, DRONESCAPES_PALETTE))
    stats = {"rgb": [[0.0] * 3, [255.0] * 3, [110.0] * 3, [50.0] * 3],
             "semantic_output": [[0.0] * 8, [1.0] * 8, [0.0] * 8, [1.0] * 8]}
    fill = {"rgb": [0.0] * 3, "semantic_output": [0.6, 0.2, 0.1, 0.1, 0.0, 0.0, 0.0, 0.0]}
    layout = NodeLayout(nodes, ("semantic_output",), stats, "standardization", (16, 24), fill)
    model_cfg = {"type": "safeuav", "parameters": {"in_channels": 11, "out_channels": 11, "num_filters": 2}}
    torch.manual_seed(0)
    path = tmp_path / "fill.ckpt"
    torch.save(to_checkpoint(build_model(model_cfg), layout.cfg(model_cfg, {}), stats), path)
    frames = np.random.default_rng(0).integers(0, 255, (2, 16, 24, 3), dtype=np.uint8)
    expert = PhgmaeDistil(output="probabilities").bind("semantic", weights_path=path)
    expert.setup("cpu")
    got = expert(frames, {}).astype(np.float32)                                      # [2, 16, 24, 8]
    loaded = load(path)
    x = torch.zeros(2, 11, 16, 24)
    x[:, :3] = (torch.from_numpy(frames).permute(0, 3, 1, 2).float() - 110.0) / 50.0
    raw = run_passes(loaded.model, x, torch.ones(2, 2, dtype=torch.bool), torch.tensor([[False, True]]),
                     loaded.layout, ["semantic_output"])["semantic_output"][0]
    assert np.allclose(got, raw.softmax(1).permute(0, 2, 3, 1).numpy(), atol=2e-3)
    with torch.no_grad():
        zero_filled = loaded.model(x)[:, 3:].softmax(1).permute(0, 2, 3, 1).numpy()    # semantic channels 0
    assert not np.allclose(got, zero_filled, atol=2e-3)                                # the fill matters
