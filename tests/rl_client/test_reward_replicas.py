"""Rewards from several verifier-server replicas (`reward.address: [a, b]`): a replica
SIGKILLed in the middle of a training run, while it holds a step's items, costs no item."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest
from rl_helpers import train_settings
from server_process import ServerProcess, kill_replica

from rl_client import toy
from rl_client.config import TrainConfig, build_config
from rl_client.trainer import train

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(300)]


def replica(directory: Path) -> ServerProcess:
    """A replica whose named reward `slow_contains` is string_check plus 0.15 s of sleep
    (weight 0) that appends each item's id to `directory/started` as a worker takes it up:
    what this replica started, and that it was busy when killed."""
    directory.mkdir()
    slow = {
        "verifier": "sleepy",
        "params": {"seconds": 0.15, "log_path": str(directory / "started")},
    }
    config = {
        "server": {"workers": 1},
        "plugins": ["testing_verifiers"],
        "rewards": {
            "slow_contains": {
                "components": [
                    {
                        "name": "task",
                        "verifier": "string_check",
                        "params": {"operation": "contains"},
                    },
                    {"name": "slow", **slow, "weight": 0.0},
                ]
            }
        },
    }
    (directory / "config.yaml").write_text(json.dumps(config))
    return ServerProcess(["--config", str(directory / "config.yaml")])


def started(directory: Path) -> list[str]:
    path = directory / "started"
    return path.read_text().split() if path.exists() else []


def test_a_replica_killed_mid_run_costs_no_item(tiny_model: Path, tmp_path: Path) -> None:
    prompts = toy.write_rl_prompts(
        tmp_path / "prompts.jsonl",
        16,
        seed=0,
        reward={"name": "slow_contains"},
        reference=toy.answer,
    )
    dirs = [tmp_path / "a", tmp_path / "b"]
    replicas = [replica(d) for d in dirs]
    output = tmp_path / "run"
    killed: list[float] = []  # when, in the run's second step or later

    def kill_b_when_busy() -> None:
        # After step 1 is logged, wait for b to start an item of a later step: it is then
        # holding that step's call (one worker, 0.15 s an item). Kill it there.
        metrics = output / "metrics.jsonl"
        while not (metrics.exists() and metrics.read_text().strip()):
            time.sleep(0.02)
        before = len(started(dirs[1]))
        deadline = time.monotonic() + 120
        while len(started(dirs[1])) == before and time.monotonic() < deadline:
            time.sleep(0.01)
        if len(started(dirs[1])) > before:
            kill_replica(replicas[1])
            killed.append(time.monotonic())

    settings = train_settings(tiny_model, prompts, output)
    settings["train"]["steps"] = 4
    addresses = json.dumps([r.address for r in replicas])
    watcher = threading.Thread(target=kill_b_when_busy, daemon=True)
    watcher.start()
    try:
        history = train(build_config(TrainConfig, settings, [f"reward.address={addresses}"]))
    finally:
        watcher.join(5)
        for r in replicas:
            r.stop()
    assert killed, "replica b never took up an item after step 1"
    assert [m["step"] for m in history] == [1, 2, 3, 4]
    assert all(m["masked_items"] == 0 for m in history)  # every item scored OK
    records = [json.loads(line) for line in (output / "rollouts.jsonl").read_text().splitlines()]
    assert len(records) == 4 * 2 * 4 and all(r["status"] == "OK" for r in records)
    # b's item in progress at the kill was started again, on a.
    a_started, b_started = started(dirs[0]), started(dirs[1])
    assert set(b_started) & set(a_started)
