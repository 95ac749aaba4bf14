"""The loss of one micro-batch: PPO's clipped policy term, the entropy bonus, the KL to the
reference (as a loss term) and the value loss, summed with their coefficients, and the
numbers to log. A pure function of tensors: the learner does the forward passes, the
backward and the optimiser step.

    L = L_clip - entropy_coef * S + kl_coef * KL (kl_placement 'loss') + value_coef * L_V

(PPO, arXiv:1707.06347, eq. 9, with GRPO's KL term, arXiv:2402.03300, eq. 3.) Each term is
aggregated with the whole batch's denominators (`Normalizer`), so the micro-batches of one
optimiser step add up to the full batch's loss.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from torch import Tensor

from rl_client.algorithms.kl import kl_estimate
from rl_client.algorithms.losses import (
    LossOutput,
    Normalizer,
    aggregate,
    masked_mean,
    ppo_clip_loss,
    truncated_importance_weights,
    value_loss,
)

if TYPE_CHECKING:  # read, never imported at run time: algorithms/ depends on torch only
    from rl_client.config import AlgorithmConfig


@dataclass(frozen=True)
class LossInputs:
    """One micro-batch of n rows; every tensor [n, T], on one device."""

    logprobs: Tensor  # under the policy being updated (with grad)
    old_logprobs: Tensor  # the policy the ratio is taken against (behaviour or proximal)
    advantages: Tensor
    mask: Tensor  # 1 on the tokens that train (`loss_mask`)
    entropy: Tensor  # of the full next-token distribution (with grad when it is a bonus)
    # The sampler's logprobs when `old_logprobs` are the learner's own (proximal): the
    # truncated importance weights (`tis_cap`) correct for the sampler. None: no correction.
    sampler_logprobs: Tensor | None = None
    ref_logprobs: Tensor | None = None  # the frozen reference's (kl_coef > 0)
    values: Tensor | None = None  # the value head's, with grad (gae)
    old_values: Tensor | None = None  # the value head's before the update (gae)
    returns: Tensor | None = None  # the value targets (gae)


def total_loss(
    inputs: LossInputs, knobs: AlgorithmConfig, norm: Normalizer, *, diagnostics: bool
) -> LossOutput:
    """The micro-batch's share of the step's loss, and its metrics: the loss terms
    (`loss`, `policy_loss`, `value_loss`: this micro-batch's share, to be summed) and token
    means over `mask` (`clip_fraction`, `approx_kl`, ...). With `diagnostics` (the first
    pass, before the weights move) also `entropy`, `kl` and the importance weights' `tis_*`."""
    mask = inputs.mask
    metrics: dict[str, float] = {}
    if diagnostics:
        metrics["entropy"] = masked_mean(inputs.entropy.detach(), mask)
    tis = None
    if inputs.sampler_logprobs is not None and knobs.tis_cap is not None:
        tis = truncated_importance_weights(
            inputs.old_logprobs, inputs.sampler_logprobs, knobs.tis_cap
        )
        if diagnostics:
            metrics["tis_weight_mean"] = masked_mean(tis, mask)
            metrics["tis_truncated_fraction"] = masked_mean((tis >= knobs.tis_cap).float(), mask)
    policy = ppo_clip_loss(
        inputs.logprobs,
        inputs.old_logprobs,
        inputs.advantages,
        mask,
        clip_low=knobs.clip_low,
        clip_high=knobs.clip_high,
        dual_clip=knobs.dual_clip,
        aggregation=knobs.loss_aggregation,
        norm=norm,
        token_weights=tis,
    )
    loss = policy.loss
    metrics["policy_loss"] = policy.loss.item()
    if knobs.entropy_coef > 0:  # PPO's c2 * S (arXiv:1707.06347, eq. 9)
        entropy = aggregate(knobs.loss_aggregation, inputs.entropy, mask, norm)
        loss = loss - knobs.entropy_coef * entropy
    metrics.update(policy.metrics)
    if inputs.ref_logprobs is not None:
        kl = kl_estimate(knobs.kl_estimator, inputs.logprobs, inputs.ref_logprobs)
        if diagnostics:
            metrics["kl"] = masked_mean(kl.detach(), mask)
        if knobs.kl_placement == "loss":
            loss = loss + knobs.kl_coef * aggregate(knobs.loss_aggregation, kl, mask, norm)
    if inputs.values is not None:
        if inputs.old_values is None or inputs.returns is None:
            raise ValueError("the value loss needs old_values and returns")
        values = value_loss(
            inputs.values,
            inputs.old_values,
            inputs.returns,
            mask,
            clip=knobs.value_clip,
            aggregation=knobs.loss_aggregation,
            norm=norm,
        )
        loss = loss + knobs.value_coef * values.loss
        metrics["value_loss"] = values.loss.item()
        metrics.update(values.metrics)
    metrics["loss"] = loss.item()
    return LossOutput(loss, metrics)
