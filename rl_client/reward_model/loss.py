"""The Bradley-Terry preference loss (Bradley & Terry 1952; as a reward-model objective in
Stiennon et al. 2020, arXiv:2009.01325, and Ouyang et al. 2022, arXiv:2203.02155):
P(chosen > rejected) = sigmoid(r_chosen - r_rejected), and the loss is its negative log."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class LossOutput:
    loss: torch.Tensor  # scalar, differentiable
    metrics: dict[str, float]  # accuracy: share with r_chosen > r_rejected; margin: mean gap


def bradley_terry_loss(chosen: torch.Tensor, rejected: torch.Tensor) -> LossOutput:
    """[B], [B] -> mean of -log sigmoid(r_chosen - r_rejected). A tie counts as wrong."""
    margin = chosen - rejected
    loss = -F.logsigmoid(margin).mean()
    return LossOutput(
        loss,
        {
            "loss": loss.item(),
            "accuracy": (margin > 0).float().mean().item(),
            "margin": margin.mean().item(),
        },
    )
