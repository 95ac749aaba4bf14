"""The training batch as tensors: the kept groups padded into rows. What the learner
measures on it (`learner.prepare`) and the advantages (`algorithms/estimators.py`) are
records of their own; the batch is never changed after `build_batch`.

Only completions with a verified reward become rows: a masked item (non-OK status) takes no
part in its group's statistics nor in the loss. A verified completion with no tokens is a row
too (its reward counts in its group's statistics; it has no token to train). Rows are prompt
(left-padded to P) followed by completion (right-padded to T):

    input_ids, attention_mask, position_ids: [N, P + T]
    completion_mask, loss_mask, sampler_logprobs: [N, T]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from rl_client.rollout import Group


@dataclass(frozen=True)
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


def filler_batch(rows: int = 1) -> Batch:
    """`rows` rows of two tokens (id 0) that train nothing: every mask that counts is 0.
    rows=0 is the batch of a process that holds no group this step (the others do, so it
    still joins their collectives); rows=1 is the input of a filler micro-batch. Attention
    is on everywhere: a row that attends to nothing gives NaN, and NaN x 0 is still NaN."""
    return Batch(
        input_ids=torch.zeros((rows, 2), dtype=torch.long),
        attention_mask=torch.ones((rows, 2), dtype=torch.long),
        position_ids=torch.arange(2).expand(rows, 2).clone(),
        prompt_width=1,
        completion_mask=torch.zeros((rows, 1)),
        loss_mask=torch.zeros((rows, 1)),
        sampler_logprobs=torch.zeros((rows, 1)),
        rewards=torch.zeros(rows),
        group_index=torch.zeros(rows, dtype=torch.long),
        member_index=torch.zeros(rows, dtype=torch.long),
        truncated=torch.zeros(rows, dtype=torch.bool),
        num_groups=rows,
        group_size=1,
    )
