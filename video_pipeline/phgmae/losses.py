"""Per-node losses and their combination, safe on empty selections and missing targets.

Every loss works on one node's prediction `pred` float [B, C, H, W] and its target, averages over
the selected pixels (`sample_weight` > 0 and a valid target) and returns `(value, weight)`: the mean
and the total weight it averaged over. A node with nothing selected (no sample masked, target absent
in every sample, every pixel missing) gives `(0, 0)`: zero, finite, still part of the graph, and left
out of `combine`. No division by zero (denominators are clamped; the numerator is then exactly 0),
no NaN from missing pixels (NaN targets are replaced before any arithmetic, not multiplied by zero
afterwards), and no host-device synchronisation.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F

LOSS_TYPES = ("ce", "kl", "l1", "l2")
IGNORE_INDEX = 255  # label maps: the store's fill value for "no label here"
DEFAULT_LOSS = {"class": "ce", "soft": "kl", "regression": "l2"}   # node kind -> loss type
LOSS_KINDS = {"ce": ("class",), "kl": ("soft",), "l1": ("soft", "regression"), "l2": ("soft", "regression")}


@dataclass(frozen=True)
class LossSpec:
    """How one node is supervised.

    type: "ce" (class map, target int64 labels [B, H, W]), "kl" (soft target, probabilities
      [B, K, H, W]), "l1" / "l2" (regression, target float [B, C, H, W] in normalized units).
    weight: the node's weight in `combine` (0 leaves the node out).
    temperature: kl only; both distributions are softened by it and the loss scaled by T^2, so its
      gradients keep the size they have at T = 1.
    class_weights: ce only, one per class: a pixel of class k counts class_weights[k] times.
    """

    type: str
    weight: float = 1.0
    temperature: float = 1.0
    class_weights: tuple[float, ...] | None = None

    def __post_init__(self):
        if self.type not in LOSS_TYPES:
            raise ValueError(f"loss type must be one of {LOSS_TYPES}, got {self.type!r}")
        if self.temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        if self.weight < 0:
            raise ValueError(f"loss weight must be >= 0, got {self.weight}")


def pixel_loss(spec: LossSpec, pred: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One node's loss at every pixel: (loss float32 [B, H, W], weight float32 [B, H, W]); the
    weight is 0 where the target is missing and the class weight of the label for ce, else 1.

    pred: float [B, C, H, W] (logits for ce/kl). target: see LossSpec.type; missing pixels are
    IGNORE_INDEX (labels) or NaN (floats).
    """
    pred = pred.float()
    if spec.type == "ce":
        classes = pred.shape[1]
        valid = (target >= 0) & (target < classes)                                    # [B, H, W]
        labels = torch.where(valid, target, torch.zeros_like(target)).long()
        per_pixel = F.cross_entropy(pred, labels, reduction="none")                  # [B, H, W]
        w = valid.float()
        if spec.class_weights is not None:
            w = w * torch.tensor(spec.class_weights, device=pred.device)[labels]
    elif spec.type == "kl":
        valid = torch.isfinite(target).all(1) & (target.nan_to_num(0).sum(1) > 0)     # [B, H, W]
        probs = torch.where(valid[:, None], target.float(), torch.ones_like(pred))
        t = spec.temperature
        # a stored distribution p softened by T is p^(1/T), renormalized: softmax(log p / T)
        log_q = F.log_softmax(probs.clamp_min(1e-8).log() / t, dim=1)                 # [B, K, H, W]
        log_p = F.log_softmax(pred / t, dim=1)
        per_pixel = (log_q.exp() * (log_q - log_p)).sum(1) * t * t                   # [B, H, W]
        w = valid.float()
    else:
        valid = torch.isfinite(target).all(1)                                         # [B, H, W]
        tgt = torch.where(valid[:, None], target.float(), pred.detach())
        diff = pred - tgt
        per_pixel = (diff.abs() if spec.type == "l1" else diff.square()).mean(1)      # [B, H, W]
        w = valid.float()
    return per_pixel, w


def node_loss(spec: LossSpec, pred: torch.Tensor, target: torch.Tensor,
              sample_weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One node's loss over the selected pixels: (mean float32 [], total weight float32 []).

    pred: float [B, C, H, W] (logits for ce/kl). target: see LossSpec.type; missing pixels are
    IGNORE_INDEX (labels) or NaN (floats). sample_weight: float or bool [B], 0 = sample not counted.
    """
    per_pixel, w = pixel_loss(spec, pred, target)
    w = w * sample_weight.to(per_pixel.device, torch.float32).view(-1, 1, 1)
    total = w.sum()
    return (per_pixel * w).sum() / total.clamp_min(1e-12), total


def combine(losses: Mapping[str, tuple[torch.Tensor, torch.Tensor]],
            specs: Mapping[str, LossSpec]) -> torch.Tensor:
    """Weighted mean of the node losses that counted anything: sum(w_n L_n) / sum(w_n).

    Nodes with zero total weight (nothing selected) or `spec.weight == 0` are left out; if none is
    left, the result is 0 (attached to the graph, so `backward()` still works).
    """
    if not losses:
        return torch.zeros(())
    num = den = 0.0
    for node, (value, count) in losses.items():
        w = specs[node].weight * (count > 0).float()
        num = num + w * value
        den = den + w
    return num / den.clamp_min(1e-12)


def losses_to_floats(losses: Mapping[str, tuple[torch.Tensor, torch.Tensor]]) -> dict[str, float | None]:
    """{node: mean loss as a float, or None where nothing was counted} (for logs)."""
    return {n: (float(v) if float(c) > 0 else None) for n, (v, c) in losses.items()}
