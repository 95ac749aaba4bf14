"""Which groups train: fully masked groups drop; with dynamic sampling so do groups whose
signal is the same for every valid member, and the signal is the task's, not the shaped reward."""

from __future__ import annotations

import math

import pytest

from rl_client.data import PromptRow
from rl_client.engines.base import Completion
from rl_client.group_filter import DynamicSampling, filter_groups, informative, trains
from rl_client.rollout import Group
from verifier_server.types import Result, RewardSpec, Status

ROW = PromptRow("p", (), RewardSpec("x"), None)


def _result(i: int, member: tuple[float, float] | None) -> Result:
    if member is None:
        return Result.failed(str(i), Status.TIMEOUT, "t")
    accuracy, penalty = member
    components = {"accuracy": accuracy, "overlong": penalty}
    return Result(id=str(i), score=accuracy + penalty, components=components)


def _group(*members: tuple[float, float] | None) -> Group:
    """Members as (accuracy, overlong penalty) of a weight-1 shaped reward; None: masked."""
    results = [_result(i, m) for i, m in enumerate(members)]
    return Group(ROW, [1], [Completion([5], [-1.0], "x")] * len(members), results)


# All correct; the only spread is a 0.02 overlong penalty on one member.
ALL_CORRECT = _group((1.0, 0.0), (1.0, -0.02), (1.0, 0.0), (1.0, 0.0))
MIXED = _group((1.0, -0.02), (0.0, 0.0), None, (1.0, 0.0))


def test_a_spread_made_only_by_the_length_penalty_is_filtered() -> None:
    # DAPO keeps 0 < #correct < G: 4 of 4 correct carries no signal. (Filtering on the shaped
    # score kept it, and std-normalisation made the 0.02 into advantages of -1.5 / +0.5.)
    dynamic = DynamicSampling("task", overlong_weight=1.0)
    kept, stats = filter_groups([ALL_CORRECT, MIXED], dynamic=dynamic)
    assert kept == [MIXED]
    assert stats.filtered_groups == 1
    assert trains(ALL_CORRECT, dynamic=DynamicSampling("score", overlong_weight=1.0))


def test_task_signal_takes_the_weighted_penalty_off() -> None:
    # weight .5: the shaped score is task + .5 * penalty; task = score - .5 * penalty.
    result = Result(id="a", score=1.0 - 0.5 * 0.4, components={"task": 1.0, "overlong": -0.4})
    assert DynamicSampling("task", overlong_weight=0.5).score(result) == pytest.approx(1.0)
    assert DynamicSampling("task").score(result) == pytest.approx(0.8)  # no shaping: the score


def test_a_named_component_is_the_signal() -> None:
    accuracy = DynamicSampling("accuracy")
    assert not trains(ALL_CORRECT, dynamic=accuracy)
    signals = accuracy.signals(MIXED)
    assert signals[:2] + signals[3:] == [1.0, 0.0, 1.0]
    assert math.isnan(signals[2])  # masked: NaN, never a 0


def test_a_missing_component_names_the_field() -> None:
    with pytest.raises(ValueError, match=r"signal='correct'.*has: accuracy, overlong"):
        trains(ALL_CORRECT, dynamic=DynamicSampling("correct"))


def test_without_dynamic_sampling_only_fully_masked_groups_drop() -> None:
    kept, stats = filter_groups([ALL_CORRECT, _group(None, None)], dynamic=None)
    assert kept == [ALL_CORRECT] and stats.dropped_groups == 1 and stats.filtered_groups == 0


def test_a_failed_gate_is_a_task_score_of_0_not_minus_the_penalty() -> None:
    # An inline composite with a format gate; `with_overlong` appends the penalty to it, so a
    # failed gate zeroes the penalty too. Both members score 0: no signal, the group drops.
    # (Taking the penalty off the 0 gave task scores 0.5 and 0: a spread, and the group
    # trained with all-zero advantages.)
    gated = RewardSpec(
        "composite",
        {
            "components": [
                {"verifier": "format", "gate": True},
                {"name": "accuracy", "verifier": "math"},
            ]
        },
    )
    results = [
        Result(
            id=str(i),
            score=0.0,
            reason="gate_failed:format",
            components={"format": 0.0, "accuracy": 1.0, "overlong": penalty},
        )
        for i, penalty in enumerate([-0.5, 0.0])
    ]
    row = PromptRow("p", (), gated, None)
    group = Group(row, [1], [Completion([5], [-1.0], "x")] * 2, results)
    dynamic = DynamicSampling("task", overlong_weight=1.0)
    assert dynamic.signals(group) == [0.0, 0.0]
    assert not trains(group, dynamic=dynamic)
    # A gate that passes (score >= its threshold) leaves the subtraction as it was.
    passed = Result(
        id="p", score=0.7, components={"format": 1.0, "accuracy": 1.0, "overlong": -0.3}
    )
    assert dynamic.score(passed, gated) == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("rewards", "valid", "expected"),
    [
        ([1.0, 0.0], [True, True], True),  # a spread
        ([1.0, 1.0, 1.0], [True, True, True], False),  # all equal
        ([1.0, 1.0 + 1e-12], [True, True], False),  # equal up to rounding
        ([1.0, 0.0], [True, False], False),  # one valid member has no spread
        ([math.nan, 0.0, 1.0], [False, True, True], True),  # the masked one plays no part
        ([0.0, math.nan, 0.0], [True, False, True], False),
        ([], [], False),
    ],
)
def test_informative_needs_two_valid_rewards_that_differ(
    rewards: list[float], valid: list[bool], expected: bool
) -> None:
    assert informative(rewards, valid) is expected


def test_filter_counts_dropped_and_filtered_apart_and_keeps_the_order() -> None:
    # With dynamic sampling on the accuracy: fully masked -> dropped; all correct -> filtered;
    # one valid member only -> filtered (no spread); the two mixed groups train, in order.
    masked = _group(None, None)
    lone = _group((1.0, 0.0), None)
    other = _group((0.0, 0.0), (1.0, 0.0))
    groups = [MIXED, masked, ALL_CORRECT, lone, other]
    kept, stats = filter_groups(groups, dynamic=DynamicSampling("accuracy"))
    assert kept == [MIXED, other]
    assert stats.dropped_groups == 1 and stats.filtered_groups == 2
    assert [trains(g, dynamic=DynamicSampling("accuracy")) for g in groups] == [
        True,
        False,
        False,
        False,
        True,
    ]
    # Without it every group with a verified member trains, a lone one included.
    kept, stats = filter_groups(groups, dynamic=None)
    assert kept == [MIXED, ALL_CORRECT, lone, other]
    assert stats.dropped_groups == 1 and stats.filtered_groups == 0
