"""The worker process: loads the verifiers, then scores the jobs its parent sends, one at a time.

Runs in a child of the pool's forkserver (see verifier_server.workers.pool), so no gRPC state
is inherited. It dies with its parent (PR_SET_PDEATHSIG), ignores SIGINT (the parent decides
when it stops), and retires itself when its memory does not come back after an item.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import resource
import signal
import time
from collections.abc import Mapping, Sequence
from multiprocessing.connection import Connection
from typing import Any

from verifier_server.types import Result, Status
from verifier_server.workers.messages import (
    BulkDone,
    BulkError,
    BulkJob,
    Cancel,
    ItemDone,
    ItemsJob,
    JobStopped,
    Phase,
    Ready,
    Retiring,
)

_PR_SET_PDEATHSIG = 1
_RETIRE_GROWTH_MB = 512  # see _retire_threshold_mb


def worker_main(
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
            carry_on = _run_items(conn, verifier, job, retire_above_mb)
        else:
            carry_on = _run_bulk(conn, verifier, job, retire_above_mb)
        if not carry_on:
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
        retiring = _say_if_retiring(conn, retire_above_mb)
        conn.send(ItemDone(index, result, ran))
        if retiring:
            if index + 1 < len(job.items):
                conn.send(JobStopped(index + 1))
            return False
    return True


def _run_bulk(conn: Connection, verifier: Any, job: BulkJob, retire_above_mb: float) -> bool:
    """Scores the job's serialized items in one go; False when the worker must retire."""
    from verifier_server.bulk import score_serialized

    started = time.perf_counter()
    try:
        response = score_serialized(
            verifier, job.params, job.spec, job.payload, job.indices, job.item_limits
        )
    except Exception as exc:  # a server bug: report it for these items, keep the worker
        conn.send(BulkError(f"{type(exc).__name__}: {exc}"[:500]))
        return True
    elapsed_s = time.perf_counter() - started
    retiring = _say_if_retiring(conn, retire_above_mb)
    conn.send(BulkDone(response, elapsed_s))
    return not retiring


def _say_if_retiring(conn: Connection, retire_above_mb: float) -> bool:
    """After a job's item: whether this worker must retire. Said before the item's answer, so
    the parent gives it no more work."""
    resident_mb = _rss_mb()
    if resident_mb <= retire_above_mb:
        return False
    conn.send(Retiring(resident_mb))
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
