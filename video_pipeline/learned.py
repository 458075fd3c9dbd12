"""Helpers every learned expert shares: its weights file, frames to tensors, the forward-pass context.

The context honours the recipe's per-expert `dtype` (float32, float16, bfloat16): an expert's
`self.dtype` is passed in, and when the recipe gives none the expert's own default applies
(float16 autocast on CUDA and full precision on CPU unless the expert says otherwise).
Torch is imported inside the functions: a module importing this one stays fast to import.
"""
from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np

from video_pipeline.errors import WeightsError


def weights_file(expert, hint: str) -> Path:
    """The expert's resolved weights (`expert.weights_path`, bound by the runner) as a Path, or
    WeightsError naming the expert and what to give when the recipe named none. `hint`: what
    `weights:` should name (a file, its URL with #sha256=...)."""
    if expert.weights_path is None:
        raise WeightsError(f"expert '{expert.name}': {expert.type_name} needs weights (give weights: {hint})")
    return Path(expert.weights_path)


def frames_to_tensor(frames: np.ndarray, device: str):
    """uint8 [N, H, W, 3] numpy -> uint8 torch [N, 3, H, W] on `device` (a channels-last view)."""
    import torch

    return torch.from_numpy(np.ascontiguousarray(frames)).to(device).permute(0, 3, 1, 2)


def compute_dtype(device: str, dtype: str | None, cuda_default: str = "float16",
                  cpu_default: str = "float32") -> str:
    """The dtype a forward pass computes in: the recipe's `dtype`, else the default for the device."""
    import torch

    if dtype is not None:
        return dtype
    return cuda_default if torch.device(device).type == "cuda" else cpu_default


def inference(device: str, dtype: str | None = None, cuda_default: str = "float16",
              cpu_default: str = "float32"):
    """Context for a forward pass on `device`: no autograd, autocast to `compute_dtype(...)`.

    float32 runs without autocast; float16/bfloat16 autocast on the device's type (CPU included,
    where torch supports both). Outputs may come back in the reduced dtype: callers cast.
    """
    import torch

    chosen = compute_dtype(device, dtype, cuda_default, cpu_default)
    stack = contextlib.ExitStack()
    stack.enter_context(torch.inference_mode())
    if chosen != "float32":
        stack.enter_context(torch.autocast(torch.device(device).type, dtype=getattr(torch, chosen)))
    return stack


def check_state_dict(state: dict, layout: dict, source: str, expected: str, advice: str) -> dict:
    """`state` with DataParallel's `module.` prefix dropped, after every key and shape is compared with
    `layout` (name -> shape); a mismatch is a `WeightsError`: "<source> is not <expected> (missing: ...;
    unexpected: ...; wrong shape: ...); <advice>", at most three names of each."""
    from .errors import WeightsError

    state = {k.removeprefix("module."): v for k, v in state.items()}
    missing = sorted(set(layout) - set(state))
    unexpected = sorted(set(state) - set(layout))
    wrong = sorted(k for k in set(layout) & set(state) if tuple(state[k].shape) != tuple(layout[k]))
    if missing or unexpected or wrong:
        what = "; ".join(f"{label}: {', '.join(keys[:3])}{' ...' if len(keys) > 3 else ''}"
                         for label, keys in (("missing", missing), ("unexpected", unexpected),
                                             ("wrong shape", wrong)) if keys)
        raise WeightsError(f"{source} is not {expected} ({what}); {advice}")
    return state
