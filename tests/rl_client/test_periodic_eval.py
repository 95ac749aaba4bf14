"""Periodic eval during training (`eval.every`): eval/ metrics at the right steps in
metrics.jsonl, training unchanged by it, and the same numbers after a resume."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from rl_helpers import train_settings

from rl_client import toy
from rl_client.config import TrainConfig, build_config
from rl_client.trainer import train

pytestmark = pytest.mark.integration

CONTAINS = {"name": "string_check", "params": {"operation": "contains"}}


def _metrics(output: Path) -> list[dict]:
    return [json.loads(line) for line in (output / "metrics.jsonl").read_text().splitlines()]


def _computed(metrics: dict) -> dict:
    """What a step computed, less its timings."""
    return {k: v for k, v in metrics.items() if "time_" not in k}


def test_eval_every_logs_eval_metrics_without_changing_training(
    tiny_model: Path, toy_prompts: Path, tmp_path: Path, server
) -> None:
    held_out = toy.write_rl_prompts(
        tmp_path / "held_out.jsonl", 5, seed=1, reward=CONTAINS, reference=toy.answer
    )
    overrides = [
        f"reward.address={server.address}",
        "train.steps=4",
        "train.schedule=constant",
        "output.save_every=2",
        f"data.eval_path={held_out}",
        "eval.limit=3",
        "eval.n_samples=2",
        "eval.k=[1,2]",
    ]

    def run(output: str, *extra: str) -> list[dict]:
        settings = train_settings(tiny_model, toy_prompts, tmp_path / output)
        train(build_config(TrainConfig, settings, [*overrides, *extra]))
        return _metrics(tmp_path / output)

    evaluated = run("every2", "eval.every=2")
    assert [m["step"] for m in evaluated] == [1, 2, 3, 4]
    for metrics in evaluated:
        names = {k for k in metrics if k.startswith("eval/")}
        assert bool(names) == (metrics["step"] % 2 == 0)
    at_2 = evaluated[1]
    assert at_2["eval/prompts"] == 3  # eval.limit of the 5 held-out prompts
    assert at_2["eval/samples_per_prompt"] == 2
    assert at_2["eval/verified_samples"] + at_2["eval/masked_samples"] == 6
    assert 0.0 <= at_2["eval/pass@2"] <= 1.0
    assert at_2["eval/prompts_with_2_verified"] == 3
    assert at_2["eval/time_s"] > 0
    assert "eval/per_prompt" not in at_2

    # Eval samples under its own seeded RNG: the training steps are those of a run without it.
    plain = run("plain", "eval.every=0")
    assert [_computed(m) for m in plain] == [
        {k: v for k, v in _computed(m).items() if not k.startswith("eval/")} for m in evaluated
    ]

    # Stopped at the step-2 checkpoint and resumed: the same training and eval numbers.
    run("resumed", "eval.every=2", "train.steps=2")
    resumed = run("resumed", "eval.every=2")
    assert [_computed(m) for m in resumed] == [_computed(m) for m in evaluated]


@pytest.mark.parametrize(
    "mode", [["rollout.mode=async", "rollout.max_staleness=1"], ["algorithm.preset=rft"]]
)
def test_eval_every_in_async_mode_and_in_rounds(
    tiny_model: Path, toy_prompts: Path, tmp_path: Path, server, mode: list[str]
) -> None:
    """Async mode holds its rollout thread while the eval samples; rft / dpo rounds log it too.
    Either way the training steps are those of a run without it."""
    overrides = [f"reward.address={server.address}", "train.steps=3", "eval.limit=2", *mode]

    def run(output: str, every: int) -> list[dict]:
        settings = train_settings(tiny_model, toy_prompts, tmp_path / output)
        train(build_config(TrainConfig, settings, [*overrides, f"eval.every={every}"]))
        return _metrics(tmp_path / output)

    evaluated = run("every1", 1)
    assert all(m["eval/prompts"] == 2 and "eval/pass@1" in m for m in evaluated)
    assert [_computed(m) for m in run("plain", 0)] == [
        {k: v for k, v in _computed(m).items() if not k.startswith("eval/")} for m in evaluated
    ]
