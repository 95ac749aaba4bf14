"""Policy and value losses, and the loss aggregation modes: pure functions over tensors.

Shapes: N completions, T completion tokens (right-padded); `mask` [N, T] is 1 on tokens that
count. Aggregation takes its denominators from a `Normalizer` built once for the whole batch,
so the micro-batches of one optimiser step add up exactly to the full batch's loss.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor

from rl_client.algorithms.advantages import BatchTotal, local_total
from rl_client.algorithms.dispatch import lookup


@dataclass(frozen=True)
class LossOutput:
    """A scalar loss to backpropagate and detached diagnostics (token means over `mask`)."""

    loss: Tensor
    metrics: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Normalizer:
    """Denominators of the whole batch (not of one micro-batch)."""

    num_tokens: float  # loss tokens in the batch
    num_seqs: float  # sequences with at least one loss token
    seq_len_norm: float  # Dr. GRPO's constant: the response budget in policy tokens

    @classmethod
    def of(
        cls, mask: Tensor, seq_len_norm: float, batch_total: BatchTotal = local_total
    ) -> Normalizer:
        """`batch_total`: the counts of the whole batch when its rows are spread over
        processes, so each process's loss is its share of the global batch's."""
        return cls(
            num_tokens=max(float(batch_total(mask.sum())), 1.0),
            num_seqs=max(float(batch_total((mask.sum(dim=1) > 0).sum())), 1.0),
            seq_len_norm=seq_len_norm,
        )


def token_mean(values: Tensor, mask: Tensor, norm: Normalizer) -> Tensor:
    """Every token weighs the same (DAPO, arXiv:2503.14476, eq. 8): long answers count more."""
    return (values * mask).sum() / norm.num_tokens


def seq_mean_token_mean(values: Tensor, mask: Tensor, norm: Normalizer) -> Tensor:
    """Mean over each sequence's tokens, then over sequences (GRPO, arXiv:2402.03300, eq. 3).
    Dr. GRPO (sec. 3.1) shows the 1/|o_i| favours long wrong answers."""
    lengths = mask.sum(dim=1).clamp(min=1)
    return ((values * mask).sum(dim=1) / lengths).sum() / norm.num_seqs


def seq_mean_token_sum_norm(values: Tensor, mask: Tensor, norm: Normalizer) -> Tensor:
    """Sum over each sequence's tokens divided by a constant, then mean over sequences
    (Dr. GRPO, arXiv:2503.20783, eq. 4): no length bias."""
    return ((values * mask).sum(dim=1) / norm.seq_len_norm).sum() / norm.num_seqs


def seq_mean_token_sum(values: Tensor, mask: Tensor, norm: Normalizer) -> Tensor:
    """Sum over each sequence's tokens, mean over sequences: the sequence log-probability of
    REINFORCE / RLOO (arXiv:2402.14740), which treat the whole completion as one
    action. seq_mean_token_sum_norm is this divided by a constant."""
    return (values * mask).sum() / norm.num_seqs


AGGREGATIONS: dict[str, Callable[[Tensor, Tensor, Normalizer], Tensor]] = {
    "token_mean": token_mean,
    "seq_mean_token_mean": seq_mean_token_mean,
    "seq_mean_token_sum": seq_mean_token_sum,
    "seq_mean_token_sum_norm": seq_mean_token_sum_norm,
}


def aggregate(mode: str, values: Tensor, mask: Tensor, norm: Normalizer) -> Tensor:
    """[N, T] per-token losses -> scalar, by the named mode."""
    return lookup(AGGREGATIONS, mode, "loss aggregation")(values, mask.to(values.dtype), norm)


def masked_mean(values: Tensor, mask: Tensor) -> float:
    """Mean of `values` over the entries where `mask` is 1 (0 for an empty mask), as a float."""
    return float((values * mask).sum() / mask.sum().clamp(min=1))


# exp(20) ~ 5e8: a ratio past it is a numerical accident (a token the policy now calls
# impossible), not a signal; clamping keeps -A * ratio finite (verl clamps the same way).
MAX_LOG_RATIO = 20.0


def ppo_clip_loss(
    logprobs: Tensor,
    behavior_logprobs: Tensor,
    advantages: Tensor,
    mask: Tensor,
    *,
    clip_low: float,
    clip_high: float,
    dual_clip: float | None,
    aggregation: str,
    norm: Normalizer,
    token_weights: Tensor | None = None,
) -> LossOutput:
    """PPO's clipped surrogate (arXiv:1707.06347, eq. 7) as a loss to minimise.

    ratio = exp(logprobs - behavior_logprobs), clipped to [1 - clip_low, 1 + clip_high]
    (DAPO's clip-higher, arXiv:2503.14476, eq. 10, uses 0.2 / 0.28). With `dual_clip` = c > 1,
    a negative advantage's loss is capped at -A * c (Dual-clip PPO, arXiv:1912.09729), so one
    token whose ratio exploded cannot dominate the step.

    `token_weights` [N, T] (detached) multiply each token's loss: the truncated importance
    weights of `truncated_importance_weights` when the samples came from another policy.

    The log-ratio is clamped to +-MAX_LOG_RATIO before exp: an unbounded ratio would make the
    loss of a negative advantage inf (its gradient is 0 where the clamp bites).

    logprobs (with grad), behavior_logprobs, mask: [N, T]; advantages: [N, T] or [N].
    """
    if advantages.dim() == 1:
        advantages = advantages.unsqueeze(1)
    mask = mask.to(logprobs.dtype)
    # Off the mask an advantage plays no part, whatever it holds: NaN there would survive the
    # aggregation's `* mask` (NaN * 0 is NaN) and reach the loss and every gradient.
    advantages = torch.where(mask > 0, advantages, torch.zeros_like(advantages))
    log_ratio = torch.clamp(logprobs - behavior_logprobs, -MAX_LOG_RATIO, MAX_LOG_RATIO)
    ratio = torch.exp(log_ratio)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - clip_low, 1.0 + clip_high)
    losses = torch.maximum(unclipped, clipped)
    metrics = {"clip_fraction": masked_mean((clipped > unclipped).to(mask.dtype), mask)}
    if dual_clip is not None:
        capped = torch.minimum(losses, -advantages * dual_clip)
        dual_active = (advantages < 0) & (capped < losses)
        losses = torch.where(advantages < 0, capped, losses)
        metrics["dual_clip_fraction"] = masked_mean(dual_active.to(mask.dtype), mask)
    if token_weights is not None:
        losses = losses * token_weights
    with torch.no_grad():
        metrics["approx_kl"] = masked_mean(torch.expm1(log_ratio) - log_ratio, mask)
    return LossOutput(aggregate(aggregation, losses, mask, norm), metrics)


def truncated_importance_weights(
    proximal_logprobs: Tensor, behavior_logprobs: Tensor, cap: float
) -> Tensor:
    """[N, T] -> [N, T]: min(pi_prox / pi_behav, cap) per token, no gradient.

    Decoupled PPO (Hilton et al., arXiv:2110.00641; AReaL, arXiv:2505.24298, eq. 5) clips the
    ratio against the proximal policy (the learner before the update) and corrects for the
    sampling policy (a stale async engine, or a sampler whose numerics differ) with this
    weight; truncating it at `cap` bounds the variance (truncated IS, as in IMPALA's V-trace,
    arXiv:1802.01561)."""
    return torch.exp(proximal_logprobs - behavior_logprobs).clamp(max=cap).detach()


def value_loss(
    values: Tensor,
    old_values: Tensor,
    returns: Tensor,
    mask: Tensor,
    *,
    clip: float | None,
    aggregation: str,
    norm: Normalizer,
) -> LossOutput:
    """0.5 * (V - R)^2, or with `clip` PPO's clipped value loss:
    0.5 * max((V - R)^2, (old_V + clamp(V - old_V, -clip, clip) - R)^2). All [N, T]."""
    mask = mask.to(values.dtype)
    squared = (values - returns) ** 2
    metrics: dict[str, float] = {}
    if clip is not None:
        clipped_values = old_values + torch.clamp(values - old_values, -clip, clip)
        clipped_squared = (clipped_values - returns) ** 2
        # Only where the clamp bit: inside the range old + (V - old) can round away from V
        # and make the "clipped" term larger by an ulp.
        active = ((values - old_values).abs() > clip) & (clipped_squared > squared)
        metrics["value_clip_fraction"] = masked_mean(active.to(mask.dtype), mask)
        squared = torch.maximum(squared, clipped_squared)
    return LossOutput(0.5 * aggregate(aggregation, squared, mask, norm), metrics)
