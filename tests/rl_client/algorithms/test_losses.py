"""Policy loss, value loss and aggregation modes against hand-worked values."""

from __future__ import annotations

import math

import pytest
import torch

from rl_client.algorithms.losses import (
    Normalizer,
    aggregate,
    ppo_clip_loss,
    truncated_importance_weights,
    value_loss,
)


def _one_token_loss(
    advantage: float, ratio: float, **options: float | None
) -> tuple[float, dict[str, float]]:
    logprobs = torch.tensor([[math.log(ratio)]])
    out = ppo_clip_loss(
        logprobs,
        torch.zeros(1, 1),
        torch.tensor([advantage]),
        torch.ones(1, 1),
        clip_low=options.get("clip_low", 0.2),
        clip_high=options.get("clip_high", 0.28),
        dual_clip=options.get("dual_clip"),
        aggregation="token_mean",
        norm=Normalizer.of(torch.ones(1, 1), 1.0),
    )
    return float(out.loss), out.metrics


@pytest.mark.parametrize(
    ("advantage", "ratio", "dual_clip", "loss", "clipped", "dual"),
    [
        # A > 0, ratio 1.6487 > 1 + clip_high: max(-1.6487, -1.28) = -1.28, clipped
        (1.0, math.exp(0.5), None, -1.28, 1.0, None),
        # A > 0, ratio 0.5 < 1: max(-0.5, -0.8) = -0.5, not clipped (a bad move is never clipped)
        (1.0, 0.5, None, -0.5, 0.0, None),
        # A < 0, ratio 0.5 < 1 - clip_low: max(0.5, 0.8) = 0.8, clipped
        (-1.0, 0.5, None, 0.8, 1.0, None),
        # A < 0, ratio 4: max(4, 1.28) = 4; the dual clip caps it at -A * 3 = 3
        (-1.0, 4.0, 3.0, 3.0, 0.0, 1.0),
        # A < 0, ratio 2: max(2, 1.28) = 2 < 3: the dual clip does not bite
        (-1.0, 2.0, 3.0, 2.0, 0.0, 0.0),
        # A = 2, ratio 1: -2
        (2.0, 1.0, None, -2.0, 0.0, None),
    ],
)
def test_ppo_clip_single_token(
    advantage: float,
    ratio: float,
    dual_clip: float | None,
    loss: float,
    clipped: float,
    dual: float | None,
) -> None:
    value, metrics = _one_token_loss(advantage, ratio, dual_clip=dual_clip)
    assert value == pytest.approx(loss, abs=1e-6)
    assert metrics["clip_fraction"] == clipped
    assert metrics.get("dual_clip_fraction") == dual


def test_clip_high_is_separate_from_clip_low() -> None:
    # ratio 1.25 with A > 0: inside 1 + 0.28 (DAPO) -> -1.25; outside 1 + 0.2 -> -1.2
    assert _one_token_loss(1.0, 1.25, clip_high=0.28)[0] == pytest.approx(-1.25)
    assert _one_token_loss(1.0, 1.25, clip_high=0.2)[0] == pytest.approx(-1.2)


def test_gradient_at_ratio_one_is_minus_advantage() -> None:
    logprobs = torch.zeros(1, 2, requires_grad=True)
    out = ppo_clip_loss(
        logprobs,
        torch.zeros(1, 2),
        torch.tensor([3.0]),
        torch.ones(1, 2),
        clip_low=0.2,
        clip_high=0.2,
        dual_clip=None,
        aggregation="token_mean",
        norm=Normalizer.of(torch.ones(1, 2), 2.0),
    )
    out.loss.backward()
    # d/dlogp of -A * exp(logp - old) / 2 tokens at ratio 1 = -3 / 2
    assert logprobs.grad.tolist() == [[-1.5, -1.5]]


VALUES = torch.tensor([[1.0, 2.0, 100.0], [3.0, 100.0, 100.0]])
MASK = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        ("token_mean", 2.0),  # (1 + 2 + 3) / 3 tokens
        ("seq_mean_token_mean", 2.25),  # ((1 + 2) / 2 + 3 / 1) / 2 sequences
        ("seq_mean_token_sum_norm", 0.75),  # ((1 + 2) / 4 + 3 / 4) / 2, constant 4
        ("seq_mean_token_sum", 3.0),  # ((1 + 2) + 3) / 2 sequences
    ],
)
def test_aggregation_modes(mode: str, expected: float) -> None:
    norm = Normalizer.of(MASK, seq_len_norm=4.0)
    assert float(aggregate(mode, VALUES, MASK, norm)) == pytest.approx(expected)


@pytest.mark.parametrize(
    "mode", ["token_mean", "seq_mean_token_mean", "seq_mean_token_sum", "seq_mean_token_sum_norm"]
)
def test_micro_batches_add_up_to_the_full_batch(mode: str) -> None:
    generator = torch.Generator().manual_seed(1)
    values = torch.randn(6, 5, generator=generator)
    mask = (torch.rand(6, 5, generator=generator) > 0.3).float()
    norm = Normalizer.of(mask, seq_len_norm=5.0)
    full = aggregate(mode, values, mask, norm)
    parts = sum(aggregate(mode, values[i : i + 2], mask[i : i + 2], norm) for i in range(0, 6, 2))
    assert float(parts) == pytest.approx(float(full), abs=1e-6)


def test_unknown_aggregation_lists_valid_ones() -> None:
    with pytest.raises(
        KeyError,
        match="valid: seq_mean_token_mean, seq_mean_token_sum, seq_mean_token_sum_norm, token_mean",
    ):
        aggregate("sum", VALUES, MASK, Normalizer.of(MASK, 1.0))


def test_value_loss_clipped() -> None:
    # V = 1, old 0, R 0, clip .2: (1 - 0)^2 = 1 vs (0.2 - 0)^2 = .04 -> max 1, half: 0.5
    # V = .1, old 0, R 1: (.9)^2 = .81 both ways -> .405
    norm = Normalizer.of(torch.ones(1, 1), 1.0)
    for value, returns, expected in ((1.0, 0.0, 0.5), (0.1, 1.0, 0.405)):
        out = value_loss(
            torch.tensor([[value]]),
            torch.zeros(1, 1),
            torch.tensor([[returns]]),
            torch.ones(1, 1),
            clip=0.2,
            aggregation="token_mean",
            norm=norm,
        )
        assert float(out.loss) == pytest.approx(expected)


def test_truncated_importance_weights_by_hand() -> None:
    # pi_prox / pi_behav per token: e^(-1 - -2) = e = 2.718 -> capped at 2; e^(-2 - -1) = 0.368;
    # equal logprobs -> 1.
    proximal = torch.tensor([[-1.0, -2.0, -0.5]])
    behavior = torch.tensor([[-2.0, -1.0, -0.5]])
    weights = truncated_importance_weights(proximal, behavior, cap=2.0)
    assert torch.allclose(weights, torch.tensor([[2.0, math.exp(-1.0), 1.0]]))
    assert not weights.requires_grad


def test_token_weights_scale_each_token_loss() -> None:
    # Two tokens, A = 1, ratio 1 (logprobs = behaviour): token losses -1 and -1. Weights 2 and
    # 0.5 make them -2 and -0.5; token_mean over 2 tokens: -1.25 (unweighted: -1).
    mask = torch.ones(1, 2)
    common = dict(
        clip_low=0.2,
        clip_high=0.2,
        dual_clip=None,
        aggregation="token_mean",
        norm=Normalizer.of(mask, 2.0),
    )
    logprobs = torch.zeros(1, 2, requires_grad=True)
    weighted = ppo_clip_loss(
        logprobs,
        torch.zeros(1, 2),
        torch.tensor([1.0]),
        mask,
        token_weights=torch.tensor([[2.0, 0.5]]),
        **common,
    )
    plain = ppo_clip_loss(logprobs, torch.zeros(1, 2), torch.tensor([1.0]), mask, **common)
    assert float(weighted.loss) == pytest.approx(-1.25)
    assert float(plain.loss) == pytest.approx(-1.0)
    weighted.loss.backward()
    # d(-A * ratio * w / 2) / d logprob = -w / 2 at ratio 1: -1 and -0.25.
    assert torch.allclose(logprobs.grad, torch.tensor([[-1.0, -0.25]]))


def test_log_ratio_is_clamped_so_a_negative_advantage_stays_finite() -> None:
    # log-ratio 1000 (exp overflows to inf in float32): clamped at 20, the loss of A = -1 is
    # e^20 = 4.85e8, finite; with the dual clip at 3 it is capped to 3 as before.
    logprobs = torch.tensor([[1000.0]], requires_grad=True)
    common = dict(clip_low=0.2, clip_high=0.2, aggregation="token_mean")
    norm = Normalizer.of(torch.ones(1, 1), 1.0)
    args = (logprobs, torch.zeros(1, 1), torch.tensor([-1.0]), torch.ones(1, 1))
    out = ppo_clip_loss(*args, dual_clip=None, norm=norm, **common)
    assert float(out.loss) == pytest.approx(math.exp(20.0), rel=1e-6)
    out.loss.backward()
    assert torch.isfinite(logprobs.grad).all()
    assert math.isfinite(out.metrics["approx_kl"])
    dual = ppo_clip_loss(*args, dual_clip=3.0, norm=norm, **common)
    assert float(dual.loss) == pytest.approx(3.0)


def test_value_clip_fraction_counts_only_where_the_clamp_bites() -> None:
    # |V - old| = .162 < clip .2: nothing is clipped. In float32, old + (V - old) rounds to
    # an ulp away from V and made (clipped - R)^2 > (V - R)^2, which was counted as clipped.
    values = torch.tensor([[-0.13994736969470978]])
    old_values = torch.tensor([[0.021885164082050323]])
    returns = torch.tensor([[0.4440267086029053]])
    out = value_loss(
        values,
        old_values,
        returns,
        torch.ones(1, 1),
        clip=0.2,
        aggregation="token_mean",
        norm=Normalizer.of(torch.ones(1, 1), 1.0),
    )
    assert out.metrics["value_clip_fraction"] == 0.0
    # A clip that bites still counts: V .5, old 0, R .45 -> (.5 - .45)^2 = .0025 against the
    # clipped (.2 - .45)^2 = .0625, which wins.
    out = value_loss(
        torch.tensor([[0.5]]),
        torch.zeros(1, 1),
        torch.tensor([[0.45]]),
        torch.ones(1, 1),
        clip=0.2,
        aggregation="token_mean",
        norm=Normalizer.of(torch.ones(1, 1), 1.0),
    )
    assert out.metrics["value_clip_fraction"] == 1.0
