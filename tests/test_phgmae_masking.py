"""Invariants of `phgmae.masking.sample_mask` over many draws and policies."""
from __future__ import annotations

import pytest
import torch

from video_pipeline.phgmae.masking import MaskPolicy, sample_mask

NODES = ("rgb", "hsv", "edges", "flow", "depth", "semantic_output")


def draw(policy: MaskPolicy, n: int = 4000, seed: int = 0) -> torch.Tensor:
    return sample_mask(n, policy, torch.Generator().manual_seed(seed))


def col(policy: MaskPolicy, node: str) -> int:
    return policy.nodes.index(node)


@pytest.mark.parametrize("kwargs", [
    {"probability": 0.5},
    {"probability": 1.0},
    {"probability": 0.9, "always_visible": ("rgb",)},
    {"probability": 0.5, "never_visible": ("semantic_output",)},
    {"probability": 1.0, "always_visible": ("rgb",), "never_visible": ("semantic_output", "depth")},
    {"count": (0, 5)},
    {"count": (5, 5)},
    {"count": (1, 3), "always_visible": ("rgb",), "never_visible": ("semantic_output",)},
    {"count": (4, 9), "always_visible": ("rgb",), "never_visible": ("semantic_output",)},
])
def test_visibility_invariants(kwargs):
    policy = MaskPolicy(NODES, **kwargs)
    mask = draw(policy)
    assert mask.shape == (4000, len(NODES)) and mask.dtype == torch.bool
    assert (~mask).any(1).all(), "a sample hides every node"
    for node in policy.always_visible:
        assert not mask[:, col(policy, node)].any()
    for node in policy.never_visible:
        assert mask[:, col(policy, node)].all()


def test_count_is_uniform_in_range_and_clipped():
    policy = MaskPolicy(NODES, count=(1, 3), always_visible=("rgb",), never_visible=("semantic_output",))
    free = [col(policy, n) for n in policy.free]
    counts = draw(policy)[:, free].sum(1)
    assert set(counts.tolist()) == {1, 2, 3}
    share = torch.bincount(counts, minlength=4)[1:].float() / len(counts)
    assert torch.allclose(share, torch.full((3,), 1 / 3), atol=0.03)
    # every free node is equally likely to be among the masked
    per_node = draw(policy)[:, free].float().mean(0)
    assert torch.allclose(per_node, per_node.mean().expand(len(free)), atol=0.03)
    # without an always-visible node, the upper bound is clipped so one free node stays visible
    no_anchor = MaskPolicy(NODES, count=(0, 99))
    assert draw(no_anchor).sum(1).max().item() == len(NODES) - 1


def test_probability_per_node():
    probs = {"hsv": 0.0, "edges": 1.0, "flow": 0.25, "depth": 0.75}
    policy = MaskPolicy(NODES, probability=probs, always_visible=("rgb",), never_visible=("semantic_output",))
    rate = draw(policy, 20000).float().mean(0)
    for node, p in probs.items():
        assert abs(rate[col(policy, node)].item() - p) < 0.02, node


def test_all_hidden_rows_get_one_node_back():
    # p = 1 and nothing always visible: exactly one free node is visible in each sample, uniformly
    policy = MaskPolicy(NODES, probability=1.0, never_visible=("semantic_output",))
    visible = ~draw(policy)
    assert (visible.sum(1) == 1).all()
    share = visible[:, :5].float().mean(0)
    assert torch.allclose(share, torch.full((5,), 0.2), atol=0.03)


def test_deterministic_for_a_generator_state():
    policy = MaskPolicy(NODES, probability=0.5, always_visible=("rgb",))
    assert torch.equal(draw(policy, 64, seed=3), draw(policy, 64, seed=3))
    assert not torch.equal(draw(policy, 64, seed=3), draw(policy, 64, seed=4))


def test_empty_batch_and_fixed_policy():
    policy = MaskPolicy(("rgb", "semantic_output"), probability=0.5, always_visible=("rgb",),
                        never_visible=("semantic_output",))
    assert sample_mask(0, policy).shape == (0, 2)
    assert sample_mask(3, policy).tolist() == [[False, True]] * 3


@pytest.mark.parametrize("kwargs, message", [
    ({"probability": 0.5, "always_visible": ("nope",)}, "not nodes"),
    ({"probability": 0.5, "always_visible": ("rgb",), "never_visible": ("rgb",)}, "both"),
    ({"probability": 0.5, "never_visible": NODES}, "at least one node"),
    ({}, "exactly one of"),
    ({"probability": 0.5, "count": (1, 2)}, "exactly one of"),
    ({"probability": 1.5}, "in [0, 1]"),
    ({"probability": {"rgb": 0.5}}, "exactly the free nodes"),
    ({"count": (3, 2)}, "lo <= hi"),
    ({"count": (6, 6)}, "no node visible"),
])
def test_invalid_policies(kwargs, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        MaskPolicy(NODES, **kwargs)
