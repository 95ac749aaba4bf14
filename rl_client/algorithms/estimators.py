"""The advantages of a training batch: every estimator in one table, keyed by
`algorithm.advantage`, with the KL to the reference folded into the reward first when
`kl_placement` is 'reward'.

The batch is N rows (one per verified completion) of T completion tokens, each row a member
of one of B prompt groups of up to G samples. The outcome estimators (`advantages.py`) see
the rewards arranged [B, G] with a `valid` mask; the token-level ones (gae, REINFORCE++'s
paper form) see per-token rewards [N, T].
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, NamedTuple

import torch
from torch import Tensor

from rl_client.algorithms.advantages import (
    AdvantageOptions,
    BatchTotal,
    gae_advantages,
    group_centered,
    local_total,
    outcome_advantages,
    outcome_token_rewards,
    reward_to_go,
    whiten,
)
from rl_client.algorithms.dispatch import lookup
from rl_client.algorithms.kl import kl_estimate

if TYPE_CHECKING:  # read, never imported at run time: algorithms/ depends on torch only
    from rl_client.batch import Batch
    from rl_client.config import AlgorithmConfig


class Advantages(NamedTuple):
    advantages: Tensor  # [N, T], 0 off the completion tokens
    returns: Tensor | None  # [N, T] the value targets (gae); None without a critic


def sequence_kl(estimator: str, logprobs: Tensor, ref_logprobs: Tensor, mask: Tensor) -> Tensor:
    """Per-token KL of the sampled completions to the reference, 0 outside them. [N, T]."""
    return kl_estimate(estimator, logprobs, ref_logprobs) * mask


def compute_advantages(
    batch: Batch,
    algo: AlgorithmConfig,
    *,
    ref_logprobs: Tensor | None = None,
    old_values: Tensor | None = None,
    batch_total: BatchTotal = local_total,
) -> Advantages:
    """The estimator `algo.advantage` over the batch. `ref_logprobs` [N, T] (the frozen
    reference's) is needed with kl_coef > 0 and kl_placement 'reward', `old_values` [N, T]
    (the value head before the update) by gae.

    With kl_placement 'reward' the k1 KL to the reference (measured at the behaviour policy:
    `sampler_logprobs`) is subtracted from the reward first: per token for gae and
    REINFORCE++'s token form, summed per sequence for the outcome estimators. Either way its
    gradient is the score function of KL(pi || ref)."""
    kl_tokens = None
    if algo.kl_coef > 0 and algo.kl_placement == "reward":
        if ref_logprobs is None:
            raise ValueError("kl_placement='reward' with kl_coef > 0 needs ref_logprobs")
        kl_tokens = sequence_kl(
            algo.kl_estimator, batch.sampler_logprobs, ref_logprobs, batch.completion_mask
        )
    estimator = lookup(ESTIMATORS, algo.advantage, "advantage estimator")
    return estimator(batch, algo, kl_tokens, old_values, batch_total)


def _grid(batch: Batch, rewards: Tensor) -> tuple[Tensor, Tensor]:
    """Per-row values [N] -> ([B, G] by group and member, valid [B, G]: which cells are rows)."""
    grid = torch.zeros(batch.num_groups, batch.group_size, dtype=rewards.dtype)
    valid = torch.zeros(batch.num_groups, batch.group_size, dtype=torch.bool)
    grid[batch.group_index, batch.member_index] = rewards
    valid[batch.group_index, batch.member_index] = True
    return grid, valid


def _outcome(
    batch: Batch,
    algo: AlgorithmConfig,
    kl_tokens: Tensor | None,
    old_values: Tensor | None,
    batch_total: BatchTotal,
) -> Advantages:
    """One advantage per completion from its group's rewards (less its summed KL), on every
    completion token."""
    rewards = batch.rewards
    if kl_tokens is not None:
        rewards = rewards - algo.kl_coef * kl_tokens.sum(dim=1)
    grid, valid = _grid(batch, rewards)
    options = AdvantageOptions(
        eps=algo.advantage_eps, group_baseline=algo.group_baseline, batch_total=batch_total
    )
    per_group = outcome_advantages(algo.advantage, grid, valid, options)  # [B, G]
    advantages = per_group[batch.group_index, batch.member_index]  # [N]
    return Advantages(advantages.unsqueeze(1) * batch.completion_mask, None)


def _reinforce_pp(
    batch: Batch,
    algo: AlgorithmConfig,
    kl_tokens: Tensor | None,
    old_values: Tensor | None,
    batch_total: BatchTotal,
) -> Advantages:
    """REINFORCE++ (arXiv:2501.03262, sec. 3). The 'sequence' form is an outcome estimator;
    the paper's 'token' form puts r(x, y) on the last policy token (less the group mean with
    `group_baseline`: REINFORCE++-baseline), minus kl_coef * KL on every token, sums it to
    go, then whitens over all loss tokens of the batch."""
    if algo.reinforce_pp_form != "token":
        return _outcome(batch, algo, kl_tokens, old_values, batch_total)
    outcome = batch.rewards
    if algo.group_baseline:
        grid, valid = _grid(batch, batch.rewards)
        outcome = group_centered(grid, valid)[batch.group_index, batch.member_index]
    token_rewards = outcome_token_rewards(outcome, batch.completion_mask)
    if kl_tokens is not None:
        token_rewards = token_rewards - algo.kl_coef * kl_tokens
    returns = reward_to_go(token_rewards, batch.completion_mask, gamma=algo.gamma)
    return Advantages(whiten(returns, batch.loss_mask, batch_total=batch_total), None)


def _gae(
    batch: Batch,
    algo: AlgorithmConfig,
    kl_tokens: Tensor | None,
    old_values: Tensor | None,
    batch_total: BatchTotal,
) -> Advantages:
    """The critic branch: the reward on each row's last policy token, less the per-token KL,
    through GAE against the value head's estimates before the update."""
    if old_values is None:
        raise ValueError("advantage='gae' needs old_values (the value head's estimates)")
    token_rewards = outcome_token_rewards(batch.rewards, batch.completion_mask)
    if kl_tokens is not None:
        token_rewards = token_rewards - algo.kl_coef * kl_tokens
    advantages, returns = gae_advantages(
        token_rewards,
        old_values,
        batch.completion_mask,
        gamma=algo.gamma,
        lam=algo.gae_lambda,
    )
    if algo.whiten_advantages:
        advantages = whiten(advantages, batch.loss_mask, batch_total=batch_total)
    return Advantages(advantages, returns)


Estimator = Callable[
    ["Batch", "AlgorithmConfig", "Tensor | None", "Tensor | None", BatchTotal], Advantages
]

# Every `algorithm.advantage`: the outcome estimators of advantages.py, REINFORCE++ in
# either form, and gae (the critic).
ESTIMATORS: dict[str, Estimator] = {
    "grpo": _outcome,
    "dr_grpo": _outcome,
    "rloo": _outcome,
    "reinforce_pp": _reinforce_pp,
    "gae": _gae,
}
