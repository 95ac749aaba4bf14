"""A job as the pool holds it while it waits and runs: the message for the worker, the futures
its callers await, its time limit and what admission charged for it."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field, replace

from verifier_server.types import Result, Status
from verifier_server.workers.messages import BulkJob, ItemsJob


class BulkFailed(Exception):
    """A bulk job could not finish; every item in it gets `status`."""

    def __init__(self, status: Status, reason: str, message: str = "") -> None:
        super().__init__(message or reason)
        self.status = status
        self.reason = reason
        self.message = message


@dataclass(eq=False)
class QueuedItems:
    """An ItemsJob in the pool: a future per item; the time limit is per item."""

    job: ItemsJob
    futures: list[asyncio.Future[Result]]
    timeout_s: float  # per item
    deadline: float | None  # time.monotonic() by which the caller wants results
    cost_s: float  # admission estimate per item, added to the pool's backlog on submit
    cost_key: str  # what the estimate is learned for
    caller: str = ""  # whose work it is: the queue is fair between callers
    queued_at: float = field(default_factory=time.monotonic)

    @property
    def n_items(self) -> int:
        return len(self.job.items)

    @property
    def abandoned(self) -> bool:
        return all(f.done() for f in self.futures)

    def fail(self, start: int, stop: int, status: Status, reason: str, message: str) -> None:
        items = self.job.items[start:stop]
        for item, future in zip(items, self.futures[start:stop], strict=True):
            if not future.done():
                future.set_result(Result.failed(item.id, status, reason, message))

    def score_zero(self, index: int, reason: str, why: str) -> None:
        """The item's completion alone killed or crashed its worker: a verdict of 0 (OK), since
        a masked item would be no penalty, and a policy would learn to provoke it."""
        future = self.futures[index]
        if not future.done():
            item_id = self.job.items[index].id
            future.set_result(Result(id=item_id, score=0.0, reason=reason, details={"error": why}))

    def rest(self, start: int) -> QueuedItems:
        """The items from `start` on, as a job of their own."""
        job = replace(self.job, items=self.job.items[start:])
        return replace(self, job=job, futures=self.futures[start:])


@dataclass(eq=False)
class QueuedBulk:
    """A BulkJob in the pool: one future for the job; the time limit is for the whole job."""

    job: BulkJob
    future: asyncio.Future[bytes]
    timeout_s: float  # for the whole job
    deadline: float | None
    cost_s: float
    cost_key: str
    caller: str = ""
    retried: bool = False  # sent again once after its worker died under it
    queued_at: float = field(default_factory=time.monotonic)

    @property
    def n_items(self) -> int:
        return len(self.job.indices)

    @property
    def abandoned(self) -> bool:
        return self.future.done()

    def fail(self, start: int, stop: int, status: Status, reason: str, message: str) -> None:
        if not self.future.done():  # the job's items share one fate
            self.future.set_exception(BulkFailed(status, reason, message))


Queued = QueuedItems | QueuedBulk
