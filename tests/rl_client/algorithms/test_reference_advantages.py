"""Our advantage estimators against the independent loops of `rl_paper_reference`, on random
float64 data: groups with masked members (NaN in their cells), a singleton group and a group
of equal rewards; rows with right padding and tool outputs inside them. To 1e-6."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import rl_paper_reference as ref
import torch
from torch import Tensor

from rl_client.algorithms.advantages import (
    AdvantageOptions,
    gae_advantages,
    group_centered,
    outcome_advantages,
    outcome_token_rewards,
    reward_to_go,
    whiten,
)

TOL = dict(atol=1e-6, rtol=0.0)
EPS = 1e-6


def _groups(seed: int) -> tuple[Tensor, Tensor]:
    """[6, 5] rewards and valid: random, ~25% masked (NaN), group 4 with one valid member,
    group 5 with all rewards equal."""
    generator = torch.Generator().manual_seed(seed)
    rewards = torch.rand(6, 5, generator=generator, dtype=torch.float64)
    valid = torch.rand(6, 5, generator=generator) > 0.25
    valid[4] = torch.tensor([False, True, False, False, False])
    rewards[5] = 0.5
    valid[5] = True
    return torch.where(valid, rewards, math.nan), valid


def _rows(seed: int) -> tuple[Tensor, Tensor]:
    """[7, 10] random values and a mask with right padding and interior gaps; one row empty."""
    generator = torch.Generator().manual_seed(seed)
    values = torch.randn(7, 10, generator=generator, dtype=torch.float64)
    mask = torch.zeros(7, 10, dtype=torch.float64)
    for i, length in enumerate([10, 7, 4, 9, 1, 0, 6]):
        mask[i, :length] = 1.0
        if length > 3:  # a tool output inside the row
            start = int(torch.randint(1, length - 2, (1,), generator=generator))
            mask[i, start : start + 2] = 0.0
    return values, mask


def _lists(tensor: Tensor) -> list[list[float]]:
    return [[float(x) for x in row] for row in tensor]


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("estimator", ["grpo", "dr_grpo", "rloo"])
def test_group_estimators(estimator: str, seed: int) -> None:
    rewards, valid = _groups(seed)
    ours = outcome_advantages(estimator, rewards, valid, AdvantageOptions(eps=EPS))
    expected = []
    for row, ok in zip(_lists(rewards), valid.tolist(), strict=True):
        if estimator == "grpo":
            expected.append(ref.grpo(row, ok, EPS))
        elif estimator == "dr_grpo":
            expected.append(ref.dr_grpo(row, ok))
        else:
            expected.append(ref.rloo(row, ok))
    torch.testing.assert_close(ours, torch.tensor(expected, dtype=torch.float64), **TOL)


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("group_baseline", [True, False])
def test_reinforce_pp_sequence_form(group_baseline: bool, seed: int) -> None:
    rewards, valid = _groups(seed)
    options = AdvantageOptions(eps=EPS, group_baseline=group_baseline)
    ours = outcome_advantages("reinforce_pp", rewards, valid, options)
    expected = ref.reinforce_pp_sequence(_lists(rewards), valid.tolist(), group_baseline, EPS)
    torch.testing.assert_close(ours, torch.tensor(expected, dtype=torch.float64), **TOL)


def _per_policy_token(
    values: Tensor, mask: Tensor, row_fn: Callable[..., list[float]], *extra: Tensor
) -> Tensor:
    """Applies `row_fn(policy-token values, *policy-token extras)` to each row's policy tokens
    and scatters the result back; 0 elsewhere."""
    out = torch.zeros_like(values)
    for i in range(values.shape[0]):
        positions = ref.policy_positions(mask[i])
        if not positions:
            continue
        args = [[float(x[i, t]) for t in positions] for x in (values, *extra)]
        for t, a in zip(positions, row_fn(*args), strict=True):
            out[i, t] = a
    return out


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize(("gamma", "lam"), [(1.0, 0.95), (0.9, 0.8), (1.0, 1.0), (0.99, 0.0)])
def test_gae_over_policy_steps(gamma: float, lam: float, seed: int) -> None:
    rewards, mask = _rows(seed)
    values = torch.randn(rewards.shape, generator=torch.Generator().manual_seed(99 + seed))
    values = values.to(torch.float64)
    # Our rows carry garbage off the mask: it must play no part.
    noisy_rewards = torch.where(mask > 0, rewards, 1e3)
    noisy_values = torch.where(mask > 0, values, -1e3)
    advantages, returns = gae_advantages(noisy_rewards, noisy_values, mask, gamma=gamma, lam=lam)
    expected = _per_policy_token(rewards, mask, lambda r, v: ref.gae_row(r, v, gamma, lam), values)
    torch.testing.assert_close(advantages, expected, **TOL)
    torch.testing.assert_close(returns, (expected + values) * mask, **TOL)


@pytest.mark.parametrize("seed", range(5))
def test_reward_to_go(seed: int) -> None:
    rewards, mask = _rows(seed)
    for gamma in (1.0, 0.9):
        expected = _per_policy_token(rewards, mask, lambda r, g=gamma: ref.reward_to_go_row(r, g))
        torch.testing.assert_close(reward_to_go(rewards, mask, gamma=gamma), expected, **TOL)


@pytest.mark.parametrize("seed", range(5))
def test_token_whitening(seed: int) -> None:
    values, mask = _rows(seed)
    cells = [(i, t) for i in range(mask.shape[0]) for t in ref.policy_positions(mask[i])]
    whitened = ref.whiten_cells([float(values[i, t]) for i, t in cells], 1e-8)
    expected = torch.zeros_like(values)
    for (i, t), w in zip(cells, whitened, strict=True):
        expected[i, t] = w
    torch.testing.assert_close(
        whiten(torch.where(mask > 0, values, math.nan), mask), expected, **TOL
    )


@pytest.mark.parametrize("seed", range(5))
def test_outcome_reward_on_the_last_policy_token(seed: int) -> None:
    _, mask = _rows(seed)
    rewards = torch.arange(1, mask.shape[0] + 1, dtype=torch.float64)
    expected = torch.zeros_like(mask)
    for i in range(mask.shape[0]):
        positions = ref.policy_positions(mask[i])
        if positions:
            expected[i, positions[-1]] = rewards[i]
    torch.testing.assert_close(outcome_token_rewards(rewards, mask), expected, **TOL)


@pytest.mark.parametrize("seed", range(5))
def test_group_centering(seed: int) -> None:
    rewards, valid = _groups(seed)
    expected = [
        ref.dr_grpo(row, ok) for row, ok in zip(_lists(rewards), valid.tolist(), strict=True)
    ]
    torch.testing.assert_close(
        group_centered(rewards, valid), torch.tensor(expected, dtype=torch.float64), **TOL
    )
