"""The estimator table over a batch (`compute_advantages`), by hand: KL in the reward,
GAE over an episode with tool outputs, REINFORCE++'s token form."""

from __future__ import annotations

from typing import get_args

import pytest
import torch
from rl_helpers import GROUPS, ROW

from rl_client.algorithms.estimators import ESTIMATORS, compute_advantages
from rl_client.batch import build_batch
from rl_client.config import Advantage, AlgorithmConfig
from rl_client.engines.base import Completion
from rl_client.rollout import Group
from verifier_server.types import Result


def test_every_configurable_estimator_is_in_the_table() -> None:
    assert set(ESTIMATORS) == set(get_args(Advantage))


def test_gae_without_the_value_estimates_names_them() -> None:
    batch = build_batch(GROUPS, pad_token_id=0, mask_truncated=False)
    with pytest.raises(ValueError, match="old_values"):
        compute_advantages(batch, AlgorithmConfig(advantage="gae"))


def test_kl_in_the_reward_is_summed_per_sequence_before_the_advantage() -> None:
    batch = build_batch(GROUPS, pad_token_id=0, mask_truncated=False)
    ref_logprobs = torch.full_like(batch.sampler_logprobs, -1.5) * batch.completion_mask
    algo = AlgorithmConfig(
        advantage="dr_grpo", kl_coef=0.1, kl_estimator="k1", kl_placement="reward"
    )
    advantages, _ = compute_advantages(batch, algo, ref_logprobs=ref_logprobs)
    # k1 = logp - ref = -1 - (-1.5) = 0.5 per token; penalty 0.1 * 0.5 * length
    # group 0 (lengths 3, 2, 4): 1 - .15, 0 - .1, 1 - .2 = .85, -.1, .8; mean 1.55 / 3
    #   -> .333333, -.616667, .283333
    # group 1 (lengths 2, 3, 2, 3): -.1, -.15, .9, -.15; mean .125
    #   -> -.225, -.275, .775, -.275
    expected = [0.333333, -0.616667, 0.283333, -0.225, -0.275, 0.775, -0.275]
    torch.testing.assert_close(advantages[:, 0], torch.tensor(expected), atol=1e-5, rtol=0)


def _episode(tokens: int, policy: list[int], score: float) -> Group:
    completion = Completion(
        list(range(10, 10 + tokens)), [-1.0] * tokens, "", "stop", tuple(policy)
    )
    return Group(ROW, [5], [completion], [Result(id="0", score=score)])


def test_ppo_advantages_of_an_episode_with_tool_outputs() -> None:
    # Policy tokens at 0, 1, 4 (2, 3 are a tool output); reward 1, V .5, gamma 1, lam .95,
    # no whitening: A = .5 * .95^k by policy steps to the end: .45125, .475, 0, 0, .5.
    batch = build_batch([_episode(5, [1, 1, 0, 0, 1], 1.0)], pad_token_id=0, mask_truncated=False)
    old_values = torch.full((1, 5), 0.5) * batch.completion_mask
    algo = AlgorithmConfig(advantage="gae", gamma=1.0, gae_lambda=0.95, whiten_advantages=False)
    advantages, returns = compute_advantages(batch, algo, old_values=old_values)
    torch.testing.assert_close(advantages, torch.tensor([[0.45125, 0.475, 0.0, 0.0, 0.5]]))
    assert returns is not None and returns[0, 4] == pytest.approx(1.0)


def test_reinforce_pp_token_form_by_hand() -> None:
    # One group of two: rewards 1 and 0, group baseline .5 -> +.5, -.5 on the last policy
    # token. k1 = logp - ref = -1 - (-1.2) = .2 per policy token, times kl_coef .5 = .1.
    # Row 0 (3 tokens, the middle one a tool output): rewards -.1, (tool), .5 - .1 = .4;
    #   to go: .3, 0, .4. Row 1 (2 tokens): -.1, -.5 - .1 = -.6; to go: -.7, -.6.
    # Whitened over the 4 policy tokens .3 .4 -.7 -.6: mean -.15; deviations .45 .55 -.55
    # -.45; population var (.2025 + .3025) * 2 / 4 = .2525; std .502494
    #   -> .895533, 1.094540, -1.094540, -.895533
    groups = [
        Group(
            ROW,
            [5],
            [
                Completion([10, 11, 12], [-1.0] * 3, "", "stop", (1, 0, 1)),
                Completion([13, 14], [-1.0] * 2, "", "stop"),
            ],
            [Result(id="0", score=1.0), Result(id="1", score=0.0)],
        )
    ]
    batch = build_batch(groups, pad_token_id=0, mask_truncated=False)
    ref_logprobs = torch.full_like(batch.sampler_logprobs, -1.2) * batch.completion_mask
    algo = AlgorithmConfig(
        advantage="reinforce_pp",
        reinforce_pp_form="token",
        kl_coef=0.5,
        kl_estimator="k1",
        kl_placement="reward",
    )
    advantages, _ = compute_advantages(batch, algo, ref_logprobs=ref_logprobs)
    expected = [[0.895533, 0.0, 1.094540], [-1.094540, -0.895533, 0.0]]
    torch.testing.assert_close(advantages, torch.tensor(expected), atol=1e-5, rtol=0)
