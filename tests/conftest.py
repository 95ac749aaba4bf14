"""Shared fixtures: a real server in a subprocess on a loopback port, and its clients."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from server_process import ServerProcess, server_env

from verifier_server.client import RewardClient

TEST_CONFIG = """
server: {workers: 2}
limits: {max_items_per_request: 1000, max_completion_bytes: 2097152, max_item_timeout_s: 30}
plugins: [testing_verifiers]
verifiers:
  sleepy: {timeout_s: 2}
rewards:
  fmt_and_exact:
    description: exact match plus format
    components:
      - {name: exact, verifier: string_check, params: {extract: answer_tag}}
      - {name: fmt, verifier: format, weight: 0.5}
"""


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    config = tmp_path_factory.mktemp("server") / "config.yaml"
    config.write_text(TEST_CONFIG)
    unix = tmp_path_factory.mktemp("sock") / "verifier.sock"
    proc = ServerProcess(["--config", str(config), "--unix", str(unix)], env=server_env())
    proc.unix = f"unix:{unix}"  # type: ignore[attr-defined]
    yield proc
    proc.stop()


@pytest.fixture
def client(server: ServerProcess) -> Iterator[RewardClient]:
    with RewardClient(server.address, timeout_s=30) as c:
        c.wait_ready()
        yield c
