"""WorkerPool: the parent side of the process pool, all on the event loop thread.

A job's way through: `submit` (or `submit_bulk`) queues it, fair between callers, and
charges admission for it; `_assign` hands it to an idle worker's writer thread and arms its
time limit; the worker's replies come back through `_on_message`, which sets the futures and
learns costs; `_on_timeout` kills a worker that overran, and `_on_exit` settles what a death
cost (verifier_server.workers.deaths) and starts a replacement.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import math
import multiprocessing
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

from verifier_server.types import Item, Result, Status
from verifier_server.workers.admission import Admission
from verifier_server.workers.deaths import settle_death
from verifier_server.workers.fair_queue import FairQueue
from verifier_server.workers.health import CapacityWatch, respawn_delay_s
from verifier_server.workers.jobs import BulkFailed, Queued, QueuedBulk, QueuedItems
from verifier_server.workers.link import WorkerLink, exited, reap, spawn, start_io
from verifier_server.workers.messages import (
    BulkDone,
    BulkJob,
    Cancel,
    ItemDone,
    ItemsJob,
    JobStopped,
    Phase,
    Ready,
    Reply,
    Retiring,
)

log = logging.getLogger(__name__)


class JobObserver(Protocol):
    def observe_job(self, verifier: str, queue_wait_s: float, run_s: float | None) -> None: ...


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
        self._workers: list[WorkerLink] = []
        self._queue = FairQueue()
        self.admission = Admission(n_workers, self._queue)  # backlog and learned item costs
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False
        self.stats = {"timeouts": 0, "worker_deaths": 0, "respawns": 0, "retired": 0}
        self.observer: JobObserver | None = None  # queue waits and run times, for metrics
        self._capacity = CapacityWatch()
        self._failed_starts = 0  # workers in a row that died before they were ready
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
            ["verifier_server.workers.process", "verifier_server.registry", *FORKSERVER_PRELOAD]
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
            start_io(worker, loop, self._on_message, self._on_exit)
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
        # Returns once the forkserver has reaped them (told their exit codes; see link.reap).
        while not all(exited(w.process) for w in workers) and time.monotonic() < end + 1.0:
            await asyncio.sleep(0.01)

    @property
    def pids(self) -> list[int]:
        return [w.process.pid for w in self._workers if w.process.pid is not None]

    @property
    def queued_items(self) -> int:
        return self._queue.items

    @property
    def ready_workers(self) -> int:
        return sum(1 for w in self._workers if w.takes_work)

    @property
    def has_capacity(self) -> bool:
        return self._capacity.has_capacity

    @property
    def on_capacity(self) -> Callable[[bool], None] | None:
        """Called with False when the pool has had no ready worker for a while, True when it
        has one again (see verifier_server.workers.health.CapacityWatch)."""
        return self._capacity.on_capacity

    @on_capacity.setter
    def on_capacity(self, report: Callable[[bool], None] | None) -> None:
        self._capacity.on_capacity = report

    # ---- submitting work

    def idle_workers(self) -> int:
        """Workers ready and without a job, less the jobs already queued for them."""
        idle = sum(1 for w in self._workers if w.takes_work and w.job is None)
        return max(0, idle - len(self._queue))

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
        cost = self.admission.item_cost_s(cost_key)
        # Spread a batch over all workers, but keep jobs small so a timeout re-queues little.
        size = max(1, min(self.chunk_items, math.ceil(len(items) / self.n_workers)))
        for start in range(0, len(items), size):
            job = ItemsJob(verifier, params, list(items[start : start + size]), deadline)
            chunk = futures[start : start + size]
            self._enqueue(QueuedItems(job, chunk, timeout_s, deadline, cost, cost_key, caller))
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
        cost = self.admission.item_cost_s(cost_key)
        self._enqueue(QueuedBulk(job, future, timeout_s, deadline, cost, cost_key, caller))
        self._pump()
        return future

    def _enqueue(self, job: Queued) -> None:
        self.admission.add(job)
        self._queue.append(job)

    # ---- to a worker

    def _pump(self) -> None:
        for worker in self._workers:
            if not self._queue:
                return
            if worker.job is None and worker.takes_work:
                self._assign(worker)

    def _assign(self, worker: WorkerLink) -> None:
        while self._queue:
            job = self._queue.popleft()
            if job.abandoned:
                self.admission.settle(job, job.n_items)
                continue
            if job.deadline is not None and time.monotonic() >= job.deadline:
                self._fail(job, 0, Status.OVERLOADED, "deadline_exceeded_in_queue")
                continue
            worker.job, worker.index = job, 0
            worker.outbox.put(job.job)
            self._arm_timer(worker)
            if isinstance(job, QueuedItems):
                watch = functools.partial(self._on_future_done, worker, job)
                for future in job.futures:
                    future.add_done_callback(watch)
            return

    def _arm_timer(self, worker: WorkerLink) -> None:
        assert self._loop is not None and worker.job is not None
        if worker.timer is not None:
            worker.timer.cancel()
        worker.started_at = time.monotonic()
        job, index = worker.job, worker.index
        worker.timer = self._loop.call_later(job.timeout_s, self._on_timeout, worker, job, index)

    def _on_future_done(
        self, worker: WorkerLink, job: QueuedItems, future: asyncio.Future[Result]
    ) -> None:
        """Every caller of a running job has gone (cancelled RPCs): ask the worker to stop it
        between items, so no work is done for nobody."""
        if future.cancelled() and worker.job is job and job.abandoned and not worker.gone:
            worker.outbox.put(Cancel())

    # ---- back from a worker

    def _on_message(self, worker: WorkerLink, reply: Reply) -> None:
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
            assert isinstance(job, QueuedItems)
            self._on_item_done(worker, job, reply)
        elif isinstance(reply, JobStopped):
            assert isinstance(job, QueuedItems)
            if reply.next_index < job.n_items:  # not started: back to the front of the queue
                self._queue.appendleft(job.rest(reply.next_index))
            self._finish(worker)
        elif isinstance(reply, BulkDone):
            assert isinstance(job, QueuedBulk)
            self._on_bulk_done(worker, job, reply)
        else:
            log.error("bulk job of %s failed in its worker: %s", job.job.verifier, reply.message)
            self._fail(job, 0, Status.VERIFIER_ERROR, "internal_error", reply.message)
            self._finish(worker)

    def _on_item_done(self, worker: WorkerLink, job: QueuedItems, reply: ItemDone) -> None:
        self.admission.settle(job, 1)
        if reply.ran:  # a refusal at 0 s would teach admission that items cost nothing
            # What admission needs is how fast a worker gets through items as seen from here:
            # with the job's transfer and the loop's latency, not only the verifier's time.
            held_s = time.monotonic() - worker.started_at
            run_s = reply.result.elapsed_ms / 1000
            self.admission.learn_cost(job.cost_key, max(run_s, held_s))
            self._observe(worker, job, run_s)
        future = job.futures[reply.index]
        if not future.done():
            future.set_result(reply.result)
        worker.index = reply.index + 1
        if worker.index < job.n_items:
            self._arm_timer(worker)
        else:
            self._finish(worker)

    def _on_bulk_done(self, worker: WorkerLink, job: QueuedBulk, reply: BulkDone) -> None:
        self.admission.settle(job, job.n_items)
        per_item_s = reply.elapsed_s / max(1, job.n_items)
        # The worker's own time: a bulk job's transfer is the event loop's work, not the
        # worker's, and counting it made cheap items look dear whenever the loop was busy.
        self.admission.learn_cost(job.cost_key, per_item_s)
        self._observe(worker, job, per_item_s)
        if not job.abandoned:
            job.future.set_result(reply.response)
        self._finish(worker)

    def _observe(self, worker: WorkerLink, job: Queued, run_s: float) -> None:
        if self.observer is not None:
            wait_s = worker.started_at - job.queued_at
            self.observer.observe_job(job.job.verifier, wait_s, run_s)

    def _finish(self, worker: WorkerLink) -> None:
        if worker.timer is not None:
            worker.timer.cancel()
        worker.job = None
        if not worker.retiring:
            self._assign(worker)
        else:
            self._pump()  # what it handed back goes to the others

    def _fail(
        self, job: Queued, start: int, status: Status, reason: str, message: str = ""
    ) -> None:
        """Fails the job's items from `start` on (a bulk job: all of them)."""
        stop = job.n_items
        start = 0 if isinstance(job, QueuedBulk) else start
        self.admission.settle(job, stop - start)
        job.fail(start, stop, status, reason, message)

    # ---- time limits, deaths and replacements

    def _on_timeout(self, worker: WorkerLink, job: Queued, index: int) -> None:
        if worker.job is not job or worker.index != index or worker.gone:
            return  # a stale timer: the item finished meanwhile
        worker.timed_out = True
        self.stats["timeouts"] += 1
        per_item_s = job.timeout_s / job.n_items if isinstance(job, QueuedBulk) else job.timeout_s
        self.admission.learn_cost(job.cost_key, per_item_s)
        with contextlib.suppress(ProcessLookupError):
            worker.process.kill()  # the reader sees EOF and calls _on_exit

    def _on_exit(self, worker: WorkerLink) -> None:
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
        assert self._loop is not None
        reap(worker, self._loop, told)
        self._check_capacity()
        if self._closed:
            return
        self._failed_starts = 0 if worker.ready else self._failed_starts + 1
        if self._failed_starts == 0:
            self._replace()
        else:
            self._loop.call_later(respawn_delay_s(self._failed_starts), self._replace)

    def _after_death(self, worker: WorkerLink, job: Queued) -> None:
        toll = settle_death(worker, job)
        self.admission.settle(job, toll.settled)
        if toll.requeue is not None:
            self._queue.appendleft(toll.requeue)
        if self._closed:  # what went back to the queue will not run
            while self._queue:
                self._fail(self._queue.popleft(), 0, Status.OVERLOADED, "shutting_down")
        else:
            self._pump()  # what went back to the queue, to an idle worker

    def _check_capacity(self) -> None:
        if not self._closed and self._loop is not None:
            self._capacity.check(self._loop, lambda: self.ready_workers)

    def _spawn(self) -> WorkerLink:
        return spawn(self._ctx, self.plugins, self.memory_mb, self.env)

    def _replace(self) -> None:
        """Starts a replacement worker. The forkserver's answer is awaited on the spawner
        thread, not here: a forkserver that is stopped, or that restarts after being killed
        (it loads the built-in verifiers first, seconds), must not stall the event loop."""
        if self._closed:
            return
        assert self._loop is not None
        self._loop.run_in_executor(self._spawner, self._spawn).add_done_callback(self._spawned)

    def _spawned(self, future: asyncio.Future[WorkerLink]) -> None:
        if future.cancelled():  # the pool closed while it waited for the spawner
            return
        assert self._loop is not None
        if (error := future.exception()) is not None:
            if not self._closed:
                log.error("could not start a replacement worker; retrying in 1 s", exc_info=error)
                self._loop.call_later(1.0, self._replace)
            return
        worker = future.result()
        if self._closed:  # started while the pool closed: nobody would stop it
            worker.process.kill()
            worker.conn.close()
            reap(worker, self._loop)
            return
        self.stats["respawns"] += 1
        self._workers.append(worker)
        start_io(worker, self._loop, self._on_message, self._on_exit)  # Ready comes first
