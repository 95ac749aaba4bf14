"""Jobs waiting for a worker, fair between callers."""

from __future__ import annotations

from collections import deque

from verifier_server.workers.jobs import Queued


class FairQueue:
    """First in, first out within a caller, round-robin between callers, so one caller's
    backlog cannot starve another's."""

    def __init__(self) -> None:
        self._by_caller: dict[str, deque[Queued]] = {}
        self._turns: deque[str] = deque()  # callers with jobs, in serving order
        self._len = 0
        self.items = 0  # in all its jobs

    def __len__(self) -> int:
        return self._len

    def append(self, job: Queued) -> None:
        self._queue_of(job.caller, front=False).append(job)
        self._len += 1
        self.items += job.n_items

    def appendleft(self, job: Queued) -> None:
        """Next out: for what a worker handed back or a job that lost its worker."""
        self._queue_of(job.caller, front=True).appendleft(job)
        self._len += 1
        self.items += job.n_items

    def popleft(self) -> Queued:
        caller = self._turns.popleft()
        jobs = self._by_caller[caller]
        job = jobs.popleft()
        if jobs:
            self._turns.append(caller)
        else:
            del self._by_caller[caller]
        self._len -= 1
        self.items -= job.n_items
        return job

    def head(self, caller: str) -> Queued | None:
        """The caller's next job, if it has one queued."""
        jobs = self._by_caller.get(caller)
        return jobs[0] if jobs else None

    def _queue_of(self, caller: str, front: bool) -> deque[Queued]:
        jobs = self._by_caller.get(caller)
        if jobs is None:
            jobs = self._by_caller[caller] = deque()
            if front:
                self._turns.appendleft(caller)
            else:
                self._turns.append(caller)
        elif front and self._turns[0] != caller:
            self._turns.remove(caller)
            self._turns.appendleft(caller)
        return jobs
