"""The Python client: async API, streaming, retries, round robin over replicas."""

from __future__ import annotations

import asyncio
import socket
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from server_process import ServerProcess, children_of, kill_replica

from verifier_server.client import AsyncRewardClient, RewardClient, channel_target
from verifier_server.types import Item, RewardSpec, Status

pytestmark = pytest.mark.integration


def fmt(id: str, completion: str = "<think>a</think><answer>b</answer>") -> Item:
    return Item(id=id, completion=completion, reward=RewardSpec("format"))


async def test_async_client_scores_concurrent_batches(server) -> None:
    async with AsyncRewardClient(server.address, max_batch_items=16, max_in_flight=4) as client:
        batches = [[fmt(f"{b}-{n}") for n in range(40)] for b in range(5)]
        results = await asyncio.gather(*(client.score(batch) for batch in batches))
    for batch, batch_results in zip(batches, results, strict=True):
        assert [r.id for r in batch_results] == [i.id for i in batch]
        assert all(r.ok and r.score == 1.0 for r in batch_results)


async def test_stream_yields_results_as_they_finish(server) -> None:
    slow = Item(id="slow", completion="x", reward=RewardSpec("sleepy", {"seconds": 1.0}))
    fast = [fmt(f"fast{n}") for n in range(5)]
    async with AsyncRewardClient(server.address) as client:
        order = [r.id async for r in client.score_stream([slow, *fast], batch_items=1)]
    assert sorted(order) == sorted(["slow", *[i.id for i in fast]])
    assert order[-1] == "slow"  # finished last although sent first


async def test_stream_reports_bad_items_inline(server) -> None:
    bad = Item(id="bad", completion="x", reward=RewardSpec("nope"))
    async with AsyncRewardClient(server.address) as client:
        results = {r.id: r async for r in client.score_stream([bad, fmt("good")])}
    assert results["bad"].status == Status.INVALID_REQUEST and results["good"].ok


def test_unreachable_server_is_backend_unavailable_after_retries() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here once the socket closes
    with RewardClient(f"127.0.0.1:{port}", backoff_initial_s=0.01) as client:
        results = client.score([fmt("a"), fmt("b")], timeout_s=1.0)
    assert [r.status for r in results] == [Status.BACKEND_UNAVAILABLE, Status.BACKEND_UNAVAILABLE]
    assert results[0].reason == "unavailable"


def test_round_robin_spreads_over_replicas(server, tmp_path) -> None:

    second = ServerProcess(["--workers", "1", "--plugin", "testing_verifiers"])
    try:
        items = [
            Item(id=f"p{n}", completion="x", reward=RewardSpec("sleepy", {"seconds": 0.02}))
            for n in range(64)
        ]
        with RewardClient([server.address, second.address], max_batch_items=4) as client:
            client.score(items[:8])  # connects both subchannels
            time.sleep(0.5)
            results = client.score(items)
        pids = {int(r.details["pid"]) for r in results}
        first_workers, second_workers = (
            children_of(server.process.pid),
            children_of(second.process.pid),
        )
    finally:
        second.stop()
    assert all(r.ok for r in results)
    assert pids & first_workers and pids & second_workers  # both replicas answered


def test_a_replica_killed_mid_batch_costs_no_item(tmp_path: Path) -> None:
    # Two replicas with one worker each; 30 items of 0.2 s in RPCs of 2, all in flight at
    # once, spread by round robin. One replica is SIGKILLed while its worker is busy: the
    # calls it held fail UNAVAILABLE and go again, to the other replica, before the deadline.
    ran = tmp_path / "ran"  # each item's id, appended when a worker starts it
    replicas = [ServerProcess(["--workers", "1", "--plugin", "testing_verifiers"]) for _ in "ab"]
    try:
        items = [
            Item(
                id=f"i{n}",
                completion="x",
                reward=RewardSpec("sleepy", {"seconds": 0.2, "log_path": str(ran)}),
            )
            for n in range(30)
        ]
        addresses = [r.address for r in replicas]
        with (
            RewardClient(addresses, max_batch_items=2, timeout_s=60) as client,
            ThreadPoolExecutor(1) as pool,
        ):
            client.score([fmt(f"warm{n}") for n in range(4)])  # connects both subchannels
            time.sleep(0.5)
            scoring = pool.submit(client.score, items)
            while not ran.exists() or len(ran.read_text().split()) < 4:
                time.sleep(0.02)
            kill_replica(replicas[1])
            results = scoring.result()
    finally:
        for replica in replicas:
            replica.stop()
    assert [r.id for r in results] == [i.id for i in items]
    assert all(r.ok and r.score == 1.0 for r in results), [r for r in results if not r.ok]
    started = Counter(ran.read_text().split())
    assert set(started) == {i.id for i in items}
    # The item the killed replica's worker was running started again on the other one.
    assert any(count > 1 for count in started.values())


def test_channel_target_forms() -> None:
    assert channel_target("127.0.0.1:5") == "127.0.0.1:5"
    assert channel_target(["127.0.0.1:5", "127.0.0.1:6"]) == "ipv4:127.0.0.1:5,127.0.0.1:6"
    assert channel_target(["[::1]:5", "[::1]:6"]) == "ipv6:[::1]:5,[::1]:6"


def test_waiting_for_an_in_flight_slot_counts_against_the_timeout(server) -> None:
    # One RPC at a time, one item per RPC, 0.6 s per item: the third batch waits 1.2 s for its
    # slot. The time left used to be measured before that wait, so the call ran to ~2x.
    batch = [
        Item(id=f"s{n}", completion="x", reward=RewardSpec("sleepy", {"seconds": 0.6}))
        for n in range(6)
    ]
    with RewardClient(server.address, max_in_flight=1, max_batch_items=1) as client:
        started = time.monotonic()
        results = client.score(batch, timeout_s=2.0)
        elapsed = time.monotonic() - started
    assert elapsed < 2.0 * 1.05
    assert results[0].ok and not all(r.ok for r in results)
    assert {r.status for r in results if not r.ok} <= {Status.TIMEOUT, Status.OVERLOADED}


def test_a_lone_surrogate_is_a_client_error_naming_the_field(server) -> None:
    from verifier_server.client import RewardClientError

    items = [fmt("fine"), Item(id="bad", completion="x", reference={"a": ["ok", "\ud800"]})]
    with RewardClient(server.address) as client, pytest.raises(RewardClientError) as info:
        client.score(items)
    assert "items[1].reference: not valid UTF-8" in str(info.value)


def test_client_reconnects_quickly_to_a_restarted_server(tmp_path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    first = ServerProcess(["--workers", "1", "--port", str(port)])
    with RewardClient(f"127.0.0.1:{port}", backoff_initial_s=0.01) as client:
        assert client.score([fmt("before")])[0].ok
        first.stop()
        assert client.score([fmt("down")], timeout_s=0.5)[0].status == Status.BACKEND_UNAVAILABLE
        second = ServerProcess(["--workers", "1", "--port", str(port)])
        try:
            started = time.monotonic()
            result = client.score([fmt("after")], timeout_s=10)[0]
            # gRPC's default back-off (1 s doubling) made this take up to ~6 s.
            assert result.ok and time.monotonic() - started < 2.0
        finally:
            second.stop()
