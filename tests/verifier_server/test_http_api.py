"""The HTTP/JSON front end (`serve --http-port`) with real HTTP requests to a real server: the
same results, statuses, limits, deadlines and tokens as the gRPC port."""

from __future__ import annotations

import json
import shutil
import socket
import ssl
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from server_process import ServerProcess, run_cli

from verifier_server.client import RewardClient
from verifier_server.types import Item, RewardSpec

pytestmark = pytest.mark.integration

GOOD = "<think>because</think>\n<answer>Paris</answer>"
TOKEN = "http-token-0123456789abcdef"
CONFIG = """
server: {workers: 3}  # a slow item of one test may still hold a worker in the next
limits: {max_items_per_request: 8, max_message_mb: 1}
plugins: [testing_verifiers]
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Http:
    """A tiny JSON-over-HTTP caller for one server."""

    def __init__(self, port: int, token: str | None = None) -> None:
        self.base = f"http://127.0.0.1:{port}"
        self.token = token

    def call(
        self, method: str, path: str, body: Any = None, raw: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, Any]:  # fmt: skip
        data = raw if raw is not None else None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.base + path, data=data, method=method)
        request.add_header("Content-Type", "application/json")
        if self.token:
            request.add_header("Authorization", f"Bearer {self.token}")
        for key, value in (headers or {}).items():
            request.add_header(key, value)
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())

    def wait_ready(self) -> None:
        end = time.monotonic() + 60
        while time.monotonic() < end:
            try:
                if self.call("GET", "/healthz")[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise AssertionError("the HTTP port never answered SERVING")


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, Http]]:
    config = tmp_path_factory.mktemp("http") / "config.yaml"
    config.write_text(CONFIG)
    port = free_port()
    server = ServerProcess(["--config", str(config), "--http-port", str(port)])
    http = Http(port)
    http.wait_ready()
    yield server, http
    server.stop()


def json_item(id: str, completion: str = GOOD, name: str = "format", **extra: Any) -> dict:
    return {"id": id, "completion": completion, "reward": {"name": name}, **extra}


def test_score_over_http_equals_score_over_grpc(served: tuple[ServerProcess, Http]) -> None:
    server, http = served
    # Plain JSON in reference and params; a bad item beside good ones.
    check = {"name": "string_check", "params": {"extract": "answer_tag"}}
    body = {"items": [
        json_item("fmt-ok"),
        json_item("fmt-bad", "no tags"),
        {"id": "exact", "completion": GOOD, "reward": check, "reference": "Paris"},
        {"id": "wrong", "completion": GOOD, "reward": check, "reference": "Lyon"},
        json_item("unknown", name="no_such_verifier"),
    ]}  # fmt: skip
    status, answer = http.call("POST", "/v1/score", body)
    assert status == 200
    over_http = {r["id"]: (r["status"], r["score"], r["reason"]) for r in answer["results"]}
    items = [
        Item(id=i["id"], completion=i["completion"],
             reward=RewardSpec(i["reward"]["name"], i["reward"].get("params", {})),
             reference=i.get("reference"))
        for i in body["items"]
    ]  # fmt: skip
    with RewardClient(server.address) as client:
        over_grpc = {
            r.id: (f"STATUS_{r.status.name}", r.score, r.reason) for r in client.score(items)
        }
    assert over_http == over_grpc
    assert over_http["fmt-ok"][:2] == ("STATUS_OK", 1.0)
    assert over_http["exact"][:2] == ("STATUS_OK", 1.0)
    assert over_http["wrong"][:2] == ("STATUS_OK", 0.0)
    assert over_http["unknown"][0] == "STATUS_INVALID_REQUEST"
    unknown = next(r for r in answer["results"] if r["id"] == "unknown")
    assert unknown["details"]["field"] == "items[4].reward.name"


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        (b"{not json", "<body>"),
        (b"[1, 2]", "<body>"),
        (json.dumps({"items": [{"id": "a", "bogus": 1}]}).encode(), "items[0].bogus"),
        (b'{"items": [{"id": "a", "completion": "\\ud800"}]}', "items[0].completion"),
        (json.dumps({"items": [{"id": 3}]}).encode(), "items.id"),
        (json.dumps({"items": [{"id": "a", "completion_tokens": "x"}]}).encode(),
         "items.completion_tokens"),
        (json.dumps({"items": [json_item(f"q{n}") for n in range(9)]}).encode(), "items"),
        (json.dumps({"items": [json_item("same"), json_item("same")]}).encode(), "items[1].id"),
        (json.dumps({"items": [], "timeout_s": "soon"}).encode(), "timeout_s"),
        (json.dumps({"items": [], "timeout_s": -1}).encode(), "timeout_s"),
        # Found by attack: each of these was a 500 (RecursionError, UnicodeDecodeError,
        # ValueError from int(), OverflowError from float()).
        (b'{"items": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "<body>"),
        ('{"items": [{"id": "\xff"}]}'.encode("latin-1"), "<body>"),
        (b'{"items": [], "x": 1' + b"0" * 5000 + b"}", "<body>"),  # over int's 4300 digits
        (b'{"items": [], "timeout_s": 1' + b"0" * 400 + b"}", "timeout_s"),  # beyond a double
        (b'{"items": [{"id": "a", "reference": 1' + b"0" * 400 + b"}]}", "<body>"),
    ],
)  # fmt: skip
def test_a_bad_request_is_a_400_naming_the_field(
    served: tuple[ServerProcess, Http], raw: bytes, field: str
) -> None:
    status, answer = served[1].call("POST", "/v1/score", raw=raw)
    assert status == 400
    assert answer["field"] == field
    assert answer["error"]


def test_a_deadline_in_both_places_is_refused(served: tuple[ServerProcess, Http]) -> None:
    status, answer = served[1].call(
        "POST", "/v1/score", {"items": [], "timeout_s": 1}, headers={"X-Timeout-S": "1"}
    )
    assert (status, answer["field"]) == (400, "timeout_s")
    assert "only one place" in answer["error"]


def test_a_body_over_the_message_cap_is_a_413(served: tuple[ServerProcess, Http]) -> None:
    status, answer = served[1].call(
        "POST", "/v1/score", {"items": [json_item("big", "x" * (1 << 20))]}
    )
    assert status == 413 and answer["field"] == "<body>"


@pytest.mark.parametrize("where", ["header", "body"])
def test_the_deadline_cuts_slow_items_to_timeout_and_keeps_fast_ones(
    served: tuple[ServerProcess, Http], where: str
) -> None:
    # One slow item (30 s) and a fast one; a 4 s deadline: the response comes at the cut-off
    # (4 - 0.4 s), the slow item TIMEOUT, the fast one scored. First the pool is warm (a
    # worker stopped by an earlier deadline may still be respawning).
    assert served[1].call("POST", "/v1/score", {"items": [json_item("warm")]})[0] == 200
    body: dict[str, Any] = {"items": [
        {"id": "slow", "completion": "x", "reward": {"name": "sleepy", "params": {"seconds": 30}}},
        json_item("fast"),
    ]}  # fmt: skip
    headers = {"X-Timeout-S": "4"} if where == "header" else {}
    if where == "body":
        body["timeout_s"] = 4
    start = time.monotonic()
    status, answer = served[1].call("POST", "/v1/score", body, headers=headers)
    elapsed = time.monotonic() - start
    assert status == 200 and 3.5 < elapsed < 6.0
    by_id = {r["id"]: r for r in answer["results"]}
    assert by_id["slow"]["status"] == "STATUS_TIMEOUT" and by_id["slow"]["reason"] == "deadline"
    assert by_id["fast"]["status"] == "STATUS_OK"


def test_the_header_deadline_covers_the_upload(served: tuple[ServerProcess, Http]) -> None:
    # A body sent slowly used to hold the call open past the deadline, which then counted from
    # the body's end (a 2 s call answered after 5.8 s); as on gRPC, it counts from arrival.
    port = int(served[1].base.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        start = time.monotonic()
        sock.sendall(b"POST /v1/score HTTP/1.1\r\nHost: x\r\nX-Timeout-S: 1\r\n"
                     b'Content-Length: 100\r\n\r\n{"items": [')  # fmt: skip
        answer = sock.recv(4096).decode()
    assert answer.startswith("HTTP/1.1 408") and time.monotonic() - start < 3.0
    assert '"field": "X-Timeout-S"' in answer


def test_verifiers_and_health(served: tuple[ServerProcess, Http]) -> None:
    http = served[1]
    status, answer = http.call("GET", "/v1/verifiers")
    names = {v["name"] for v in answer["verifiers"]}
    assert status == 200 and {"format", "string_check", "composite", "sleepy"} <= names
    assert http.call("GET", "/healthz") == (200, {"status": "SERVING", "service": ""})
    assert http.call("GET", "/healthz?service=format")[0] == 200
    assert http.call("GET", "/healthz?service=nope")[0] == 404


def test_openrlhf_remote_reward_protocol(served: tuple[ServerProcess, Http]) -> None:
    # As OpenRLHF's SingleTurnAgentExecutor posts it: query = prompt + response, decoded.
    prompt = "<|user|> capital of france? <|assistant|>"
    body = {
        "query": [
            prompt + "<answer>Paris</answer>",
            prompt + "<answer>Lyon</answer>",
            "<s>" + prompt + "Paris",
        ],  # a BOS token before the prompt
        "prompts": [prompt, prompt, prompt],
        "labels": ["Paris", "Paris", "Paris"],
    }
    status, answer = served[1].call("POST", "/v1/openrlhf/string_check", body)
    assert status == 200
    # string_check's default (extract: raw) compares the whole completion: only an exact
    # completion matches, so the prompt must have been stripped from the query.
    status, exact = served[1].call("POST", "/v1/openrlhf/string_check", {
        "query": [prompt + "Paris"], "prompts": [prompt], "labels": ["Paris"]})  # fmt: skip
    assert exact["rewards"] == [1.0]
    assert answer["statuses"] == ["OK", "OK", "OK"]
    assert answer["rewards"] == [0.0, 0.0, 1.0] == answer["scores"]
    assert answer["extra_logs"] == {"verified": [1.0, 1.0, 1.0]}
    # An item the server cannot verify: 0.0 (OpenRLHF cannot mask) and verified 0.0.
    status, failed = served[1].call("POST", "/v1/openrlhf/faulty", {
        "query": ["raise", "ok"], "prompts": ["", ""], "labels": [None, None]})  # fmt: skip
    assert status == 200
    assert failed["statuses"] == ["VERIFIER_ERROR", "OK"]
    assert failed["extra_logs"]["verified"] == [0.0, 1.0]
    assert failed["rewards"][0] == 0.0


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"prompts": []}, "query"),
        ({"query": ["a", "b"], "prompts": ["a"]}, "prompts"),
        ({"query": ["a"], "labels": []}, "labels"),
        ({"query": ["a"], "prompts": [3]}, "prompts[0]"),
        ({"query": ["a"], "labels": [10**400]}, "<body>"),  # a 500 before
        # A query without its prompt was scored whole: the prompt's own text (its format
        # instructions, a worked example's answer) graded as if the policy had written it.
        (
            {
                "query": ["<answer>x</answer>", "said nothing"],
                "prompts": ["<answer>x</answer>", "Reply in <think></think><answer></answer>"],
            },
            "query[1]",
        ),
    ],
)
def test_openrlhf_bad_request_is_a_400_naming_the_field(
    served: tuple[ServerProcess, Http], body: dict, field: str
) -> None:
    status, answer = served[1].call("POST", "/v1/openrlhf/format", body)
    assert (status, answer["field"]) == (400, field)


def test_openrlhf_scores_the_response_without_its_trailing_special_tokens(
    served: tuple[ServerProcess, Http],
) -> None:
    # OpenRLHF decodes with special tokens kept: every response ends with EOS (and, in older
    # releases, right padding). Left in, `format` found text outside the tags and scored every
    # well-formed response 0.0, verified.
    prompt = "<|im_start|>user\nQ<|im_end|>\n<|im_start|>assistant\n"
    tails = ["<|im_end|>", "<|endoftext|><|endoftext|>", "</s>", "", "<|im_end|> trailing"]
    body = {"query": [prompt + GOOD + tail for tail in tails], "prompts": [prompt] * len(tails)}
    status, answer = served[1].call("POST", "/v1/openrlhf/format", body)
    assert status == 200
    assert answer["rewards"] == [1.0, 1.0, 1.0, 1.0, 0.0]  # the policy's own text still counts


def test_openrlhf_splits_a_batch_over_the_servers_cap(served: tuple[ServerProcess, Http]) -> None:
    # OpenRLHF posts a whole rollout batch and cannot split it; over the cap (8 here) it got a
    # 400 telling it to split, retried 5 times, and stopped training.
    queries = [
        f"p{n}" + ("<think>t</think>\n<answer>a</answer>" if n % 2 else "x") for n in range(20)
    ]
    body = {"query": queries, "prompts": [f"p{n}" for n in range(20)]}
    status, answer = served[1].call("POST", "/v1/openrlhf/format", body)
    assert status == 200
    assert answer["rewards"] == [float(n % 2) for n in range(20)]
    assert answer["statuses"] == ["OK"] * 20


def test_openrlhf_with_an_unknown_reward_is_a_400_not_all_zero_rewards(
    served: tuple[ServerProcess, Http],
) -> None:
    # A typo in --remote_rm_url used to answer 200 with reward 0.0 for every sample.
    status, answer = served[1].call("POST", "/v1/openrlhf/fromat", {"query": ["a", "b"]})
    assert (status, answer["field"]) == (400, "reward")
    assert "unknown verifier or reward 'fromat'" in answer["error"]


def test_a_client_that_hangs_up_cancels_its_queued_work(served: tuple[ServerProcess, Http]) -> None:
    # 3 workers, 8 items of 3 s: 3 run, 5 wait. The client hangs up after 1 s; the waiting
    # items must be dropped (as for a cancelled RPC), so the next call waits only for the 3
    # running ones (~2 s), not for all of them (~8 s).
    assert served[1].call("POST", "/v1/score", {"items": [json_item("warm")]})[0] == 200
    slow = {"name": "sleepy", "params": {"seconds": 3}}
    body = json.dumps({"items": [
        {"id": f"s{n}", "completion": "x", "reward": slow} for n in range(8)
    ]}).encode()  # fmt: skip
    with socket.create_connection(("127.0.0.1", int(served[1].base.rsplit(":", 1)[1]))) as sock:
        sock.sendall(b"POST /v1/score HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: %d\r\n\r\n%s" % (len(body), body))  # fmt: skip
        time.sleep(1.0)
    start = time.monotonic()
    with RewardClient(served[0].address) as client:
        [result] = client.score([Item(id="next", completion="x", reward=RewardSpec("sleepy"))])
    assert result.ok and time.monotonic() - start < 5.0


def test_curl_scores_an_item(served: tuple[ServerProcess, Http]) -> None:
    curl = shutil.which("curl")
    if curl is None:
        pytest.fail("curl is not installed (apt-get install curl)")
    body = json.dumps({"items": [json_item("c")]})
    out = subprocess.run(
        [curl, "-sS", "-X", "POST", "-H", "Content-Type: application/json", "-d", body,
         f"{served[1].base}/v1/score"],
        capture_output=True, text=True, timeout=30, check=True,
    )  # fmt: skip
    result = json.loads(out.stdout)["results"][0]
    assert (result["id"], result["status"], result["score"]) == ("c", "STATUS_OK", 1.0)


def test_tokens_and_quotas_apply_over_http(tmp_path: Path) -> None:
    (tmp_path / "tokens").write_text(f"trainer-a {TOKEN}\n")
    (tmp_path / "config.yaml").write_text(
        "plugins: [testing_verifiers]\n"
        f"server: {{workers: 1, auth: {{tokens_file: {tmp_path / 'tokens'}, "
        "max_in_flight_items: 4}}\n"
    )
    port = free_port()
    server = ServerProcess(["--config", str(tmp_path / "config.yaml"), "--http-port", str(port)])
    try:
        anonymous, wrong, good = (
            Http(port),
            Http(port, "wrong-token-00000000000"),
            Http(port, TOKEN),
        )
        anonymous.wait_ready()  # health is open, as on gRPC
        for caller in (anonymous, wrong):
            for method, path, body in (("POST", "/v1/score", {"items": []}),
                                       ("GET", "/v1/verifiers", None),
                                       ("POST", "/v1/openrlhf/format", {"query": []})):  # fmt: skip
                status, answer = caller.call(method, path, body)
                assert (status, answer["field"]) == (401, "authorization")
        status, answer = good.call("POST", "/v1/score", {"items": [json_item("a")]})
        assert status == 200 and answer["results"][0]["status"] == "STATUS_OK"
        # Five items in one request: over the token's in-flight quota of four, as on gRPC.
        status, answer = good.call(
            "POST", "/v1/score", {"items": [json_item(f"q{n}") for n in range(5)]}
        )
        assert {(r["status"], r["reason"]) for r in answer["results"]} == {
            ("STATUS_OVERLOADED", "quota_in_flight")
        }
    finally:
        server.stop()


def test_the_http_port_uses_the_grpc_ports_tls(tmp_path: Path) -> None:
    # A self-signed certificate for 127.0.0.1, its own CA.
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(tmp_path / "server.key"), "-out", str(tmp_path / "server.pem")],
        check=True, capture_output=True,
    )  # fmt: skip
    port = free_port()
    server = ServerProcess([
        "--workers", "1", "--http-port", str(port),
        "--tls-cert", str(tmp_path / "server.pem"), "--tls-key", str(tmp_path / "server.key"),
    ])  # fmt: skip
    try:
        context = ssl.create_default_context(cafile=str(tmp_path / "server.pem"))
        body = json.dumps({"items": [json_item("t")]}).encode()
        request = urllib.request.Request(f"https://127.0.0.1:{port}/v1/score", data=body)
        end = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(request, timeout=30, context=context) as response:
                    answer = json.loads(response.read())
                break
            except (urllib.error.URLError, ConnectionError):
                if time.monotonic() > end:
                    raise
                time.sleep(0.2)
        assert answer["results"][0]["status"] == "STATUS_OK"
        with pytest.raises((urllib.error.URLError, ConnectionError)):  # plaintext is refused
            urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=10)
    finally:
        server.stop()


def test_an_http_port_in_use_stops_the_server_with_the_port_named() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        out = run_cli("serve", "--port", "0", "--workers", "1", "--http-port", str(port))
    assert out.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port} (HTTP)" in out.stderr


def test_sigterm_drains_an_http_request_in_flight(tmp_path: Path) -> None:
    (tmp_path / "config.yaml").write_text(CONFIG)
    port = free_port()
    server = ServerProcess(["--config", str(tmp_path / "config.yaml"), "--http-port", str(port)])
    http = Http(port)
    http.wait_ready()
    answers: list[tuple[int, Any]] = []
    body = {"items": [{"id": "s", "completion": "x",
                       "reward": {"name": "sleepy", "params": {"seconds": 3}}}]}  # fmt: skip
    in_flight = threading.Thread(
        target=lambda: answers.append(http.call("POST", "/v1/score", body))
    )
    in_flight.start()
    time.sleep(1.5)  # the request is being scored
    assert server.stop() == 0  # SIGTERM: drains for grace_s (10 s) before stopping
    in_flight.join(30)
    status, answer = answers[0]
    assert status == 200 and answer["results"][0]["status"] == "STATUS_OK"
