"""Rate limiter, backoff, Retry-After and circuit breaker arithmetic, on a fake clock."""

from __future__ import annotations

import random
from datetime import UTC, datetime

import pytest

from verifier_server.verifiers.judge.limits import (
    BreakerState,
    CircuitBreaker,
    RateLimiter,
    backoff_s,
    parse_retry_after,
)


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_rate_limiter_spaces_starts_evenly() -> None:
    clock = FakeClock()
    limiter = RateLimiter(60, clock)  # one per second, burst 1
    # Three at t=100: the first goes now, the next two wait 1 s and 2 s.
    assert [limiter.reserve() for _ in range(3)] == [0.0, 1.0, 2.0]
    clock.now = 110.0  # idle for long: no credit is hoarded beyond the burst
    assert [limiter.reserve() for _ in range(2)] == [0.0, 1.0]


def test_rate_limiter_allows_one_seconds_worth_at_once() -> None:
    clock = FakeClock()
    limiter = RateLimiter(120, clock)  # interval 0.5 s, burst floor(120/60) = 2
    # Starts at 0, 0, then 0.5 and 1.0 s: the slack is (2-1) * 0.5 = 0.5 s.
    assert [limiter.reserve() for _ in range(4)] == [0.0, 0.0, 0.5, 1.0]


def test_backoff_is_full_jitter_under_a_doubling_cap() -> None:
    rng = random.Random(0)
    for attempt, cap in [(0, 0.5), (1, 1.0), (3, 4.0), (10, 30.0)]:
        samples = [backoff_s(attempt, 0.5, 30.0, rng) for _ in range(500)]
        assert min(samples) >= 0.0 and max(samples) <= cap
        assert max(samples) > 0.8 * cap  # it spreads over the whole range


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("3", 3.0),
        ("1.5", 1.5),
        ("-4", 0.0),
        ("Wed, 21 Oct 2015 07:28:10 GMT", 10.0),  # 10 s after `now` below
        ("Wed, 21 Oct 2015 07:27:00 GMT", 0.0),  # in the past
        ("soon", None),
        ("", None),
        (None, None),
        ("nan", None),
    ],
)
def test_retry_after_is_seconds_or_an_http_date(value: str | None, expected: float | None) -> None:
    now = datetime(2015, 10, 21, 7, 28, 0, tzinfo=UTC)
    assert parse_retry_after(value, now) == expected


def test_breaker_opens_after_consecutive_failures_and_recovers_through_one_trial() -> None:
    clock, changes = FakeClock(), []
    breaker = CircuitBreaker(3, reset_s=10, on_change=changes.append, clock=clock)
    breaker.record_failure()
    breaker.record_failure()
    breaker.record_success()  # resets the count: failures must be consecutive
    breaker.record_failure()
    breaker.record_failure()
    assert breaker.allow() and changes == []
    breaker.record_failure()
    assert breaker.state is BreakerState.OPEN and changes == [False]
    assert not breaker.allow() and breaker.retry_in_s() == 10
    clock.now += 10
    assert breaker.allow()  # the trial
    assert breaker.state is BreakerState.HALF_OPEN
    assert not breaker.allow()  # only one trial at a time
    breaker.record_success()
    assert breaker.closed and changes == [False, True]


def test_a_failed_trial_reopens_for_another_period() -> None:
    clock, changes = FakeClock(), []
    breaker = CircuitBreaker(1, reset_s=5, on_change=changes.append, clock=clock)
    breaker.record_failure()
    clock.now += 5
    assert breaker.allow()
    breaker.record_failure()
    assert breaker.state is BreakerState.OPEN and changes == [False]  # no flapping report
    clock.now += 4.9
    assert not breaker.allow()
    clock.now += 0.1
    assert breaker.allow()


def test_a_trial_that_never_reports_is_replaced_after_reset() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(1, reset_s=5, clock=clock)
    breaker.record_failure()
    clock.now += 5
    assert breaker.allow()  # this trial's caller is cancelled and never reports
    clock.now += 4
    assert not breaker.allow()
    clock.now += 1
    assert breaker.allow()


def test_a_trial_that_proves_nothing_lets_the_next_one_go_at_once() -> None:
    # A trial holding a long completion that timed out says nothing about the backend: the
    # next caller (or the health probe) may try at once, not reset_s later.
    clock = FakeClock()
    breaker = CircuitBreaker(1, reset_s=5, clock=clock)
    breaker.record_failure()
    clock.now += 5
    assert breaker.allow()
    breaker.release_trial()
    assert breaker.state is BreakerState.HALF_OPEN and breaker.allow()
    breaker.record_success()
    breaker.release_trial()  # closed: nothing to release
    assert breaker.closed and breaker.allow()
