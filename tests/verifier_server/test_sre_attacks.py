"""Faults found by attacking the server as an SRE would (issue 17, second pass): a stopped or
killed forkserver, workers that die at awkward moments, cost estimates taught by refusals,
work for callers who have gone, and caller bookkeeping that must return to zero."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator
from multiprocessing import forkserver

import pytest
from testing_verifiers import SleepParams

from verifier_server.types import Item, Status
from verifier_server.workers import WorkerPool

pytestmark = pytest.mark.integration


def items(n: int, prefix: str = "i") -> list[Item]:
    return [Item(id=f"{prefix}{k}", completion="x") for k in range(n)]


async def wait_for(condition, timeout_s: float = 30.0) -> None:
    end = asyncio.get_running_loop().time() + timeout_s
    while not condition():
        assert asyncio.get_running_loop().time() < end, "condition not reached in time"
        await asyncio.sleep(0.05)


@pytest.fixture
async def pool() -> AsyncIterator[WorkerPool]:
    pool = WorkerPool(2, plugins=["testing_verifiers"], chunk_items=4)
    pool.start(asyncio.get_running_loop())
    yield pool
    await pool.close()


async def longest_stall_s(seconds: float) -> float:
    """The longest the event loop went without running a 10 ms timer, over `seconds`."""
    loop = asyncio.get_running_loop()
    worst, end = 0.0, loop.time() + seconds
    while loop.time() < end:
        before = time.monotonic()
        await asyncio.sleep(0.01)
        worst = max(worst, time.monotonic() - before)
    return worst


async def test_a_stopped_forkserver_does_not_stall_the_event_loop(pool: WorkerPool) -> None:
    fs_pid = forkserver._forkserver._forkserver_pid
    assert fs_pid is not None
    os.kill(fs_pid, signal.SIGSTOP)
    try:
        os.kill(pool.pids[0], signal.SIGKILL)  # its replacement must come from the forkserver
        # Replacing the worker used to block the loop in the forkserver's reply: health, every
        # RPC and every timer of the server stood still for as long as the forkserver did.
        assert await longest_stall_s(1.0) < 0.5
        survivor = await asyncio.gather(*pool.submit("sleepy", SleepParams(), items(2), 5.0))
        assert all(r.ok for r in survivor)
    finally:
        os.kill(fs_pid, signal.SIGCONT)
    await wait_for(lambda: pool.ready_workers == 2)


async def test_a_killed_forkserver_is_restarted_without_stalling_the_event_loop(
    pool: WorkerPool,
) -> None:
    fs_pid = forkserver._forkserver._forkserver_pid
    assert fs_pid is not None
    os.kill(fs_pid, signal.SIGKILL)  # its workers die with it (PR_SET_PDEATHSIG)
    # The new forkserver loads the built-in verifiers (seconds) before it forks a worker;
    # the loop used to wait for that, every timer and RPC with it.
    assert await longest_stall_s(2.0) < 0.5
    await wait_for(lambda: pool.ready_workers == 2)
    results = await asyncio.gather(*pool.submit("sleepy", SleepParams(), items(4), 5.0))
    assert all(r.ok for r in results)


async def test_items_refused_for_their_deadline_do_not_teach_the_pool_they_cost_nothing() -> None:
    pool = WorkerPool(1, plugins=["testing_verifiers"], chunk_items=8)
    pool.start(asyncio.get_running_loop())
    try:
        params = SleepParams(seconds=0.2)
        await asyncio.gather(*pool.submit("sleepy", params, items(2, "learn"), 5.0))
        learned = pool.admission.item_cost_s("sleepy")
        assert learned == pytest.approx(0.2, abs=0.05)
        deadline = time.monotonic() + 0.3
        results = await asyncio.gather(*pool.submit("sleepy", params, items(8), 5.0, deadline))
        assert [r.status for r in results].count(Status.OVERLOADED) >= 5
        # Six refusals at 0 s each used to drag the estimate to ~0.05 s: admission then let
        # in four times the work a deadline allows, and the excess came back TIMEOUT.
        assert pool.admission.item_cost_s("sleepy") == pytest.approx(learned, abs=0.05)
    finally:
        await pool.close()


async def test_an_async_verifier_stops_when_every_caller_of_its_batch_has_gone() -> None:
    from concurrent.futures import ThreadPoolExecutor

    from verifier_server.resolver import Leaf
    from verifier_server.scorer import Scorer
    from verifier_server.verifiers.base import Verifier

    stopped = asyncio.Event()

    class SlowBackend(Verifier):  # a judge waiting on a slow backend, say
        name = "slow_backend"
        execution = "async"

        async def ascore(self, batch, params):  # type: ignore[no-untyped-def]
            try:
                await asyncio.sleep(30)
            except asyncio.CancelledError:
                stopped.set()
                raise
            raise AssertionError("ran to the end for nobody")

    with ThreadPoolExecutor(1) as threads:
        scorer = Scorer(None, threads, 100)  # type: ignore[arg-type]
        plan = Leaf(SlowBackend(), None, 30.0, "slow_backend")
        futures = scorer.schedule(items(3), plan, deadline=None)
        await asyncio.sleep(0.05)
        for future in futures:  # the RPC was cancelled, or its deadline cut these off
            future.cancel()
        # The batch used to run on (a judge kept spending its budget) for callers long gone.
        await asyncio.wait_for(stopped.wait(), 2.0)


def test_the_bearer_scheme_is_case_insensitive_and_nothing_else_is_a_token() -> None:
    from verifier_server.access import AccessInterceptor

    token = "trainer-a-0123456789abcdef"
    interceptor = AccessInterceptor({token: "a"})
    # Proxies and other clients send `bearer`: the scheme is case-insensitive (RFC 9110).
    for scheme in ("Bearer", "bearer", "BEARER"):
        assert interceptor.caller(f"{scheme} {token}") == "a"
    assert interceptor.caller(f"Bearer  {token} ") == "a"
    wrong = [None, "", "Bearer", "Bearer ", token, f"Basic {token}", f"Bearer {token}x"]
    wrong += [f"Bearer {token[:-1]}", "Bearer " + "x" * 100_000, f"Bearer é{token}"]
    for presented in wrong:
        assert interceptor.caller(presented) is None


def test_under_a_burst_work_is_refused_at_once_rather_than_admitted_to_time_out() -> None:
    import threading

    import grpc
    from server_process import ServerProcess

    from verifier_server._proto.verifier.v1 import verifier_pb2 as pb
    from verifier_server._proto.verifier.v1 import verifier_pb2_grpc as pb_grpc

    def request(n: int) -> pb.ScoreRequest:
        good = "<think>a</think><answer>b</answer>"
        batch = [pb.Item(id=f"f{n}-{k}", completion=good, reward={"name": "format"})
                 for k in range(40)]  # fmt: skip
        for k in range(8):
            item = pb.Item(id=f"s{n}-{k}", completion="x", reward={"name": "sleepy"})
            item.reward.params.update({"seconds": 0.02})
            batch.append(item)
        return pb.ScoreRequest(items=batch)

    server = ServerProcess(["--workers", "1", "--plugin", "testing_verifiers"])
    statuses: list[int] = []
    end = time.monotonic() + 6.0

    def caller(n: int) -> None:
        with grpc.insecure_channel(server.address) as channel:
            stub = pb_grpc.VerifierServiceStub(channel)
            while time.monotonic() < end:
                statuses.extend(r.status for r in stub.Score(request(n), timeout=2.0).results)

    try:
        callers = [threading.Thread(target=caller, args=(n,)) for n in range(12)]
        for thread in callers:
            thread.start()
        for thread in callers:
            thread.join()
    finally:
        server.stop()
    assert statuses.count(pb.STATUS_OK) > 1000 and statuses.count(pb.STATUS_OVERLOADED) > 1000
    # Admission filled the queue up to the deadline itself, and the response left at a cut-off
    # before it: bulk jobs admitted last finished after the answer (40% of them TIMEOUT).
    assert statuses.count(pb.STATUS_TIMEOUT) <= len(statuses) // 100


def test_anonymous_callers_on_different_connections_take_turns() -> None:
    import grpc
    from server_process import ServerProcess

    from verifier_server._proto.verifier.v1 import verifier_pb2 as pb
    from verifier_server._proto.verifier.v1 import verifier_pb2_grpc as pb_grpc

    def batch(prefix: str, n: int) -> pb.ScoreRequest:
        request = pb.ScoreRequest()
        for k in range(n):
            item = request.items.add(id=f"{prefix}{k}", completion="x")
            item.reward.name = "sleepy"
            item.reward.params.update({"seconds": 0.02})
        return request

    server = ServerProcess(["--workers", "1", "--plugin", "testing_verifiers"])
    try:
        own = [("grpc.use_local_subchannel_pool", 1)]  # a connection each, as two trainers
        with (
            grpc.insecure_channel(server.address, options=own) as hog_channel,
            grpc.insecure_channel(server.address, options=own) as polite_channel,
        ):
            hog = pb_grpc.VerifierServiceStub(hog_channel).Score.future(
                batch("h", 400),
                timeout=30,  # ~8 s of work, queued first
            )
            time.sleep(0.5)
            started = time.monotonic()
            polite = pb_grpc.VerifierServiceStub(polite_channel).Score(batch("p", 2), timeout=5)
            waited_s = time.monotonic() - started
            assert all(r.status == pb.STATUS_OK for r in hog.result().results)
    finally:
        server.stop()
    # Without tokens every caller was "" and the queue first-in first-out: the polite
    # caller's two items waited behind the hog's 400 (refused OVERLOADED, its deadline
    # being too short for the hog's backlog). Connections now take turns.
    assert [r.status for r in polite.results] == [pb.STATUS_OK, pb.STATUS_OK]
    assert waited_s < 2.0


def test_undecodable_bytes_to_health_and_reflection_are_invalid_argument(server) -> None:
    import grpc

    garbage = b"\x0a\xff\xff\xff\xff\x0f"  # a length-delimited field longer than the message
    with grpc.insecure_channel(server.address) as channel:
        calls = [
            lambda: channel.unary_unary("/grpc.health.v1.Health/Check")(garbage, timeout=5),
            lambda: next(channel.unary_stream("/grpc.health.v1.Health/Watch")(garbage, timeout=5)),
            lambda: list(
                channel.stream_stream(
                    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"
                )(iter([garbage]), timeout=5)
            ),
        ]
        for call in calls:
            # Health needs no token: each of these was UNKNOWN and an ERROR traceback in the
            # server's log, for anyone who can reach the port.
            with pytest.raises(grpc.RpcError) as info:
                call()
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        # And the real thing still works.
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        health = health_pb2_grpc.HealthStub(channel)
        serving = health_pb2.HealthCheckResponse.SERVING
        assert health.Check(health_pb2.HealthCheckRequest(), timeout=5).status == serving
        watch = health.Watch(health_pb2.HealthCheckRequest(), timeout=5)
        assert next(watch).status == serving
        watch.cancel()


async def test_a_retiring_worker_is_given_no_more_work() -> None:
    from testing_verifiers import HogParams

    pool = WorkerPool(1, plugins=["testing_verifiers"], chunk_items=1)
    pool.start(asyncio.get_running_loop())
    try:
        futures = pool.submit("hog", HogParams(megabytes=1200), items(1, "big"), 30.0)
        futures += pool.submit("hog", HogParams(), items(3, "small"), 30.0)  # queued behind
        results = await asyncio.gather(*futures)
        # The pool used to hand the next queued job to the worker that had just said it was
        # retiring: that worker exited without reading it, and the item came back worker_died.
        assert [(r.status, r.reason) for r in results] == [(Status.OK, "")] * 4
        assert pool.stats["retired"] == 1
    finally:
        await pool.close()


async def test_a_worker_killed_after_it_said_retiring_costs_no_item(tmp_path) -> None:
    from verifier_server.workers.messages import Retiring

    pool = WorkerPool(1, plugins=["testing_verifiers"], chunk_items=4)
    pool.start(asyncio.get_running_loop())
    ran = tmp_path / "ran.txt"
    try:
        params = SleepParams(seconds=0.3, log_path=str(ran))
        futures = pool.submit("sleepy", params, items(4), 30.0)
        await wait_for(ran.exists)
        worker = pool._workers[0]
        # A worker says Retiring once its item is done, then exits on its own; killed in
        # between (the OOM killer, an operator), it has nothing running that could be lost.
        pool._on_message(worker, Retiring(rss_mb=9999.0))
        os.kill(worker.process.pid, signal.SIGKILL)
        results = await asyncio.gather(*futures)
        assert [r.status for r in results] == [Status.OK] * 4
    finally:
        await pool.close()


def test_idle_connections_to_the_metrics_port_are_bounded_and_time_out() -> None:
    import socket
    import threading
    import urllib.request

    from verifier_server import metrics as metrics_module

    metrics = metrics_module.Metrics()
    port = metrics.serve(0, "127.0.0.1")
    threads = threading.active_count()
    idle = []
    try:
        for _ in range(100):  # a slowloris: half a request line each, then nothing
            conn = socket.create_connection(("127.0.0.1", port))
            conn.sendall(b"GET /metrics HTTP/1.1\r\n")
            idle.append(conn)
        time.sleep(0.5)
        # Each used to hold a thread of the server's process, forever.
        assert threading.active_count() <= threads + metrics_module.MAX_SCRAPES
        idle[-1].settimeout(metrics_module.SCRAPE_TIMEOUT_S + 5)
        assert idle[-1].recv(1) == b""  # refused (over the cap) or timed out: closed
        idle[0].settimeout(metrics_module.SCRAPE_TIMEOUT_S + 5)
        assert idle[0].recv(1) == b""
        for conn in idle:
            conn.close()
        url = f"http://127.0.0.1:{port}/metrics"
        assert b"verifier_items" in urllib.request.urlopen(url, timeout=5).read()
    finally:
        for conn in idle:
            conn.close()
        metrics.close()


async def test_queued_work_is_priced_at_what_the_pool_has_learned_since() -> None:
    pool = WorkerPool(1, plugins=["testing_verifiers"], chunk_items=1)
    pool.start(asyncio.get_running_loop())
    try:
        # A cold verifier: 20 items queued at the initial guess of 10 ms each (0.2 s).
        futures = pool.submit("sleepy", SleepParams(seconds=0.1), items(20), 5.0)
        await wait_for(lambda: sum(f.done() for f in futures) >= 2)
        assert pool.admission.item_cost_s("sleepy") > 0.05  # learned: ~0.1 s
        # ~1.8 s of work is queued; nothing more can finish within a second. The backlog
        # used to keep the guess it was queued at (~0.18 s) and admit six more items, which
        # then came back TIMEOUT.
        assert pool.admission.estimated_wait_s() > 1.0
        assert pool.admission.admissible("sleepy", 10, time.monotonic() + 1.0) == 0
        await asyncio.gather(*futures)
    finally:
        await pool.close()


async def test_cost_estimates_are_bounded_however_many_distinct_params_callers_send() -> None:
    from verifier_server.workers.admission import MAX_COST_KEYS

    pool = WorkerPool(1, plugins=["testing_verifiers"])
    pool.start(asyncio.get_running_loop())
    try:
        # A cost is learned per (verifier, params): a caller varying a param every request
        # (a random regex, say) grew this table, and the params' text in it, without bound.
        for n in range(MAX_COST_KEYS + 500):
            pool.admission.learn_cost(f"sleepy:{n}", 0.001)
        assert len(pool.admission._item_cost_s) <= MAX_COST_KEYS
        assert pool.admission.item_cost_s(f"sleepy:{MAX_COST_KEYS + 499}") == 0.001  # latest
    finally:
        await pool.close()


def test_the_cost_key_of_a_plan_does_not_hold_its_params_text() -> None:
    from verifier_server.config import ServerConfig
    from verifier_server.registry import Registry
    from verifier_server.resolver import Resolver
    from verifier_server.types import RewardSpec

    resolver = Resolver(Registry.load(["testing_verifiers"]), ServerConfig())
    plan = resolver.resolve(RewardSpec("sleepy", {"log_path": "x" * 100_000}))
    assert len(plan.cost_key) < 100  # a digest of the params: distinct params, distinct keys
    other = resolver.resolve(RewardSpec("sleepy", {"log_path": "x" * 99_999}))
    assert other.cost_key != plan.cost_key and other.cost_key.startswith("sleepy:")
