"""The `judge` verifier against a real OpenAI-compatible server: `transformers serve` on a
loopback port, serving tiny models built here (tests/support/tiny_models.py). `transformers
serve` ignores `response_format`, which is the case the plain-text fallback exists for.

The verdict models' weights are set by hand so greedy decoding always answers one fixed
verdict; a randomly initialised model stands in for a judge whose reply is garbage.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from server_process import ServerProcess
from tiny_models import random_lm, verdict_lm

from verifier_server.client import RewardClient
from verifier_server.types import Item, RewardSpec, Status

pytestmark = [pytest.mark.integration, pytest.mark.slow]

VERDICTS = {
    "json_8": '{"rationale": "clear and correct", "score": 8}',
    "pattern_3": "SCORE: 3",
    "always_a": '{"rationale": "A reads better", "winner": "A"}',
}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("judges")
    built = {name: verdict_lm(root / name, verdict) for name, verdict in VERDICTS.items()}
    built["random"] = random_lm(root / "random")
    return built


@pytest.fixture(scope="module")
def openai_server(models: dict[str, Path]) -> Iterator[str]:
    """`transformers serve` on a free loopback port; yields its API root URL."""
    port = _free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "transformers.cli.transformers",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--device",
            "cpu",
        ],
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        end = time.monotonic() + 90
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1):
                    break
            except OSError:
                if process.poll() is not None or time.monotonic() > end:
                    raise RuntimeError("transformers serve did not start") from None
                time.sleep(0.3)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()


@pytest.fixture(scope="module")
def client(
    openai_server: str, models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RewardClient]:
    def backend(model: str, **extra: object) -> dict[str, object]:
        return {"base_url": openai_server, "model": str(models[model]), "max_tokens": 24, **extra}

    config = {
        "server": {"workers": 1},
        "verifier_settings": {
            "judge": {
                "backends": {
                    "json_8": backend("json_8"),
                    "pattern_3": backend("pattern_3", structured_output="none"),
                    "always_a": backend("always_a"),
                    "random": backend("random"),
                }
            }
        },
    }
    path = tmp_path_factory.mktemp("judge_config") / "config.yaml"
    path.write_text(json.dumps(config))
    server = ServerProcess(["--config", str(path)])
    try:
        with RewardClient(server.address, timeout_s=120) as c:
            c.wait_ready()
            yield c
    finally:
        server.stop()


def judge(id: str, backend: str, completion: str = "paris", **params: object) -> Item:
    return Item(
        id=id,
        prompt="what is the capital of france",
        completion=completion,
        reference="lyon",
        reward=RewardSpec("judge", {"backend": backend, **params}),
    )


def test_a_json_verdict_from_a_real_server_is_mapped_to_the_unit_interval(
    client: RewardClient,
) -> None:
    result = client.score([judge("j", "json_8")])[0]
    assert result.status == Status.OK, result.details
    assert result.score == pytest.approx(7 / 9)  # (8 - 1) / (10 - 1)
    assert result.details["rationale"] == "clear and correct"
    again = client.score([judge("j2", "json_8")])[0]
    assert again.details["cached"] is True and again.score == result.score


def test_a_plain_text_verdict_from_a_real_server(client: RewardClient) -> None:
    result = client.score([judge("p", "pattern_3")])[0]
    assert result.status == Status.OK, result.details
    assert result.score == pytest.approx(2 / 9)  # (3 - 1) / 9


def test_a_position_biased_real_judge_is_reported_inconsistent(client: RewardClient) -> None:
    result = client.score([judge("a", "always_a", rubric="pairwise")])[0]
    assert result.status == Status.OK and result.score == 0.5
    assert result.details["consistent"] is False
    assert result.details["winner_completion_first"] == "A"
    assert result.details["winner_completion_second"] == "A"


def test_garbage_from_a_real_model_is_an_error_with_the_raw_text(client: RewardClient) -> None:
    result = client.score([judge("r", "random")])[0]
    # A random model rambles until max_tokens: the reason says the reply was cut off.
    expected = {"length": "truncated_verdict", "stop": "unparseable_verdict"}
    assert result.status == Status.VERIFIER_ERROR
    assert result.reason == expected[result.details["finish_reason"]]
    assert result.details["raw"].strip()  # what the model said, for the user to read
