"""What the reward server is told about a completion's length, and the budget it is measured
against: an agentic episode counts the tokens its policy sampled, against the episode budget."""

from __future__ import annotations

from rl_client.config import TrainConfig, build_config
from rl_client.data import PromptRow
from rl_client.engines.base import Completion
from rl_client.rollout import completion_item
from rl_client.run import overlong_shaping
from verifier_server.types import RewardSpec
from verifier_server.verifiers.length import overlong_penalty

ROW = PromptRow("q", (), RewardSpec("math"), "42")
BASE = {"model": {"path": "m"}, "data": {"path": "d.jsonl"}, "output": {"dir": "out"}}
AGENTIC = [
    "rollout.max_new_tokens=100",
    "rollout.agent.environment=math_python",
    "rollout.agent.max_episode_tokens=400",
    "algorithm.preset=dapo",
]


def test_an_episode_is_measured_in_policy_tokens_against_the_episode_budget() -> None:
    # Three turns of 90 policy tokens around two 60-token tool outputs: 390 tokens in the row,
    # 270 sampled by the policy. Budget 400, cache 20% = 80: the penalty starts past 320.
    # Before: 390 tokens against max_new_tokens 100 -> -1, a correct episode punished as
    # overlong; now 270 <= 320 -> 0.
    mask = [1] * 90 + [0] * 60 + [1] * 90 + [0] * 60 + [1] * 90
    episode = Completion(list(range(390)), [0.0] * 390, "\\boxed{42}", "stop", tuple(mask))
    config = build_config(TrainConfig, BASE, AGENTIC)
    overlong = overlong_shaping(config)
    assert overlong is not None
    assert (overlong.max_tokens, overlong.cache_tokens) == (400, 80)
    item = completion_item(ROW, episode, "0", overlong)
    assert item.completion_tokens == 270
    assert overlong_penalty(item.completion_tokens, overlong.max_tokens, overlong.cache_tokens) == 0


def test_a_single_turn_is_measured_against_max_new_tokens() -> None:
    config = build_config(
        TrainConfig, BASE, ["rollout.max_new_tokens=100", "algorithm.preset=dapo"]
    )
    overlong = overlong_shaping(config)
    assert overlong is not None and (overlong.max_tokens, overlong.cache_tokens) == (100, 20)
    item = completion_item(ROW, Completion([1, 2, 3], [0.0] * 3, "x"), "0", overlong)
    assert item.completion_tokens == 3
    assert overlong_shaping(build_config(TrainConfig, BASE)) is None  # grpo: no shaping
