"""combine(): weighted sums, min/max and gates, with the arithmetic in comments."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from verifier_server.composite import CompositeParams, combine
from verifier_server.types import Result, Status


def spec(*components: dict, combine: str = "sum") -> CompositeParams:
    return CompositeParams.model_validate({"combine": combine, "components": list(components)})


def ok(score: float) -> Result:
    return Result(id="x", score=score)


def failed(status: Status = Status.TIMEOUT) -> Result:
    return Result.failed("x", status, "timeout")


def test_weighted_sum() -> None:
    s = spec({"verifier": "a", "weight": 1.0}, {"verifier": "b", "weight": 0.2})
    result = combine(s, "x", [ok(0.5), ok(1.0)])
    assert result.score == pytest.approx(0.7)  # 1.0 * 0.5 + 0.2 * 1.0
    assert result.components == {"a": 0.5, "b": 1.0}


@pytest.mark.parametrize(("mode", "expected"), [("min", 0.25), ("max", 0.75)])
def test_min_and_max_ignore_weights(mode: str, expected: float) -> None:
    s = spec({"verifier": "a", "weight": 10}, {"verifier": "b", "weight": 0}, combine=mode)
    assert combine(s, "x", [ok(0.25), ok(0.75)]).score == expected


def test_failed_gate_zeroes_the_reward_and_says_which() -> None:
    s = spec(
        {"verifier": "a"}, {"name": "safe", "verifier": "b", "gate": True, "gate_threshold": 0.5}
    )
    result = combine(s, "x", [ok(1.0), ok(0.4)])  # 0.4 < 0.5: gate fails
    assert (result.status, result.score, result.reason) == (Status.OK, 0.0, "gate_failed:safe")


def test_passed_gate_adds_nothing() -> None:
    s = spec({"verifier": "a", "weight": 2}, {"verifier": "b", "gate": True})
    assert combine(s, "x", [ok(0.5), ok(1.0)]).score == 1.0  # 2 * 0.5; the gate's 1.0 not added


def test_failed_gate_wins_over_an_unverifiable_part() -> None:
    s = spec({"verifier": "a"}, {"verifier": "g", "gate": True})
    assert combine(s, "x", [failed(), ok(0.0)]).status == Status.OK


def test_unverifiable_part_makes_the_whole_not_ok() -> None:
    s = spec({"verifier": "a"}, {"verifier": "b"})
    result = combine(s, "x", [ok(1.0), failed(Status.BACKEND_UNAVAILABLE)])
    assert result.status == Status.BACKEND_UNAVAILABLE and result.score == 0.0
    assert result.reason == "component_failed:b:timeout"
    assert result.components == {"a": 1.0}  # what could be scored is still reported


def test_elapsed_is_the_sum_of_the_parts() -> None:
    parts = [Result(id="x", score=1, elapsed_ms=2.0), Result(id="x", score=1, elapsed_ms=3.5)]
    assert combine(spec({"verifier": "a"}, {"verifier": "b"}), "x", parts).elapsed_ms == 5.5


@pytest.mark.parametrize(
    ("components", "message"),
    [
        ([{"verifier": "a"}, {"verifier": "a"}], "component names must be unique"),
        ([{"verifier": "a", "gate": True}], "at least one component must not be a gate"),
        ([], "at least 1 item"),
        ([{"verifier": "a", "wieght": 1}], "wieght"),
    ],
)
def test_bad_compositions_are_rejected(components: list, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        CompositeParams.model_validate({"components": components})
