"""Pacing and protection for calls to a remote backend: a requests-per-minute limiter, jittered
exponential backoff that honours `Retry-After`, and a circuit breaker.

Pure logic over an injectable clock, so the arithmetic is tested without sleeping.
"""

from __future__ import annotations

import enum
import math
import random
import time
from collections.abc import Callable
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

Clock = Callable[[], float]


class RateLimiter:
    """At most `per_minute` starts per minute, spaced evenly (one every 60/per_minute s), with
    bursts of up to one second's worth. A generic cell-rate algorithm: `_tat` is the
    theoretical arrival time of the next start."""

    def __init__(self, per_minute: float, clock: Clock = time.monotonic) -> None:
        self.interval_s = 60.0 / per_minute
        burst = max(1, math.floor(per_minute / 60))
        self._slack_s = (burst - 1) * self.interval_s
        self._clock = clock
        self._tat = -math.inf

    def reserve(self) -> float:
        """Books the next start; returns how long to wait before it (0 if it may go now).

        E.g. 60/min, burst 1: reserve() at t=0 -> 0 s, again at t=0 -> 1 s, again -> 2 s.
        """
        now = self._clock()
        tat = max(self._tat, now)
        self._tat = tat + self.interval_s
        return max(0.0, tat - self._slack_s - now)


def backoff_s(attempt: int, initial_s: float, max_s: float, rng: random.Random) -> float:
    """Full-jitter exponential backoff: uniform in [0, min(max_s, initial_s * 2**attempt)].

    attempt 0, initial 0.5: [0, 0.5]; attempt 3: [0, 4.0]; attempt 10, max 30: [0, 30].
    """
    return rng.uniform(0.0, min(max_s, initial_s * 2.0**attempt))


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """`Retry-After` as seconds from now: delta-seconds ("3") or an HTTP date (RFC 9110 §10.2.3).

    None when absent or malformed; never negative. Fractions ("1.5") are accepted, as some
    servers send them.
    """
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - (now or datetime.now(UTC))).total_seconds()
    return max(0.0, seconds) if math.isfinite(seconds) else None


class BreakerState(enum.Enum):
    CLOSED = "closed"  # calls go through
    OPEN = "open"  # calls fail at once
    HALF_OPEN = "half_open"  # one trial call may go through


class CircuitBreaker:
    """Closed -> `failure_threshold` consecutive failures -> open: calls fail at once. After
    `reset_s` it is half-open: one trial call goes through; success closes it, failure opens it
    again for another `reset_s`. A trial that never reports (its caller was cancelled) is
    replaced by a new one after `reset_s`; one released (`release_trial`) at once.

    `on_change(closed)` is called whenever it goes from closed to not closed or back.
    """

    def __init__(
        self,
        failure_threshold: int,
        reset_s: float,
        on_change: Callable[[bool], None] = lambda closed: None,
        clock: Clock = time.monotonic,
    ) -> None:
        self.failure_threshold = failure_threshold
        self.reset_s = reset_s
        self._on_change = on_change
        self._clock = clock
        self.state = BreakerState.CLOSED
        self._failures = 0
        self._opened_at = 0.0
        self._trial_at: float | None = None

    @property
    def closed(self) -> bool:
        return self.state is BreakerState.CLOSED

    def retry_in_s(self) -> float:
        """Seconds until a trial call will be let through (0 when closed)."""
        if self.closed:
            return 0.0
        since = self._trial_at if self._trial_at is not None else self._opened_at
        return max(0.0, since + self.reset_s - self._clock())

    def allow(self) -> bool:
        """May a call go out now? In half-open state, True for one trial at a time."""
        if self.state is BreakerState.CLOSED:
            return True
        now = self._clock()
        if self.state is BreakerState.OPEN:
            if now < self._opened_at + self.reset_s:
                return False
            self.state = BreakerState.HALF_OPEN
        if self._trial_at is not None and now < self._trial_at + self.reset_s:
            return False  # a trial is in flight
        self._trial_at = now
        return True

    def record_success(self) -> None:
        self._failures = 0
        self._trial_at = None
        if not self.closed:
            self.state = BreakerState.CLOSED
            self._on_change(True)

    def release_trial(self) -> None:
        """The trial in flight proved nothing either way (a timeout the input may have caused):
        the next caller may be the trial at once."""
        self._trial_at = None

    def record_failure(self) -> None:
        self._failures += 1
        was_closed = self.closed
        if self.state is BreakerState.HALF_OPEN or self._failures >= self.failure_threshold:
            self.state = BreakerState.OPEN
            self._opened_at = self._clock()
            self._trial_at = None
            if was_closed:
                self._on_change(False)
