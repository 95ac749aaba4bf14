"""A cache of identical judge requests: an LRU of successful replies plus single flight, so
concurrent identical requests share one backend call. Failures are never stored: the next
identical request tries the backend again.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class ReplyCache(Generic[T]):
    """`max_entries = 0` stores nothing (identical requests in flight together still share)."""

    def __init__(self, max_entries: int) -> None:
        self.max_entries = max_entries
        self._stored: OrderedDict[str, T] = OrderedDict()
        self._in_flight: dict[str, asyncio.Task[T]] = {}
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._stored)

    async def get_or_call(self, key: str, call: Callable[[], Awaitable[T]]) -> tuple[T, bool]:
        """(value, served_without_a_new_call). `call` runs at most once per key at a time.

        The shared call is shielded: a waiter that gives up does not cancel it for the others.
        """
        if key in self._stored:
            self._stored.move_to_end(key)
            self.hits += 1
            return self._stored[key], True
        task = self._in_flight.get(key)
        shared = task is not None
        if task is None:
            self.misses += 1
            task = asyncio.ensure_future(call())
            self._in_flight[key] = task
            task.add_done_callback(lambda t: self._finished(key, t))
        else:
            self.hits += 1
        return await asyncio.shield(task), shared

    def _finished(self, key: str, task: asyncio.Task[T]) -> None:
        self._in_flight.pop(key, None)
        if task.cancelled() or task.exception() is not None:  # also marks it retrieved
            return
        if self.max_entries > 0:
            self._stored[key] = task.result()
            while len(self._stored) > self.max_entries:
                self._stored.popitem(last=False)
