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
first-in first-out, or any isolation of untrusted *code*: that is the job of `sandboxes`.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import math
import multiprocessing
import os
import queue
import resource
import signal
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

from verifier_server.types import Item, Result, Status

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1
_INITIAL_ITEM_COST_S = 0.01  # admission estimate before a verifier has been measured
# Deaths a completion can cause in C code (a parser's stack overflow, an abort); a SIGKILL
# from outside (an operator, the OOM killer) is not counted as the completion's doing.
_CRASHES = frozenset({signal.SIGSEGV, signal.SIGBUS, signal.SIGABRT, signal.SIGFPE, signal.SIGILL})


# --------------------------------------------------------------------------- worker side


def _worker_main(conn: Connection, plugins: Sequence[str], memory_mb: int | None) -> None:
    """Entry point of a worker process: score the chunks the parent sends, one item at a time."""
    with contextlib.suppress(OSError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if memory_mb:
        limit = memory_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    from verifier_server.bulk import score_serialized
    from verifier_server.execution import run_one, set_phase_reporter
    from verifier_server.registry import Registry

    set_phase_reporter(lambda inside: conn.send(("phase", inside)))
    registry = Registry.load(plugins)
    registry.warm_up()  # e.g. sandbox slots: started here, in a process without gRPC
    conn.send(("ready", os.getpid()))
    while True:
        message = conn.recv()
        if message is None:
            return
        if message[0] == "bulk":
            _, verifier_name, params, spec, payload, start, indices, limits = message
            verifier = registry.instance(verifier_name)
            started = time.perf_counter()
            try:
                response = score_serialized(verifier, params, spec, payload, start, indices, limits)
            except Exception as exc:  # a server bug: report it for these items, keep the worker
                conn.send(("bulk_error", f"{type(exc).__name__}: {exc}"[:500], 0.0))
                continue
            conn.send(("bulk", response, time.perf_counter() - started))
            continue
        _, verifier_name, params, items = message
        verifier = registry.instance(verifier_name)
        for index, item in enumerate(items):
            conn.send((index, run_one(verifier, item, params)))


# --------------------------------------------------------------------------- parent side


@dataclass(eq=False)
class _Chunk:
    """Items of one (verifier, params) that go to one worker, scored in order."""

    verifier: str
    params: Any
    timeout_s: float
    items: list[Item]
    futures: list[asyncio.Future[Result]]
    deadline: float | None  # time.monotonic() by which the caller wants results
    cost_s: float  # admission estimate per item, added to the pool's backlog on submit
    cost_key: str  # what the estimate is learned for

    @property
    def abandoned(self) -> bool:
        return all(f.done() for f in self.futures)


class BulkFailed(Exception):
    """A bulk job could not finish; every item in it gets `status`."""

    def __init__(self, status: Status, reason: str, message: str = "") -> None:
        super().__init__(message or reason)
        self.status = status
        self.reason = reason
        self.message = message


@dataclass(eq=False)
class _Bulk:
    """Serialized items of one linear-time verifier, scored in one go (see verifier_server.bulk)."""

    job: tuple[Any, ...]  # the message for the worker
    n_items: int
    future: asyncio.Future[bytes]
    timeout_s: float
    deadline: float | None
    cost_s: float
    cost_key: str

    @property
    def abandoned(self) -> bool:
        return self.future.done()


@dataclass(eq=False)
class _Worker:
    process: multiprocessing.process.BaseProcess
    conn: Connection
    chunk: _Chunk | _Bulk | None = None
    index: int = 0  # the item of `chunk` that is running
    started_at: float = 0.0
    timer: asyncio.TimerHandle | None = None
    timed_out: bool = False
    in_completion: bool = False  # the worker reported it is scoring a completion alone
    ready: bool = False
    gone: bool = False
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
    ) -> None:
        if n_workers < 1:
            raise ValueError("n_workers must be >= 1")
        self.n_workers = n_workers
        self.plugins = tuple(plugins)
        self.memory_mb = memory_mb
        self.chunk_items = chunk_items
        self._ctx = multiprocessing.get_context("forkserver")
        self._workers: list[_Worker] = []
        self._queue: deque[_Chunk | _Bulk] = deque()
        self._backlog_s = 0.0  # estimated seconds of queued + running work, all workers
        self._item_cost_s: dict[str, float] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False
        self.stats = {"timeouts": 0, "worker_deaths": 0, "respawns": 0}

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
        workers = [self._spawn() for _ in range(self.n_workers)]
        for worker in workers:
            if not worker.conn.poll(ready_timeout_s):
                raise RuntimeError(f"worker pid {worker.process.pid} did not start")
            try:
                kind, _ = worker.conn.recv()
            except EOFError:
                raise RuntimeError(
                    "a worker exited during start-up (see the traceback above: a plugin that "
                    "fails to import?)"
                ) from None
            assert kind == "ready"
            worker.ready = True
            self._start_io(worker)
            self._workers.append(worker)

    async def close(self, timeout_s: float = 2.0) -> None:
        """Stops all workers; items still queued come back STATUS_OVERLOADED."""
        self._closed = True
        while self._queue:
            self._fail_chunk(self._queue.popleft(), 0, Status.OVERLOADED, "shutting_down")
        for worker in list(self._workers):
            worker.outbox.put(None)
        end = time.monotonic() + timeout_s
        for worker in list(self._workers):
            while worker.process.is_alive() and time.monotonic() < end:
                await asyncio.sleep(0.01)
            if worker.process.is_alive():
                worker.process.kill()
            worker.process.join(1)

    @property
    def pids(self) -> list[int]:
        return [w.process.pid for w in self._workers if w.process.pid is not None]

    # ---- submitting work

    def idle_workers(self) -> int:
        """Workers ready and without a job, less the jobs already queued for them."""
        idle = sum(1 for w in self._workers if w.ready and w.chunk is None and not w.gone)
        return max(0, idle - len(self._queue))

    def estimated_wait_s(self) -> float:
        return self._backlog_s / self.n_workers

    def item_cost_s(self, cost_key: str) -> float:
        return self._item_cost_s.get(cost_key, _INITIAL_ITEM_COST_S)

    def admissible(self, cost_key: str, n_items: int, deadline: float | None) -> int:
        """How many of `n_items` can finish before `deadline`, by the current backlog."""
        if deadline is None:
            return n_items
        room_s = (deadline - time.monotonic()) * 0.9 * self.n_workers - self._backlog_s
        return max(0, min(n_items, math.floor(room_s / self.item_cost_s(cost_key))))

    def submit(
        self,
        verifier: str,
        params: Any,
        items: Sequence[Item],
        timeout_s: float,
        deadline: float | None = None,
        cost_key: str | None = None,
    ) -> list[asyncio.Future[Result]]:
        """Queues items; returns one future per item. Must be called on the pool's loop.

        `cost_key` names what the admission estimate learns per-item cost for (default: the
        verifier); the server passes the verifier and its params, since params change costs.
        """
        assert self._loop is not None, "start() the pool first"
        futures = [self._loop.create_future() for _ in items]
        if self._closed:
            for item, future in zip(items, futures, strict=True):
                future.set_result(Result.failed(item.id, Status.OVERLOADED, "shutting_down"))
            return futures
        cost_key = cost_key or verifier
        cost = self.item_cost_s(cost_key)
        # Spread a batch over all workers, but keep chunks small so a timeout re-queues little.
        size = max(1, min(self.chunk_items, math.ceil(len(items) / self.n_workers)))
        for start in range(0, len(items), size):
            chunk = _Chunk(
                verifier,
                params,
                timeout_s,
                list(items[start : start + size]),
                futures[start : start + size],
                deadline,
                cost,
                cost_key,
            )
            self._backlog_s += cost * len(chunk.items)
            self._queue.append(chunk)
        self._pump()
        return futures

    def submit_bulk(
        self,
        verifier: str,
        params: Any,
        spec: Any,
        payload: bytes,
        start: int,
        indices: list[int],
        limits: Any,
        timeout_s: float,
        deadline: float | None = None,
        cost_key: str | None = None,
    ) -> asyncio.Future[bytes]:
        """Queues serialized items (see verifier_server.bulk) for a linear-time verifier: the
        items `start : start + len(indices)` of the ScoreRequest `payload`.

        The future gets a serialized ScoreResponse, or raises BulkFailed (past `timeout_s` for
        the whole job, a dead worker, a passed deadline, shutdown).
        """
        assert self._loop is not None, "start() the pool first"
        future: asyncio.Future[bytes] = self._loop.create_future()
        if self._closed:
            future.set_exception(BulkFailed(Status.OVERLOADED, "shutting_down"))
            return future
        cost_key = cost_key or verifier
        cost = self.item_cost_s(cost_key)
        job = ("bulk", verifier, params, spec, payload, start, indices, limits)
        bulk = _Bulk(job, len(indices), future, timeout_s, deadline, cost, cost_key)
        self._backlog_s += cost * bulk.n_items
        self._queue.append(bulk)
        self._pump()
        return future

    # ---- internals (all on the event loop thread)

    def _spawn(self) -> _Worker:
        parent_conn, child_conn = self._ctx.Pipe(duplex=True)
        process = self._ctx.Process(
            target=_worker_main,
            args=(child_conn, self.plugins, self.memory_mb),
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
            if worker.chunk is None and worker.ready and not worker.gone:
                self._assign(worker)

    def _assign(self, worker: _Worker) -> None:
        while self._queue:
            chunk = self._queue.popleft()
            if chunk.abandoned:
                self._backlog_s -= chunk.cost_s * _size(chunk)
                continue
            if chunk.deadline is not None and time.monotonic() >= chunk.deadline:
                self._fail_chunk(chunk, 0, Status.OVERLOADED, "deadline_exceeded_in_queue")
                continue
            worker.chunk, worker.index = chunk, 0
            job = (
                chunk.job
                if isinstance(chunk, _Bulk)
                else ("items", chunk.verifier, chunk.params, chunk.items)
            )
            worker.outbox.put(job)
            self._arm_timer(worker)
            return

    def _arm_timer(self, worker: _Worker) -> None:
        assert self._loop is not None and worker.chunk is not None
        if worker.timer is not None:
            worker.timer.cancel()
        worker.started_at = time.monotonic()
        chunk, index = worker.chunk, worker.index
        worker.timer = self._loop.call_later(
            chunk.timeout_s, self._on_timeout, worker, chunk, index
        )

    def _on_message(self, worker: _Worker, message: tuple[Any, Any]) -> None:
        if message[0] == "phase":
            worker.in_completion = message[1]
            return
        if message[0] == "ready":
            worker.ready = True
            self._pump()
            return
        chunk = worker.chunk
        if chunk is None or worker.gone:
            return
        if isinstance(chunk, _Bulk):
            kind, payload, elapsed_s = message
            if kind == "bulk_error":
                log.error("bulk job of %s failed in its worker: %s", chunk.job[1], payload)
                self._fail_chunk(chunk, 0, Status.VERIFIER_ERROR, "internal_error", payload)
                self._finish(worker)
                return
            self._backlog_s -= chunk.cost_s * chunk.n_items
            self._learn_cost(chunk.cost_key, elapsed_s / max(1, chunk.n_items))
            if not chunk.future.done():
                chunk.future.set_result(payload)
            self._finish(worker)
            return
        index, result = message
        self._backlog_s -= chunk.cost_s
        self._learn_cost(chunk.cost_key, result.elapsed_ms / 1000)
        future = chunk.futures[index]
        if not future.done():
            future.set_result(result)
        worker.index = index + 1
        if worker.index < len(chunk.items):
            self._arm_timer(worker)
            return
        self._finish(worker)

    def _finish(self, worker: _Worker) -> None:
        if worker.timer is not None:
            worker.timer.cancel()
        worker.chunk = None
        self._assign(worker)

    def _on_timeout(self, worker: _Worker, chunk: _Chunk | _Bulk, index: int) -> None:
        if worker.chunk is not chunk or worker.index != index or worker.gone:
            return  # a stale timer: the item finished meanwhile
        worker.timed_out = True
        self.stats["timeouts"] += 1
        per_item_s = (
            chunk.timeout_s / chunk.n_items if isinstance(chunk, _Bulk) else chunk.timeout_s
        )
        self._learn_cost(chunk.cost_key, per_item_s)
        with contextlib.suppress(ProcessLookupError):
            worker.process.kill()  # the reader sees EOF and calls _on_exit

    def _on_exit(self, worker: _Worker) -> None:
        if worker.gone:
            return
        worker.gone = True
        if worker.timer is not None:
            worker.timer.cancel()
        worker.process.join(1)
        with contextlib.suppress(ValueError):
            self._workers.remove(worker)
        chunk, index = worker.chunk, worker.index
        if isinstance(chunk, _Bulk):
            if worker.timed_out:
                why = (
                    f"the bulk job exceeded its {chunk.timeout_s:g} s limit; its worker was killed"
                )
                self._fail_chunk(chunk, 0, Status.TIMEOUT, "timeout", why)
            else:
                self.stats["worker_deaths"] += 1
                why = f"worker exited with code {worker.process.exitcode} during a bulk job"
                self._fail_chunk(chunk, 0, Status.VERIFIER_ERROR, "worker_died", why)
        elif chunk is not None:
            if worker.in_completion and worker.timed_out:
                why = f"the answer ran past the {chunk.timeout_s:g} s limit; its worker was killed"
                self._completion_failed(chunk, index, "answer_too_complex", why)
            elif worker.in_completion and -(worker.process.exitcode or 0) in _CRASHES:
                self.stats["worker_deaths"] += 1
                why = f"the answer crashed its worker (exit code {worker.process.exitcode})"
                self._completion_failed(chunk, index, "answer_crashed_verifier", why)
            elif worker.timed_out:
                limit = f"exceeded the {chunk.timeout_s:g} s time limit; its worker was killed"
                self._fail_items(chunk, index, index + 1, Status.TIMEOUT, "timeout", limit)
            else:
                self.stats["worker_deaths"] += 1
                why = f"worker exited with code {worker.process.exitcode} while scoring this item"
                self._fail_items(chunk, index, index + 1, Status.VERIFIER_ERROR, "worker_died", why)
            if index + 1 < len(chunk.items):  # the rest goes back to the front of the queue
                rest = _Chunk(
                    chunk.verifier,
                    chunk.params,
                    chunk.timeout_s,
                    chunk.items[index + 1 :],
                    chunk.futures[index + 1 :],
                    chunk.deadline,
                    chunk.cost_s,
                    chunk.cost_key,
                )
                self._queue.appendleft(rest)
        with contextlib.suppress(OSError):
            worker.conn.close()
        if not self._closed:
            self._replace()

    def _completion_failed(self, chunk: _Chunk, index: int, reason: str, why: str) -> None:
        """The item's completion alone killed or crashed its worker: scored 0, not masked."""
        self._backlog_s -= chunk.cost_s
        future = chunk.futures[index]
        if not future.done():
            item_id = chunk.items[index].id
            future.set_result(Result(id=item_id, score=0.0, reason=reason, details={"error": why}))

    def _replace(self) -> None:
        try:
            worker = self._spawn()
        except Exception:
            log.exception("could not start a replacement worker; retrying in 1 s")
            assert self._loop is not None
            self._loop.call_later(1.0, self._replace)
            return
        self.stats["respawns"] += 1
        self._workers.append(worker)
        self._start_io(worker)  # its first message is "ready"; until then it gets no work

    def _fail_chunk(
        self, chunk: _Chunk | _Bulk, start: int, status: Status, reason: str, message: str = ""
    ) -> None:
        if isinstance(chunk, _Bulk):
            self._backlog_s -= chunk.cost_s * chunk.n_items
            if not chunk.future.done():
                chunk.future.set_exception(BulkFailed(status, reason, message))
            return
        self._fail_items(chunk, start, len(chunk.items), status, reason, message)

    def _fail_items(
        self, chunk: _Chunk, start: int, stop: int, status: Status, reason: str, message: str
    ) -> None:
        for item, future in zip(chunk.items[start:stop], chunk.futures[start:stop], strict=True):
            self._backlog_s -= chunk.cost_s
            if not future.done():
                future.set_result(Result.failed(item.id, status, reason, message))

    def _learn_cost(self, cost_key: str, seconds: float) -> None:
        previous = self._item_cost_s.get(cost_key)
        self._item_cost_s[cost_key] = (
            seconds if previous is None else 0.8 * previous + 0.2 * seconds
        )


def _size(chunk: _Chunk | _Bulk) -> int:
    return chunk.n_items if isinstance(chunk, _Bulk) else len(chunk.items)
