"""Loss-effect masking (`masking.learned`): per-node masking probabilities stepped, between
epochs, along the measured effect of each input on the outputs' validation loss, at the current
weights.

What it is not: MLO-MAE (Guo et al., TMLR 2025) learns the masking by differentiating the
validation loss through a training step (a bilevel problem: the masks change what the weights
become). Here the weights are held fixed while the probabilities move, so the step optimises the
masks of an inference-time ensemble, not of training: at fixed weights the optimum is to show every
useful input (p -> `min`), and the clip to [min, max] is what keeps each input hidden sometimes.
The same validation frames that measure the effect also choose `best.ckpt`: figures reported on
them are not held out.

Why the update is a gradient step: with the probability policy every free node m is hidden
independently with probability p_m, so a mask z has probability prod_m p_m^z_m (1 - p_m)^(1 - z_m)
and the expected target loss E[L] = sum_z P(z) L(z) is linear in each p_m:

    dE[L]/dp_m = E[L | m hidden] - E[L | m visible] =: g_m

(the other nodes drawn from the policy in both terms). `masking_effect` estimates g_m on the
validation batches, paired as `analysis.importance` does: each of `masks` base masks drawn from
the current policy is evaluated twice, m forced visible and m forced hidden, so the luck of the
other nodes cancels. A pair whose hidden variant would hide every node is left out: the policy
never draws such a mask (see `masking.sample_mask`), so the model never learned from one and its
loss says nothing about the policy. `update` then steps against the gradient, in units of the mean target loss
(so `rate` does not depend on the loss type or the data), and clips:

    p_m <- clip(p_m - rate * g_m / L, min, max)

An input that helps predict the outputs (g_m > 0: hiding it raises their loss) is hidden less
often, so the network trains more with it; an input that does not help, or hurts (g_m <= 0: pure
noise), is hidden more often. The clip keeps every node both hidden and shown sometimes: the model
stays a masked auto-encoder that copes with a missing input. (The rule that a sample keeps one node
visible bends the linearity slightly; the step ignores it.)

Targets are the outputs (never visible, so their loss counts under every mask), combined with
their loss weights as in training.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from video_pipeline.phgmae.engine import StepSetup, node_inputs, node_targets
from video_pipeline.phgmae.inference import run_passes
from video_pipeline.phgmae.losses import node_loss
from video_pipeline.phgmae.masking import paired_masks, sample_mask


@dataclass(frozen=True)
class Effect:
    """What `masking_effect` measured.

    effect: free node -> g (mean target loss with the node hidden minus visible); None where no
      pair or no target pixel counted.
    loss: the mean target loss under the base masks themselves (the current policy's), None likewise.
    """

    effect: dict[str, float | None]
    loss: float | None


def combined_loss(num: torch.Tensor, den: torch.Tensor, weights: torch.Tensor) -> float | None:
    """The loss-weighted mean over targets of num / den, targets with den = 0 left out (as
    `losses.combine`). num, den float64 [T] (summed loss x pixel weight, pixel weight); weights [T]."""
    counted = den > 0
    w = weights * counted
    if float(w.sum()) <= 0:
        return None
    return float((w * num / den.clamp_min(1e-12)).sum() / w.sum())


@torch.no_grad()
def masking_effect(model: nn.Module, batches: Iterable, setup: StepSetup, targets: Sequence[str], masks: int,
                   generator: torch.Generator, prepare=None, chunk: int = 8) -> Effect:
    """g for every free node of `setup.policy` over `batches` (see the module docstring).

    targets: nodes the policy never shows (the outputs), weighted by `setup.specs[n].weight`.
    masks: the number of base masks, drawn from `setup.policy` with `generator`. Costs at most
    2 x masks x free nodes forward passes per batch (variants that coincide run once), `chunk`
    masks per forward. `prepare`: as in `engine.train_one_epoch`.
    """
    model.eval()
    layout, policy = setup.layout, setup.policy
    col = {n: i for i, n in enumerate(layout.names)}
    free = list(policy.free)
    base = sample_mask(masks, policy, generator)                                     # [R, M]
    unique, index = paired_masks(base, [col[m] for m in free])                       # [U, M], [R, F, 2]
    num = torch.zeros(len(unique), len(targets), dtype=torch.float64)                # [U, T]
    den = torch.zeros_like(num)
    for batch in batches:
        if prepare is not None:
            batch = prepare(batch, setup.device)
        x, present = node_inputs(batch, layout, setup.device)
        truth = node_targets(batch, layout, setup.device)
        for start in range(0, len(unique), chunk):
            part = unique[start:start + chunk]
            with setup.autocast():
                raw = run_passes(model, x, present, part, layout, targets)           # n -> [K, B, C, H, W]
            for t, n in enumerate(targets):
                pairs = [node_loss(setup.specs[n], raw[n][j], truth[n], present[:, col[n]]) for j in range(len(part))]
                values = torch.stack([torch.stack(p) for p in pairs]).cpu().double()  # [K, 2]
                num[start:start + len(part), t] += values[:, 0] * values[:, 1]
                den[start:start + len(part), t] += values[:, 1]
    weights = torch.tensor([setup.specs[n].weight for n in targets], dtype=torch.float64)
    keep = ~unique[index[:, :, 1]].all(-1)                  # [R, F]: the hidden variant shows a node
    effect = {}
    for i, m in enumerate(free):
        rows = index[keep[:, i], i]                                                  # [R', 2]
        visible = combined_loss(num[rows[:, 0]].sum(0), den[rows[:, 0]].sum(0), weights)
        hidden = combined_loss(num[rows[:, 1]].sum(0), den[rows[:, 1]].sum(0), weights)
        effect[m] = None if visible is None or hidden is None else hidden - visible
    # base row r is its own variant (r, 0, base[r, first free column])
    own = index[torch.arange(len(base)), 0, base[:, col[free[0]]].long()]            # [R]
    return Effect(effect, combined_loss(num[own].sum(0), den[own].sum(0), weights))


def update(probability: Mapping[str, float], effect: Mapping[str, float | None], loss: float | None,
           rate: float, low: float, high: float) -> dict[str, float]:
    """One step p_m <- clip(p_m - rate * g_m / loss, low, high) for every node of `probability`.

    A node whose g is missing (None) keeps its p; with no loss (None) or a zero loss nothing
    changes (a perfect loss has nothing to lower, and dividing by it would be meaningless).
    """
    if loss is None or loss <= 0:
        return dict(probability)
    out = {}
    for node, p in probability.items():
        g = effect.get(node)
        out[node] = p if g is None else min(max(p - rate * g / loss, low), high)
    return out
