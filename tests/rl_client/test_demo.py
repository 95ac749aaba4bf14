"""End to end, the `make run` path: tiny model built locally, SFT warm start, GRPO through a
sidecar verifier-server on the toy task. The reward must rise by a clear margin."""

from __future__ import annotations

from pathlib import Path

import pytest

from rl_client import demo
from rl_client.sft import run_sft
from rl_client.trainer import train

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(900)]


def test_grpo_raises_the_reward_on_the_toy_task(tmp_path: Path) -> None:
    paths = demo.prepare(tmp_path)
    losses = run_sft(demo.sft_config(tmp_path, paths, ["train.threads=1"]))
    assert losses[-1] < losses[0] / 4
    history = train(
        demo.grpo_config(
            tmp_path, paths, ["train.steps=60", "train.threads=1", "output.progress=false"]
        )
    )
    rewards = [m["reward_mean"] for m in history]
    first, last = sum(rewards[:10]) / 10, sum(rewards[-10:]) / 10
    assert last > first + 0.1, f"reward {first:.3f} -> {last:.3f}"
    assert all(m["masked_items"] == 0 for m in history)
    assert (tmp_path / "grpo" / "checkpoints" / "step_000060" / "policy").is_dir()
    assert list((tmp_path / "grpo" / "tb").glob("events.out.tfevents.*"))
