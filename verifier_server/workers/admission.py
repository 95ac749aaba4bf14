"""Admission for the worker pool: what each caller has queued or running, what an item costs,
and so how much more work can finish before a deadline.

Costs are learned per cost key (a verifier and its params) from the times workers report;
the backlog is priced at the latest learned costs, so a cold verifier's items queued at the
initial guess are re-priced as soon as some have run (the backlog used to keep the guess,
and admitted far too much).
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict

from verifier_server.workers.fair_queue import FairQueue
from verifier_server.workers.jobs import Queued

_INITIAL_ITEM_COST_S = 0.01  # admission estimate before a verifier has been measured
MAX_COST_KEYS = 10_000  # per-item cost estimates kept (see Admission.learn_cost)


class Admission:
    """The pool's backlog by caller and cost key, and the learned cost of an item."""

    def __init__(self, n_workers: int, queue: FairQueue) -> None:
        self.n_workers = n_workers
        self._queue = queue  # read for each caller's next job (see admissible)
        self._pending: defaultdict[str, Counter[str]] = defaultdict(Counter)  # by caller
        self._item_cost_s: dict[str, float] = {}

    def add(self, job: Queued) -> None:
        """`job` was queued: its items count until settled."""
        self._pending[job.caller][job.cost_key] += job.n_items

    def settle(self, job: Queued, n_items: int) -> None:
        """`n_items` of `job` no longer queued or running."""
        pending = self._pending[job.caller]
        left = pending[job.cost_key] - n_items
        if left:
            pending[job.cost_key] = left
        else:  # keys are callers' params, and callers come and go: keep none unused
            del pending[job.cost_key]
            if not pending:
                del self._pending[job.caller]

    def item_cost_s(self, cost_key: str) -> float:
        return self._item_cost_s.get(cost_key, _INITIAL_ITEM_COST_S)

    def learn_cost(self, cost_key: str, seconds: float) -> None:
        # Most recently learned last; past MAX_COST_KEYS the stalest estimate is forgotten
        # (a key is a verifier and its params, which callers choose).
        previous = self._item_cost_s.pop(cost_key, None)
        if previous is None and len(self._item_cost_s) >= MAX_COST_KEYS:
            del self._item_cost_s[next(iter(self._item_cost_s))]
        self._item_cost_s[cost_key] = (
            seconds if previous is None else 0.8 * previous + 0.2 * seconds
        )

    def estimated_wait_s(self) -> float:
        """Estimated seconds of queued and running work, per worker."""
        return sum(self._backlog_of(caller) for caller in self._pending) / self.n_workers

    def admissible(
        self, cost_key: str, n_items: int, deadline: float | None, caller: str = ""
    ) -> int:
        """How many of `n_items` of `caller` can finish before `deadline`. Callers take turns
        by jobs (see FairQueue): before the last of the caller's work, each other caller runs
        at most as much work as the caller has, plus the job at its head; so the wait counts
        the caller's own backlog and, of each other caller's, no more than that."""
        if deadline is None:
            return n_items
        room_s = (deadline - time.monotonic()) * 0.9 * self.n_workers
        own_s = self._backlog_of(caller)
        others = [(self._backlog_of(c), self._head_s(c)) for c in self._pending if c != caller]
        cost_s = self.item_cost_s(cost_key)

        def fits(n: int) -> bool:
            mine_s = own_s + n * cost_s
            before_s = sum(min(total_s, mine_s + head_s) for total_s, head_s in others)
            return mine_s + before_s <= room_s

        low, high = 0, n_items  # the most that fit: the wait only grows with n
        while low < high:
            middle = (low + high + 1) // 2
            low, high = (middle, high) if fits(middle) else (low, middle - 1)
        return low

    def admits_job(
        self, cost_key: str, n_items: int, deadline: float | None, caller: str = ""
    ) -> bool:
        """Whether a job of `n_items` that runs on one worker (a bulk job) can finish before
        `deadline`: the backlog leaves room for it, and it fits the time left on its own."""
        if deadline is None:
            return True
        alone_s = self.item_cost_s(cost_key) * n_items
        return (
            alone_s <= (deadline - time.monotonic()) * 0.9
            and self.admissible(cost_key, n_items, deadline, caller) == n_items
        )

    def _backlog_of(self, caller: str) -> float:
        pending = self._pending.get(caller, {})
        return sum(n * self.item_cost_s(key) for key, n in pending.items())

    def _head_s(self, caller: str) -> float:
        head = self._queue.head(caller)
        return 0.0 if head is None else head.n_items * self.item_cost_s(head.cost_key)
