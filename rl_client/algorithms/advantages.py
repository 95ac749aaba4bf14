"""Advantage estimators: pure functions over tensors.

Outcome estimators take one reward per completion, arranged by prompt group, and a `valid`
mask of the same shape: False where the reward could not be verified (a non-OK status). An
invalid item takes no part in its group's statistics and gets advantage 0, so a failed
verification never acts as a fake zero reward (open-instruct PR #1887). Whatever an invalid
cell holds (NaN included) never reaches a valid one.

    rewards, valid: [B, G]  (B prompts, G samples each)  ->  advantages [B, G]

The token-level estimators (`gae`, the critic branch, and `reward_to_go`, REINFORCE++'s paper
form) take per-token rewards [N, T] and a mask that is 1 on the tokens the policy sampled. A
multi-turn episode has tool-output tokens (mask 0) *inside* its row: they are environment
transitions, so the recursions skip them and carry on to the previous policy token.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from rl_client.algorithms.dispatch import lookup

# The total over the whole batch of a partial sum over this process's rows: the identity in
# one process, a sum across processes when the batch is spread over several (a group is never
# split, so only the batch-wide statistics need it).
BatchTotal = Callable[[Tensor], Tensor]


def local_total(partial: Tensor) -> Tensor:
    """One process holds the whole batch: its partial sum is the total."""
    return partial


@dataclass(frozen=True)
class AdvantageOptions:
    eps: float = 1e-6  # added to a standard deviation before dividing by it
    group_baseline: bool = True  # reinforce_pp: subtract the group mean before normalising
    batch_total: BatchTotal = local_total  # reinforce_pp's batch statistics


def _valid_rewards(rewards: Tensor, valid: Tensor) -> tuple[Tensor, Tensor]:
    """(rewards with invalid cells set to 0, valid as a 0/1 float weight). NaN * 0 is NaN, so
    invalid cells are replaced, not multiplied away."""
    return torch.where(valid, rewards, torch.zeros_like(rewards)), valid.to(rewards.dtype)


def _group_mean(rewards: Tensor, weight: Tensor) -> tuple[Tensor, Tensor]:
    """Mean over the valid members of each group, and their count. [B, G] -> [B, 1], [B, 1]."""
    count = weight.sum(dim=1, keepdim=True)
    mean = (rewards * weight).sum(dim=1, keepdim=True) / count.clamp(min=1)
    return mean, count


def grpo_advantages(rewards: Tensor, valid: Tensor, options: AdvantageOptions) -> Tensor:
    """(r - group mean) / (group std + eps), std unbiased (GRPO, arXiv:2402.03300, eq. 3).

    A group with one valid member has no spread: its advantage is 0."""
    rewards, weight = _valid_rewards(rewards, valid)
    mean, count = _group_mean(rewards, weight)
    variance = ((rewards - mean) ** 2 * weight).sum(dim=1, keepdim=True) / (count - 1).clamp(min=1)
    std = variance.sqrt()
    # Equal rewards (std 0) carry no signal: 0, not 0/0.
    advantages = torch.where(std > 0, (rewards - mean) / (std + options.eps), 0.0)
    return advantages * weight * (count > 1)


def dr_grpo_advantages(rewards: Tensor, valid: Tensor, options: AdvantageOptions) -> Tensor:
    """r - group mean, no division by the std (Dr. GRPO, arXiv:2503.20783, sec. 3.2): the
    std term over-weights prompts that are nearly always right or always wrong."""
    rewards, weight = _valid_rewards(rewards, valid)
    mean, count = _group_mean(rewards, weight)
    return (rewards - mean) * weight * (count > 1)


def rloo_advantages(rewards: Tensor, valid: Tensor, options: AdvantageOptions) -> Tensor:
    """r_i - mean of the other valid members (RLOO, arXiv:2402.14740).

    r_i - (S - r_i)/(n - 1) with S the group sum over n valid members."""
    rewards, weight = _valid_rewards(rewards, valid)
    count = weight.sum(dim=1, keepdim=True)
    total = (rewards * weight).sum(dim=1, keepdim=True)
    others_mean = (total - rewards) / (count - 1).clamp(min=1)
    return (rewards - others_mean) * weight * (count > 1)


def group_centered(rewards: Tensor, valid: Tensor) -> Tensor:
    """r - group mean over the valid members; 0 for invalid members and for groups with one
    valid member (REINFORCE++-baseline's first step, arXiv:2501.03262). [B, G] -> [B, G]."""
    return dr_grpo_advantages(rewards, valid, AdvantageOptions())


def reinforce_pp_advantages(rewards: Tensor, valid: Tensor, options: AdvantageOptions) -> Tensor:
    """REINFORCE++ (arXiv:2501.03262) with one reward per sequence: normalised over the whole
    batch, not per group.

    With `group_baseline` the group mean is subtracted first (REINFORCE++-baseline), then the
    result is divided by the batch std; without it the batch mean is subtracted instead. The
    paper's token-level form (KL reward-to-go, token whitening) is `reward_to_go` + `whiten`."""
    total = options.batch_total
    rewards, weight = _valid_rewards(rewards, valid)
    if options.group_baseline:
        centered = group_centered(rewards, valid)
    else:
        n = total(weight.sum()).clamp(min=1)
        centered = rewards - total((rewards * weight).sum()) / n
    n = total(weight.sum())
    if n < 2:
        return torch.zeros_like(rewards)
    mean = total((centered * weight).sum()) / n
    std = (total(((centered - mean) ** 2 * weight).sum()) / (n - 1)).sqrt()
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
    """Generalised advantage estimation (arXiv:1506.02438, eqs. 11-16), per token.

    token_rewards, values, mask: [N, T]; mask 1 on the tokens the policy sampled. With
    t' the next policy token after t (tool outputs in between are skipped, as verl does for
    multi-turn rows) and V = 0 past the last one (the episode ended):
        delta_t = r_t + gamma * V_t' - V_t
        A_t     = delta_t + gamma * lam * A_t'
    Rewards on masked tokens are ignored: put them on a policy token (`outcome_token_rewards`).
    Returns (advantages, returns = advantages + values), both 0 outside the mask, whatever
    the masked cells held (NaN included: NaN * 0 is NaN, so they are replaced, not scaled).
    """
    on_policy = mask > 0
    token_rewards = torch.where(on_policy, token_rewards, torch.zeros_like(token_rewards))
    values = torch.where(on_policy, values, torch.zeros_like(values))
    mask = mask.to(values.dtype)
    advantages = torch.zeros_like(values)
    running = torch.zeros_like(values[:, 0])
    next_value = torch.zeros_like(values[:, 0])
    for t in reversed(range(values.shape[1])):
        on = mask[:, t]
        delta = token_rewards[:, t] + gamma * next_value - values[:, t]
        step = delta + gamma * lam * running
        # A masked token leaves the recursion as it was: A_t' and V_t' carry across it.
        running = torch.where(on > 0, step, running)
        next_value = torch.where(on > 0, values[:, t], next_value)
        advantages[:, t] = step * on
    return advantages, (advantages + values) * mask


def reward_to_go(token_rewards: Tensor, mask: Tensor, *, gamma: float = 1.0) -> Tensor:
    """sum_{k >= t} gamma^(k - t) r_k over the policy tokens of each row (REINFORCE++,
    arXiv:2501.03262, with its per-token KL penalty): GAE with V = 0 and lambda = 1.
    [N, T] -> [N, T], 0 outside the mask."""
    zeros = torch.zeros_like(token_rewards)
    return gae_advantages(token_rewards, zeros, mask, gamma=gamma, lam=1.0)[0]


def whiten(
    values: Tensor, mask: Tensor, eps: float = 1e-8, *, batch_total: BatchTotal = local_total
) -> Tensor:
    """(x - mean) / std over the masked entries (PPO's advantage normalisation, REINFORCE++'s
    global token-level normalisation); 0 elsewhere. `batch_total`: the moments are the whole
    batch's when its rows are spread over processes."""
    weight = mask.to(values.dtype)
    values = torch.where(weight > 0, values, torch.zeros_like(values))
    n = batch_total(weight.sum()).clamp(min=1)
    mean = batch_total((values * weight).sum()) / n
    std = (batch_total(((values - mean) ** 2 * weight).sum()) / n).sqrt()
    return (values - mean) / (std + eps) * weight


def last_token_index(mask: Tensor) -> Tensor:
    """Index of each row's last token where mask is 1; -1 for an empty row. [N, T] -> [N]."""
    positions = torch.arange(mask.shape[1], device=mask.device).expand_as(mask)
    return torch.where(mask > 0, positions, -1).max(dim=1).values


def outcome_token_rewards(rewards: Tensor, mask: Tensor) -> Tensor:
    """Places each sequence's reward on its last policy token (not on a tool output that
    ends an episode, nor at `mask.sum() - 1`, which an interior mask moves). [N], [N, T] ->
    [N, T]; a row with no policy token gets nothing."""
    last = last_token_index(mask)  # [N]
    token_rewards = torch.zeros(mask.shape, dtype=rewards.dtype, device=rewards.device)
    rows = torch.nonzero(last >= 0).squeeze(1)
    token_rewards[rows, last[rows]] = rewards[rows]
    return token_rewards
