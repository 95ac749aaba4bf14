"""The pool's health: whether it has a ready worker, and how fast it replaces dead ones."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

log = logging.getLogger(__name__)

_CAPACITY_GRACE_S = 1.0  # no ready worker for this long: the pool reports it has no capacity
_RESPAWN_BACKOFF_MAX_S = 5.0


def respawn_delay_s(failed_starts: int) -> float:
    """How long to wait before replacing a worker, after `failed_starts` workers in a row died
    before they were ready (a plugin or a warm-up that fails now): one that is replaced at
    once would be replaced forever, so back off, doubling up to _RESPAWN_BACKOFF_MAX_S."""
    return 0.0 if failed_starts == 0 else min(_RESPAWN_BACKOFF_MAX_S, 0.05 * 2**failed_starts)


class CapacityWatch:
    """Tells `on_capacity` when the pool loses its last ready worker for longer than
    `_CAPACITY_GRACE_S` (a crash loop of respawns, say), and when it gets one back; a worker
    replaced in the ordinary way is not worth a health change."""

    def __init__(self) -> None:
        self.has_capacity = True
        self.on_capacity: Callable[[bool], None] | None = None
        self._timer: asyncio.TimerHandle | None = None

    def check(self, loop: asyncio.AbstractEventLoop, ready_workers: Callable[[], int]) -> None:
        """Call whenever a worker becomes ready, retires or dies."""
        if ready_workers():
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            self._set(True)
        elif self.has_capacity and self._timer is None:
            self._timer = loop.call_later(_CAPACITY_GRACE_S, self._lost, ready_workers)

    def _lost(self, ready_workers: Callable[[], int]) -> None:
        self._timer = None
        if not ready_workers():
            self._set(False)

    def _set(self, has_capacity: bool) -> None:
        if has_capacity == self.has_capacity:
            return
        self.has_capacity = has_capacity
        log.log(
            logging.INFO if has_capacity else logging.ERROR,
            "worker pool %s",
            "has a ready worker again" if has_capacity else "has no ready worker",
        )
        if self.on_capacity is not None:
            self.on_capacity(has_capacity)
