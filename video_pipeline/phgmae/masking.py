"""Which modalities (hypergraph nodes) each sample hides: one pure function, `sample_mask`.

A mask is bool [B, M] over the M nodes in channel order; True means "masked": that node's channels
are zero-filled in the input (after normalization), so each sample's forward pass sees one random
hyperedge (its visible nodes) and the network predicts every node.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch


@dataclass(frozen=True)
class MaskPolicy:
    """How masks are drawn over `nodes` (channel order).

    Exactly one of:
      probability: each free node is masked independently with this probability (one number for
        every node, or node -> probability listing every free node).
      count: (lo, hi): the number of masked free nodes is uniform in lo..hi (inclusive), the nodes
        themselves uniform among the free ones.
    always_visible: never masked (e.g. rgb, the one input a deployed model always has).
    never_visible: always masked (target-only nodes such as a semantic map to learn).
    "Free" nodes are the others. At least one node stays visible in every sample: the policy needs
    an always-visible node or at least one free node.
    """

    nodes: tuple[str, ...]
    probability: float | Mapping[str, float] | None = None
    count: tuple[int, int] | None = None
    always_visible: tuple[str, ...] = ()
    never_visible: tuple[str, ...] = ()
    free: tuple[str, ...] = field(init=False)

    def __post_init__(self):
        known = set(self.nodes)
        for what in ("always_visible", "never_visible"):
            unknown = [n for n in getattr(self, what) if n not in known]
            if unknown:
                raise ValueError(f"{what}: {unknown} are not nodes ({list(self.nodes)})")
        both = set(self.always_visible) & set(self.never_visible)
        if both:
            raise ValueError(f"{sorted(both)} cannot be both always_visible and never_visible")
        free = tuple(n for n in self.nodes if n not in self.always_visible and n not in self.never_visible)
        object.__setattr__(self, "free", free)
        if not self.always_visible and not free:
            raise ValueError("every node is never_visible: at least one node must be able to be seen")
        if (self.probability is None) == (self.count is None):
            raise ValueError("give exactly one of probability or count")
        if isinstance(self.probability, Mapping):
            unknown = [n for n in self.probability if n not in free]
            missing = [n for n in free if n not in self.probability]
            if unknown or missing:
                raise ValueError(f"probability must list exactly the free nodes {list(free)} "
                                 f"(unknown or not free: {unknown}, missing: {missing})")
        if self.probability is not None:
            values = self.probability.values() if isinstance(self.probability, Mapping) else [self.probability]
            for p in values:
                if not 0.0 <= p <= 1.0:
                    raise ValueError(f"a masking probability must be in [0, 1], got {p}")
        if self.count is not None:
            lo, hi = self.count
            if not 0 <= lo <= hi:
                raise ValueError(f"count must be [lo, hi] with 0 <= lo <= hi, got {list(self.count)}")
            if lo > self.max_count:
                raise ValueError(f"count: at least {lo} masked nodes of {len(free)} free "
                                 f"({list(free)}) would leave no node visible")

    @property
    def max_count(self) -> int:
        """Most free nodes one sample may mask while something stays visible."""
        return len(self.free) if self.always_visible else len(self.free) - 1

    def node_probability(self, node: str) -> float:
        if isinstance(self.probability, Mapping):
            return float(self.probability[node])
        return float(self.probability)


def sample_mask(batch_size: int, policy: MaskPolicy, generator: torch.Generator | None = None) -> torch.Tensor:
    """A random mask bool [batch_size, M] (True = masked) over `policy.nodes`, on the CPU.

    Invariants, for every row:
      - `always_visible` nodes are False, `never_visible` nodes are True;
      - at least one node is False (visible);
      - count policy: the number of masked free nodes lies in count[0]..min(count[1], max_count);
      - probability policy: a free node is masked with its probability, except that a row which
        would hide every node gets one free node (uniformly chosen) unmasked again.
    Deterministic for a given `generator` state.
    """
    nodes, free = policy.nodes, policy.free
    mask = torch.zeros(batch_size, len(nodes), dtype=torch.bool)
    mask[:, [nodes.index(n) for n in policy.never_visible]] = True
    if not free or batch_size == 0:
        return mask
    cols = torch.tensor([nodes.index(n) for n in free])
    if policy.count is not None:
        lo, hi = policy.count[0], min(policy.count[1], policy.max_count)
        k = torch.randint(lo, hi + 1, (batch_size, 1), generator=generator)           # [B, 1]
        # the rank of each free node in a random permutation; the k lowest ranks are masked
        ranks = torch.rand(batch_size, len(free), generator=generator).argsort(1).argsort(1)
        mask[:, cols] = ranks < k
        return mask
    p = torch.tensor([policy.node_probability(n) for n in free])
    hidden = torch.rand(batch_size, len(free), generator=generator) < p               # [B, F]
    if not policy.always_visible:
        blind = hidden.all(1)                                                         # [B]
        pick = torch.randint(len(free), (batch_size,), generator=generator)
        hidden[blind, pick[blind]] = False
    mask[:, cols] = hidden
    return mask


def paired_masks(base: torch.Tensor, columns: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Every base mask with each of `columns` forced visible and forced hidden, each distinct mask once.

    base: bool [R, M] (True = hidden). Returns (unique bool [U, M], index int64 [R, F, 2]):
    unique[index[r, f, h]] is base[r] with column columns[f] set to bool(h). U <= R * (F + 1): a
    base row is one of its own variants for every column.
    """
    r, f = base.shape[0], len(columns)
    variants = base[:, None, None, :].expand(r, f, 2, base.shape[1]).clone()          # [R, F, 2, M]
    for i, c in enumerate(columns):
        variants[:, i, 0, c] = False
        variants[:, i, 1, c] = True
    unique, inverse = torch.unique(variants.reshape(-1, base.shape[1]), dim=0, return_inverse=True)
    return unique, inverse.reshape(r, f, 2)
