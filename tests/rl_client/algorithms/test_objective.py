"""`total_loss`: the policy, entropy, KL and value terms summed with their coefficients, by
hand, with the numbers it logs."""

from __future__ import annotations

import pytest
import torch

from rl_client.algorithms.losses import Normalizer
from rl_client.algorithms.objective import LossInputs, total_loss
from rl_client.config import AlgorithmConfig

MASK = torch.tensor([[1.0, 1.0]])
NORM = Normalizer.of(MASK, seq_len_norm=4.0)  # token_mean: 2 tokens

KNOBS = AlgorithmConfig(
    loss_aggregation="token_mean",
    clip_low=0.2,
    clip_high=0.2,
    entropy_coef=0.1,
    kl_coef=0.2,
    kl_estimator="k2",
    kl_placement="loss",
    value_coef=0.5,
    value_clip=0.2,
    tis_cap=2.0,
)


def _inputs(**changes: object) -> LossInputs:
    fields: dict[str, object] = {
        "logprobs": torch.tensor([[-1.0, -1.0]], requires_grad=True),
        "old_logprobs": torch.tensor([[-1.0, -1.0]]),  # ratio 1: nothing clipped
        "advantages": torch.tensor([[2.0, -1.0]]),
        "mask": MASK,
        "entropy": torch.tensor([[0.5, 1.5]]),
        "ref_logprobs": torch.tensor([[-1.5, -0.5]]),
        "values": torch.tensor([[0.5, 1.0]]),
        "old_values": torch.tensor([[0.5, 0.0]]),
        "returns": torch.tensor([[1.0, 1.0]]),
    }
    fields.update(changes)
    return LossInputs(**fields)  # type: ignore[arg-type]


def test_every_term_by_hand() -> None:
    inputs = _inputs()
    out = total_loss(inputs, KNOBS, NORM, diagnostics=True)
    # policy: ratio 1, -A per token = -2, 1; token mean -0.5
    # entropy bonus: token mean of .5, 1.5 = 1; -0.1 * 1 = -0.1
    # k2 = (logp - ref)^2 / 2 = .125, .125; token mean .125; +0.2 * .125 = +0.025
    # value: (V - R)^2 = .25, 0; clipped V = .5 + 0 = .5, 0 + .2 = .2 -> (.5-1)^2, (.2-1)^2
    #   = .25, .64; max .25, .64; 0.5 * token mean = 0.5 * .445 = .2225; +0.5 * .2225
    # total: -0.5 - 0.1 + 0.025 + 0.11125 = -0.46375
    assert out.loss.item() == pytest.approx(-0.46375)
    assert out.metrics["policy_loss"] == pytest.approx(-0.5)
    assert out.metrics["value_loss"] == pytest.approx(0.2225)
    assert out.metrics["loss"] == pytest.approx(-0.46375)
    assert out.metrics["entropy"] == pytest.approx(1.0)
    assert out.metrics["kl"] == pytest.approx(0.125)
    assert out.metrics["clip_fraction"] == 0.0
    assert out.metrics["approx_kl"] == pytest.approx(0.0)
    assert out.metrics["value_clip_fraction"] == pytest.approx(0.5)  # token 1 only
    assert "tis_weight_mean" not in out.metrics  # no sampler logprobs: no correction
    # d/d logprobs: the policy term -A * ratio / 2 = -1, .5; k2's 0.2 * (logp - ref) / 2
    # = .05, -.05 -> -0.95, 0.45
    out.loss.backward()
    assert inputs.logprobs.grad is not None
    torch.testing.assert_close(inputs.logprobs.grad, torch.tensor([[-0.95, 0.45]]))


def test_after_the_first_pass_the_diagnostics_are_absent_not_zero() -> None:
    out = total_loss(_inputs(), KNOBS, NORM, diagnostics=False)
    assert "entropy" not in out.metrics and "kl" not in out.metrics
    assert out.loss.item() == pytest.approx(-0.46375)  # the loss is the same


def test_kl_in_the_reward_is_logged_but_not_in_the_loss() -> None:
    knobs = KNOBS.model_copy(update={"kl_placement": "reward", "kl_estimator": "k1"})
    out = total_loss(_inputs(), knobs, NORM, diagnostics=True)
    # k1 = logp - ref = .5, -.5: mean 0. Loss: -0.5 - 0.1 + 0.11125 = -0.48875
    assert out.metrics["kl"] == pytest.approx(0.0)
    assert out.loss.item() == pytest.approx(-0.48875)


def test_without_reference_or_critic_only_the_policy_and_entropy_terms() -> None:
    inputs = _inputs(ref_logprobs=None, values=None, old_values=None, returns=None)
    out = total_loss(inputs, KNOBS, NORM, diagnostics=True)
    assert out.loss.item() == pytest.approx(-0.6)  # -0.5 - 0.1
    assert "kl" not in out.metrics and "value_loss" not in out.metrics


def test_truncated_importance_weights_against_the_sampler() -> None:
    # old (proximal) -1, -1 vs sampler -1, -2: weights exp(0) = 1, exp(1) = 2.718 -> capped at
    # 2. Policy losses -2 * 1, 1 * 2 -> token mean 0.
    inputs = _inputs(
        sampler_logprobs=torch.tensor([[-1.0, -2.0]]),
        ref_logprobs=None,
        values=None,
        old_values=None,
        returns=None,
    )
    knobs = KNOBS.model_copy(update={"entropy_coef": 0.0})
    out = total_loss(inputs, knobs, NORM, diagnostics=True)
    assert out.metrics["policy_loss"] == pytest.approx(0.0)
    assert out.metrics["tis_weight_mean"] == pytest.approx(1.5)
    assert out.metrics["tis_truncated_fraction"] == pytest.approx(0.5)


def test_a_value_estimate_without_its_targets_names_them() -> None:
    with pytest.raises(ValueError, match="old_values and returns"):
        total_loss(_inputs(returns=None), KNOBS, NORM, diagnostics=True)
