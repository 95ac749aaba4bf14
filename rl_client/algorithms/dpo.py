"""Direct preference losses over (chosen, rejected) pairs: pure functions over tensors.

Every input is a *sequence* log-probability [P] (the sum over a completion's policy tokens,
`sequence_logprobs`) of P pairs, under the policy (with grad) and under the reference (no
grad). With the implicit reward r(y) = beta * (log pi(y) - log ref(y)) and

    h = (log pi(y_w) - log ref(y_w)) - (log pi(y_l) - log ref(y_l))

the variants are
    sigmoid   -log sigmoid(beta * h)        DPO (Rafailov et al. 2023, arXiv:2305.18290, eq. 7)
    ipo       (h - 1 / (2 * beta))^2        IPO (Azar et al. 2023, arXiv:2310.12036, eq. 17,
                                            with tau = beta)
IPO regresses h to a fixed gap instead of pushing it to infinity, so it does not overfit
deterministic preferences (sec. 4 of the IPO paper). Like the papers (and unlike TRL's IPO,
which averages per token), both use sequence sums.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from rl_client.algorithms.dispatch import lookup
from rl_client.algorithms.losses import LossOutput


def sequence_logprobs(logprobs: Tensor, mask: Tensor) -> Tensor:
    """log pi(y) of each completion: its token logprobs summed over the mask. [N, T] -> [N].
    Off-mask cells never reach the sum, whatever they hold (NaN included)."""
    return torch.where(mask > 0, logprobs, torch.zeros_like(logprobs)).sum(dim=1)


def dpo_sigmoid(h: Tensor, beta: float) -> Tensor:
    """[P] -> [P]: -log sigmoid(beta * h)."""
    return -F.logsigmoid(beta * h)


def ipo(h: Tensor, beta: float) -> Tensor:
    """[P] -> [P]: (h - 1 / (2 beta))^2."""
    return (h - 1.0 / (2.0 * beta)) ** 2


DPO_VARIANTS: dict[str, Callable[[Tensor, float], Tensor]] = {
    "sigmoid": dpo_sigmoid,
    "ipo": ipo,
}


def dpo_loss(
    chosen_logprobs: Tensor,
    rejected_logprobs: Tensor,
    ref_chosen_logprobs: Tensor,
    ref_rejected_logprobs: Tensor,
    *,
    beta: float,
    variant: str = "sigmoid",
    num_pairs: int | None = None,
) -> LossOutput:
    """[P] x 4 -> the mean pair loss of `variant`, and diagnostics over these P pairs.

    `num_pairs`: the pair count of the whole batch when this call sees one micro-batch of it,
    so that the micro-batches of one optimiser step sum to the batch mean (default P).

    Metrics (detached, means over the pairs): `dpo_margin` = beta * h (the gap of implicit
    rewards), `dpo_accuracy` = share with h > 0 (a tie counts as wrong), `dpo_chosen_reward`
    and `dpo_rejected_reward` = beta * log(pi / ref) of each side."""
    chosen = chosen_logprobs - ref_chosen_logprobs
    rejected = rejected_logprobs - ref_rejected_logprobs
    h = chosen - rejected
    losses = lookup(DPO_VARIANTS, variant, "DPO loss variant")(h, beta)
    loss = losses.sum() / (num_pairs if num_pairs is not None else max(h.numel(), 1))
    with torch.no_grad():
        metrics = {
            "dpo_margin": float((beta * h).mean()),
            "dpo_accuracy": float((h > 0).float().mean()),
            "dpo_chosen_reward": float((beta * chosen).mean()),
            "dpo_rejected_reward": float((beta * rejected).mean()),
        }
    return LossOutput(loss, metrics)
