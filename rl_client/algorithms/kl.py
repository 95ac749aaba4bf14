"""KL divergence to a frozen reference policy, estimated per token from sampled tokens.

With log r = ref_logprobs - logprobs on tokens sampled from the policy (Schulman, "Approximating
KL Divergence", 2020):
    k1 = -log r                 unbiased, can be negative, high variance
    k2 = (log r)^2 / 2          biased, low variance; its gradient is that of the true KL
    k3 = (r - 1) - log r        unbiased and never negative (GRPO, arXiv:2402.03300, eq. 4)

    logprobs, ref_logprobs: [N, T] -> [N, T]
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from rl_client.algorithms.dispatch import lookup

# exp(20) ~ 5e8: enough headroom for real divergence without overflowing to inf in k3.
_MAX_LOG_RATIO = 20.0


def kl_k1(logprobs: Tensor, ref_logprobs: Tensor) -> Tensor:
    return logprobs - ref_logprobs


def kl_k2(logprobs: Tensor, ref_logprobs: Tensor) -> Tensor:
    return 0.5 * (logprobs - ref_logprobs) ** 2


def kl_k3(logprobs: Tensor, ref_logprobs: Tensor) -> Tensor:
    log_ratio = torch.clamp(ref_logprobs - logprobs, -_MAX_LOG_RATIO, _MAX_LOG_RATIO)
    return torch.expm1(log_ratio) - log_ratio


KL_ESTIMATORS: dict[str, Callable[[Tensor, Tensor], Tensor]] = {
    "k1": kl_k1,
    "k2": kl_k2,
    "k3": kl_k3,
}


def kl_estimate(estimator: str, logprobs: Tensor, ref_logprobs: Tensor) -> Tensor:
    """Per-token KL(policy || reference) by the named estimator. [N, T] -> [N, T]."""
    return lookup(KL_ESTIMATORS, estimator, "KL estimator")(logprobs, ref_logprobs)
