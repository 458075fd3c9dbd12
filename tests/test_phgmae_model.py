"""PHG-MAE networks: the released checkpoint loads strictly, the SafeUAV sizes, checkpoint round trips,
any input size, and the timm-encoder U-Net."""
from __future__ import annotations

import copy
import io
from pathlib import Path

import pytest
import torch

from video_pipeline.phgmae.model import (SAFEUAV_NUM_FILTERS, SafeUAV, TimmUNet, build_model,
                                         count_parameters, model_from_checkpoint, to_checkpoint)
from video_pipeline.weights import load_checkpoint

SHARED = Path(__file__).resolve().parents[1] / ".." / "shared"
RELEASED = SHARED / "weights" / "phgmae_distil_safeuav_430k.ckpt"
# Parameters of the SafeUAV sizes with 11 channels in and out (rgb + 8 classes), counted by hand:
# 17 conv blocks of 3x3 weights + bias + BatchNorm scale/shift, plus the 1x1 decoder.
EXPECTED_PARAMETERS = {"150k": 158_639, "430k": 438_271, "1M": 1_118_539, "4M": 4_462_731}


@pytest.fixture(scope="module")
def released() -> dict:
    if not RELEASED.exists():
        pytest.skip(f"{RELEASED} is absent (real weights live in ../shared on development machines)")
    return load_checkpoint(RELEASED)


def roundtrip(ckpt: dict) -> dict:
    """Save with torch.save and read back the way experts read checkpoints (weights_only)."""
    buffer = io.BytesIO()
    torch.save(ckpt, buffer)
    buffer.seek(0)
    return torch.load(buffer, map_location="cpu", weights_only=True)


def test_released_checkpoint_loads_strictly_with_its_layout(released):
    model, meta = model_from_checkpoint(released)
    assert isinstance(model, SafeUAV) and not model.training
    assert set(model.state_dict()) == set(released["state_dict"])
    assert count_parameters(model) == EXPECTED_PARAMETERS["430k"]
    assert meta.nodes == ("rgb", "semantic_output")
    assert meta.slice("rgb") == slice(0, 3) and meta.slice("semantic_output") == slice(3, 11)
    assert meta.train_size == (540, 960)
    assert meta.statistics["rgb"][1] == [255.0, 255.0, 255.0]
    with pytest.raises(KeyError, match="depth"):
        meta.slice("depth")


@pytest.mark.parametrize("size", list(SAFEUAV_NUM_FILTERS))
def test_safeuav_sizes_and_checkpoint_roundtrip(released, size):
    cfg = copy.deepcopy(released["hyper_parameters"]["cfg"])
    cfg["model"]["parameters"]["num_filters"] = SAFEUAV_NUM_FILTERS[size]
    torch.manual_seed(0)
    model = build_model(cfg["model"])
    assert count_parameters(model) == EXPECTED_PARAMETERS[size]
    ckpt = roundtrip(to_checkpoint(model, cfg, released["hyper_parameters"]["statistics"], epoch=3))
    assert ckpt["epoch"] == 3
    loaded, meta = model_from_checkpoint(ckpt)
    assert meta.nodes == ("rgb", "semantic_output") and meta.total_channels == 11
    x = torch.randn(2, 11, 24, 40)
    with torch.no_grad():
        assert torch.equal(loaded(x), model.eval()(x))


@pytest.mark.parametrize("hw", [(1, 1), (7, 9), (37, 53), (64, 96)])
def test_safeuav_keeps_any_input_size(hw):
    model = SafeUAV(in_channels=5, out_channels=4, num_filters=2).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 5, *hw)).shape == (2, 4, *hw)


def test_checkpoint_that_does_not_fit_is_one_line(released):
    ckpt = copy.deepcopy(released)
    ckpt["hyper_parameters"]["cfg"]["model"]["parameters"]["num_filters"] = 16
    with pytest.raises(ValueError, match="do not fit a safeuav model") as err:
        model_from_checkpoint(ckpt)
    assert "\n" not in str(err.value)
    ckpt = copy.deepcopy(released)
    ckpt["hyper_parameters"]["cfg"]["model"]["hparams"]["data_shape"]["depth"] = [1, 540, 960]
    with pytest.raises(ValueError, match="task_names"):
        model_from_checkpoint(ckpt)
    with pytest.raises(ValueError, match="not a PHG-MAE checkpoint"):
        model_from_checkpoint({"state_dict": {}})


def test_channel_layout_follows_task_names_order():
    model_cfg = {"type": "safeuav", "parameters": {"in_channels": 12, "out_channels": 12, "num_filters": 2},
                 "hparams": {"data_shape": {"rgb": [3, 8, 8], "semantic_output": [8, 8, 8],
                                            "depth": [1, 8, 8]}}}
    cfg = {"model": model_cfg, "data": {"parameters": {"task_names": ["depth", "rgb", "semantic_output"]}}}
    _, meta = model_from_checkpoint(roundtrip(to_checkpoint(build_model(model_cfg), cfg, {})))
    assert meta.slice("depth") == slice(0, 1) and meta.slice("rgb") == slice(1, 4)
    assert meta.slice("semantic_output") == slice(4, 12) and meta.train_size == (8, 8)


# ------------------------------------------------------------------------------ timm U-Net
TIMM_CFG = {"type": "timm_unet", "parameters": {"in_channels": 11, "out_channels": 11,
                                                "encoder": "test_resnet", "decoder_channels": [32, 16, 16, 8, 8]}}


@pytest.fixture(scope="module")
def timm_unet():
    torch.manual_seed(0)
    return build_model(TIMM_CFG).eval()


@pytest.mark.parametrize("hw", [(1, 1), (37, 53), (64, 64)])
def test_timm_unet_keeps_any_input_size(timm_unet, hw):
    with torch.no_grad():
        assert timm_unet(torch.randn(2, 11, *hw)).shape == (2, 11, *hw)


def test_timm_unet_default_decoder_widths_follow_the_encoder():
    model = TimmUNet(3, 2, encoder="test_resnet")          # stage widths 32, 32, 48, 192, 96
    assert [block.convs[-1][0].out_channels for block in model.blocks] == [192, 48, 32, 32, 16]


def test_timm_unet_checkpoint_roundtrip(timm_unet):
    model = timm_unet
    assert count_parameters(model) > count_parameters(model.encoder) > 0
    cfg = {"model": {**TIMM_CFG, "hparams": {"data_shape": {"rgb": [3, 32, 32], "semantic_output": [8, 32, 32]}}},
           "data": {"parameters": {"task_names": ["rgb", "semantic_output"]}}}
    loaded, _ = model_from_checkpoint(roundtrip(to_checkpoint(model, cfg, {})))
    x = torch.randn(1, 11, 32, 48)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))


def test_timm_unet_loads_local_encoder_weights(tmp_path):
    import timm

    torch.manual_seed(1)
    encoder = timm.create_model("test_resnet", in_chans=11)
    torch.save(encoder.state_dict(), tmp_path / "encoder.pth")
    model = TimmUNet(11, 11, encoder="test_resnet", encoder_weights=str(tmp_path / "encoder.pth"))
    for name, value in model.encoder.state_dict().items():
        assert torch.equal(value, encoder.state_dict()[name]), name


def test_timm_unet_needs_one_decoder_width_per_stage():
    with pytest.raises(ValueError, match="decoder_channels needs 5 entries"):
        TimmUNet(3, 3, encoder="test_resnet", decoder_channels=[16, 8])
    with pytest.raises(ValueError, match="model type must be one of"):
        build_model({"type": "unet3d"})
