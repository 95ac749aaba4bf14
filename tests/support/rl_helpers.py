"""Helpers for the rl_client tests: prompt files, a small, fast training config, and scored
groups to build batches from."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

from rl_client.data import PromptRow
from rl_client.engines.base import Completion
from rl_client.rollout import Group
from verifier_server.types import Result, RewardSpec, Status

ROW = PromptRow("p", (), RewardSpec("x"), None)

# Wall-clock metrics: everything else in metrics.jsonl repeats exactly in a resumed run.
VOLATILE_METRICS = frozenset(
    {
        "time_generate_s",
        "time_reward_s",
        "time_train_s",
        "time_sync_s",
        "time_rollout_wait_s",
        "time_step_s",
    }
)


def logged_steps(output: Path) -> list[dict]:
    """A run's metrics.jsonl, less the wall-clock metrics (what a resumed run repeats)."""
    lines = (output / "metrics.jsonl").read_text().splitlines()
    return [
        {k: v for k, v in json.loads(line).items() if k not in VOLATILE_METRICS} for line in lines
    ]


def prompts_by_step(output: Path) -> dict[int, list[str]]:
    """A run's rollouts.jsonl as each step's prompt ids, one per completion, in log order."""
    by_step: dict[int, list[str]] = {}
    for line in (output / "rollouts.jsonl").read_text().splitlines():
        record = json.loads(line)
        by_step.setdefault(record["step"], []).append(record["prompt_id"])
    return by_step


def wait_for_checkpoint(process: subprocess.Popen, output: Path, step: int) -> None:
    """Waits until the run `process` has completed its step-`step` checkpoint in `output`."""
    marker = output / "checkpoints" / f"step_{step:06d}" / "state.json"
    deadline = time.monotonic() + 240
    while not marker.exists():
        assert process.poll() is None, f"the run ended before its step-{step} checkpoint"
        assert time.monotonic() < deadline, f"no step-{step} checkpoint after 240 s"
        time.sleep(0.05)


def write_prompts(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def train_settings(model: Path, data: Path, output: Path) -> dict:
    """A small, fast training config as a dict (tests override pieces of it)."""
    return {
        "model": {"path": str(model)},
        "data": {"path": str(data)},
        "rollout": {"prompts_per_step": 2, "group_size": 4, "max_new_tokens": 6},
        "algorithm": {"preset": "grpo", "kl_coef": 0.0},
        "train": {"steps": 2, "lr": 1e-3, "micro_batch_size": 4},
        "output": {"dir": str(output), "progress": False, "trackers": []},
    }


def scored_group(
    prompt: list[int], completions: list[list[int]], scores: list[float | None]
) -> Group:
    """One prompt's group: each completion's sampler logprobs are -1 per token; a score of
    None is an item that could not be verified (TIMEOUT, masked)."""
    results = [
        Result(id=str(i), score=s) if s is not None else Result.failed(str(i), Status.TIMEOUT, "t")
        for i, s in enumerate(scores)
    ]
    items = [Completion(c, [-1.0] * len(c), "", "stop") for c in completions]
    return Group(ROW, prompt, items, results)


# Two groups of 4: group 0 has a masked member (7 rows, completions of 2-4 tokens).
GROUPS = [
    scored_group(
        [5, 6, 7], [[10, 11, 2], [12, 2], [13, 14, 15, 2], [16, 2]], [1.0, 0.0, 1.0, None]
    ),
    scored_group([8, 9], [[20, 2], [21, 22, 2], [23, 2], [24, 25, 2]], [0.0, 0.0, 1.0, 0.0]),
]
