"""Which sampled completions train, for the loops that learn from scored groups directly:
rejection sampling's winners and online DPO's preference pairs. Pure functions over tensors.

    rewards, valid: [B, G]  (B prompts, G samples each; valid False: not verified)

A completion that could not be verified is never a winner, a chosen or a rejected one: its
reward is unknown, not 0 (whatever its cell holds, NaN included).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


def rejection_sampling_keep(
    rewards: Tensor, valid: Tensor, *, threshold: float, max_per_prompt: int
) -> Tensor:
    """Best-of-N selection (RAFT, arXiv:2304.06767; ReST-EM, arXiv:2312.06585): the verified
    completions with reward >= `threshold`, at most `max_per_prompt` per prompt, highest
    reward first (equal rewards: lower sample index first). [B, G] -> bool [B, G]."""
    if max_per_prompt < 1:
        raise ValueError(f"max_per_prompt must be >= 1, got {max_per_prompt}")
    eligible = valid & (torch.where(valid, rewards, torch.zeros_like(rewards)) >= threshold)
    # Ineligible cells sort last; a stable sort keeps sample order among equal rewards.
    key = torch.where(eligible, rewards, torch.full_like(rewards, -torch.inf))
    order = torch.sort(key, dim=1, descending=True, stable=True).indices  # [B, G]
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(rewards.shape[1]).expand_as(order))
    return eligible & (rank < max_per_prompt)


@dataclass(frozen=True)
class PairIndex:
    """P preference pairs as indices into the [B, G] table, each [P] (long)."""

    group: Tensor
    chosen: Tensor
    rejected: Tensor

    def __len__(self) -> int:
        return int(self.group.numel())


PAIR_MODES = ("best_worst", "all")


def preference_pairs(
    rewards: Tensor, valid: Tensor, *, mode: str, min_margin: float = 0.0
) -> PairIndex:
    """Chosen/rejected pairs within each prompt's group, from verified members whose rewards
    differ by more than 0 and by at least `min_margin`: a tie is no preference.

    'best_worst': one pair per group, its highest against its lowest reward (the first
    sample among equals), as in online/iterated DPO (Xiong et al., arXiv:2312.11456; Guo et
    al., arXiv:2402.04792). 'all': every ordered pair (i, j) with r_i - r_j past the margin,
    group by group, i then j ascending. Returns a PairIndex of P pairs."""
    if mode not in PAIR_MODES:
        raise KeyError(f"unknown pair mode {mode!r}; valid: {', '.join(PAIR_MODES)}")
    if min_margin < 0:
        raise ValueError(f"min_margin must be >= 0, got {min_margin}")
    scores = torch.where(valid, rewards, torch.zeros_like(rewards))
    gap = scores.unsqueeze(2) - scores.unsqueeze(1)  # [B, G, G]: r_i - r_j
    both = valid.unsqueeze(2) & valid.unsqueeze(1)
    preferred = both & (gap > 0) & (gap >= min_margin)
    if mode == "all":
        group, chosen, rejected = torch.nonzero(preferred, as_tuple=True)
        return PairIndex(group, chosen, rejected)
    best = torch.where(valid, scores, torch.full_like(scores, -torch.inf)).argmax(dim=1)
    worst = torch.where(valid, scores, torch.full_like(scores, torch.inf)).argmin(dim=1)
    groups = torch.arange(rewards.shape[0])
    keep = preferred[groups, best, worst]
    return PairIndex(groups[keep], best[keep], worst[keep])
