"""A process pool for CPU-bound verifiers with a hard time limit per item.

Guarantees:
- Workers are forked from a forkserver that `start()` creates before any gRPC server or
  channel exists (gRPC forbids forking after); replacements come from the same forkserver.
- Items run one at a time per worker. An item that overruns its `timeout_s` is SIGKILLed with
  its worker and gets STATUS_TIMEOUT; the rest of its chunk is re-queued on other workers and
  the worker is replaced. No signal-based timeouts: they cannot stop C code.
- A kill for time during the verifier's `completion_phase()` (see verifier_server.execution;
  the reference was already checked) is the completion's doing: that item is OK with score 0
  and reason `answer_too_complex`, never a status a trainer would mask; so is a crash there
  (SIGSEGV, SIGBUS, SIGABRT, SIGFPE, SIGILL: `answer_crashed_verifier`).
- A worker that dies for any other reason (killed from outside, segfault, out of memory)
  costs only the item it was running (STATUS_VERIFIER_ERROR "worker_died"); the pool goes on.
- Items whose caller's deadline passed before they started come back STATUS_OVERLOADED, and
  chunks whose callers are all gone are dropped unstarted.
- Workers ignore SIGINT and die with their parent (PR_SET_PDEATHSIG), so none outlive it.

Not guaranteed: memory isolation beyond `memory_mb` (RLIMIT_AS per worker), fairness beyond
turns between callers (jobs, not items: first-in first-out within a caller), or any isolation
of untrusted *code*: that is the job of `sandboxes`.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import functools
import logging
import math
import multiprocessing
import os
import queue
import resource
import signal
import threading
import time
from collections import Counter, defaultdict, deque
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from multiprocessing.connection import Connection
from typing import Any, Protocol

from verifier_server.convert import ItemLimits
from verifier_server.types import Item, Result, RewardSpec, Status

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1
_INITIAL_ITEM_COST_S = 0.01  # admission estimate before a verifier has been measured
_RETIRE_GROWTH_MB = 512  # see _retire_threshold_mb
_CAPACITY_GRACE_S = 1.0  # no ready worker for this long: the pool reports it has no capacity
_RESPAWN_BACKOFF_MAX_S = 5.0
# Deaths a completion can cause in C code (a parser's stack overflow, an abort); a SIGKILL
# from outside (an operator, the OOM killer) is not counted as the completion's doing.
_CRASHES = frozenset({signal.SIGSEGV, signal.SIGBUS, signal.SIGABRT, signal.SIGFPE, signal.SIGILL})
_MAX_COST_KEYS = 10_000  # per-item cost estimates kept (see _learn_cost)


# --------------------------------------------------------------------------- worker side


@dataclass(frozen=True, slots=True)
class ItemsJob:
    """Items of one (verifier, params), scored one at a time: one ItemDone per item, or a
    JobStopped when the parent cancels the job or the worker retires in the middle of it."""

    verifier: str
    params: Any
    items: list[Item]
    deadline: float | None  # time.monotonic() (system-wide) past which items are not started


@dataclass(frozen=True, slots=True)
class BulkJob:
    """Serialized items of one linear-time verifier, scored in one go (see verifier_server.bulk):
    one BulkDone or BulkError for the whole job."""

    verifier: str
    params: Any
    spec: RewardSpec
    payload: bytes  # a serialized ScoreRequest holding exactly these items
    indices: list[int]  # their positions in the caller's request, for error fields
    item_limits: ItemLimits


@dataclass(frozen=True, slots=True)
class Ready:
    pid: int


@dataclass(frozen=True, slots=True)
class ItemDone:
    index: int  # in the job's items
    result: Result
    ran: bool = True  # False: refused unstarted (its deadline had passed); costs say nothing


@dataclass(frozen=True, slots=True)
class BulkDone:
    response: bytes  # a serialized ScoreResponse, one result per item in order
    elapsed_s: float


@dataclass(frozen=True, slots=True)
class BulkError:
    message: str  # a server bug, reported for the job's items


@dataclass(frozen=True, slots=True)
class Phase:
    """The worker enters (True) or leaves (False) the completion phase of the item it runs
    (see verifier_server.execution.completion_phase)."""

    in_completion: bool


@dataclass(frozen=True, slots=True)
class JobStopped:
    """The worker stopped an ItemsJob before item `next_index` (cancelled, or it retires)."""

    next_index: int


@dataclass(frozen=True, slots=True)
class Retiring:
    """The worker exits after this message (its memory did not come back after an item);
    nothing it was given is lost: the parent re-queues what it had not started."""

    rss_mb: float


@dataclass(frozen=True, slots=True)
class Cancel:
    """Parent to worker: every caller of the running ItemsJob has gone; stop it."""


Reply = Ready | Phase | ItemDone | BulkDone | BulkError | JobStopped | Retiring


class JobObserver(Protocol):
    def observe_job(self, verifier: str, queue_wait_s: float, run_s: float | None) -> None: ...


def _worker_main(
    conn: Connection, plugins: Sequence[str], memory_mb: int | None, env: Mapping[str, str]
) -> None:
    """Entry point of a worker process: score the jobs the parent sends, one item at a time."""
    os.environ.update(env)  # before any verifier reads its settings (the sandbox's)
    with contextlib.suppress(OSError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if memory_mb:
        limit = memory_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    from verifier_server.bulk import score_serialized
    from verifier_server.execution import set_phase_reporter
    from verifier_server.registry import Registry

    set_phase_reporter(lambda inside: conn.send(Phase(inside)))
    registry = Registry.load(plugins)
    registry.warm_up()  # e.g. sandbox slots: started here, in a process without gRPC
    retire_above_mb = _retire_threshold_mb(_rss_mb(), memory_mb)
    conn.send(Ready(os.getpid()))
    while True:
        job: ItemsJob | BulkJob | Cancel | None = conn.recv()
        if job is None:
            return
        if isinstance(job, Cancel):  # arrived after its job finished: nothing to stop
            continue
        verifier = registry.instance(job.verifier)
        if isinstance(job, ItemsJob):
            if not _run_items(conn, verifier, job, retire_above_mb):
                return
            continue
        started = time.perf_counter()
        try:
            response = score_serialized(
                verifier, job.params, job.spec, job.payload, job.indices, job.item_limits
            )
        except Exception as exc:  # a server bug: report it for these items, keep the worker
            conn.send(BulkError(f"{type(exc).__name__}: {exc}"[:500]))
            continue
        elapsed_s = time.perf_counter() - started
        rss_mb = _rss_mb()
        if rss_mb > retire_above_mb:  # said first, so the parent gives it no more work
            conn.send(Retiring(rss_mb))
        conn.send(BulkDone(response, elapsed_s))
        if rss_mb > retire_above_mb:
            return


def _run_items(conn: Connection, verifier: Any, job: ItemsJob, retire_above_mb: float) -> bool:
    """Scores the job's items in order; False when the worker must exit (close or retire)."""
    from verifier_server.execution import run_one

    for index, item in enumerate(job.items):
        if conn.poll():  # only a Cancel (or close) can arrive while a job runs
            message = conn.recv()
            conn.send(JobStopped(index))
            return message is not None
        if job.deadline is not None and time.monotonic() >= job.deadline:
            why = "the caller's deadline passed before this item started"
            result = Result.failed(item.id, Status.OVERLOADED, "deadline_exceeded_in_queue", why)
            ran = False
        else:
            result = run_one(verifier, item, job.params)
            ran = True
        rss_mb = _rss_mb()
        if rss_mb > retire_above_mb:  # said first, so the parent gives it no more work
            conn.send(Retiring(rss_mb))
        conn.send(ItemDone(index, result, ran))
        if rss_mb > retire_above_mb:
            if index + 1 < len(job.items):
                conn.send(JobStopped(index + 1))
            return False
    return True


def _exited(process: multiprocessing.process.BaseProcess) -> bool:
    """Whether the process's exit code is known (without waiting for it)."""
    try:
        return process.exitcode is not None
    except ValueError:  # closed: its exit code was known
        return True


def _rss_mb() -> float:
    """This process's resident memory now (not its peak)."""
    with open("/proc/self/statm", "rb") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _retire_threshold_mb(baseline_mb: float, memory_mb: int | None) -> float:
    """Past this resident size after an item, a worker is replaced: a verifier that once
    needed gigabytes (or hit MemoryError half-way) leaves memory and state behind that the
    next item would inherit."""
    threshold = max(3 * baseline_mb, baseline_mb + _RETIRE_GROWTH_MB)
    return threshold if memory_mb is None else min(threshold, 0.75 * memory_mb)


# --------------------------------------------------------------------------- parent side


class BulkFailed(Exception):
    """A bulk job could not finish; every item in it gets `status`."""

    def __init__(self, status: Status, reason: str, message: str = "") -> None:
        super().__init__(message or reason)
        self.status = status
        self.reason = reason
        self.message = message


@dataclass(eq=False)
class _Items:
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

    def rest(self, start: int) -> _Items:
        """The items from `start` on, as a job of their own."""
        job = replace(self.job, items=self.job.items[start:])
        return replace(self, job=job, futures=self.futures[start:])


@dataclass(eq=False)
class _Bulk:
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


_Job = _Items | _Bulk


class _FairQueue:
    """Jobs waiting for a worker: first in, first out within a caller, round-robin between
    callers, so one caller's backlog cannot starve another's."""

    def __init__(self) -> None:
        self._by_caller: dict[str, deque[_Job]] = {}
        self._turns: deque[str] = deque()  # callers with jobs, in serving order
        self._len = 0
        self.items = 0  # in all its jobs

    def __len__(self) -> int:
        return self._len

    def append(self, job: _Job) -> None:
        self._queue_of(job.caller, front=False).append(job)
        self._len += 1
        self.items += job.n_items

    def appendleft(self, job: _Job) -> None:
        """Next out: for what a worker handed back or a job that lost its worker."""
        self._queue_of(job.caller, front=True).appendleft(job)
        self._len += 1
        self.items += job.n_items

    def popleft(self) -> _Job:
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

    def head(self, caller: str) -> _Job | None:
        """The caller's next job, if it has one queued."""
        jobs = self._by_caller.get(caller)
        return jobs[0] if jobs else None

    def _queue_of(self, caller: str, front: bool) -> deque[_Job]:
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


@dataclass(eq=False)
class _Worker:
    process: multiprocessing.process.BaseProcess
    conn: Connection
    job: _Job | None = None
    index: int = 0  # the item of `job` that is running (for an _Items job)
    started_at: float = 0.0
    timer: asyncio.TimerHandle | None = None
    timed_out: bool = False
    in_completion: bool = False  # the worker reported it is scoring a completion alone
    ready: bool = False
    gone: bool = False
    retiring: bool = False  # said Retiring: exits on its own, owes nothing
    reader: threading.Thread | None = field(default=None, repr=False)
    # Jobs for the worker, sent by a thread of their own: a large job blocks in send() until
    # the worker reads it, and that wait must not stall the event loop.
    outbox: queue.SimpleQueue[Any] = field(default_factory=queue.SimpleQueue, repr=False)


class WorkerPool:
    """Runs `Verifier.score` for "process" verifiers in worker processes."""

    def __init__(
        self,
        n_workers: int,
        plugins: Sequence[str] = (),
        memory_mb: int | None = None,
        chunk_items: int = 16,
        env: Mapping[str, str] | None = None,
    ) -> None:
        """`env`: variables set in each worker before its verifiers load (sandbox settings)."""
        if n_workers < 1:
            raise ValueError("n_workers must be >= 1")
        self.n_workers = n_workers
        self.plugins = tuple(plugins)
        self.memory_mb = memory_mb
        self.env = dict(env or {})
        self.chunk_items = chunk_items
        self._ctx = multiprocessing.get_context("forkserver")
        self._workers: list[_Worker] = []
        self._queue = _FairQueue()
        # Items queued or running, by caller and cost key: the backlog is priced at the latest
        # learned costs (a cold verifier's items queued at the initial guess are re-priced as
        # soon as some have run; the backlog used to keep the guess, and admitted far too much).
        self._pending: defaultdict[str, Counter[str]] = defaultdict(Counter)  # by caller
        self._item_cost_s: dict[str, float] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False
        self.stats = {"timeouts": 0, "worker_deaths": 0, "respawns": 0, "retired": 0}
        self.on_capacity: Callable[[bool], None] | None = None  # see _check_capacity
        self.observer: JobObserver | None = None  # queue waits and run times, for metrics
        self._has_capacity = True
        self._failed_starts = 0  # workers in a row that died before they were ready
        self._capacity_timer: asyncio.TimerHandle | None = None
        # Replacements are started on this thread (see _replace); one is enough.
        self._spawner = ThreadPoolExecutor(1, thread_name_prefix="verifier-worker-spawner")

    # ---- lifecycle

    def start(self, loop: asyncio.AbstractEventLoop, ready_timeout_s: float = 60.0) -> None:
        """Starts the forkserver and the workers, and waits until each has loaded its verifiers.

        Call before creating any gRPC server. Raises RuntimeError if a worker cannot start
        (for instance a plugin module fails to import).
        """
        self._loop = loop
        from verifier_server.registry import FORKSERVER_PRELOAD

        # Built-in verifiers are loaded once in the forkserver, so a worker that replaces a
        # killed one is forked warm (sympy and the LaTeX parser take over a second to load).
        self._ctx.set_forkserver_preload(
            ["verifier_server.workers", "verifier_server.registry", *FORKSERVER_PRELOAD]
        )
        self._spawner.submit(int).result()  # its thread now, not at the first death
        workers = [self._spawn() for _ in range(self.n_workers)]
        for worker in workers:
            if not worker.conn.poll(ready_timeout_s):
                raise RuntimeError(f"worker pid {worker.process.pid} did not start")
            try:
                reply = worker.conn.recv()
            except EOFError:
                raise RuntimeError(
                    "a worker exited during start-up (see the traceback above: a plugin that "
                    "fails to import?)"
                ) from None
            assert isinstance(reply, Ready), reply
            worker.ready = True
            self._start_io(worker)
            self._workers.append(worker)

    async def close(self, timeout_s: float = 2.0) -> None:
        """Stops all workers; items still queued come back STATUS_OVERLOADED."""
        self._closed = True
        self._spawner.shutdown(wait=False, cancel_futures=True)
        while self._queue:
            self._fail(self._queue.popleft(), 0, Status.OVERLOADED, "shutting_down")
        for worker in list(self._workers):
            worker.outbox.put(None)
        end = time.monotonic() + timeout_s
        workers = list(self._workers)
        for worker in workers:
            # A worker that exits meanwhile is reaped (and its handle closed) by _on_exit.
            while not worker.gone and worker.process.is_alive() and time.monotonic() < end:
                await asyncio.sleep(0.01)
            if not worker.gone and worker.process.is_alive():
                worker.process.kill()
                worker.process.join(1)
        # Returns once the forkserver has reaped them (told their exit codes; see _reap).
        while not all(_exited(w.process) for w in workers) and time.monotonic() < end + 1.0:
            await asyncio.sleep(0.01)

    @property
    def pids(self) -> list[int]:
        return [w.process.pid for w in self._workers if w.process.pid is not None]

    @property
    def queued_items(self) -> int:
        return self._queue.items

    @property
    def ready_workers(self) -> int:
        return sum(1 for w in self._workers if w.ready and not w.gone and not w.retiring)

    # ---- submitting work

    def idle_workers(self) -> int:
        """Workers ready and without a job, less the jobs already queued for them."""
        idle = sum(
            1 for w in self._workers if w.ready and w.job is None and not w.gone and not w.retiring
        )
        return max(0, idle - len(self._queue))

    def _settle(self, job: _Job, n_items: int) -> None:
        """`n_items` of `job` no longer queued or running."""
        pending = self._pending[job.caller]
        left = pending[job.cost_key] - n_items
        if left:
            pending[job.cost_key] = left
        else:  # keys are callers' params, and callers come and go: keep none unused
            del pending[job.cost_key]
            if not pending:
                del self._pending[job.caller]

    def _backlog_of(self, caller: str) -> float:
        pending = self._pending.get(caller, {})
        return sum(n * self.item_cost_s(key) for key, n in pending.items())

    def _head_s(self, caller: str) -> float:
        head = self._queue.head(caller)
        return 0.0 if head is None else head.n_items * self.item_cost_s(head.cost_key)

    @property
    def _backlog_s(self) -> float:
        """Estimated seconds of queued and running work, all workers together."""
        return sum(self._backlog_of(caller) for caller in self._pending)

    def estimated_wait_s(self) -> float:
        return self._backlog_s / self.n_workers

    def item_cost_s(self, cost_key: str) -> float:
        return self._item_cost_s.get(cost_key, _INITIAL_ITEM_COST_S)

    def admissible(
        self, cost_key: str, n_items: int, deadline: float | None, caller: str = ""
    ) -> int:
        """How many of `n_items` of `caller` can finish before `deadline`. Callers take turns
        by jobs (see _FairQueue): before the last of the caller's work, each other caller runs
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

    def submit(
        self,
        verifier: str,
        params: Any,
        items: Sequence[Item],
        timeout_s: float,
        deadline: float | None = None,
        cost_key: str | None = None,
        caller: str = "",
    ) -> list[asyncio.Future[Result]]:
        """Queues items; returns one future per item. Must be called on the pool's loop.

        `cost_key` names what the admission estimate learns per-item cost for (default: the
        verifier); the server passes the verifier and its params, since params change costs.
        `caller`: whose work it is; callers take turns for workers.
        """
        assert self._loop is not None, "start() the pool first"
        futures = [self._loop.create_future() for _ in items]
        if self._closed:
            for item, future in zip(items, futures, strict=True):
                future.set_result(Result.failed(item.id, Status.OVERLOADED, "shutting_down"))
            return futures
        cost_key = cost_key or verifier
        cost = self.item_cost_s(cost_key)
        # Spread a batch over all workers, but keep jobs small so a timeout re-queues little.
        size = max(1, min(self.chunk_items, math.ceil(len(items) / self.n_workers)))
        for start in range(0, len(items), size):
            job = ItemsJob(verifier, params, list(items[start : start + size]), deadline)
            queued = _Items(
                job, futures[start : start + size], timeout_s, deadline, cost, cost_key, caller
            )
            self._pending[caller][cost_key] += queued.n_items
            self._queue.append(queued)
        self._pump()
        return futures

    def submit_bulk(
        self,
        job: BulkJob,
        timeout_s: float,
        deadline: float | None = None,
        cost_key: str | None = None,
        caller: str = "",
    ) -> asyncio.Future[bytes]:
        """Queues serialized items (see verifier_server.bulk) for a linear-time verifier.

        The future gets a serialized ScoreResponse, or raises BulkFailed (past `timeout_s` for
        the whole job, a dead worker, a passed deadline, shutdown).
        """
        assert self._loop is not None, "start() the pool first"
        future: asyncio.Future[bytes] = self._loop.create_future()
        if self._closed:
            future.set_exception(BulkFailed(Status.OVERLOADED, "shutting_down"))
            return future
        cost_key = cost_key or job.verifier
        cost = self.item_cost_s(cost_key)
        queued = _Bulk(job, future, timeout_s, deadline, cost, cost_key, caller)
        self._pending[caller][cost_key] += queued.n_items
        self._queue.append(queued)
        self._pump()
        return future

    # ---- internals (all on the event loop thread)

    def _spawn(self) -> _Worker:
        parent_conn, child_conn = self._ctx.Pipe(duplex=True)
        process = self._ctx.Process(
            target=_worker_main,
            args=(child_conn, self.plugins, self.memory_mb, self.env),
            name="verifier-worker",
            daemon=True,
        )
        process.start()
        child_conn.close()  # so the parent sees EOF when the worker dies
        return _Worker(process=process, conn=parent_conn)

    def _start_io(self, worker: _Worker) -> None:
        """Two threads per worker: one turns blocking pipe reads into event-loop callbacks, the
        other sends the worker's jobs (a failed send needs no handling here: the reader sees
        the worker's end of the pipe close and reports the death)."""
        loop = self._loop
        assert loop is not None

        def read() -> None:
            while True:
                try:
                    message = worker.conn.recv()
                except (EOFError, OSError):
                    with contextlib.suppress(RuntimeError):  # loop already closed
                        loop.call_soon_threadsafe(self._on_exit, worker)
                    return
                with contextlib.suppress(RuntimeError):
                    loop.call_soon_threadsafe(self._on_message, worker, message)

        def write() -> None:
            while True:
                job = worker.outbox.get()
                try:
                    worker.conn.send(job)
                except (OSError, BrokenPipeError):
                    return
                if job is None:
                    return

        worker.reader = threading.Thread(target=read, name="verifier-worker-reader", daemon=True)
        worker.reader.start()
        threading.Thread(target=write, name="verifier-worker-writer", daemon=True).start()

    def _pump(self) -> None:
        for worker in self._workers:
            if not self._queue:
                return
            if worker.job is None and worker.ready and not worker.gone and not worker.retiring:
                self._assign(worker)  # a retiring worker exits without reading another job

    def _assign(self, worker: _Worker) -> None:
        while self._queue:
            job = self._queue.popleft()
            if job.abandoned:
                self._settle(job, job.n_items)
                continue
            if job.deadline is not None and time.monotonic() >= job.deadline:
                self._fail(job, 0, Status.OVERLOADED, "deadline_exceeded_in_queue")
                continue
            worker.job, worker.index = job, 0
            worker.outbox.put(job.job)
            self._arm_timer(worker)
            if isinstance(job, _Items):
                watch = functools.partial(self._on_future_done, worker, job)
                for future in job.futures:
                    future.add_done_callback(watch)
            return

    def _arm_timer(self, worker: _Worker) -> None:
        assert self._loop is not None and worker.job is not None
        if worker.timer is not None:
            worker.timer.cancel()
        worker.started_at = time.monotonic()
        job, index = worker.job, worker.index
        worker.timer = self._loop.call_later(job.timeout_s, self._on_timeout, worker, job, index)

    def _on_message(self, worker: _Worker, reply: Reply) -> None:
        if isinstance(reply, Phase):
            worker.in_completion = reply.in_completion
            return
        if isinstance(reply, Ready):
            worker.ready = True
            self._check_capacity()
            self._pump()
            return
        if isinstance(reply, Retiring):
            log.info("worker pid %s retires at %.0f MB resident", worker.process.pid, reply.rss_mb)
            self.stats["retired"] += 1
            worker.retiring = True
            self._check_capacity()
            return
        job = worker.job
        if job is None or worker.gone:
            return
        if isinstance(reply, ItemDone):
            assert isinstance(job, _Items)
            self._on_item_done(worker, job, reply)
        elif isinstance(reply, JobStopped):
            assert isinstance(job, _Items)
            if reply.next_index < job.n_items:  # not started: back to the front of the queue
                self._queue.appendleft(job.rest(reply.next_index))
            self._finish(worker)
        elif isinstance(reply, BulkDone):
            self._settle(job, job.n_items)
            per_item_s = reply.elapsed_s / max(1, job.n_items)
            # The worker's own time: a bulk job's transfer is the event loop's work, not the
            # worker's, and counting it made cheap items look dear whenever the loop was busy.
            self._learn_cost(job.cost_key, per_item_s)
            if self.observer is not None:
                wait_s = worker.started_at - job.queued_at
                self.observer.observe_job(job.job.verifier, wait_s, per_item_s)
            if not job.abandoned:
                job.future.set_result(reply.response)  # type: ignore[union-attr]
            self._finish(worker)
        else:
            log.error("bulk job of %s failed in its worker: %s", job.job.verifier, reply.message)
            self._fail(job, 0, Status.VERIFIER_ERROR, "internal_error", reply.message)
            self._finish(worker)

    def _on_item_done(self, worker: _Worker, job: _Items, reply: ItemDone) -> None:
        self._settle(job, 1)
        if reply.ran:  # a refusal at 0 s would teach admission that items cost nothing
            # What admission needs is how fast a worker gets through items as seen from here:
            # with the job's transfer and the loop's latency, not only the verifier's time.
            held_s = time.monotonic() - worker.started_at
            self._learn_cost(job.cost_key, max(reply.result.elapsed_ms / 1000, held_s))
        if self.observer is not None and reply.ran:
            wait_s = worker.started_at - job.queued_at
            self.observer.observe_job(job.job.verifier, wait_s, reply.result.elapsed_ms / 1000)
        future = job.futures[reply.index]
        if not future.done():
            future.set_result(reply.result)
        worker.index = reply.index + 1
        if worker.index < job.n_items:
            self._arm_timer(worker)
        else:
            self._finish(worker)

    def _finish(self, worker: _Worker) -> None:
        if worker.timer is not None:
            worker.timer.cancel()
        worker.job = None
        if not worker.retiring:
            self._assign(worker)
        else:
            self._pump()  # what it handed back goes to the others

    def _on_future_done(self, worker: _Worker, job: _Items, future: asyncio.Future[Result]) -> None:
        if future.cancelled():
            self._cancel_if_abandoned(worker, job)

    def _cancel_if_abandoned(self, worker: _Worker, job: _Items) -> None:
        """Every caller of a running job has gone (cancelled RPCs): ask the worker to stop it
        between items, so no work is done for nobody."""
        if worker.job is job and job.abandoned and not worker.gone:
            worker.outbox.put(Cancel())

    def _on_timeout(self, worker: _Worker, job: _Job, index: int) -> None:
        if worker.job is not job or worker.index != index or worker.gone:
            return  # a stale timer: the item finished meanwhile
        worker.timed_out = True
        self.stats["timeouts"] += 1
        per_item_s = job.timeout_s / job.n_items if isinstance(job, _Bulk) else job.timeout_s
        self._learn_cost(job.cost_key, per_item_s)
        with contextlib.suppress(ProcessLookupError):
            worker.process.kill()  # the reader sees EOF and calls _on_exit

    def _on_exit(self, worker: _Worker) -> None:
        if worker.gone:
            return
        worker.gone = True
        if worker.timer is not None:
            worker.timer.cancel()
        worker.outbox.put(None)  # ends the writer thread (the reader has ended: it saw EOF)
        if not worker.timed_out and not worker.retiring and not self._closed:
            self.stats["worker_deaths"] += 1
        with contextlib.suppress(ValueError):
            self._workers.remove(worker)
        told: Callable[[], None] | None = None
        if worker.job is not None:
            job = worker.job
            if worker.in_completion and not worker.timed_out and worker.process.exitcode is None:
                # A crash in the completion phase is the completion's doing, a kill from
                # outside is not: settle the item once the forkserver has told the exit code
                # (waiting for it here would stall the loop).
                told = functools.partial(self._after_death, worker, job)
            else:
                self._after_death(worker, job)
        with contextlib.suppress(OSError):
            worker.conn.close()
        self._reap(worker, told)
        self._check_capacity()
        if self._closed:
            return
        # A worker that dies before it is ready (a plugin or a warm-up that fails now) would
        # be replaced at once, forever: back off, doubling up to _RESPAWN_BACKOFF_MAX_S.
        self._failed_starts = 0 if worker.ready else self._failed_starts + 1
        if self._failed_starts == 0:
            self._replace()
        else:
            assert self._loop is not None
            delay_s = min(_RESPAWN_BACKOFF_MAX_S, 0.05 * 2**self._failed_starts)
            self._loop.call_later(delay_s, self._replace)

    def _after_death(self, worker: _Worker, job: _Job) -> None:
        self._fail_running(worker, job)
        if self._closed:  # what went back to the queue will not run
            while self._queue:
                self._fail(self._queue.popleft(), 0, Status.OVERLOADED, "shutting_down")
        else:
            self._pump()  # what went back to the queue, to an idle worker

    def _reap(self, worker: _Worker, then: Callable[[], None] | None = None) -> None:
        """Once the forkserver has told a dead worker's exit code: calls `then` (which may read
        it), and closes the process handle (its sentinel fd). Waiting for that here (join)
        stalled the loop for as long as the forkserver was slow, stopped or restarting."""
        process = worker.process
        if process.exitcode is not None:  # does not block
            if then is not None:
                then()
            process.close()
            return
        assert self._loop is not None
        sentinel = process.sentinel

        def told() -> None:
            self._loop.remove_reader(sentinel)  # type: ignore[union-attr]
            if then is not None:
                then()  # with exitcode None when the forkserver itself died: not a crash
            if process.exitcode is not None:  # 255 when the forkserver itself died
                process.close()

        self._loop.add_reader(sentinel, told)

    def _check_capacity(self) -> None:
        """Tells `on_capacity` when the pool loses its last ready worker for longer than
        `_CAPACITY_GRACE_S` (a crash loop of respawns, say), and when it gets one back."""
        if self._closed or self._loop is None:
            return
        if self.ready_workers:
            if self._capacity_timer is not None:
                self._capacity_timer.cancel()
                self._capacity_timer = None
            self._set_capacity(True)
        elif self._has_capacity and self._capacity_timer is None:
            self._capacity_timer = self._loop.call_later(_CAPACITY_GRACE_S, self._capacity_lost)

    def _capacity_lost(self) -> None:
        self._capacity_timer = None
        if not self.ready_workers:
            self._set_capacity(False)

    def _set_capacity(self, has_capacity: bool) -> None:
        if has_capacity == self._has_capacity:
            return
        self._has_capacity = has_capacity
        log.log(
            logging.INFO if has_capacity else logging.ERROR,
            "worker pool %s",
            "has a ready worker again" if has_capacity else "has no ready worker",
        )
        if self.on_capacity is not None:
            self.on_capacity(has_capacity)

    @property
    def has_capacity(self) -> bool:
        return self._has_capacity

    def _fail_running(self, worker: _Worker, job: _Job) -> None:
        """A worker died while running `job`: the running item (for a bulk job, the whole job)
        fails; an _Items job's later items go back to the front of the queue."""
        if worker.retiring and not worker.timed_out:
            # It said Retiring after its last item and runs nothing now (killed before it
            # could exit, say): what it had not answered goes back, nothing fails.
            requeued = job if isinstance(job, _Bulk) else job.rest(worker.index)
            self._queue.appendleft(requeued)
            return
        if isinstance(job, _Bulk) and not worker.timed_out and not job.retried:
            # A bulk job's items are all "running": a worker killed from outside would cost
            # up to 512 of them. Linear-time verifiers do not kill workers, so try once more.
            self._queue.appendleft(replace(job, retried=True))
            return
        if isinstance(job, _Bulk):
            start, stop = 0, job.n_items
            what = "the bulk job"
        else:
            start, stop = worker.index, worker.index + 1
            what = "this item"
        self._settle(job, stop - start)
        crashed = -(worker.process.exitcode or 0) in _CRASHES
        if isinstance(job, _Items) and worker.in_completion and (worker.timed_out or crashed):
            # The reference was already checked: the completion alone stopped the worker.
            if worker.timed_out:
                reason = "answer_too_complex"
                why = f"the answer ran past the {job.timeout_s:g} s limit; its worker was killed"
            else:
                reason = "answer_crashed_verifier"
                why = f"the answer crashed its worker (exit code {worker.process.exitcode})"
            job.score_zero(start, reason, why)
        elif worker.timed_out:
            why = f"{what} exceeded its {job.timeout_s:g} s limit; its worker was killed"
            job.fail(start, stop, Status.TIMEOUT, "timeout", why)
        else:
            code = worker.process.exitcode  # None while the forkserver has not told it
            how = "" if code is None else f" with code {code}"
            why = f"worker exited{how} while scoring {what}"
            job.fail(start, stop, Status.VERIFIER_ERROR, "worker_died", why)
        if isinstance(job, _Items) and stop < job.n_items:
            self._queue.appendleft(job.rest(stop))

    def _replace(self) -> None:
        """Starts a replacement worker. The forkserver's answer is awaited on the spawner
        thread, not here: a forkserver that is stopped, or that restarts after being killed
        (it loads the built-in verifiers first, seconds), must not stall the event loop."""
        if self._closed:
            return
        assert self._loop is not None
        self._loop.run_in_executor(self._spawner, self._spawn).add_done_callback(self._spawned)

    def _spawned(self, future: asyncio.Future[_Worker]) -> None:
        if future.cancelled():  # the pool closed while it waited for the spawner
            return
        if (error := future.exception()) is not None:
            if not self._closed:
                log.error("could not start a replacement worker; retrying in 1 s", exc_info=error)
                assert self._loop is not None
                self._loop.call_later(1.0, self._replace)
            return
        worker = future.result()
        if self._closed:  # started while the pool closed: nobody would stop it
            worker.process.kill()
            worker.conn.close()
            self._reap(worker)
            return
        self.stats["respawns"] += 1
        self._workers.append(worker)
        self._start_io(worker)  # its first message is Ready; until then it gets no work

    def _fail(self, job: _Job, start: int, status: Status, reason: str, message: str = "") -> None:
        """Fails the job's items from `start` on (a bulk job: all of them)."""
        stop = job.n_items
        start = 0 if isinstance(job, _Bulk) else start
        self._settle(job, stop - start)
        job.fail(start, stop, status, reason, message)

    def _learn_cost(self, cost_key: str, seconds: float) -> None:
        # Most recently learned last; past _MAX_COST_KEYS the stalest estimate is forgotten
        # (a key is a verifier and its params, which callers choose).
        previous = self._item_cost_s.pop(cost_key, None)
        if previous is None and len(self._item_cost_s) >= _MAX_COST_KEYS:
            del self._item_cost_s[next(iter(self._item_cost_s))]
        self._item_cost_s[cost_key] = (
            seconds if previous is None else 0.8 * previous + 0.2 * seconds
        )
