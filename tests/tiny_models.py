"""Tiny randomly initialised models of real architectures, written the way their real weights ship.

Helpers for tests (no test in here): each `build_*` saves a model to `path` through the library's
own `save_pretrained` and returns the folder the expert loads through its normal weights path.
"""
from __future__ import annotations

import json
from pathlib import Path


def build_marigold(path: Path) -> Path:
    """A Marigold depth pipeline (diffusers) of the real layout, a few channels wide, LCM scheduler.

    UNet (8 latent channels in: image + depth latents, 4 out, v-prediction), a 2-level VAE, a
    1-layer CLIP text encoder for the empty prompt, and a CLIP tokenizer over a 3-token vocabulary.
    """
    import torch
    import transformers as tf
    from diffusers import AutoencoderKL, LCMScheduler, MarigoldDepthPipeline, UNet2DConditionModel

    torch.manual_seed(0)
    path.mkdir(parents=True, exist_ok=True)
    unet = UNet2DConditionModel(sample_size=16, in_channels=8, out_channels=4, layers_per_block=1,
                                down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                                up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
                                block_out_channels=(8, 16), norm_num_groups=4, cross_attention_dim=8,
                                attention_head_dim=2)
    vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, layers_per_block=1,
                        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                        block_out_channels=(8, 8), norm_num_groups=4)
    scheduler = LCMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                             prediction_type="v_prediction", set_alpha_to_one=False, steps_offset=1,
                             original_inference_steps=50, timestep_scaling=10.0, clip_sample=False)
    text_encoder = tf.CLIPTextModel(tf.CLIPTextConfig(hidden_size=8, intermediate_size=16, num_hidden_layers=1,
                                                      num_attention_heads=2, vocab_size=8,
                                                      max_position_embeddings=77, bos_token_id=0,
                                                      eos_token_id=1, pad_token_id=1))
    vocab = path / "vocab"
    vocab.mkdir(exist_ok=True)
    (vocab / "vocab.json").write_text(json.dumps({"<|startoftext|>": 0, "<|endoftext|>": 1, "a</w>": 2}))
    (vocab / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = tf.CLIPTokenizer(str(vocab / "vocab.json"), str(vocab / "merges.txt"), model_max_length=77)
    pipeline = MarigoldDepthPipeline(unet=unet, vae=vae, scheduler=scheduler, text_encoder=text_encoder,
                                     tokenizer=tokenizer, prediction_type="depth", scale_invariant=True,
                                     shift_invariant=True, default_denoising_steps=1,
                                     default_processing_resolution=32)
    pipeline.save_pretrained(path / "pipeline")
    return path / "pipeline"


def build_depth_anything(path: Path) -> Path:
    """Depth Anything (DINOv2 backbone + DPT head) of width 16 with its 56-pixel processor.

    A wider weight init than the default keeps the random depth above float16's smallest values.
    """
    import torch
    import transformers as tf

    torch.manual_seed(0)
    backbone = tf.Dinov2Config(hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
                               image_size=56, patch_size=14, out_features=["stage1", "stage2"],
                               reshape_hidden_states=False, initializer_range=0.2)
    config = tf.DepthAnythingConfig(backbone_config=backbone, reassemble_hidden_size=16, neck_hidden_sizes=[8, 16],
                                    reassemble_factors=[2, 1], fusion_hidden_size=8, head_hidden_size=4,
                                    initializer_range=0.2)
    tf.DepthAnythingForDepthEstimation(config).save_pretrained(path)
    tf.DPTImageProcessor(size={"height": 56, "width": 56}, keep_aspect_ratio=True,
                         ensure_multiple_of=14).save_pretrained(path)
    return path


def random_state(layout: dict, seed: int = 0) -> dict:
    """A state dict of `layout` (name -> shape) with random values that keep activations O(1):
    He-scaled conv kernels, small biases, batch norms with running variance in [0.5, 1.5]."""
    import math

    import torch

    gen = torch.Generator().manual_seed(seed)
    state = {}
    for name, shape in layout.items():
        if name.endswith("num_batches_tracked"):
            state[name] = torch.tensor(0)
        elif name.endswith("running_var"):
            state[name] = torch.rand(shape, generator=gen) + 0.5
        elif len(shape) == 4:
            fan_in = shape[1] * shape[2] * shape[3]
            state[name] = torch.randn(shape, generator=gen) * math.sqrt(2.0 / fan_in)
        elif name.endswith("weight"):  # a batch norm's scale (every other weight is a kernel)
            state[name] = 1 + 0.1 * torch.randn(shape, generator=gen)
        else:
            state[name] = 0.1 * torch.randn(shape, generator=gen)
    return state


def build_dexined(path: Path) -> Path:
    """A DexiNed state dict of the released layout (the architecture fixes its size) with random
    values, saved as the released `dexined.pth` is: a bare state dict."""
    import torch

    from experts.edges import dexined_layout

    file = path.with_suffix(".pth")
    file.parent.mkdir(parents=True, exist_ok=True)
    torch.save(random_state(dexined_layout()), file)
    return file


def build_rife(path: Path) -> Path:
    """A RIFE IFNet (HD v2) state dict of the released layout with random values, saved as the
    released `flownet.ckpt` is (keys prefixed `module.`), in a folder of its own."""
    import torch

    from experts.flow import rife_layout

    path.mkdir(parents=True, exist_ok=True)
    state = random_state(rife_layout(), seed=1)
    state = {k: (0.25 * torch.ones_like(v) if k.endswith(".1.weight") else v) for k, v in state.items()}  # PReLU
    torch.save({f"module.{k}": v for k, v in state.items()}, path / "flownet.ckpt")
    return path / "flownet.ckpt"
