"""The parent's end of one worker: its process, its pipe, and the two threads that move
messages between the pipe and the event loop.

Jobs go down through a writer thread: a large job blocks in send() until the worker reads
it, and that wait must not stall the event loop. Replies come up through a reader thread
that turns blocking reads into event-loop callbacks; its EOF is how the pool learns that the
worker died, whatever killed it.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import queue
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

from verifier_server.workers.jobs import Queued
from verifier_server.workers.process import worker_main


@dataclass(eq=False)
class WorkerLink:
    """One worker as the pool sees it."""

    process: multiprocessing.process.BaseProcess
    conn: Connection
    job: Queued | None = None
    index: int = 0  # the item of `job` that is running (for a QueuedItems job)
    started_at: float = 0.0
    timer: asyncio.TimerHandle | None = None
    timed_out: bool = False
    in_completion: bool = False  # the worker reported it is scoring a completion alone
    ready: bool = False
    gone: bool = False
    retiring: bool = False  # said Retiring: exits on its own, owes nothing
    reader: threading.Thread | None = field(default=None, repr=False)
    outbox: queue.SimpleQueue[Any] = field(default_factory=queue.SimpleQueue, repr=False)

    @property
    def takes_work(self) -> bool:
        """Ready and not on its way out (a retiring worker exits without reading another job)."""
        return self.ready and not self.gone and not self.retiring


def spawn(
    ctx: multiprocessing.context.ForkServerContext,
    plugins: Sequence[str],
    memory_mb: int | None,
    env: Mapping[str, str],
) -> WorkerLink:
    """Starts a worker process (blocks until the forkserver has forked it); `env` is set in it
    before its verifiers load."""
    parent_conn, child_conn = ctx.Pipe(duplex=True)
    process = ctx.Process(
        target=worker_main,
        args=(child_conn, plugins, memory_mb, env),
        name="verifier-worker",
        daemon=True,
    )
    process.start()
    child_conn.close()  # so the parent sees EOF when the worker dies
    return WorkerLink(process=process, conn=parent_conn)


def start_io(
    worker: WorkerLink,
    loop: asyncio.AbstractEventLoop,
    on_message: Callable[[WorkerLink, Any], None],
    on_exit: Callable[[WorkerLink], None],
) -> None:
    """Starts the worker's reader and writer threads; `on_message` and `on_exit` are called on
    `loop`. A failed send needs no handling: the reader sees the worker's end of the pipe close
    and reports the death."""

    def read() -> None:
        while True:
            try:
                message = worker.conn.recv()
            except (EOFError, OSError):
                with contextlib.suppress(RuntimeError):  # loop already closed
                    loop.call_soon_threadsafe(on_exit, worker)
                return
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(on_message, worker, message)

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


def reap(
    worker: WorkerLink, loop: asyncio.AbstractEventLoop, then: Callable[[], None] | None = None
) -> None:
    """Once the forkserver has told a dead worker's exit code: calls `then` (which may read
    it), and closes the process handle (its sentinel fd). Waiting for that here (join)
    stalled the loop for as long as the forkserver was slow, stopped or restarting."""
    process = worker.process
    if process.exitcode is not None:  # does not block
        if then is not None:
            then()
        process.close()
        return
    sentinel = process.sentinel

    def told() -> None:
        loop.remove_reader(sentinel)
        if then is not None:
            then()  # with exitcode None when the forkserver itself died: not a crash
        if process.exitcode is not None:  # 255 when the forkserver itself died
            process.close()

    loop.add_reader(sentinel, told)


def exited(process: multiprocessing.process.BaseProcess) -> bool:
    """Whether the process's exit code is known (without waiting for it)."""
    try:
        return process.exitcode is not None
    except ValueError:  # closed: its exit code was known
        return True
