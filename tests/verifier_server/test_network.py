"""A server fit for a network: TLS and mutual TLS with real certificates (made by openssl in
the test), bearer tokens on every RPC but health, per-token quotas, a warning when exposed
without them, Prometheus metrics and JSON logs with request ids."""

from __future__ import annotations

import json
import socket
import subprocess
import urllib.request
from pathlib import Path

import grpc
import pytest
from server_process import ServerProcess

from verifier_server._proto.verifier.v1 import verifier_pb2 as pb
from verifier_server._proto.verifier.v1 import verifier_pb2_grpc as pb_grpc
from verifier_server.client import ClientTls, RewardClient, RewardClientError
from verifier_server.types import Item, RewardSpec, Status

pytestmark = pytest.mark.integration

GOOD = "<think>because</think>\n<answer>Paris</answer>"
TOKEN_A = "trainer-a-0123456789abcdef"
TOKEN_B = "trainer-b-fedcba9876543210"


def fmt(item_id: str) -> Item:
    return Item(id=item_id, completion=GOOD, reward=RewardSpec("format"))


def sleepy(item_id: str, seconds: float) -> Item:
    return Item(id=item_id, completion="x", reward=RewardSpec("sleepy", {"seconds": seconds}))


def openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CA, a server certificate for 127.0.0.1 / localhost, and a client certificate."""
    d = tmp_path_factory.mktemp("pki")
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=test-ca",
            "-keyout", str(d / "ca.key"), "-out", str(d / "ca.pem"))  # fmt: skip
    (d / "san.cnf").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    for name in ("server", "client"):
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}",
                "-keyout", str(d / f"{name}.key"), "-out", str(d / f"{name}.csr"))  # fmt: skip
        openssl("x509", "-req", "-in", str(d / f"{name}.csr"), "-CA", str(d / "ca.pem"),
                "-CAkey", str(d / "ca.key"), "-CAcreateserial", "-days", "2",
                "-extfile", str(d / "san.cnf"), "-out", str(d / f"{name}.pem"))  # fmt: skip
    # A second CA that signed nothing of ours: a client certificate it signs must be refused.
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=other",
            "-keyout", str(d / "other.key"), "-out", str(d / "other.pem"))  # fmt: skip
    return d


def tls_flags(pki: Path) -> list[str]:
    return ["--tls-cert", str(pki / "server.pem"), "--tls-key", str(pki / "server.key")]


def test_tls_server_answers_tls_clients_and_refuses_plaintext(pki: Path) -> None:
    server = ServerProcess(["--workers", "1", *tls_flags(pki)])
    try:
        with RewardClient(server.address, tls=ClientTls(ca_file=str(pki / "ca.pem"))) as client:
            assert client.score([fmt("t")])[0].ok
            assert client.health() == "SERVING"
        with RewardClient(server.address, backoff_initial_s=0.01) as plain:
            result = plain.score([fmt("p")], timeout_s=1.0)[0]
        assert result.status == Status.BACKEND_UNAVAILABLE
    finally:
        server.stop()


def test_mutual_tls_requires_a_client_certificate_from_the_ca(pki: Path) -> None:
    server = ServerProcess(
        ["--workers", "1", *tls_flags(pki), "--tls-client-ca", str(pki / "ca.pem")]
    )
    ca = str(pki / "ca.pem")
    try:
        with_cert = ClientTls(ca, str(pki / "client.pem"), str(pki / "client.key"))
        with RewardClient(server.address, tls=with_cert) as client:
            assert client.score([fmt("m")])[0].ok
        for tls in (ClientTls(ca), ClientTls(ca, str(pki / "other.pem"), str(pki / "other.key"))):
            with RewardClient(server.address, tls=tls, backoff_initial_s=0.01) as client:
                assert client.score([fmt("x")], timeout_s=1.0)[0].status != Status.OK
    finally:
        server.stop()


@pytest.fixture(scope="module")
def token_server(tmp_path_factory: pytest.TempPathFactory) -> ServerProcess:
    d = tmp_path_factory.mktemp("auth")
    (d / "tokens").write_text(f"# callers\ntrainer-a {TOKEN_A}\n{TOKEN_B}\n")
    (d / "config.yaml").write_text(
        "plugins: [testing_verifiers]\n"
        f"server: {{workers: 1, auth: {{tokens_file: {d / 'tokens'}, max_in_flight_items: 4}}}}\n"
    )
    server = ServerProcess(["--config", str(d / "config.yaml")])
    yield server
    server.stop()


def test_every_rpc_but_health_needs_a_valid_token(token_server: ServerProcess) -> None:
    with grpc.insecure_channel(token_server.address) as channel:
        stub = pb_grpc.VerifierServiceStub(channel)
        request = pb.ScoreRequest(
            items=[pb.Item(id="a", completion=GOOD, reward={"name": "format"})]
        )
        for metadata in (None, [("authorization", "Bearer wrong-token-000000000")],
                         [("authorization", TOKEN_A)]):  # fmt: skip
            for call in (
                lambda m: stub.Score(request, timeout=5, metadata=m),
                lambda m: stub.ListVerifiers(pb.ListVerifiersRequest(), timeout=5, metadata=m),
            ):
                with pytest.raises(grpc.RpcError) as info:
                    call(metadata)
                assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
                assert "Bearer <token>" in info.value.details()
        # Reflection too: it would tell an anonymous caller what the server runs.
        from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

        reflect = reflection_pb2_grpc.ServerReflectionStub(channel)
        with pytest.raises(grpc.RpcError) as info:
            list(reflect.ServerReflectionInfo(
                iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5
            ))  # fmt: skip
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    with RewardClient(token_server.address) as anonymous:
        assert anonymous.health() == "SERVING"  # probes need no secret
    with RewardClient(token_server.address, token=TOKEN_B) as client:
        assert client.score([fmt("b")])[0].ok and client.list_verifiers()


def test_a_token_over_its_in_flight_quota_gets_overloaded(token_server: ServerProcess) -> None:
    with RewardClient(token_server.address, token=TOKEN_A) as client:
        # Five items in one request: over the quota of four by themselves.
        over = client.score([sleepy(f"q{n}", 0.0) for n in range(5)], timeout_s=0.5)
        assert {r.status for r in over} == {Status.OVERLOADED}
        assert {r.reason for r in over} == {"quota_in_flight"}
        assert all(r.ok for r in client.score([sleepy(f"r{n}", 0.0) for n in range(4)]))


def test_the_server_warns_when_it_listens_beyond_loopback_without_tls_or_tokens(
    tmp_path: Path,
) -> None:
    log = tmp_path / "stderr.txt"
    with log.open("w") as stderr:
        server = ServerProcess(["--workers", "1", "--host", "0.0.0.0"], stderr=stderr)
        server.stop()
    text = log.read_text()
    assert "warning: listening on 0.0.0.0 without TLS and auth tokens" in text


def test_metrics_count_items_by_reward_and_status_and_show_the_pool() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = ServerProcess(
        ["--workers", "1", "--metrics-port", str(port), "--plugin", "testing_verifiers"]
    )
    try:
        with RewardClient(server.address) as client:
            client.score([fmt(f"f{n}") for n in range(3)])
            client.score([Item(id="untagged", completion="x", reward=RewardSpec("format"))])
            loop = Item(
                id="loop",
                completion="```python\nwhile True: pass\n```",
                reward=RewardSpec("code", {"time_limit_s": 0.5}),
                reference={"tests": [{"stdin": "", "stdout": "1"}]},
            )
            assert client.score([loop])[0].reason == "time_limit"
            client.score([Item(id="bad", completion="x", reward=RewardSpec("nope"))])
            client.score([sleepy("s", 0.0)])
        url = f"http://127.0.0.1:{port}/metrics"
        text = urllib.request.urlopen(url, timeout=5).read().decode()
    finally:
        server.stop()
    assert 'verifier_items_total{reward="format",status="OK"} 4.0' in text
    assert 'verifier_item_reasons_total{reason="missing_tag",reward="format"} 1.0' in text
    assert 'verifier_item_reasons_total{reason="time_limit",reward="code"} 1.0' in text
    assert 'verifier_items_total{reward="nope",status="INVALID_REQUEST"} 1.0' in text
    assert 'verifier_item_run_seconds_count{verifier="sleepy"} 1.0' in text
    assert "verifier_workers_ready 1.0" in text and "verifier_worker_deaths_total 0.0" in text
    assert 'verifier_health_serving{service=""} 1.0' in text


def test_json_logs_carry_the_request_id_of_the_rpc(tmp_path: Path) -> None:
    log = tmp_path / "stderr.txt"
    with log.open("w") as stderr:
        server = ServerProcess(
            ["--workers", "1", "--log-format", "json", "--plugin", "testing_verifiers"],
            stderr=stderr,
        )  # fmt: skip
        try:
            with grpc.insecure_channel(server.address) as channel:
                stub = pb_grpc.VerifierServiceStub(channel)
                item = pb.Item(id="boom", completion="x", reward={"name": "async_faulty"})
                response = stub.Score(
                    pb.ScoreRequest(items=[item]), timeout=10, metadata=[("x-request-id", "req-42")]
                )
            assert response.results[0].status != pb.STATUS_OK
        finally:
            server.stop()
    entries = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    assert entries and all({"ts", "level", "logger", "message"} <= set(e) for e in entries)
    assert any(e.get("request_id") == "req-42" and "async_faulty" in e["message"] for e in entries)


def test_client_tls_needs_both_halves_of_a_client_certificate() -> None:
    with pytest.raises(RewardClientError, match="both cert_file and key_file"):
        ClientTls(cert_file="only-a-cert.pem").credentials()


def test_a_token_over_its_rate_gets_overloaded_then_recovers(tmp_path: Path) -> None:
    (tmp_path / "tokens").write_text(f"{TOKEN_A}\n")
    (tmp_path / "config.yaml").write_text(
        f"server: {{workers: 1, auth: {{tokens_file: {tmp_path / 'tokens'}, items_per_s: 20}}}}\n"
    )
    server = ServerProcess(["--config", str(tmp_path / "config.yaml")])
    try:
        with RewardClient(server.address, token=TOKEN_A, max_batch_items=10) as client:
            # One second's worth (20 items) goes through; the next 10 at once are too many.
            assert all(r.ok for r in client.score([fmt(f"a{n}") for n in range(20)]))
            refused = client.score([fmt(f"b{n}") for n in range(10)], timeout_s=0.01)
            assert {r.reason for r in refused} == {"rate_limited"}
            # The client retries OVERLOADED items: given time, the rate lets them through.
            assert all(r.ok for r in client.score([fmt(f"c{n}") for n in range(10)], timeout_s=5))
    finally:
        server.stop()
