"""The worker pool under faults: nothing leaks per worker death, capacity is reported, bloated
workers are recycled without losing work, and work for callers who have gone is stopped."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from server_process import ServerProcess
from testing_verifiers import CrashOnStartParams, HogParams, SleepParams, crash_flag

from verifier_server.client import RewardClient
from verifier_server.types import Item, RewardSpec, Status
from verifier_server.workers import WorkerPool

pytestmark = pytest.mark.integration


@pytest.fixture
async def pool() -> AsyncIterator[WorkerPool]:
    pool = WorkerPool(2, plugins=["testing_verifiers"], memory_mb=4096, chunk_items=4)
    pool.start(asyncio.get_running_loop())
    yield pool
    await pool.close()


def items(n: int, prefix: str = "i") -> list[Item]:
    return [Item(id=f"{prefix}{k}", completion="x") for k in range(n)]


async def wait_for(condition, timeout_s: float = 20.0) -> None:
    end = asyncio.get_running_loop().time() + timeout_s
    while not condition():
        assert asyncio.get_running_loop().time() < end, "condition not reached in time"
        await asyncio.sleep(0.05)


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def test_worker_deaths_leak_no_thread_and_no_fd(pool: WorkerPool) -> None:
    await asyncio.gather(*pool.submit("sleepy", SleepParams(), items(4), 5.0))
    threads, fds = threading.active_count(), open_fds()
    for _ in range(12):
        victim = pool.pids[0]
        os.kill(victim, signal.SIGKILL)
        await wait_for(lambda v=victim: v not in pool.pids and pool.ready_workers == 2)
        await asyncio.gather(*pool.submit("sleepy", SleepParams(), items(2), 5.0))
    await asyncio.sleep(0.2)  # the dead workers' threads return
    # Each death used to leave its writer thread blocked forever and two fds open.
    assert pool.stats["worker_deaths"] == 12
    assert threading.active_count() == threads
    assert open_fds() == fds


async def test_a_crash_loop_is_reported_as_no_capacity_and_recovery_as_capacity() -> None:
    flag = Path(crash_flag(os.getpid()))
    pool = WorkerPool(1, plugins=["testing_verifiers"], chunk_items=4)
    pool.start(asyncio.get_running_loop())
    reports: list[bool] = []
    pool.on_capacity = reports.append
    try:
        flag.touch()  # from now on a new worker dies while starting
        os.kill(pool.pids[0], signal.SIGKILL)
        await wait_for(lambda: reports == [False])
        assert not pool.has_capacity
        # Respawns back off instead of spinning: a handful in 1.5 s, not hundreds.
        respawns = pool.stats["respawns"]
        await asyncio.sleep(1.5)
        assert pool.stats["respawns"] - respawns <= 6
        flag.unlink()
        await wait_for(lambda: reports == [False, True])
        assert pool.has_capacity
        results = await asyncio.gather(
            *pool.submit("crash_on_start", CrashOnStartParams(), items(2), 5.0)
        )
        assert [r.status for r in results] == [Status.OK, Status.OK]
    finally:
        flag.unlink(missing_ok=True)
        await pool.close()


async def test_a_worker_that_keeps_its_memory_is_replaced_and_no_item_is_lost(
    pool: WorkerPool,
) -> None:
    futures = pool.submit("hog", HogParams(megabytes=1200), items(1, "big"), 30.0)
    futures += pool.submit("hog", HogParams(), items(6, "small"), 30.0)
    results = await asyncio.gather(*futures)
    assert all(r.status == Status.OK and r.score == 1.0 for r in results)
    assert pool.stats["retired"] == 1 and pool.stats["worker_deaths"] == 0
    await wait_for(lambda: pool.ready_workers == 2)
    big_pid = results[0].details["pid"]
    assert big_pid not in pool.pids  # the bloated worker is gone, its replacement is ready
    later = await asyncio.gather(*pool.submit("hog", HogParams(), items(4, "later"), 30.0))
    assert all(r.ok for r in later) and big_pid not in {r.details["pid"] for r in later}


async def test_work_of_cancelled_callers_is_stopped_between_items(tmp_path: Path) -> None:
    pool = WorkerPool(1, plugins=["testing_verifiers"], chunk_items=8)
    pool.start(asyncio.get_running_loop())
    ran = tmp_path / "ran.txt"
    try:
        futures = pool.submit("sleepy", SleepParams(seconds=0.3, log_path=str(ran)), items(8), 5.0)
        await wait_for(ran.exists)
        for future in futures:  # the RPC was cancelled
            future.cancel()
        after = await asyncio.gather(*pool.submit("sleepy", SleepParams(), items(1, "n"), 5.0))
        assert after[0].ok
        started = ran.read_text().split()
        # The item running when the callers left finishes; the other six never start.
        assert started[:1] == ["i0"] and len(started) <= 2
    finally:
        await pool.close()


async def test_items_are_not_started_past_their_deadline_inside_a_job(tmp_path: Path) -> None:
    pool = WorkerPool(1, plugins=["testing_verifiers"], chunk_items=4)
    pool.start(asyncio.get_running_loop())
    ran = tmp_path / "ran.txt"
    try:
        deadline = time.monotonic() + 0.5
        params = SleepParams(seconds=0.4, log_path=str(ran))
        results = await asyncio.gather(*pool.submit("sleepy", params, items(4), 5.0, deadline))
        statuses = [r.status for r in results]
        # 0.0 s: i0 starts; 0.4 s: i1 starts; 0.8 s: past the deadline, i2 and i3 do not.
        assert statuses == [Status.OK, Status.OK, Status.OVERLOADED, Status.OVERLOADED]
        assert results[2].reason == "deadline_exceeded_in_queue"
        assert ran.read_text().split() == ["i0", "i1"]
    finally:
        await pool.close()


def test_health_says_not_serving_while_no_worker_can_start_and_serving_after() -> None:
    server = ServerProcess(["--workers", "1", "--plugin", "testing_verifiers"])
    flag = Path(crash_flag(server.process.pid))
    service = "verifier.v1.VerifierService"
    probe = Item(id="p", completion="x", reward=RewardSpec("crash_on_start"))

    def health_of(client: RewardClient) -> dict[str, str]:
        names = ["", service, f"{service}/crash_on_start", f"{service}/format", f"{service}/judge"]
        return {name: client.health(name) for name in names}

    def poll(client: RewardClient, want: str) -> dict[str, str]:
        end = time.monotonic() + 30
        while (seen := health_of(client))[""] != want and time.monotonic() < end:
            time.sleep(0.1)
        return seen

    try:
        with RewardClient(server.address, timeout_s=10) as client:
            worker_pid = int(client.score([probe])[0].details["pid"])  # a Struct number
            flag.touch()
            os.kill(worker_pid, signal.SIGKILL)
            down = poll(client, "NOT_SERVING")
            # What runs in the pool is down; the judge (async, in the server) is not.
            assert down == {
                "": "NOT_SERVING",
                service: "NOT_SERVING",
                f"{service}/crash_on_start": "NOT_SERVING",
                f"{service}/format": "NOT_SERVING",
                f"{service}/judge": "SERVING",
            }
            flag.unlink()
            assert set(poll(client, "SERVING").values()) == {"SERVING"}
            assert client.score([probe])[0].ok
    finally:
        flag.unlink(missing_ok=True)
        server.stop()


async def test_a_bulk_job_whose_worker_is_killed_once_is_sent_again() -> None:
    from verifier_server import convert
    from verifier_server._proto.verifier.v1 import verifier_pb2 as pb
    from verifier_server.workers import BulkJob

    pool = WorkerPool(1, plugins=["testing_verifiers"])
    pool.start(asyncio.get_running_loop())
    try:
        spec = RewardSpec("sleepy_bulk", {"seconds": 0.05})
        batch = [Item(id=f"b{n}", completion="x", reward=spec) for n in range(20)]
        payload = convert.request_from_items(batch).SerializeToString()
        job = BulkJob("sleepy_bulk", SleepParams(seconds=0.05), spec, payload, list(range(20)),
                      convert.ItemLimits())  # fmt: skip
        future = pool.submit_bulk(job, timeout_s=30.0)
        await asyncio.sleep(0.3)
        os.kill(pool.pids[0], signal.SIGKILL)  # from outside, half-way through the job
        results = pb.ScoreResponse.FromString(await future).results
        assert [r.id for r in results] == [f"b{n}" for n in range(20)]
        assert all(r.status == pb.STATUS_OK for r in results)
        assert pool.stats["worker_deaths"] == 1
    finally:
        await pool.close()


async def test_callers_take_turns_for_workers(tmp_path: Path) -> None:
    pool = WorkerPool(1, plugins=["testing_verifiers"], chunk_items=1)
    pool.start(asyncio.get_running_loop())
    ran = tmp_path / "ran.txt"
    try:
        params = SleepParams(seconds=0.05, log_path=str(ran))
        hog = pool.submit("sleepy", params, items(12, "a"), 5.0, caller="a")
        await asyncio.sleep(0.02)  # caller a's backlog is queued first
        polite = pool.submit("sleepy", params, items(2, "b"), 5.0, caller="b")
        await asyncio.gather(*hog, *polite)
        order = ran.read_text().split()
        # First in, first out would run all twelve of a's items before b's two. Turns:
        assert order.index("b0") <= 2 and order.index("b1") <= 4
        assert [i for i in order if i.startswith("a")] == [f"a{k}" for k in range(12)]
    finally:
        await pool.close()
