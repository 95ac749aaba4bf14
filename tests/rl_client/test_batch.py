"""The batch: only verified completions become rows, and each row keeps its place in its
group's statistics (an empty completion included)."""

from __future__ import annotations

import torch
from rl_helpers import GROUPS, scored_group

from rl_client.algorithms.estimators import compute_advantages
from rl_client.batch import build_batch
from rl_client.config import AlgorithmConfig


def test_batch_keeps_masked_items_out_and_advantages_use_valid_members_only() -> None:
    batch = build_batch(GROUPS, pad_token_id=0, mask_truncated=False)
    assert batch.size == 7  # the TIMEOUT item is not a row
    assert batch.prompt_width == 3 and batch.completion_mask.shape == (7, 4)
    advantages, returns = compute_advantages(batch, AlgorithmConfig(advantage="dr_grpo"))
    assert returns is None
    # group 0 valid rewards 1, 0, 1: mean 2/3 -> 1/3, -2/3, 1/3 (the masked one is absent)
    # group 1: 0, 0, 1, 0: mean 1/4 -> -1/4, -1/4, 3/4, -1/4
    expected = [1 / 3, -2 / 3, 1 / 3, -0.25, -0.25, 0.75, -0.25]
    torch.testing.assert_close(advantages[:, 0], torch.tensor(expected))
    # advantages sit on completion tokens only
    assert torch.all((advantages != 0) <= batch.completion_mask.bool())


def test_an_ok_completion_with_no_tokens_stays_in_its_group_statistics() -> None:
    # Member 1 of group 1 answered nothing (0 tokens) and was scored 0, OK. Its reward counts:
    # rewards 0, 0, 1 -> mean 1/3 -> -1/3, -1/3, 2/3 (dropped, the mean of 0, 1 would be .5).
    groups = [scored_group([8, 9], [[20, 2], [], [23, 2]], [0.0, 0.0, 1.0])]
    batch = build_batch(groups, pad_token_id=0, mask_truncated=False)
    assert batch.size == 3 and batch.completion_mask[1].sum() == 0
    advantages, _ = compute_advantages(batch, AlgorithmConfig(advantage="dr_grpo"))
    torch.testing.assert_close(advantages[[0, 2], 0], torch.tensor([-1 / 3, 2 / 3]))
    assert advantages[1].abs().sum() == 0  # no token to carry it
    # A batch of empty completions only still builds (T = 1, nothing in the loss).
    empty = build_batch(
        [scored_group([8], [[], []], [0.0, 1.0])], pad_token_id=0, mask_truncated=False
    )
    assert empty.completion_mask.shape == (2, 1) and empty.completion_mask.sum() == 0
