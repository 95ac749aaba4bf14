"""A run killed (SIGKILL) after a checkpoint and resumed continues exactly: the same prompts in
the same steps, none skipped or repeated, and the same rewards and losses as a run that was
never interrupted."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from rl_helpers import train_settings
from server_process import alive, children_of

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(900)]

STEPS = 6
VOLATILE = ("time_generate_s", "time_reward_s", "time_train_s", "time_step_s")


def _config(tiny_model: Path, data: Path, output: Path) -> Path:
    settings = train_settings(tiny_model, data, output)
    settings["train"].update({"steps": STEPS, "lr": 0.01})
    settings["output"].update({"save_every": 2, "keep_checkpoints": 5})
    settings["reward"] = {"sidecar_workers": 1}
    path = output.with_suffix(".yaml")
    path.write_text(yaml.safe_dump(settings))
    return path


def _train(config: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "rl_client.cli", "train", "--config", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def _steps(output: Path) -> list[dict]:
    lines = (output / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k not in VOLATILE} for line in lines]


def _prompts_by_step(output: Path) -> dict[int, list[str]]:
    by_step: dict[int, list[str]] = {}
    for line in (output / "rollouts.jsonl").read_text().splitlines():
        record = json.loads(line)
        by_step.setdefault(record["step"], []).append(record["prompt_id"])
    return by_step


def test_killed_and_resumed_run_matches_an_uninterrupted_one(
    tiny_model: Path, toy_prompts: Path, tmp_path: Path
) -> None:
    straight = tmp_path / "straight"
    assert _train(_config(tiny_model, toy_prompts, straight)).wait(300) == 0

    resumed = tmp_path / "resumed"
    config = _config(tiny_model, toy_prompts, resumed)
    process = _train(config)
    marker = resumed / "checkpoints" / "step_000002" / "state.json"
    deadline = time.monotonic() + 240
    while not marker.exists():
        assert process.poll() is None, "the run ended before its first checkpoint"
        assert time.monotonic() < deadline
        time.sleep(0.05)
    sidecars = children_of(process.pid)
    assert sidecars  # the trainer started its own verifier-server
    process.send_signal(signal.SIGKILL)
    process.wait(30)
    deadline = time.monotonic() + 30  # the sidecar follows its killed parent (PDEATHSIG)
    while any(alive(pid) for pid in sidecars):
        assert time.monotonic() < deadline, "the sidecar outlived the killed trainer"
        time.sleep(0.1)
    assert not (resumed / "checkpoints" / f"step_{STEPS:06d}").exists()  # killed mid-run
    assert _train(config).wait(300) == 0

    assert _prompts_by_step(resumed) == _prompts_by_step(straight)
    assert _steps(resumed) == _steps(straight)
    prompts = [
        p for step in sorted(_prompts_by_step(straight)) for p in _prompts_by_step(straight)[step]
    ]
    # 6 steps x 2 prompts x G=4 completions over a 16-prompt set: no prompt drawn twice.
    assert len(prompts) == STEPS * 2 * 4 and len(set(prompts)) == STEPS * 2
