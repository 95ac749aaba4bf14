"""The length verifier: DAPO's soft overlong penalty and the target range, hand-computed."""

from __future__ import annotations

import itertools
import re
from typing import Any

import pytest
from pydantic import ValidationError

from verifier_server.types import Item, Result, Status
from verifier_server.verifiers.length import (
    LengthVerifier,
    overlong_penalty,
    target_length_reward,
)

# DAPO's reference setting: L_max = 20480, L_cache = 4096, so the ramp starts at 16384.
DAPO = {"max_tokens": 20480, "cache_tokens": 4096}


@pytest.mark.parametrize(
    ("length", "expected"),
    [
        (0, 0.0),
        (16384, 0.0),  # L = max - cache: still free
        (16385, -1 / 4096),  # (16384 - 16385) / 4096
        (17408, -0.25),  # (16384 - 17408) / 4096 = -1024 / 4096
        (18432, -0.5),  # (16384 - 18432) / 4096 = -2048 / 4096
        (20480, -1.0),  # (16384 - 20480) / 4096 = -4096 / 4096
        (20481, -1.0),  # beyond max: flat -1
        (10**9, -1.0),
    ],
)
def test_overlong_penalty_dapo_values(length: int, expected: float) -> None:
    assert overlong_penalty(length, **DAPO) == pytest.approx(expected)


@pytest.mark.parametrize(("length", "expected"), [(99, 0.0), (100, 0.0), (101, -1.0)])
def test_overlong_penalty_without_cache_is_a_step(length: int, expected: float) -> None:
    assert overlong_penalty(length, max_tokens=100, cache_tokens=0) == expected


def test_overlong_penalty_is_monotone_and_bounded() -> None:
    values = [overlong_penalty(length, max_tokens=50, cache_tokens=20) for length in range(80)]
    assert all(a >= b for a, b in itertools.pairwise(values))
    assert min(values) == -1.0 and max(values) == 0.0


@pytest.mark.parametrize(("max_tokens", "cache_tokens"), [(100, 100), (100, 101), (100, -1)])
def test_overlong_penalty_rejects_bad_arguments(max_tokens: int, cache_tokens: int) -> None:
    with pytest.raises(ValueError, match="cache_tokens"):
        overlong_penalty(10, max_tokens, cache_tokens)


@pytest.mark.parametrize(
    ("length", "expected"),
    [
        (100, 1.0),  # range [100, 200]
        (200, 1.0),
        (150, 1.0),
        (90, 0.8),  # 1 - (100 - 90) / 50
        (50, 0.0),  # 1 - 50 / 50
        (0, 0.0),  # clamped, not negative
        (225, 0.5),  # 1 - (225 - 200) / 50
        (260, 0.0),
    ],
)
def test_target_length_reward(length: int, expected: float) -> None:
    assert target_length_reward(length, 100, 200, tolerance_tokens=50) == pytest.approx(expected)


@pytest.mark.parametrize(("length", "expected"), [(99, 0.0), (100, 1.0), (200, 1.0), (201, 0.0)])
def test_target_length_reward_without_tolerance_is_a_box(length: int, expected: float) -> None:
    assert target_length_reward(length, 100, 200, tolerance_tokens=0) == expected


def score(tokens: int, completion: str = "text", truncated: bool = False, **params: Any) -> Result:
    item = Item(id="q", completion=completion, completion_tokens=tokens, truncated=truncated)
    [result] = LengthVerifier().score([item], LengthVerifier.Params(**params))
    return result


@pytest.mark.parametrize(
    ("tokens", "expected_score", "reason"),
    [(16000, 0.0, ""), (18432, -0.5, "overlong_buffer"), (30000, -1.0, "over_max_tokens")],
)
def test_verifier_overlong(tokens: int, expected_score: float, reason: str) -> None:
    result = score(tokens, **DAPO)
    assert (result.score, result.status, result.reason) == (expected_score, Status.OK, reason)
    assert result.details == {"completion_tokens": tokens}


@pytest.mark.parametrize(
    ("tokens", "expected_score", "reason"),
    [(150, 1.0, ""), (90, 0.8, "below_min_tokens"), (225, 0.5, "above_max_tokens")],
)
def test_verifier_target(tokens: int, expected_score: float, reason: str) -> None:
    params = {"mode": "target", "min_tokens": 100, "max_tokens": 200, "tolerance_tokens": 50}
    result = score(tokens, **params)
    assert (result.score, result.reason) == (pytest.approx(expected_score), reason)


def test_params_from_the_wire_arrive_as_floats() -> None:
    assert score(18432, max_tokens=20480.0, cache_tokens=4096.0).score == -0.5


def test_truncated_penalty_replaces_the_length_score() -> None:
    result = score(100, truncated=True, truncated_penalty=-1.0, **DAPO)
    assert (result.score, result.reason) == (-1.0, "truncated")


def test_truncation_is_judged_by_length_when_no_penalty_is_set() -> None:
    assert score(100, truncated=True, **DAPO).score == 0.0


def test_missing_token_count_is_invalid_not_free_reward() -> None:
    result = score(0, completion="a long answer", **DAPO)
    assert (result.status, result.reason) == (Status.INVALID_REQUEST, "invalid_completion_tokens")
    assert result.details["field"] == "completion_tokens"


def test_empty_completion_with_zero_tokens_is_fine() -> None:
    assert score(0, completion="", **DAPO).status == Status.OK


def test_negative_token_count_is_invalid() -> None:
    assert score(-5, **DAPO).status == Status.INVALID_REQUEST


@pytest.mark.parametrize(
    ("params", "message"),
    [
        (
            {"max_tokens": 100, "cache_tokens": 100},
            "cache_tokens (100) must be less than max_tokens",
        ),
        (
            {"max_tokens": 100, "cache_tokens": 200},
            "cache_tokens (200) must be less than max_tokens",
        ),
        ({"max_tokens": 100, "min_tokens": 10}, "min_tokens does not apply to mode 'overlong'"),
        ({"max_tokens": 100, "tolerance_tokens": 5}, "tolerance_tokens does not apply"),
        ({"mode": "target", "max_tokens": 100, "cache_tokens": 5}, "cache_tokens does not apply"),
        ({"mode": "target", "max_tokens": 10, "min_tokens": 20}, "min_tokens (20) must not exceed"),
        ({"cache_tokens": 10}, "max_tokens\n  Field required"),
        ({"max_tokens": 0}, "max_tokens\n  Input should be greater than 0"),
        ({"max_tokens": 100.5}, "max_tokens\n  Input should be a valid integer"),
        ({"max_tokens": 100, "truncated_penalty": -2.0}, "truncated_penalty\n"),
        ({"max_tokens": 100, "max_length": 5}, "max_length\n  Extra inputs are not permitted"),
    ],
)
def test_bad_params_name_the_field(params: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=re.escape(message)):
        LengthVerifier.Params(**params)
