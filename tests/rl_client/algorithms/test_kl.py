"""KL estimators against hand-worked values."""

from __future__ import annotations

import math

import pytest
import torch

from rl_client.algorithms.kl import kl_estimate, placement_error


@pytest.mark.parametrize(
    ("estimator", "expected"),
    [
        ("k1", 1.0),  # logp - ref = -1 - (-2)
        ("k2", 0.5),  # (log r)^2 / 2 with log r = -1
        ("k3", math.exp(-1) - 1 + 1),  # (r - 1) - log r = e^-1 - 1 + 1 = 0.367879
    ],
)
def test_estimators(estimator: str, expected: float) -> None:
    kl = kl_estimate(estimator, torch.tensor([[-1.0]]), torch.tensor([[-2.0]]))
    assert float(kl) == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("estimator", ["k1", "k2", "k3", "k3_k2grad"])
def test_zero_when_policy_equals_reference(estimator: str) -> None:
    logprobs = torch.tensor([[-0.3, -2.0]])
    assert kl_estimate(estimator, logprobs, logprobs.clone()).abs().max() == 0


def test_k3_never_negative_and_finite_for_huge_gaps() -> None:
    generator = torch.Generator().manual_seed(0)
    logprobs = -torch.rand(100, 10, generator=generator) * 50
    ref = -torch.rand(100, 10, generator=generator) * 50
    kl = kl_estimate("k3", logprobs, ref)
    assert kl.min() >= 0
    assert torch.isfinite(kl).all()


def test_unknown_estimator() -> None:
    with pytest.raises(KeyError, match="unknown KL estimator 'k4'; valid: k1, k2, k3, k3_k2grad"):
        kl_estimate("k4", torch.zeros(1, 1), torch.zeros(1, 1))


def test_k3_k2grad_has_k3s_value_and_k2s_gradient() -> None:
    # log pi - log ref = 1 - (-1)... with logp -1, ref -2: k3 = e^-1 - 1 + 1 = .367879;
    # d k2 / d logp = logp - ref = 1 (d k3 / d logp would be 1 - e^-1 = .632121).
    logprobs = torch.tensor([[-1.0]], requires_grad=True)
    kl = kl_estimate("k3_k2grad", logprobs, torch.tensor([[-2.0]]))
    assert float(kl.detach()) == pytest.approx(math.exp(-1), abs=1e-6)
    kl.sum().backward()
    assert float(logprobs.grad) == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("estimator", "placement", "refused"),
    [
        ("k1", "reward", None),
        ("k1", "loss", "zero expected gradient"),
        ("k2", "reward", "biased gradient"),
        ("k2", "loss", None),
        ("k3", "reward", "biased gradient"),
        ("k3", "loss", None),
        ("k3_k2grad", "reward", "never uses"),
        ("k3_k2grad", "loss", None),
    ],
)
def test_placements(estimator: str, placement: str, refused: str | None) -> None:
    reason = placement_error(estimator, placement)
    assert (reason is None) if refused is None else (refused in str(reason))
