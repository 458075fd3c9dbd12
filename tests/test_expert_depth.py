"""depth/hf with tiny randomly initialised Depth Anything and GLPN models, saved with save_pretrained
and loaded back through weights.resolve, setup and __call__."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from conftest import run_device
from tiny_models import build_depth_anything

from experts.depth import HFDepth, MarigoldDepth, normalize_relative
from video_pipeline import weights
from video_pipeline.errors import WeightsError


@pytest.fixture(scope="module")
def depth_anything(tmp_path_factory) -> Path:
    """Depth Anything of width 16 (tests/tiny_models.py)."""
    return build_depth_anything(tmp_path_factory.mktemp("depth-anything"))


@pytest.fixture(scope="module")
def glpn(tmp_path_factory) -> Path:
    """GLPN (metric depth; its processor has no target size, only a size divisor)."""
    import torch
    import transformers as tf

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("glpn")
    config = tf.GLPNConfig(num_encoder_blocks=4, depths=[1, 1, 1, 1], sr_ratios=[8, 4, 2, 1],
                           hidden_sizes=[8, 8, 16, 16], num_attention_heads=[1, 1, 1, 1],
                           mlp_ratios=[2, 2, 2, 2], decoder_hidden_size=8, max_depth=10)
    tf.GLPNForDepthEstimation(config).save_pretrained(path)
    tf.GLPNImageProcessor().save_pretrained(path)
    return path


def frames(n: int = 3, h: int = 45, w: int = 80) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (n, h, w, 3), dtype=np.uint8)


def setup_expert(path: Path, **params) -> HFDepth:
    expert = HFDepth(**params)
    expert.bind("depth", weights=str(path), weights_path=weights.resolve(str(path), expert="depth").path)
    expert.setup(run_device())
    return expert


def hf_reference(path: Path, x: np.ndarray) -> np.ndarray:
    """Depth [N, H, W] from transformers' own processor, model and post-processing."""
    import torch
    import transformers as tf

    processor = tf.AutoImageProcessor.from_pretrained(path)
    model = tf.AutoModelForDepthEstimation.from_pretrained(path).eval()
    with torch.no_grad():
        out = model(**processor(images=list(x), return_tensors="pt"))
    post = processor.post_process_depth_estimation(out, target_sizes=[x.shape[1:3]] * len(x))
    return np.stack([p["predicted_depth"].numpy() for p in post])


@pytest.mark.parametrize("model", ["depth_anything", "glpn"])
def test_raw_depth_is_the_models_own_prediction(model, request):
    path = request.getfixturevalue(model)
    x = frames()
    expert = setup_expert(path, normalization="raw")
    spec = expert.output({})
    assert spec.kind == "depth" and spec.channels == 1 and spec.dtype == "float16" and spec.value_range is None
    # Depth Anything predicts relative inverse depth, GLPN metres.
    assert spec.quantity == {"depth_anything": "inverse_depth", "glpn": "metric_depth"}[model]
    depth = expert(x, {})
    assert depth.shape == (3, 45, 80, 1) and depth.dtype == np.float16
    reference = hf_reference(path, x)
    # float32 reference; on CUDA the expert computes in float16 (autocast)
    tol = 2e-3 if run_device() == "cpu" else 2e-2
    assert np.allclose(depth[..., 0].astype(np.float32), reference, rtol=tol, atol=tol / 2 * np.abs(reference).max())


def test_relative_depth_is_min_max_per_frame(depth_anything):
    x = frames()
    expert = setup_expert(depth_anything)
    assert expert.output({}).value_range == (0.0, 1.0) and expert.output({}).quantity == "inverse_depth"
    depth = expert(x, {}).astype(np.float32)
    assert depth.shape == (3, 45, 80, 1)
    assert np.allclose(depth.min(axis=(1, 2, 3)), 0.0) and np.allclose(depth.max(axis=(1, 2, 3)), 1.0)
    raw = hf_reference(depth_anything, x)
    expected = (raw - raw.min(axis=(1, 2), keepdims=True)) / np.ptp(raw, axis=(1, 2), keepdims=True)
    assert np.abs(depth[..., 0] - expected).max() < (5e-3 if run_device() == "cpu" else 6e-2)


def test_quantity_follows_the_normalization(depth_anything, glpn):
    x = frames(2)
    # min-max of metres is relative depth; 1 / disparity clipped to [0, 1] is VRE's depth_dpt.
    assert setup_expert(glpn).output({}).quantity == "relative_depth"
    reciprocal = setup_expert(depth_anything, normalization="reciprocal")
    assert (reciprocal.output({}).quantity, reciprocal.output({}).value_range) == ("relative_depth", (0.0, 1.0))
    with np.errstate(divide="ignore"):
        expected = np.clip(1 / hf_reference(depth_anything, x), 0, 1)
    assert np.abs(reciprocal(x, {})[..., 0].astype(np.float32) - expected).max() < 5e-3
    with pytest.raises(ValueError, match="'reciprocal' turns inverse depth into depth, but this model gives metric_depth"):
        setup_expert(glpn, normalization="reciprocal").output({})
    # The `quantity` param overrides the table (for model types it does not list).
    assert setup_expert(glpn, normalization="raw", quantity="inverse_depth").output({}).quantity == "inverse_depth"


def test_size_sets_the_processing_resolution(depth_anything):
    expert = setup_expert(depth_anything, size=28)
    seen = []
    expert.model.register_forward_pre_hook(lambda module, args, kwargs: seen.append(kwargs["pixel_values"].shape),
                                           with_kwargs=True)
    out = expert(frames(2, 45, 80), {})
    assert out.shape == (2, 45, 80, 1)
    assert seen == [(2, 3, 28, 56)]  # shorter side 28, aspect kept, multiple of 14


def test_size_needs_a_processor_with_a_size(glpn):
    with pytest.raises(WeightsError, match="GLPNImageProcessor has no size setting"):
        setup_expert(glpn, size=64)


def test_constant_frames_normalize_to_zero():
    import torch

    depth = torch.stack([torch.full((4, 5), 3.0), torch.arange(20.0).reshape(4, 5)])
    out = normalize_relative(depth)
    assert torch.equal(out[0], torch.zeros(4, 5))
    assert out[1].min() == 0 and out[1].max() == 1


# ------------------------------------------------------------------------------- depth/marigold
@pytest.fixture(scope="module")
def marigold(tmp_path_factory) -> Path:
    from tiny_models import build_marigold

    return build_marigold(tmp_path_factory.mktemp("marigold"))


def test_marigold_is_the_pipelines_prediction_as_relative_depth(marigold):
    import torch
    from diffusers import MarigoldDepthPipeline

    x = frames(2, 40, 56)
    expert = MarigoldDepth(denoising_steps=2, ensemble_size=3, processing_resolution=32, seed=7)
    expert.bind("depth_marigold", weights=str(marigold), weights_path=marigold)
    spec = expert.output({})
    assert (spec.kind, spec.quantity, spec.value_range) == ("depth", "relative_depth", (0.0, 1.0))
    expert.setup("cpu")
    out = expert(x, {})
    assert out.shape == (2, 40, 56, 1) and out.dtype == np.float16
    # the pipeline loaded by diffusers itself, called frame by frame with the same seed
    pipeline = MarigoldDepthPipeline.from_pretrained(marigold)
    pipeline.set_progress_bar_config(disable=True)
    for i in range(2):
        ref = pipeline(torch.from_numpy(x[i]).permute(2, 0, 1)[None], num_inference_steps=2, ensemble_size=3,
                       processing_resolution=32, generator=torch.Generator().manual_seed(7),
                       output_type="np").prediction
        assert np.abs(out[i].astype(np.float32) - ref[0]).max() < 2e-3
    # another seed, another starting noise
    other = MarigoldDepth(denoising_steps=2, ensemble_size=3, processing_resolution=32, seed=8)
    other.bind("d", weights=str(marigold), weights_path=marigold).setup("cpu")
    assert np.abs(other(x, {}).astype(np.float32) - out).max() > 1e-3


def test_marigold_refuses_a_folder_that_is_not_a_pipeline(tmp_path):
    (tmp_path / "model_index.json").write_text("{}")
    expert = MarigoldDepth().bind("depth_marigold", weights=str(tmp_path), weights_path=tmp_path)
    with pytest.raises(WeightsError, match="expert 'depth_marigold': cannot load a Marigold depth pipeline"):
        expert.setup("cpu")
