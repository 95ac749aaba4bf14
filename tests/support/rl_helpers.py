"""Helpers for the rl_client tests: prompt files and a small, fast training config."""

from __future__ import annotations

import json
from pathlib import Path

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
        "output": {"dir": str(output), "progress": False, "tensorboard": False},
    }
