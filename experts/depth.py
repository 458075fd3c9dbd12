"""Experts: depth from any transformers depth-estimation model (`depth/hf`).

Also home of the small transformers/torch helpers the learned experts share (`load_hf`,
`inference`, `to_tensor`), so every learned expert loads and runs its model the same way.
"""
from __future__ import annotations

import contextlib
import inspect
import json
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from video_pipeline.errors import WeightsError
from video_pipeline.expert import Expert, OutputSpec
from video_pipeline.registry import register_expert

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


def inference(device: str):
    """Context for a forward pass: no autograd, and float16 autocast on CUDA."""
    import torch

    if torch.device(device).type == "cuda":
        stack = contextlib.ExitStack()
        stack.enter_context(torch.inference_mode())
        stack.enter_context(torch.autocast("cuda", dtype=torch.float16))
        return stack
    return torch.inference_mode()


def to_tensor(frames: np.ndarray, device: str):
    """uint8 [N, H, W, 3] numpy -> uint8 torch [N, 3, H, W] on `device`."""
    import torch

    return torch.from_numpy(np.ascontiguousarray(frames)).to(device).permute(0, 3, 1, 2)


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

    Output float16 [N, H, W, 1] at the frames' H, W. The quantity is the model's own: relative inverse
    depth (larger = nearer) for DPT and Depth Anything, metric depth in metres (larger = farther) for
    ZoeDepth, GLPN and the Depth Anything metric checkpoints.
    Params:
      size: processing resolution in pixels (the processor's target size, e.g. 518 for Depth
        Anything); None keeps the processor's default.
      normalization: "relative" rescales each frame to [0, 1] (min-max); "raw" keeps model units.
    """

    uses_torch = True
    default_weights = "depth-anything/Depth-Anything-V2-Small-hf"
    batch_size = 4

    def __init__(self, size: int | None = None, normalization: str = "relative"):
        if normalization not in ("relative", "raw"):
            raise ValueError(f"normalization must be 'relative' or 'raw', got {normalization!r}")
        if size is not None and size < 14:
            raise ValueError(f"size must be at least 14 pixels, got {size}")
        self.size, self.normalization = size, normalization
        self.processor = self.model = None

    def output(self, deps: Mapping[str, OutputSpec]) -> OutputSpec:
        return OutputSpec(channels=1, kind="depth", dtype="float16",
                          value_range=(0.0, 1.0) if self.normalization == "relative" else None)

    def setup(self, device: str) -> None:
        self.device = device
        self.processor, self.model = load_hf("AutoModelForDepthEstimation", self.weights_path,
                                             device, self.name)
        self._resize = {"size": processor_size(self.processor, self.size, self.name)} if self.size else {}

    def __call__(self, frames: np.ndarray, deps: Mapping[str, np.ndarray]) -> np.ndarray:
        import torch

        n, h, w = frames.shape[:3]
        images = list(to_tensor(frames, self.device))
        inputs = self.processor(images=images, return_tensors="pt", device=self.device, **self._resize)
        with inference(self.device):
            outputs = self.model(pixel_values=inputs["pixel_values"].to(self.device))
        post = self.processor.post_process_depth_estimation
        post_kwargs = {"target_sizes": [(h, w)] * n}
        if "source_sizes" in inspect.signature(post).parameters:  # ZoeDepth crops its own padding
            post_kwargs["source_sizes"] = [(h, w)] * n
        outputs.predicted_depth = outputs.predicted_depth.float()
        depth = torch.stack([r["predicted_depth"].reshape(h, w) for r in post(outputs, **post_kwargs)])
        if self.normalization == "relative":
            depth = normalize_relative(depth)
        return depth[..., None].to(torch.float16).cpu().numpy()

    def teardown(self) -> None:
        self.processor = self.model = None
