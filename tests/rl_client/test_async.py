"""Asynchronous rollouts against a real reward server (transformers engine): the staleness
bound under 'wait' and 'drop', the same prompts per step as sync mode, and the truncated
importance weights that correct for the lag."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from rl_helpers import train_settings

from rl_client.async_collect import AsyncCollector, RolloutThreadError, StepBatch
from rl_client.collect import RolloutPlan
from rl_client.config import ConfigError, ModelConfig, TrainConfig, build_config
from rl_client.data import PromptRow
from rl_client.engines.base import SamplingParams
from rl_client.engines.hf import HFEngine
from rl_client.engines.versioned import VersionedEngine
from rl_client.models import load_policy, load_tokenizer
from rl_client.run import _collector
from rl_client.trainer import train
from verifier_server.types import RewardSpec


def _run(tiny_model: Path, data: Path, output: Path, server, *overrides: str) -> list[dict]:
    settings = train_settings(tiny_model, data, output)
    settings["train"]["steps"] = 4
    config = build_config(TrainConfig, settings, [f"reward.address={server.address}", *overrides])
    return train(config)


def _prompts_by_step(output: Path) -> dict[int, list[str]]:
    by_step: dict[int, list[str]] = {}
    for line in (output / "rollouts.jsonl").read_text().splitlines():
        record = json.loads(line)
        by_step.setdefault(record["step"], []).append(record["prompt_id"])
    return by_step


@pytest.mark.integration
def test_wait_bounds_the_lag_and_keeps_the_prompt_order(
    tiny_model: Path, toy_prompts: Path, tmp_path: Path, server
) -> None:
    sync = _run(tiny_model, toy_prompts, tmp_path / "sync", server)
    lagged = _run(
        tiny_model,
        toy_prompts,
        tmp_path / "async",
        server,
        "rollout.mode=async",
        "rollout.max_staleness=1",
    )
    assert all(m["policy_lag_max"] == 0 for m in sync)
    assert all(m["policy_lag_max"] <= 1 for m in lagged)
    # Step 1 samples from the initial weights; step 2's batch starts before step 1's update
    # lands (the engine may run one version behind), so the lag shows.
    assert lagged[0]["policy_lag_max"] == 0
    assert max(m["policy_lag_max"] for m in lagged) == 1
    assert all(m["regenerated_groups"] == 0 for m in lagged)
    # Which prompts a step trains on does not depend on the mode or on timing.
    assert _prompts_by_step(tmp_path / "async") == _prompts_by_step(tmp_path / "sync")
    # The lag is corrected by the truncated importance weights, logged every step.
    assert all(0 < m["tis_weight_mean"] <= 2.0 for m in lagged)


@pytest.mark.integration
def test_staleness_zero_is_on_policy(
    tiny_model: Path, toy_prompts: Path, tmp_path: Path, server
) -> None:
    history = _run(
        tiny_model,
        toy_prompts,
        tmp_path / "run",
        server,
        "rollout.mode=async",
        "rollout.max_staleness=0",
    )
    assert [m["policy_lag_max"] for m in history] == [0, 0, 0, 0]
    # On-policy with a private copy of the weights: sampler and learner agree to float error.
    assert all(m["logprob_drift_max"] < 1e-4 for m in history)


@pytest.mark.integration
def test_drop_regenerates_groups_that_are_too_stale(
    tiny_model: Path, toy_prompts: Path, tmp_path: Path, server
) -> None:
    # max_staleness 0 with 'drop': the thread generates one batch ahead without waiting for
    # weights, so that batch is one version old when its step comes: dropped and generated
    # again, and every group that trains is on-policy.
    history = _run(
        tiny_model,
        toy_prompts,
        tmp_path / "run",
        server,
        "rollout.mode=async",
        "rollout.max_staleness=0",
        "rollout.on_stale=drop",
    )
    assert [m["policy_lag_max"] for m in history] == [0, 0, 0, 0]
    assert history[0]["regenerated_groups"] == 0
    assert sum(m["regenerated_groups"] for m in history[1:]) > 0


def test_async_with_dynamic_sampling_is_refused(tiny_model: Path, toy_prompts: Path) -> None:
    settings = train_settings(tiny_model, toy_prompts, Path("unused"))
    with pytest.raises(ConfigError, match="dynamic_sampling"):
        build_config(TrainConfig, settings, ["rollout.mode=async", "algorithm.preset=dapo"])


def test_a_failing_rollout_thread_fails_the_step_instead_of_hanging(tiny_model: Path) -> None:
    # A token id outside the vocabulary makes the real engine raise on the rollout thread.
    tokenizer = load_tokenizer(tiny_model)
    model = load_policy(ModelConfig(path=str(tiny_model)), torch.device("cpu"))
    engine = VersionedEngine(HFEngine(model, tokenizer, copy_model=True), version=0)
    row = PromptRow("bad", (), RewardSpec("x"), None)
    plan = RolloutPlan(1, SamplingParams(n=2, max_new_tokens=2), chunk_prompts=1, overlong=None)
    collector = AsyncCollector(
        engine,
        None,  # type: ignore[arg-type]  # never reached: generation fails first
        lambda count: ([row] * count, [[10**6]] * count),
        plan,
        first_step=1,
        last_step=3,
        max_staleness=1,
        on_stale="wait",
    )
    try:
        with pytest.raises(RolloutThreadError) as failure:
            collector.collect(1)
        assert isinstance(failure.value.__cause__, IndexError)
    finally:
        collector.close()


def test_an_async_checkpoint_is_not_resumed_in_sync_mode(
    tiny_model: Path, toy_prompts: Path
) -> None:
    config = build_config(TrainConfig, train_settings(tiny_model, toy_prompts, Path("unused")))
    buffered = [StepBatch(3, None)]
    with pytest.raises(ValueError, match=r"resume it with rollout\.mode=async"):
        _collector(config, None, None, None, None, None, buffered)  # type: ignore[arg-type]
