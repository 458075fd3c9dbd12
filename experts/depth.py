"""Experts: depth from any transformers depth-estimation model (`depth/hf`).

Also home of the small transformers helpers the learned experts share (`read_hf_config`, `load_hf`),
so every transformers expert loads its model the same way; the torch helpers (frames to tensors,
the forward-pass context honouring the recipe's dtype) are `video_pipeline.learned`.
"""
from __future__ import annotations

import inspect
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

import numpy as np

from video_pipeline.errors import WeightsError
from video_pipeline.expert import Expert, OutputSpec
from video_pipeline.learned import compute_dtype, frames_to_tensor, inference
from video_pipeline.quantities import INVERSE_DEPTH, METRIC_DEPTH, RELATIVE_DEPTH, check_quantity
from video_pipeline.registry import register_expert

# What the raw output of a transformers depth model holds, by config `model_type` (Depth Anything
# checkpoints with `depth_estimation_type: metric` are metric; see `HFDepth.raw_quantity`).
HF_DEPTH_QUANTITIES = {"depth_anything": INVERSE_DEPTH, "dpt": INVERSE_DEPTH, "zoedepth": METRIC_DEPTH,
                       "glpn": METRIC_DEPTH, "depth_pro": METRIC_DEPTH,
                       "prompt_depth_anything": METRIC_DEPTH}
NORMALIZATIONS = ("relative", "raw", "reciprocal")

def read_hf_config(weights_path, expert: str) -> dict:
    """The `config.json` of a `from_pretrained` folder, without importing transformers."""
    path = Path(weights_path or "") / "config.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise WeightsError(f"expert '{expert}': {path} is missing or unreadable ({type(err).__name__}); "
                           f"weights: must be a transformers model folder or Hugging Face id") from None


def load_hf(auto_model: str, weights_path, device: str, expert: str):
    """(image processor, model in eval mode on `device`) from a `from_pretrained` folder.

    `auto_model` names a transformers Auto class, e.g. "AutoModelForDepthEstimation".
    """
    import transformers

    transformers.utils.logging.disable_progress_bar()  # the runner reports progress itself
    try:
        processor = transformers.AutoImageProcessor.from_pretrained(weights_path)
        model = getattr(transformers, auto_model).from_pretrained(weights_path)
    except (OSError, ValueError, KeyError) as err:
        raise WeightsError(f"expert '{expert}': cannot load a {auto_model} from {weights_path} "
                           f"({type(err).__name__}: {str(err).splitlines()[0]})") from None
    return processor, model.eval().to(device)


def normalize_relative(depth):
    """Per-frame min-max of torch float32 [N, H, W] to [0, 1] (a constant frame becomes 0)."""
    import torch

    flat = depth.flatten(1)
    lo, hi = flat.min(1).values[:, None, None], flat.max(1).values[:, None, None]
    span = hi - lo
    return torch.where(span > 0, (depth - lo) / torch.where(span > 0, span, 1), 0)


def processor_size(processor, size: int, expert: str) -> dict:
    """The processor's own `size` setting with its processing resolution set to `size` pixels."""
    current = getattr(processor, "size", None)  # a dict or a transformers SizeDict, or absent
    if current is not None and current.get("height") and current.get("width"):
        return {"height": size, "width": size}
    if current is not None and current.get("shortest_edge"):
        return {"shortest_edge": size}
    raise WeightsError(f"expert '{expert}': the image processor {type(processor).__name__} has no size "
                       f"setting; remove params.size")


@register_expert("depth/hf")
class HFDepth(Expert):
    """Depth from a transformers depth-estimation model (DPT, Depth Anything v1/v2, ZoeDepth, GLPN).

    Output float16 [N, H, W, 1] at the frames' H, W, with its quantity declared (`output().quantity`).
    The model's raw output is relative inverse depth (larger = nearer) for DPT and Depth Anything,
    metric depth in metres for ZoeDepth, GLPN, Depth Pro and the Depth Anything metric checkpoints
    (`HF_DEPTH_QUANTITIES`).
    Params:
      size: processing resolution in pixels (the processor's target size, e.g. 518 for Depth
        Anything); None keeps the processor's default.
      normalization: "relative" rescales each frame to [0, 1] (min-max: inverse depth stays inverse
        depth, metric depth becomes relative depth); "raw" keeps the model's units; "reciprocal"
        stores 1 / raw clipped to [0, 1], relative depth from an inverse-depth model (what VRE's
        `depth_dpt` stores).
      quantity: what the raw output holds, for model types not in `HF_DEPTH_QUANTITIES`
        (None: from the table).
    """

    uses_torch = True
    output_needs_weights = True
    default_weights = "depth-anything/Depth-Anything-V2-Small-hf"
    batch_size = 4

    def __init__(self, size: int | None = None, normalization: Literal[NORMALIZATIONS] = "relative",
                 quantity: str | None = None):
        if normalization not in NORMALIZATIONS:
            raise ValueError(f"normalization must be one of {', '.join(NORMALIZATIONS)}, got {normalization!r}")
        if size is not None and size < 14:
            raise ValueError(f"size must be at least 14 pixels, got {size}")
        check_quantity(quantity)
        self.size, self.normalization, self.quantity = size, normalization, quantity
        self.processor = self.model = None

    def raw_quantity(self) -> str:
        """What the model's raw output holds: the `quantity` param, else by the weights' config."""
        if self.quantity is not None:
            return self.quantity
        config = read_hf_config(self.weights_path, self.name)
        model_type = config.get("model_type")
        if model_type == "depth_anything" and config.get("depth_estimation_type") == "metric":
            return METRIC_DEPTH
        if model_type not in HF_DEPTH_QUANTITIES:
            raise WeightsError(f"expert '{self.name}': the depth quantity of model type '{model_type}' "
                               f"({self.weights_path}) is not known: set params.quantity")
        return HF_DEPTH_QUANTITIES[model_type]

    def output(self, deps: Mapping[str, OutputSpec]) -> OutputSpec:
        raw = self.raw_quantity()
        if self.normalization == "raw":
            return OutputSpec(channels=1, kind="depth", dtype="float16", quantity=raw)
        if self.normalization == "reciprocal":
            if raw != INVERSE_DEPTH:
                raise ValueError(f"expert '{self.name}': normalization 'reciprocal' turns inverse depth into "
                                 f"depth, but this model gives {raw}: use relative or raw")
            return OutputSpec(channels=1, kind="depth", dtype="float16", quantity=RELATIVE_DEPTH,
                              value_range=(0.0, 1.0))
        return OutputSpec(channels=1, kind="depth", dtype="float16", value_range=(0.0, 1.0),
                          quantity=INVERSE_DEPTH if raw == INVERSE_DEPTH else RELATIVE_DEPTH)

    def setup(self, device: str) -> None:
        self.device = device
        self.processor, self.model = load_hf("AutoModelForDepthEstimation", self.weights_path,
                                             device, self.name)
        self._resize = {"size": processor_size(self.processor, self.size, self.name)} if self.size else {}

    def __call__(self, frames: np.ndarray, deps: Mapping[str, np.ndarray]) -> np.ndarray:
        import torch

        n, h, w = frames.shape[:3]
        images = list(frames_to_tensor(frames, self.device))
        inputs = self.processor(images=images, return_tensors="pt", device=self.device, **self._resize)
        with inference(self.device, self.dtype):
            outputs = self.model(pixel_values=inputs["pixel_values"].to(self.device))
        post = self.processor.post_process_depth_estimation
        post_kwargs = {"target_sizes": [(h, w)] * n}
        if "source_sizes" in inspect.signature(post).parameters:  # ZoeDepth crops its own padding
            post_kwargs["source_sizes"] = [(h, w)] * n
        outputs.predicted_depth = outputs.predicted_depth.float()
        depth = torch.stack([r["predicted_depth"].reshape(h, w) for r in post(outputs, **post_kwargs)])
        if self.normalization == "relative":
            depth = normalize_relative(depth)
        elif self.normalization == "reciprocal":
            depth = (1 / depth).nan_to_num(posinf=1.0).clamp(0, 1)
        return depth[..., None].to(torch.float16).cpu().numpy()

    def teardown(self) -> None:
        self.processor = self.model = None


@register_expert("depth/marigold")
class MarigoldDepth(Expert):
    """Affine-invariant depth from a Marigold diffusion model (diffusers' MarigoldDepthPipeline).

    Output float16 [N, H, W, 1] at the frames' H, W: relative depth in [0, 1] (larger = farther),
    as the extended Dronescapes `depth_marigold` modality stores it. The weights are a diffusers
    pipeline folder or hub id; its scheduler decides the variant: the LCM one (default,
    `prs-eth/marigold-depth-lcm-v1-0`, 1 to 4 steps) or the DDIM one (`prs-eth/marigold-depth-v1-0`).
    Params:
      denoising_steps: diffusion steps per prediction (None: the pipeline's default).
      ensemble_size: predictions per frame, aligned and averaged (Marigold's test-time ensemble).
      processing_resolution: longest side the model runs at (0: the frame's own; None: the
        pipeline's default, 768).
      seed: seed of the starting noise, the same for every frame (so a frame's depth does not
        depend on the batch it came in, and reruns reproduce it).
    """

    uses_torch = True
    default_weights = "prs-eth/marigold-depth-lcm-v1-0"
    batch_size = 1

    def __init__(self, denoising_steps: int | None = None, ensemble_size: int = 1,
                 processing_resolution: int | None = None, seed: int = 0):
        if denoising_steps is not None and denoising_steps < 1:
            raise ValueError(f"denoising_steps must be >= 1, got {denoising_steps}")
        if ensemble_size < 1:
            raise ValueError(f"ensemble_size must be >= 1, got {ensemble_size}")
        if processing_resolution is not None and (processing_resolution < 0 or processing_resolution % 8):
            raise ValueError(f"processing_resolution must be 0 or a positive multiple of 8, got "
                             f"{processing_resolution}")
        self.denoising_steps, self.ensemble_size = denoising_steps, ensemble_size
        self.processing_resolution, self.seed = processing_resolution, seed
        self.pipeline = None

    def output(self, deps: Mapping[str, OutputSpec]) -> OutputSpec:
        return OutputSpec(channels=1, kind="depth", dtype="float16", value_range=(0.0, 1.0),
                          quantity=RELATIVE_DEPTH)

    def setup(self, device: str) -> None:
        import torch
        from diffusers import MarigoldDepthPipeline
        from diffusers.utils import logging as diffusers_logging

        self.device = device
        diffusers_logging.disable_progress_bar()
        try:
            pipeline = MarigoldDepthPipeline.from_pretrained(self.weights_path)
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise WeightsError(f"expert '{self.name}': cannot load a Marigold depth pipeline from "
                               f"{self.weights_path} ({type(err).__name__}: {str(err).splitlines()[0]})") from None
        pipeline.set_progress_bar_config(disable=True)
        # float16 on GPUs unless the recipe asks otherwise (as Marigold's authors run it), else float32
        dtype = compute_dtype(device, self.dtype)
        self.pipeline = pipeline.to(device) if dtype == "float32" else \
            pipeline.to(device=device, dtype=getattr(torch, dtype))

    def __call__(self, frames: np.ndarray, deps: Mapping[str, np.ndarray]) -> np.ndarray:
        import torch

        depths = []
        for image in frames_to_tensor(frames, self.device):  # one frame at a time, each from `seed`
            generator = torch.Generator(self.device).manual_seed(self.seed)
            with torch.inference_mode():
                out = self.pipeline(image[None], num_inference_steps=self.denoising_steps,
                                    ensemble_size=self.ensemble_size,
                                    processing_resolution=self.processing_resolution,
                                    generator=generator, output_type="pt")
            depths.append(out.prediction.float().clamp(0, 1))                    # [1, 1, H, W]
        return torch.cat(depths).permute(0, 2, 3, 1).to(torch.float16).cpu().numpy()

    def teardown(self) -> None:
        self.pipeline = None
