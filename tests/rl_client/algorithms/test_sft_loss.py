"""rft's SFT loss against hand-worked values."""

from __future__ import annotations

import pytest
import torch

from rl_client.algorithms.losses import Normalizer
from rl_client.algorithms.sft import sft_loss

NAN = float("nan")


def test_token_mean_of_the_negative_logprobs_over_the_mask() -> None:
    logprobs = torch.tensor([[-1.0, -2.0, NAN], [-3.0, -7.0, NAN]])
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    norm = Normalizer.of(mask, 1.0)
    # (1 + 2 + 3) / 3 tokens = 2; the -7 and the NaNs are off the mask
    assert sft_loss(logprobs, mask, norm).loss.item() == pytest.approx(2.0)
    # row by row with the batch's token count: 3/3 + 3/3 = 2, as one batch
    rows = [sft_loss(logprobs[i : i + 1], mask[i : i + 1], norm).loss.item() for i in range(2)]
    assert rows == pytest.approx([1.0, 1.0])
