"""Sigmoid and running standardisation, against hand-worked values."""

from __future__ import annotations

import math

import pytest

from verifier_server.verifiers.reward_model.normalize import RunningStats, sigmoid


def test_sigmoid_values_and_no_overflow() -> None:
    assert sigmoid(0.0) == 0.5
    assert sigmoid(2.0) == pytest.approx(1 / (1 + math.exp(-2)))  # 0.8808
    assert sigmoid(-2.0) == pytest.approx(1 - sigmoid(2.0))
    assert sigmoid(1000.0) == 1.0 and sigmoid(-1000.0) == 0.0


def test_running_stats_match_the_batch_formulas() -> None:
    stats = RunningStats()
    assert stats.standardise(3.0) == 3.0  # nothing seen: x - 0
    for x in [2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0]:
        stats.add(x)
    # mean = 40 / 8 = 5; squared deviations 9+1+1+1+0+0+4+16 = 32; population std = sqrt(4) = 2
    assert stats.count == 8 and stats.mean == pytest.approx(5.0) and stats.std == pytest.approx(2)
    assert stats.standardise(9.0) == pytest.approx(2.0)  # (9 - 5) / 2


def test_a_single_value_is_centred_not_divided_by_zero() -> None:
    stats = RunningStats()
    stats.add(1.5)
    assert stats.std == 0.0 and stats.standardise(2.5) == 1.0
