"""Start, stop and CLI behaviour of the `verifier-server` process."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time

import grpc
import pytest
from server_process import ServerProcess, alive, children_of, run_cli, server_env

from verifier_server._proto.verifier.v1 import verifier_pb2 as pb
from verifier_server._proto.verifier.v1 import verifier_pb2_grpc as pb_grpc
from verifier_server.client import RewardClient
from verifier_server.types import Item, RewardSpec, Status

pytestmark = pytest.mark.integration


def test_sigterm_drains_in_flight_work_and_leaves_no_children() -> None:
    server = ServerProcess(["--workers", "2", "--plugin", "testing_verifiers"])
    children = children_of(server.process.pid)
    assert len(children) >= 3  # forkserver + 2 workers
    results: list = []
    with RewardClient(server.address) as client:
        slow = [
            Item(id=f"s{n}", completion="x", reward=RewardSpec("sleepy", {"seconds": 1.0}))
            for n in range(2)
        ]
        worker = threading.Thread(target=lambda: results.extend(client.score(slow)))
        worker.start()
        time.sleep(0.4)  # the items are running
        server.process.send_signal(signal.SIGTERM)
        time.sleep(0.2)
        assert client.health() in {"NOT_SERVING", "UNAVAILABLE"}
        worker.join(20)
    assert server.process.wait(20) == 0
    assert [r.status for r in results] == [Status.OK, Status.OK]  # drained, not dropped
    deadline = time.monotonic() + 5
    while any(alive(pid) for pid in children) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [pid for pid in children if alive(pid)]


def test_workers_die_with_a_killed_server() -> None:
    server = ServerProcess(["--workers", "2"])
    children = children_of(server.process.pid)
    server.process.kill()
    server.process.wait(10)
    deadline = time.monotonic() + 5
    while any(alive(pid) for pid in children) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [pid for pid in children if alive(pid)]


def test_second_server_on_the_same_port_fails_loudly(server) -> None:
    port = server.address.rsplit(":", 1)[1]
    process = subprocess.run(
        [sys.executable, "-m", "verifier_server.cli", "serve", "--port", port, "--workers", "1"],
        capture_output=True,
        text=True,
        timeout=60,
        env=server_env(),
    )
    assert process.returncode != 0
    assert f"cannot listen on 127.0.0.1:{port}" in process.stderr


def test_check_reports_every_problem_with_its_location(tmp_path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text(
        "verifiers:\n  format: {no_such: 1}\n  nope: {}\n"
        "rewards:\n"
        "  r1:\n    components:\n"
        "      - {verifier: length, params: {max_tokens: 10, cache_tokens: 20}}\n"
        "  r2:\n    components:\n      - {verifier: missing_thing}\n"
        "  loop_a:\n    components: [{verifier: loop_b}]\n"
        "  loop_b:\n    components: [{verifier: loop_a}]\n"
    )
    process = run_cli("check", "--config", str(config))
    assert process.returncode == 1
    err = process.stderr
    assert "verifiers.format.no_such" in err
    assert "verifiers.nope: unknown verifier" in err
    assert "rewards.r1.components[0].params" in err and "cache_tokens" in err
    assert "rewards.r2.components[0]: unknown verifier or reward 'missing_thing'" in err
    assert "nested deeper" in err


def test_check_rejects_a_malformed_file(tmp_path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text("server: {port: not-a-port}\nunknown_section: 1\n")
    process = run_cli("check", "--config", str(config))
    assert process.returncode == 2
    assert "server.port" in process.stderr and "unknown_section" in process.stderr


def test_check_accepts_the_demo_config() -> None:
    from verifier_server.demo import SAMPLES

    process = run_cli("check", "--config", str(SAMPLES / "demo.yaml"))
    assert process.returncode == 0, process.stderr
    assert "2 named reward(s)" in process.stdout


def test_list_prints_params_with_descriptions() -> None:
    process = run_cli("list")
    assert process.returncode == 0
    assert (
        "max_tokens" in process.stdout
        and "operation" in process.stdout
        and "composite" in process.stdout
    )


def test_bad_plugin_stops_start_up_with_its_name() -> None:
    process = run_cli("list", "--plugin", "no_such_module_xyz")
    assert process.returncode == 2
    assert "--plugin no_such_module_xyz: cannot import" in process.stderr


def test_demo_prints_a_table() -> None:
    process = subprocess.run(
        [sys.executable, "-m", "verifier_server.cli", "demo"],
        capture_output=True,
        text=True,
        timeout=120,
        env=server_env(),
    )
    assert process.returncode == 0, process.stderr
    lines = process.stdout.splitlines()
    row = next(line for line in lines if line.startswith("named-reward"))
    assert "STATUS_OK" not in row and " OK " in f" {row} " and "1.200" in row
    assert any(line.startswith("bad-request") and "INVALID_REQUEST" in line for line in lines)


def test_message_over_the_cap_is_refused_with_a_clear_code(tmp_path) -> None:
    config = tmp_path / "small.yaml"
    config.write_text("limits: {max_message_mb: 1}\n")
    server = ServerProcess(["--workers", "1", "--config", str(config)])
    try:
        item = pb.Item(id="big", completion="x" * (2 << 20), reward=pb.RewardSpec(name="format"))
        options = [("grpc.max_send_message_length", 8 << 20)]
        with grpc.insecure_channel(server.address, options=options) as channel:
            stub = pb_grpc.VerifierServiceStub(channel)
            with pytest.raises(grpc.RpcError) as info:
                stub.Score(pb.ScoreRequest(items=[item]), timeout=10)
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        with RewardClient(server.address) as client:  # the server is unharmed
            ok = Item(
                id="ok", completion="<think></think><answer></answer>", reward=RewardSpec("format")
            )
            assert client.score([ok])[0].ok
    finally:
        server.stop()


def test_health_answers_while_every_worker_is_busy() -> None:
    server = ServerProcess(["--workers", "1", "--plugin", "testing_verifiers"])
    try:
        with RewardClient(server.address) as client:
            busy = [
                Item(id=f"b{n}", completion="x", reward=RewardSpec("sleepy", {"seconds": 0.5}))
                for n in range(6)
            ]
            worker = threading.Thread(target=lambda: client.score(busy))
            worker.start()
            time.sleep(0.3)  # the worker is busy and items are queued behind it
            statuses = [client.health() for _ in range(5)]  # each check has a 5 s timeout
            worker.join(20)
        assert statuses == ["SERVING"] * 5
    finally:
        server.stop()
