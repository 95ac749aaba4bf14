"""KL divergence to a frozen reference policy, estimated per token from sampled tokens, and
where each estimator may go.

With log r = ref_logprobs - logprobs on tokens sampled from the policy pi (Schulman,
"Approximating KL Divergence", 2020):
    k1 = -log r                 unbiased value of KL(pi || ref), can be negative
    k2 = (log r)^2 / 2          biased value, low variance
    k3 = (r - 1) - log r        unbiased value, never negative (GRPO, arXiv:2402.03300, eq. 4)
    k3_k2grad                   k3's value with k2's gradient (straight through)

    logprobs, ref_logprobs: [N, T] -> [N, T]

What matters for training is the *gradient* each placement produces, with
g(x) = grad log pi(x) and E over x ~ pi:
- in the reward (a detached penalty, so its gradient is the score function E[k g]):
  k1 gives E[log(pi/ref) g] = grad KL(pi || ref), exactly. k2 and k3 give other vectors,
  which can point uphill in KL.
- as a loss (differentiated through logprobs): k1 gives E[g] = 0 (it does nothing);
  k2 gives E[log(pi/ref) g] = grad KL(pi || ref), exactly; k3 gives E[(1 - ref/pi) g] =
  grad KL(ref || pi), the reverse KL's gradient, which is what DeepSeekMath's GRPO optimises
  (eq. 4); k3_k2grad logs k3's value and follows KL(pi || ref).
Over sequences, k1 in the reward (summed per sequence, or per token summed to go) is the
gradient of the sequence KL; a per-token loss is the gradient of each position's KL with the
prefix held fixed, which leaves out how a token changes the KL of later positions (tested by
enumeration in tests/rl_client/algorithms/test_reference_kl.py).
`placement_error` refuses the combinations that do not optimise a KL.
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


def kl_k3_k2grad(logprobs: Tensor, ref_logprobs: Tensor) -> Tensor:
    """k3's value (unbiased, non-negative) carrying k2's gradient (that of KL(pi || ref))."""
    k2 = kl_k2(logprobs, ref_logprobs)
    return kl_k3(logprobs, ref_logprobs).detach() + k2 - k2.detach()


KL_ESTIMATORS: dict[str, Callable[[Tensor, Tensor], Tensor]] = {
    "k1": kl_k1,
    "k2": kl_k2,
    "k3": kl_k3,
    "k3_k2grad": kl_k3_k2grad,
}

# Why an estimator cannot go in a placement (see the module docstring); absent: it can.
_REFUSED: dict[tuple[str, str], str] = {
    ("k1", "loss"): "k1 as a loss has zero expected gradient (E_pi[grad log pi] = 0), so it "
    "does not pull the policy toward the reference; use k2 or k3 as the loss, or k1 in the "
    "reward",
    ("k2", "reward"): "only k1's score-function gradient E[k1 grad log pi] is the KL gradient; "
    "k2 in the reward gives a biased gradient that can increase the KL; use k1 in the reward, "
    "or k2 as the loss",
    ("k3", "reward"): "only k1's score-function gradient E[k1 grad log pi] is the KL gradient; "
    "k3 in the reward gives a biased gradient that can increase the KL; use k1 in the reward, "
    "or k3 as the loss",
    ("k3_k2grad", "reward"): "k3_k2grad only differs from k3 in its gradient, which a detached "
    "reward penalty never uses; use k1 in the reward, or k3_k2grad as the loss",
}


def placement_error(estimator: str, placement: str) -> str | None:
    """Why `estimator` may not go in `placement` ('loss' or 'reward'), or None when it may."""
    return _REFUSED.get((estimator, placement))


def kl_estimate(estimator: str, logprobs: Tensor, ref_logprobs: Tensor) -> Tensor:
    """Per-token KL(policy || reference) by the named estimator. [N, T] -> [N, T]."""
    return lookup(KL_ESTIMATORS, estimator, "KL estimator")(logprobs, ref_logprobs)
