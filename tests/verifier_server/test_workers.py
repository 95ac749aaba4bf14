"""The worker pool: hard per-item time limits, respawn, isolation of failures, deadlines."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator

import pytest
from testing_verifiers import FaultyVerifier, SleepParams

from verifier_server.types import Item, Status
from verifier_server.workers import WorkerPool

pytestmark = pytest.mark.integration


@pytest.fixture
async def pool() -> AsyncIterator[WorkerPool]:
    pool = WorkerPool(2, plugins=["testing_verifiers"], memory_mb=2048, chunk_items=4)
    pool.start(asyncio.get_running_loop())
    yield pool
    await pool.close()


def items(*completions: str) -> list[Item]:
    return [Item(id=f"i{n}", completion=c) for n, c in enumerate(completions)]


async def score(
    pool: WorkerPool,
    name: str,
    params: object,
    batch: list[Item],
    timeout_s: float = 5.0,
    deadline: float | None = None,
):
    return await asyncio.gather(*pool.submit(name, params, batch, timeout_s, deadline))


async def test_results_come_back_in_order_with_timings(pool: WorkerPool) -> None:
    results = await score(pool, "sleepy", SleepParams(), items(*"abcdefghij"))
    assert [r.id for r in results] == [f"i{n}" for n in range(10)]
    assert all(r.status == Status.OK and r.score == 1.0 and r.elapsed_ms > 0 for r in results)
    assert {r.details["pid"] for r in results} <= set(pool.pids)


async def test_work_is_spread_over_workers(pool: WorkerPool) -> None:
    results = await score(pool, "sleepy", SleepParams(seconds=0.05), items(*"abcdefgh"))
    assert len({r.details["pid"] for r in results}) == 2


async def test_hung_item_is_killed_and_neighbours_are_scored(pool: WorkerPool) -> None:
    before = set(pool.pids)
    batch = items("a", "hang", "b", "c", "d", "e")
    started = time.monotonic()
    results = await score(pool, "sleepy", SleepParams(), batch, timeout_s=0.5)
    assert time.monotonic() - started < 5
    assert [r.status for r in results] == [Status.OK, Status.TIMEOUT, *[Status.OK] * 4]
    assert results[1].reason == "timeout" and results[1].score == 0.0
    assert pool.stats["timeouts"] == 1
    await asyncio.sleep(0.5)  # the replacement reports ready
    assert len(pool.pids) == 2 and set(pool.pids) != before
    again = await score(pool, "sleepy", SleepParams(), items("x", "y", "z"))
    assert all(r.ok for r in again)


@pytest.mark.parametrize(
    ("completion", "status", "reason"),
    [
        # Killed for time in the completion phase: the completion's doing, scored, not masked.
        ("hang_answer", Status.OK, "answer_too_complex"),
        # A crash in the completion phase: the completion's doing too.
        ("crash_answer", Status.OK, "answer_crashed_verifier"),
        # A SIGKILL from outside (operator, OOM killer) is not: the infrastructure's fault.
        ("killed_answer", Status.VERIFIER_ERROR, "worker_died"),
        # Killed for time outside the completion phase: the caller's (the reference) or ours.
        ("hang", Status.TIMEOUT, "timeout"),
    ],
)
async def test_a_kill_in_the_completion_phase_is_the_completions_zero(
    pool: WorkerPool, completion: str, status: Status, reason: str
) -> None:
    results = await score(pool, "sleepy", SleepParams(), items("a", completion, "b"), timeout_s=1)
    assert [r.status for r in results] == [Status.OK, status, Status.OK]
    assert (results[1].score, results[1].reason) == (0.0, reason)
    assert results[0].score == results[2].score == 1.0
    await asyncio.sleep(0.5)  # the replacement reports ready
    assert len(pool.pids) == 2


async def test_worker_killed_from_outside_costs_one_item(pool: WorkerPool) -> None:
    futures = pool.submit("sleepy", SleepParams(seconds=0.3), items("a", "b", "c", "d"), 10.0)
    await asyncio.sleep(0.1)
    victim = pool.pids[0]
    os.kill(victim, signal.SIGKILL)
    results = await asyncio.gather(*futures)
    died = [r for r in results if r.status == Status.VERIFIER_ERROR]
    assert len(died) == 1 and died[0].reason == "worker_died"
    assert sum(r.ok for r in results) == 3
    assert victim not in pool.pids
    assert pool.stats["worker_deaths"] == 1


@pytest.mark.parametrize(
    ("completion", "reason"),
    [
        ("raise", "verifier_exception"),
        ("base_exception", "verifier_exception"),
        ("garbage", "bad_verifier_output"),
        ("wrong_id", "bad_verifier_output"),
        ("nan", "bad_verifier_output"),
        ("unspecified", "bad_verifier_output"),
        ("die", "worker_died"),
        ("memory", "memory_limit"),
    ],
)
async def test_faulty_verifier_fails_only_its_own_item(
    pool: WorkerPool, completion: str, reason: str
) -> None:
    results = await score(pool, "faulty", FaultyVerifier.Params(), items("ok", completion, "ok"))
    assert [r.status for r in results] == [Status.OK, Status.VERIFIER_ERROR, Status.OK]
    assert results[1].reason == reason
    assert results[0].score == results[2].score == 0.5


async def test_items_past_their_deadline_are_not_started(pool: WorkerPool) -> None:
    busy = pool.submit("sleepy", SleepParams(seconds=0.4), items("a", "b"), 5.0)
    late = pool.submit("sleepy", SleepParams(), items("c"), 5.0, deadline=time.monotonic() + 0.1)
    result = (await asyncio.gather(*late))[0]
    assert result.status == Status.OVERLOADED and result.reason == "deadline_exceeded_in_queue"
    assert all(r.ok for r in await asyncio.gather(*busy))


async def test_admission_counts_what_fits_before_the_deadline(pool: WorkerPool) -> None:
    await score(pool, "sleepy", SleepParams(seconds=0.1), items("a", "b"))  # learn ~0.1 s per item
    assert pool.admission.admissible("sleepy", 100, None) == 100
    assert pool.admission.admissible("sleepy", 100, time.monotonic() - 1) == 0
    fits = pool.admission.admissible("sleepy", 100, time.monotonic() + 1.0)
    assert 5 <= fits <= 25  # 2 workers x 0.9 s / ~0.1 s per item


async def test_close_stops_every_worker() -> None:
    pool = WorkerPool(2, plugins=["testing_verifiers"])
    pool.start(asyncio.get_running_loop())
    pids = pool.pids
    await pool.close()
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
