"""Advantage estimators against hand-worked values (arithmetic in the comments)."""

from __future__ import annotations

import math

import pytest
import torch

from rl_client.algorithms.advantages import (
    OUTCOME_ESTIMATORS,
    AdvantageOptions,
    gae_advantages,
    outcome_advantages,
    outcome_token_rewards,
    reward_to_go,
    whiten,
)

OPTIONS = AdvantageOptions(eps=0.0)


def close(actual: torch.Tensor, expected: list[list[float]]) -> None:
    torch.testing.assert_close(actual, torch.tensor(expected), atol=1e-5, rtol=0)


ALL_VALID = torch.ones(1, 4, dtype=torch.bool)


def test_grpo_group_mean_and_unbiased_std() -> None:
    # mean 0.5; squared deviations 4 * 0.25 = 1; unbiased var 1/3; std 0.57735
    # advantages +-0.5 / 0.57735 = +-0.866025
    rewards = torch.tensor([[1.0, 0.0, 0.0, 1.0]])
    advantages = outcome_advantages("grpo", rewards, ALL_VALID, OPTIONS)
    close(advantages, [[0.866025, -0.866025, -0.866025, 0.866025]])


def test_grpo_ignores_masked_members() -> None:
    # valid 1, 0, 1: mean 2/3; deviations 1/3, -2/3, 1/3; var (1/9+4/9+1/9)/2 = 1/3; std 0.57735
    # -> 0.57735, -1.154701, 0 (masked), 0.57735. The masked reward (999) plays no part.
    rewards = torch.tensor([[1.0, 0.0, 999.0, 1.0]])
    valid = torch.tensor([[True, True, False, True]])
    advantages = outcome_advantages("grpo", rewards, valid, OPTIONS)
    close(advantages, [[0.57735, -1.154701, 0.0, 0.57735]])


@pytest.mark.parametrize("estimator", sorted(OUTCOME_ESTIMATORS))
def test_one_valid_member_or_equal_rewards_give_zero(estimator: str) -> None:
    rewards = torch.tensor([[1.0, 5.0, 5.0], [2.0, 2.0, 2.0]])
    valid = torch.tensor([[True, False, False], [True, True, True]])
    advantages = outcome_advantages(estimator, rewards, valid, OPTIONS)
    assert torch.all(advantages == 0)


def test_grpo_advantages_sum_to_zero_per_group() -> None:
    rewards = torch.rand(5, 8, generator=torch.Generator().manual_seed(0))
    advantages = outcome_advantages("grpo", rewards, torch.ones(5, 8, dtype=torch.bool), OPTIONS)
    assert advantages.sum(dim=1).abs().max() < 1e-5


def test_dr_grpo_is_centered_not_scaled() -> None:
    # mean 0.5 -> +-0.5; [3, 1]: mean 2 -> +-1
    rewards = torch.tensor([[1.0, 0.0, 0.0, 1.0]])
    assert outcome_advantages("dr_grpo", rewards, ALL_VALID, OPTIONS).tolist() == [
        [0.5, -0.5, -0.5, 0.5]
    ]
    two = torch.tensor([[3.0, 1.0]])
    assert outcome_advantages(
        "dr_grpo", two, torch.ones(1, 2, dtype=torch.bool), OPTIONS
    ).tolist() == [[1.0, -1.0]]


def test_rloo_leave_one_out() -> None:
    # r_i - mean(others): 1 - 1/3 = 2/3; 0 - 2/3 = -2/3 (= G/(G-1) * (r - mean) = 4/3 * 0.5)
    rewards = torch.tensor([[1.0, 0.0, 0.0, 1.0]])
    advantages = outcome_advantages("rloo", rewards, ALL_VALID, OPTIONS)
    close(advantages, [[2 / 3, -2 / 3, -2 / 3, 2 / 3]])


def test_rloo_with_two_samples_is_the_difference() -> None:
    rewards = torch.tensor([[0.7, 0.2]])
    advantages = outcome_advantages("rloo", rewards, torch.ones(1, 2, dtype=torch.bool), OPTIONS)
    close(advantages, [[0.5, -0.5]])


def test_reinforce_pp_global_normalisation_without_group_baseline() -> None:
    # batch mean 0.75; centered .25 -.75 .25 .25; unbiased var (3 * .0625 + .5625) / 3 = .25
    # std .5 -> .5 -1.5 .5 .5
    rewards = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    options = AdvantageOptions(eps=0.0, group_baseline=False)
    advantages = outcome_advantages(
        "reinforce_pp", rewards, torch.ones(2, 2, dtype=torch.bool), options
    )
    close(advantages, [[0.5, -1.5], [0.5, 0.5]])


def test_reinforce_pp_with_group_baseline() -> None:
    # group means .5 and 1 -> centered .5 -.5 0 0; var (.25 + .25) / 3 = 1/6; std .408248
    # -> 1.224745 -1.224745 0 0
    rewards = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    options = AdvantageOptions(eps=0.0, group_baseline=True)
    advantages = outcome_advantages(
        "reinforce_pp", rewards, torch.ones(2, 2, dtype=torch.bool), options
    )
    close(advantages, [[1.224745, -1.224745], [0.0, 0.0]])


def test_unknown_estimator_lists_valid_ones() -> None:
    with pytest.raises(KeyError, match="unknown advantage estimator 'ppo2'; valid: dr_grpo, grpo"):
        outcome_advantages("ppo2", torch.zeros(1, 2), torch.ones(1, 2, dtype=torch.bool), OPTIONS)


def test_gae_monte_carlo_when_gamma_and_lambda_are_one() -> None:
    # A_t = (sum of future rewards) - V_t = 1 - V_t; returns = 1
    rewards = torch.tensor([[0.0, 0.0, 1.0]])
    values = torch.tensor([[0.5, 0.6, 0.7]])
    advantages, returns = gae_advantages(rewards, values, torch.ones(1, 3), gamma=1.0, lam=1.0)
    close(advantages, [[0.5, 0.4, 0.3]])
    close(returns, [[1.0, 1.0, 1.0]])


def test_gae_discounted_with_a_shorter_row() -> None:
    # gamma .9, lam .5 (gamma * lam = .45)
    # full row: d2 = 1 - .7 = .3; d1 = .9 * .7 - .6 = .03; A1 = .03 + .45 * .3 = .165
    #           d0 = .9 * .6 - .5 = .04; A0 = .04 + .45 * .165 = .11425
    # row of 2 tokens (reward on its last token; the value past the end is garbage, ignored):
    #           d1 = 1 - .6 = .4; d0 = .04; A0 = .04 + .45 * .4 = .22
    rewards = torch.tensor([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    values = torch.tensor([[0.5, 0.6, 0.7], [0.5, 0.6, 9.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
    advantages, returns = gae_advantages(rewards, values, mask, gamma=0.9, lam=0.5)
    close(advantages, [[0.11425, 0.165, 0.3], [0.22, 0.4, 0.0]])
    close(returns, [[0.61425, 0.765, 1.0], [0.72, 1.0, 0.0]])


def _gae_reference(
    rewards: list[float], values: list[float], gamma: float, lam: float
) -> list[float]:
    """The textbook loop over one unpadded episode."""
    advantages, running = [0.0] * len(rewards), 0.0
    for t in reversed(range(len(rewards))):
        next_value = values[t + 1] if t + 1 < len(rewards) else 0.0
        running = rewards[t] + gamma * next_value - values[t] + gamma * lam * running
        advantages[t] = running
    return advantages


def test_gae_batched_matches_per_episode_loop() -> None:
    generator = torch.Generator().manual_seed(3)
    lengths = [5, 2, 7, 1]
    rewards = torch.randn(4, 7, generator=generator)
    values = torch.randn(4, 7, generator=generator)
    mask = torch.tensor([[1.0] * n + [0.0] * (7 - n) for n in lengths])
    advantages, _ = gae_advantages(rewards * mask, values, mask, gamma=0.95, lam=0.9)
    for row, n in enumerate(lengths):
        expected = _gae_reference(rewards[row, :n].tolist(), values[row, :n].tolist(), 0.95, 0.9)
        assert advantages[row, :n].tolist() == pytest.approx(expected, abs=1e-5)
        assert advantages[row, n:].abs().sum() == 0


def test_outcome_token_rewards_sit_on_the_last_token() -> None:
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0], [0.0, 0.0, 0.0]])
    token_rewards = outcome_token_rewards(torch.tensor([2.0, 3.0, 4.0]), mask)
    assert token_rewards.tolist() == [[0.0, 2.0, 0.0], [0.0, 0.0, 3.0], [0.0, 0.0, 0.0]]


def test_whiten_over_masked_entries() -> None:
    # entries 1, 3 (the 100 is masked): mean 2, population std 1 -> -1, 1
    values = torch.tensor([[1.0, 3.0, 100.0]])
    whitened = whiten(values, torch.tensor([[1.0, 1.0, 0.0]]), eps=0.0)
    assert whitened.tolist() == [[-1.0, 1.0, 0.0]]
    assert not math.isnan(whiten(torch.zeros(1, 2), torch.zeros(1, 2)).sum().item())


# Multi-turn rows: tool-output tokens (mask 0) inside the row.
EPISODE_MASK = torch.tensor([[1.0, 1.0, 0.0, 0.0, 1.0, 1.0, 1.0, 0.0, 0.0, 1.0, 1.0]])


def test_gae_carries_across_tool_outputs_to_the_last_policy_token() -> None:
    # The episode: 7 policy tokens around two tool outputs, reward 1, V = 0.5
    # everywhere, gamma 1, lam .95. The reward sits on the last policy token (index 10).
    # Policy steps only: delta = 0 at every policy token but the last (V_t' - V_t = 0), whose
    # delta is 1 - .5 = .5; so A on the k-th policy token from the end is .5 * .95^k: all
    # positive. (Before: the reward went to index mask.sum() - 1 = 6 and the recursion
    # restarted with V_next = 0 at each tool token: A = -.5 on 6 of the 7 tokens.)
    values = torch.full((1, 11), 0.5)
    token_rewards = outcome_token_rewards(torch.tensor([1.0]), EPISODE_MASK)
    assert token_rewards[0].nonzero().squeeze().item() == 10
    advantages, returns = gae_advantages(token_rewards, values, EPISODE_MASK, gamma=1.0, lam=0.95)
    k = [6, 5, None, None, 4, 3, 2, None, None, 1, 0]  # policy steps to the end
    expected = [0.5 * 0.95**n if n is not None else 0.0 for n in k]
    close(advantages, [expected])
    # returns = A + V on policy tokens
    close(returns, [[a + 0.5 if n is not None else 0.0 for a, n in zip(expected, k, strict=True)]])


def test_gae_discounts_per_policy_step_not_per_position() -> None:
    # gamma .9, lam 1 (Monte Carlo), V = 0, reward 1 at the end: A = .9^(policy steps to go),
    # the tool tokens in between do not discount: [.9^2, .9, -, 1].
    mask = torch.tensor([[1.0, 1.0, 0.0, 1.0]])
    rewards = torch.tensor([[0.0, 0.0, 0.0, 1.0]])
    advantages, _ = gae_advantages(rewards, torch.zeros(1, 4), mask, gamma=0.9, lam=1.0)
    close(advantages, [[0.81, 0.9, 0.0, 1.0]])


def test_outcome_token_reward_skips_a_tool_output_at_the_end() -> None:
    # Last policy token at index 1: the trailing tool output (2, 3) gets nothing; a
    # mask.sum() - 1 placement would have put it at index 2, a tool token.
    mask = torch.tensor([[1.0, 1.0, 0.0, 1.0], [0.0, 1.0, 1.0, 0.0]])
    token_rewards = outcome_token_rewards(torch.tensor([2.0, 3.0]), mask)
    assert token_rewards.tolist() == [[0.0, 0.0, 0.0, 2.0], [0.0, 0.0, 3.0, 0.0]]


def test_reward_to_go_sums_future_policy_token_rewards() -> None:
    # rewards [-.1, -.2, (tool) 9, 1 - .3]: to go from the end: .7, (tool 0), .5, .4
    rewards = torch.tensor([[-0.1, -0.2, 9.0, 0.7]])
    mask = torch.tensor([[1.0, 1.0, 0.0, 1.0]])
    close(reward_to_go(rewards, mask), [[0.4, 0.5, 0.0, 0.7]])


@pytest.mark.parametrize("estimator", sorted(OUTCOME_ESTIMATORS))
def test_estimators_are_nan_safe_on_their_own(estimator: str) -> None:
    # An invalid cell may hold anything (a masked item's reward is NaN in Group.rewards):
    # the valid cells get the same advantages as with a 0 there, and the invalid one gets 0.
    valid = torch.tensor([[True, True, False, True], [True, True, True, True]])
    clean = torch.tensor([[1.0, 0.0, 0.0, 0.5], [0.2, 0.4, 0.1, 0.9]])
    dirty = clean.clone()
    dirty[0, 2] = math.nan
    with_nan = outcome_advantages(estimator, dirty, valid, OPTIONS)
    assert torch.isfinite(with_nan).all()
    torch.testing.assert_close(with_nan, outcome_advantages(estimator, clean, valid, OPTIONS))
    assert with_nan[0, 2] == 0
