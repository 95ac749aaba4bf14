"""Edge cases of the estimators and losses, with hand-worked values: groups of one, rows with
no loss token, rows made only of tool output, dual clip and clip-higher at their boundaries,
micro-batches against the batch's denominators, GAE at lambda = gamma = 1, whitening of one
token."""

from __future__ import annotations

import math

import pytest
import torch

from rl_client.algorithms.advantages import (
    AdvantageOptions,
    gae_advantages,
    outcome_advantages,
    reward_to_go,
    whiten,
)
from rl_client.algorithms.estimators import compute_advantages
from rl_client.algorithms.losses import AGGREGATIONS, Normalizer, aggregate, ppo_clip_loss
from rl_client.batch import build_batch
from rl_client.config import AlgorithmConfig
from rl_client.data import PromptRow
from rl_client.engines.base import Completion
from rl_client.rollout import Group
from verifier_server.types import Result, RewardSpec

F64 = torch.float64
ROW = PromptRow("p", (), RewardSpec("x"), None)


# ---- groups of one


@pytest.mark.parametrize("estimator", ["grpo", "dr_grpo", "rloo", "reinforce_pp"])
def test_a_group_of_one_has_no_baseline_and_gets_0(estimator: str) -> None:
    rewards = torch.tensor([[1.0], [0.0], [1.0]], dtype=F64)
    valid = torch.ones_like(rewards, dtype=torch.bool)
    options = AdvantageOptions(group_baseline=True)
    assert torch.equal(
        outcome_advantages(estimator, rewards, valid, options), torch.zeros(3, 1, dtype=F64)
    )


def test_plain_reinforce_pp_normalises_groups_of_one_over_the_batch() -> None:
    # r = 1, 0, 1: batch mean 2/3, std (Bessel) sqrt(((1/3)^2 * 2 + (2/3)^2) / 2) = 1/sqrt(3)
    rewards = torch.tensor([[1.0], [0.0], [1.0]], dtype=F64)
    valid = torch.ones_like(rewards, dtype=torch.bool)
    ours = outcome_advantages(
        "reinforce_pp", rewards, valid, AdvantageOptions(eps=0.0, group_baseline=False)
    )
    s = 1 / math.sqrt(3)
    torch.testing.assert_close(
        ours, torch.tensor([[1 / 3 / s], [-2 / 3 / s], [1 / 3 / s]], dtype=F64)
    )


# ---- rows with no loss token, rows of tool output only


@pytest.mark.parametrize("mode", sorted(AGGREGATIONS))
def test_a_row_with_no_loss_token_changes_nothing(mode: str) -> None:
    values = torch.tensor([[1.0, 2.0, 3.0], [4.0, 0.0, 0.0]], dtype=F64)
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0]], dtype=F64)
    base = aggregate(mode, values, mask, Normalizer.of(mask, 5.0))
    garbage = torch.cat([values, torch.tensor([[7.0, -9.0, 1e6]], dtype=F64)]).requires_grad_(True)
    padded_mask = torch.cat([mask, torch.zeros(1, 3, dtype=F64)])
    norm = Normalizer.of(padded_mask, 5.0)
    assert (norm.num_tokens, norm.num_seqs) == (4.0, 2.0)  # the empty row is no sequence
    out = aggregate(mode, garbage, padded_mask, norm)
    out.backward()
    torch.testing.assert_close(out, base)
    assert torch.equal(garbage.grad[2], torch.zeros(3, dtype=F64))  # type: ignore[index]
    # hand-worked: token_mean 10/4; seq_mean_token_mean (2 + 4)/2; token sums (6 + 4)/2;
    # ... divided by the constant 5
    expected = {
        "token_mean": 2.5,
        "seq_mean_token_mean": 3.0,
        "seq_mean_token_sum": 5.0,
        "seq_mean_token_sum_norm": 1.0,
    }[mode]
    assert float(out.detach()) == pytest.approx(expected)


def _completion(n: int, loss_mask: tuple[int, ...] | None = None) -> Completion:
    return Completion(list(range(10, 10 + n)), [-1.0] * n, "", "stop", loss_mask)


def test_a_row_of_tool_output_only_trains_nothing_but_keeps_its_place_in_the_group() -> None:
    completions = [_completion(3), _completion(2), _completion(3, (0, 0, 0))]
    scores = [1.0, 0.0, 1.0]
    group = Group(
        ROW, [1, 2], completions, [Result(id=str(i), score=s) for i, s in enumerate(scores)]
    )
    batch = build_batch([group], pad_token_id=0, mask_truncated=False)
    assert batch.completion_mask[2].sum() == 0
    # dr_grpo: mean 2/3 over the three members (the tool-only row counts) -> 1/3, -2/3, 0 on row 2
    advantages, _ = compute_advantages(batch, AlgorithmConfig(advantage="dr_grpo"))
    torch.testing.assert_close(advantages[:2, 0], torch.tensor([1 / 3, -2 / 3]))
    assert torch.equal(advantages[2], torch.zeros(3))
    # gae: no policy token to carry the reward: all 0, returns too
    old_values = torch.full(batch.completion_mask.shape, 0.5) * batch.completion_mask
    gae = AlgorithmConfig(advantage="gae", gae_lambda=1.0, whiten_advantages=False)
    advantages, returns = compute_advantages(batch, gae, old_values=old_values)
    assert returns is not None
    assert torch.equal(advantages[2], torch.zeros(3)) and torch.equal(returns[2], torch.zeros(3))
    torch.testing.assert_close(advantages[0], torch.tensor([0.5, 0.5, 0.5]))  # 1 - V


# ---- dual clip and clip-higher at their boundaries


def _token_loss(ratio: float, advantage: float, **clip: float | None) -> tuple[float, float]:
    """(loss, d loss / d logprob) of one token with the given ratio."""
    logprob = torch.tensor([[math.log(ratio)]], dtype=F64, requires_grad=True)
    mask = torch.ones(1, 1, dtype=F64)
    out = ppo_clip_loss(
        logprob,
        torch.zeros(1, 1, dtype=F64),
        torch.tensor([advantage], dtype=F64),
        mask,
        aggregation="token_mean",
        norm=Normalizer.of(mask, 1.0),
        **clip,  # type: ignore[arg-type]
    )
    out.loss.backward()
    return float(out.loss.detach()), float(logprob.grad)  # type: ignore[arg-type]


def test_dual_clip_caps_only_negative_advantages() -> None:
    clip = dict(clip_low=0.2, clip_high=0.2, dual_clip=3.0)
    # A = -1, ratio 5: PPO's max(5, 1.2) = 5, capped at -A * c = 3, no gradient
    assert _token_loss(5.0, -1.0, **clip) == pytest.approx((3.0, 0.0))
    # A = -1, ratio 2: max(2, 1.2) = 2 < 3: unclipped, d(-A r)/d log r = -A r = 2
    assert _token_loss(2.0, -1.0, **clip) == pytest.approx((2.0, 2.0))
    # A = -1, ratio 0.5: clipped at 0.8 (loss 0.8, no gradient), the cap does not bite
    assert _token_loss(0.5, -1.0, **clip) == pytest.approx((0.8, 0.0))
    # A = +1, ratio 5: the dual clip never applies; clipped at 1.2
    assert _token_loss(5.0, 1.0, **clip) == pytest.approx((-1.2, 0.0))


def test_clip_higher_widens_only_the_upper_bound() -> None:
    symmetric = dict(clip_low=0.2, clip_high=0.2, dual_clip=None)
    higher = dict(clip_low=0.2, clip_high=0.28, dual_clip=None)
    # A > 0, ratio 1.25: clipped at 1.2 symmetric (no gradient), free under 1.28 (grad -A r)
    assert _token_loss(1.25, 1.0, **symmetric) == pytest.approx((-1.2, 0.0))
    assert _token_loss(1.25, 1.0, **higher) == pytest.approx((-1.25, -1.25))
    # A < 0, ratio 0.75: clipped at 0.8 under both (clip_low is unchanged)
    assert _token_loss(0.75, -1.0, **symmetric) == pytest.approx((0.8, 0.0))
    assert _token_loss(0.75, -1.0, **higher) == pytest.approx((0.8, 0.0))
    # A < 0, ratio 1.25: the upper bound does not bind a negative advantage: -A r
    assert _token_loss(1.25, -1.0, **higher) == pytest.approx((1.25, 1.25))


# ---- micro-batches


@pytest.mark.parametrize("mode", sorted(AGGREGATIONS))
def test_micro_batches_add_up_to_the_batch_with_the_batchs_denominators(mode: str) -> None:
    generator = torch.Generator().manual_seed(0)
    values = torch.randn(6, 5, generator=generator, dtype=F64)
    mask = torch.zeros(6, 5, dtype=F64)
    for i, length in enumerate([5, 1, 3, 0, 4, 2]):  # uneven token counts per micro-batch
        mask[i, :length] = 1.0
    norm = Normalizer.of(mask, 5.0)
    full = aggregate(mode, values, mask, norm)
    parts = sum(
        aggregate(mode, values[s], mask[s], norm) for s in (slice(0, 2), slice(2, 4), slice(4, 6))
    )
    torch.testing.assert_close(parts, full)
    if mode in ("token_mean", "seq_mean_token_mean", "seq_mean_token_sum"):
        # what a per-micro-batch denominator would give instead: not the batch's loss
        local = sum(
            aggregate(mode, values[s], mask[s], Normalizer.of(mask[s], 5.0)) / 3
            for s in (slice(0, 2), slice(2, 4), slice(4, 6))
        )
        assert not torch.allclose(local, full)


# ---- GAE and whitening


def test_gae_at_lambda_1_gamma_1_is_the_monte_carlo_return_minus_v() -> None:
    # policy tokens 0, 1, 4, 5 (2, 3 a tool output); rewards 0.5 at 1, 1 at 5
    mask = torch.tensor([[1, 1, 0, 0, 1, 1]], dtype=F64)
    rewards = torch.tensor([[0.0, 0.5, 0.0, 0.0, 0.0, 1.0]], dtype=F64)
    values = torch.tensor([[0.2, 0.4, 9.0, 9.0, 0.6, 0.8]], dtype=F64)
    advantages, returns = gae_advantages(rewards, values, mask, gamma=1.0, lam=1.0)
    # returns-to-go 1.5, 1.5, 1, 1 -> minus V
    torch.testing.assert_close(
        advantages, torch.tensor([[1.3, 1.1, 0.0, 0.0, 0.4, 0.2]], dtype=F64)
    )
    torch.testing.assert_close(returns, torch.tensor([[1.5, 1.5, 0.0, 0.0, 1.0, 1.0]], dtype=F64))
    torch.testing.assert_close(advantages, (reward_to_go(rewards, mask) - values) * mask)


def test_whitening_one_token_gives_0_not_nan() -> None:
    mask = torch.tensor([[0.0, 1.0, 0.0]], dtype=F64)
    assert torch.equal(
        whiten(torch.tensor([[5.0, 3.0, math.nan]], dtype=F64), mask), torch.zeros(1, 3, dtype=F64)
    )
    nothing = torch.zeros(1, 3, dtype=F64)
    assert torch.equal(whiten(torch.tensor([[1.0, 2.0, 3.0]], dtype=F64), nothing), nothing)


# ---- garbage off the mask


def test_gae_gives_0_off_the_mask_whatever_it_held() -> None:
    mask = torch.tensor([[1, 0, 1, 0]], dtype=F64)
    rewards = torch.tensor([[0.0, math.nan, 1.0, math.inf]], dtype=F64)
    values = torch.tensor([[0.5, math.nan, 0.5, -math.inf]], dtype=F64)
    advantages, returns = gae_advantages(rewards, values, mask, gamma=1.0, lam=1.0)
    torch.testing.assert_close(advantages, torch.tensor([[0.5, 0.0, 0.5, 0.0]], dtype=F64))
    torch.testing.assert_close(returns, torch.tensor([[1.0, 0.0, 1.0, 0.0]], dtype=F64))


def test_a_nan_advantage_off_the_mask_reaches_neither_loss_nor_gradient() -> None:
    mask = torch.tensor([[1.0, 1.0, 0.0]], dtype=F64)
    clean = torch.tensor([[1.0, -1.0, 0.0]], dtype=F64)
    results = []
    for advantages in (clean, torch.tensor([[1.0, -1.0, math.nan]], dtype=F64)):
        logprobs = torch.tensor([[-1.0, -2.0, -3.0]], dtype=F64, requires_grad=True)
        out = ppo_clip_loss(
            logprobs,
            logprobs.detach() - 0.1,
            advantages,
            mask,
            clip_low=0.2,
            clip_high=0.2,
            dual_clip=3.0,
            aggregation="token_mean",
            norm=Normalizer.of(mask, 1.0),
        )
        out.loss.backward()
        results.append((out.loss.detach(), logprobs.grad))
    torch.testing.assert_close(results[1][0], results[0][0])
    torch.testing.assert_close(results[1][1], results[0][1])
