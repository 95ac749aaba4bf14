"""The training batch as tensors, and the advantages over it.

Only completions with a verified reward become rows: a masked item (non-OK status) takes no
part in its group's statistics nor in the loss. A verified completion with no tokens is a row
too (its reward counts in its group's statistics; it has no token to train). Rows are prompt
(left-padded to P) followed by completion (right-padded to T):

    input_ids, attention_mask, position_ids: [N, P + T]
    completion_mask, loss_mask, sampler_logprobs, advantages, ...: [N, T]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from rl_client.algorithms.advantages import (
    AdvantageOptions,
    gae_advantages,
    group_centered,
    outcome_advantages,
    outcome_token_rewards,
    reward_to_go,
    whiten,
)
from rl_client.algorithms.kl import kl_estimate
from rl_client.config import AlgorithmConfig
from rl_client.rollout import Group


@dataclass
class Batch:
    input_ids: Tensor
    attention_mask: Tensor
    position_ids: Tensor
    prompt_width: int  # P
    completion_mask: Tensor  # [N, T] 1 on each completion's tokens the policy sampled
    loss_mask: Tensor  # [N, T] completion_mask, less truncated rows under mask_truncated
    sampler_logprobs: Tensor  # [N, T]
    rewards: Tensor  # [N] verified scores
    group_index: Tensor  # [N] which group (0..B-1)
    member_index: Tensor  # [N] which sample in its group (0..G-1)
    truncated: Tensor  # [N] bool
    num_groups: int
    group_size: int
    ref_logprobs: Tensor | None = None  # [N, T], from the frozen reference
    old_values: Tensor | None = None  # [N, T], the value head before the update (gae)
    advantages: Tensor | None = None  # [N, T]
    returns: Tensor | None = None  # [N, T] (gae)

    @property
    def size(self) -> int:
        return self.input_ids.shape[0]


def build_batch(groups: Sequence[Group], *, pad_token_id: int, mask_truncated: bool) -> Batch:
    rows = [
        (g_index, m_index, group.prompt_ids, completion, result.score)
        for g_index, group in enumerate(groups)
        for m_index, (completion, result) in enumerate(
            zip(group.completions, group.results, strict=True)
        )
        if result.ok
    ]
    if not rows:
        raise ValueError("no verified completions to train on")
    width = max(len(r[2]) for r in rows)
    length = max(1, max(len(r[3].token_ids) for r in rows))  # T >= 1 even if all are empty
    n = len(rows)
    input_ids = torch.full((n, width + length), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((n, width + length), dtype=torch.long)
    sampler_logprobs = torch.zeros((n, length))
    for i, (_, _, prompt, completion, _) in enumerate(rows):
        size = len(completion.token_ids)
        input_ids[i, width - len(prompt) : width] = torch.tensor(prompt)
        input_ids[i, width : width + size] = torch.tensor(completion.token_ids, dtype=torch.long)
        attention_mask[i, width - len(prompt) : width + size] = 1
        sampler_logprobs[i, :size] = torch.tensor(completion.logprobs, dtype=torch.float32)
    completion_mask = attention_mask[:, width:].float()
    for i, (_, _, _, completion, _) in enumerate(rows):
        if completion.loss_mask is not None:  # tool outputs of a multi-turn episode
            mask = torch.tensor(completion.loss_mask, dtype=torch.float32)
            completion_mask[i, : len(completion.token_ids)] = mask
    truncated = torch.tensor([r[3].truncated for r in rows])
    loss_mask = completion_mask * (~truncated).unsqueeze(1) if mask_truncated else completion_mask
    return Batch(
        input_ids=input_ids,
        attention_mask=attention_mask,
        position_ids=(attention_mask.cumsum(dim=1) - 1).clamp(min=0),
        prompt_width=width,
        completion_mask=completion_mask,
        loss_mask=loss_mask,
        sampler_logprobs=sampler_logprobs,
        rewards=torch.tensor([r[4] for r in rows], dtype=torch.float32),
        group_index=torch.tensor([r[0] for r in rows]),
        member_index=torch.tensor([r[1] for r in rows]),
        truncated=truncated,
        num_groups=len(groups),
        group_size=max(len(g.completions) for g in groups),
    )


def sequence_kl(batch: Batch, estimator: str, logprobs: Tensor) -> Tensor:
    """Per-token KL of the sampled completions to the reference, 0 outside them. [N, T]."""
    assert batch.ref_logprobs is not None
    return kl_estimate(estimator, logprobs, batch.ref_logprobs) * batch.completion_mask


def _grid(batch: Batch, rewards: Tensor) -> tuple[Tensor, Tensor]:
    """Per-row values [N] -> ([B, G] by group and member, valid [B, G]: which cells are rows)."""
    grid = torch.zeros(batch.num_groups, batch.group_size, dtype=rewards.dtype)
    valid = torch.zeros(batch.num_groups, batch.group_size, dtype=torch.bool)
    grid[batch.group_index, batch.member_index] = rewards
    valid[batch.group_index, batch.member_index] = True
    return grid, valid


def compute_advantages(batch: Batch, algo: AlgorithmConfig) -> tuple[Tensor, Tensor | None]:
    """(advantages [N, T], returns [N, T] or None). With kl_placement 'reward' the k1 KL to
    the reference (measured at the behaviour policy: `sampler_logprobs`) is subtracted from the
    reward first: per token for gae and REINFORCE++'s token form, summed per sequence for the
    outcome estimators. Either way its gradient is the score function of KL(pi || ref)."""
    kl_in_reward = algo.kl_coef > 0 and algo.kl_placement == "reward"
    kl_tokens = (
        sequence_kl(batch, algo.kl_estimator, batch.sampler_logprobs) if kl_in_reward else None
    )
    if algo.uses_critic:
        return _gae(batch, algo, kl_tokens)
    if algo.advantage == "reinforce_pp" and algo.reinforce_pp_form == "token":
        return _reinforce_pp_tokens(batch, algo, kl_tokens), None
    rewards = batch.rewards
    if kl_tokens is not None:
        rewards = rewards - algo.kl_coef * kl_tokens.sum(dim=1)
    grid, valid = _grid(batch, rewards)
    options = AdvantageOptions(eps=algo.advantage_eps, group_baseline=algo.group_baseline)
    per_group = outcome_advantages(algo.advantage, grid, valid, options)  # [B, G]
    advantages = per_group[batch.group_index, batch.member_index]  # [N]
    return advantages.unsqueeze(1) * batch.completion_mask, None


def _gae(
    batch: Batch, algo: AlgorithmConfig, kl_tokens: Tensor | None
) -> tuple[Tensor, Tensor | None]:
    """The critic branch: the reward on each row's last policy token, less the per-token KL."""
    assert batch.old_values is not None
    token_rewards = outcome_token_rewards(batch.rewards, batch.completion_mask)
    if kl_tokens is not None:
        token_rewards = token_rewards - algo.kl_coef * kl_tokens
    advantages, returns = gae_advantages(
        token_rewards,
        batch.old_values,
        batch.completion_mask,
        gamma=algo.gamma,
        lam=algo.gae_lambda,
    )
    if algo.whiten_advantages:
        advantages = whiten(advantages, batch.loss_mask)
    return advantages, returns


def _reinforce_pp_tokens(batch: Batch, algo: AlgorithmConfig, kl_tokens: Tensor | None) -> Tensor:
    """REINFORCE++ (arXiv:2501.03262, sec. 3): r(x, y) on the last policy token (less the
    group mean with `group_baseline`: REINFORCE++-baseline), minus kl_coef * KL on every
    token, summed to go, then whitened over all loss tokens of the batch."""
    outcome = batch.rewards
    if algo.group_baseline:
        grid, valid = _grid(batch, batch.rewards)
        outcome = group_centered(grid, valid)[batch.group_index, batch.member_index]
    token_rewards = outcome_token_rewards(outcome, batch.completion_mask)
    if kl_tokens is not None:
        token_rewards = token_rewards - algo.kl_coef * kl_tokens
    returns = reward_to_go(token_rewards, batch.completion_mask, gamma=algo.gamma)
    return whiten(returns, batch.loss_mask)
