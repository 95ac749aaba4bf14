"""Advantage estimators: pure functions over tensors.

Outcome estimators take one reward per completion, arranged by prompt group, and a `valid`
mask of the same shape: False where the reward could not be verified (a non-OK status). An
invalid item takes no part in its group's statistics and gets advantage 0, so a failed
verification never acts as a fake zero reward (open-instruct PR #1887).

    rewards, valid: [B, G]  (B prompts, G samples each)  ->  advantages [B, G]

`gae` is the critic branch: per-token rewards and values in, per-token advantages out.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from rl_client.algorithms.dispatch import lookup


@dataclass(frozen=True)
class AdvantageOptions:
    eps: float = 1e-6  # added to a standard deviation before dividing by it
    group_baseline: bool = True  # reinforce_pp: subtract the group mean before normalising


def _group_mean(rewards: Tensor, valid: Tensor) -> tuple[Tensor, Tensor]:
    """Mean over the valid members of each group, and their count. [B, G] -> [B, 1], [B, 1]."""
    weight = valid.to(rewards.dtype)
    count = weight.sum(dim=1, keepdim=True)
    mean = (rewards * weight).sum(dim=1, keepdim=True) / count.clamp(min=1)
    return mean, count


def grpo_advantages(rewards: Tensor, valid: Tensor, options: AdvantageOptions) -> Tensor:
    """(r - group mean) / (group std + eps), std unbiased (GRPO, arXiv:2402.03300, eq. 3).

    A group with one valid member has no spread: its advantage is 0."""
    mean, count = _group_mean(rewards, valid)
    weight = valid.to(rewards.dtype)
    variance = ((rewards - mean) ** 2 * weight).sum(dim=1, keepdim=True) / (count - 1).clamp(min=1)
    std = variance.sqrt()
    # Equal rewards (std 0) carry no signal: 0, not 0/0.
    advantages = torch.where(std > 0, (rewards - mean) / (std + options.eps), 0.0)
    return advantages * weight * (count > 1)


def dr_grpo_advantages(rewards: Tensor, valid: Tensor, options: AdvantageOptions) -> Tensor:
    """r - group mean, no division by the std (Dr. GRPO, arXiv:2503.20783, sec. 3.2): the
    std term over-weights prompts that are nearly always right or always wrong."""
    mean, count = _group_mean(rewards, valid)
    return (rewards - mean) * valid.to(rewards.dtype) * (count > 1)


def rloo_advantages(rewards: Tensor, valid: Tensor, options: AdvantageOptions) -> Tensor:
    """r_i - mean of the other valid members (RLOO, arXiv:2402.14740).

    r_i - (S - r_i)/(n - 1) with S the group sum over n valid members."""
    weight = valid.to(rewards.dtype)
    count = weight.sum(dim=1, keepdim=True)
    total = (rewards * weight).sum(dim=1, keepdim=True)
    others_mean = (total - rewards) / (count - 1).clamp(min=1)
    return (rewards - others_mean) * weight * (count > 1)


def reinforce_pp_advantages(rewards: Tensor, valid: Tensor, options: AdvantageOptions) -> Tensor:
    """REINFORCE++ (arXiv:2501.03262): normalise over the whole batch, not per group.

    With `group_baseline` the group mean is subtracted first (REINFORCE++-baseline), then the
    result is divided by the batch std; without it the batch mean is subtracted instead."""
    weight = valid.to(rewards.dtype)
    if options.group_baseline:
        mean, count = _group_mean(rewards, valid)
        centered = (rewards - mean) * (count > 1)
    else:
        n = weight.sum().clamp(min=1)
        centered = rewards - (rewards * weight).sum() / n
    n = weight.sum()
    if n < 2:
        return torch.zeros_like(rewards)
    mean = (centered * weight).sum() / n
    std = (((centered - mean) ** 2 * weight).sum() / (n - 1)).sqrt()
    if std == 0:
        return torch.zeros_like(rewards)
    return centered / (std + options.eps) * weight


OutcomeEstimator = Callable[[Tensor, Tensor, AdvantageOptions], Tensor]

OUTCOME_ESTIMATORS: dict[str, OutcomeEstimator] = {
    "grpo": grpo_advantages,
    "dr_grpo": dr_grpo_advantages,
    "rloo": rloo_advantages,
    "reinforce_pp": reinforce_pp_advantages,
}


def outcome_advantages(
    estimator: str, rewards: Tensor, valid: Tensor, options: AdvantageOptions
) -> Tensor:
    """Dispatches to one of OUTCOME_ESTIMATORS. [B, G] -> [B, G]."""
    return lookup(OUTCOME_ESTIMATORS, estimator, "advantage estimator")(rewards, valid, options)


def gae_advantages(
    token_rewards: Tensor, values: Tensor, mask: Tensor, *, gamma: float, lam: float
) -> tuple[Tensor, Tensor]:
    """Generalised advantage estimation (arXiv:1506.02438), per token.

    token_rewards, values, mask: [N, T], mask 1 on the completion's tokens (a prefix of each
    row). Past the last token the value is 0 (the episode ended):
        delta_t = r_t + gamma * V_{t+1} - V_t
        A_t     = delta_t + gamma * lam * A_{t+1}
    Returns (advantages, returns = advantages + values), both 0 outside the mask.
    """
    mask = mask.to(values.dtype)
    values = values * mask
    advantages = torch.zeros_like(values)
    running = torch.zeros_like(values[:, 0])
    next_value = torch.zeros_like(values[:, 0])
    for t in reversed(range(values.shape[1])):
        delta = token_rewards[:, t] + gamma * next_value - values[:, t]
        running = (delta + gamma * lam * running) * mask[:, t]
        advantages[:, t] = running
        next_value = values[:, t]
    return advantages, (advantages + values) * mask


def whiten(values: Tensor, mask: Tensor, eps: float = 1e-8) -> Tensor:
    """(x - mean) / std over the masked entries (PPO's advantage normalisation); 0 elsewhere."""
    weight = mask.to(values.dtype)
    n = weight.sum().clamp(min=1)
    mean = (values * weight).sum() / n
    std = (((values - mean) ** 2 * weight).sum() / n).sqrt()
    return (values - mean) / (std + eps) * weight


def outcome_token_rewards(rewards: Tensor, mask: Tensor) -> Tensor:
    """Places each sequence's reward on its last completion token. [N], [N, T] -> [N, T]."""
    lengths = mask.sum(dim=1).long()  # [N]
    token_rewards = torch.zeros(mask.shape, dtype=rewards.dtype, device=rewards.device)
    rows = torch.nonzero(lengths > 0).squeeze(1)
    token_rewards[rows, lengths[rows] - 1] = rewards[rows]
    return token_rewards
