"""The supervised (maximum-likelihood) loss on given completions: what rejection-sampling
fine-tuning trains its winners with."""

from __future__ import annotations

import torch
from torch import Tensor

from rl_client.algorithms.losses import LossOutput, Normalizer, aggregate


def sft_loss(logprobs: Tensor, mask: Tensor, norm: Normalizer) -> LossOutput:
    """[N, T] -> the token mean of -log pi over the mask, with the whole batch's token count
    in `norm` (so micro-batches add up): the cross-entropy `rl-client sft` minimises, over
    the completion tokens only."""
    # Off the mask a cell plays no part, whatever it holds (NaN * 0 is NaN).
    nll = torch.where(mask > 0, -logprobs, torch.zeros_like(logprobs))
    return LossOutput(aggregate("token_mean", nll, mask, norm))
