"""Server-side verifier settings and the setup/close lifecycle (verifier_server.lifecycle)."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest
from server_process import ServerProcess, alive, children_of, run_cli
from stateful_verifiers import StatefulVerifier

from verifier_server.client import RewardClient
from verifier_server.resolver import Leaf
from verifier_server.scorer import Scorer
from verifier_server.types import Item, RewardSpec, Status
from verifier_server.verifiers.base import NoParams

pytestmark = pytest.mark.integration


def write_config(path: Path, settings: dict) -> Path:
    path.write_text(json.dumps({"plugins": ["stateful_verifiers"], **settings}))
    return path


def test_check_reports_bad_verifier_settings(tmp_path: Path) -> None:
    config = write_config(
        tmp_path / "bad.yaml",
        {
            "verifier_settings": {
                "nope": {},
                "format": {"x": 1},
                "stateful": {"bonus": "lots"},
                "judge": {"backends": {"j": {"base_url": "file:///etc/passwd", "model": "m"}}},
            }
        },
    )
    process = run_cli("check", "--config", str(config))
    assert process.returncode == 1
    err = process.stderr
    assert "verifier_settings.nope: unknown verifier" in err
    assert "verifier_settings.format: verifier 'format' takes no settings" in err
    assert "verifier_settings.stateful.bonus" in err
    assert "verifier_settings.stateful.closed_marker: Field required" in err
    assert "verifier_settings.judge.backends.j.base_url" in err and "http" in err


def test_a_failed_setup_stops_start_up_with_its_name(tmp_path: Path) -> None:
    config = write_config(
        tmp_path / "c.yaml",
        {"verifier_settings": {"stateful": {"bonus": 1, "closed_marker": "x", "fail_setup": True}}},
    )
    process = run_cli("serve", "--port", "0", "--config", str(config))
    assert process.returncode == 1
    assert "verifier 'stateful'" in process.stderr
    assert "the engine would not start" in process.stderr


def test_a_missing_api_key_variable_is_named_at_start_up(tmp_path: Path) -> None:
    backend = {"base_url": "http://127.0.0.1:9/v1", "model": "m", "api_key_env": "NO_SUCH_KEY_VAR"}
    config = write_config(
        tmp_path / "c.yaml", {"verifier_settings": {"judge": {"backends": {"j": backend}}}}
    )
    process = run_cli("serve", "--port", "0", "--config", str(config))
    assert process.returncode == 1
    assert "NO_SUCH_KEY_VAR (api_key_env) is not set" in process.stderr


def test_settings_reach_setup_health_is_reported_and_close_runs(tmp_path: Path) -> None:
    marker = tmp_path / "closed"
    config = write_config(
        tmp_path / "c.yaml",
        {"verifier_settings": {"stateful": {"bonus": 0.25, "closed_marker": str(marker)}}},
    )
    server = ServerProcess(["--config", str(config), "--workers", "1"])
    health = "verifier.v1.VerifierService/stateful/engine"
    try:
        with RewardClient(server.address) as client:
            client.wait_ready()
            result = client.score(
                [Item(id="a", completion="x", reward=RewardSpec("stateful"))], timeout_s=20
            )[0]
            assert result.ok and result.score == 0.25
            assert 15 < result.details["remaining_s"] < 21  # the caller's deadline, seen inside
            assert client.health(health) == "SERVING"
            client.score([Item(id="s", completion="sick", reward=RewardSpec("stateful"))])
            assert client.health(health) == "NOT_SERVING"
            client.score([Item(id="w", completion="well", reward=RewardSpec("stateful"))])
            assert client.health(health) == "SERVING"
            children = children_of(server.process.pid)
    finally:
        assert server.stop() == 0
    assert marker.read_text() == "closed"
    deadline = time.monotonic() + 5
    while any(alive(pid) for pid in children) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [pid for pid in children if alive(pid)]


async def test_an_async_verifier_that_ignores_the_deadline_is_cut_off() -> None:
    scorer = Scorer(pool=None, threads=None, max_queued_items=10)  # type: ignore[arg-type]
    leaf = Leaf(StatefulVerifier(), NoParams(), timeout_s=10, cost_key="stateful")
    leaf.verifier._settings = object()  # type: ignore[attr-defined]
    leaf.verifier._context = object()  # type: ignore[attr-defined]
    start = time.monotonic()
    futures = scorer.schedule([Item(id="h", completion="hang")], leaf, time.monotonic() + 0.2)
    (result,) = await asyncio.gather(*futures)
    # The deadline plus the scorer's 1 s grace, then TIMEOUT rather than a hung request.
    assert result.status == Status.TIMEOUT and result.reason == "deadline"
    assert 1.0 < time.monotonic() - start < 3.0
