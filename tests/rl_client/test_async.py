"""Asynchronous rollouts against a real reward server (transformers engine): the staleness
bound under 'wait' and 'drop', the same prompts per step as sync mode, and the truncated
importance weights that correct for the lag."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from rl_helpers import train_settings, write_prompts

from rl_client.async_collect import AsyncCollector, RolloutThreadError, StepBatch
from rl_client.config import ModelConfig, TrainConfig, build_config
from rl_client.data import PromptRow
from rl_client.engines.base import Completion, SamplingParams
from rl_client.engines.hf import HFEngine
from rl_client.engines.versioned import VersionedEngine
from rl_client.group_filter import DynamicSampling
from rl_client.models import load_policy, load_tokenizer
from rl_client.rollout import Group, RolloutPlan
from rl_client.run import _collector
from rl_client.trainer import train
from verifier_server.types import Result, RewardSpec

CONTAINS = {"name": "string_check", "params": {"operation": "contains"}}
REGEX = {"name": "string_check", "params": {"operation": "regex"}}


def _run(tiny_model: Path, data: Path, output: Path, server, *overrides: str) -> list[dict]:
    settings = train_settings(tiny_model, data, output)
    settings["train"]["steps"] = 4
    config = build_config(TrainConfig, settings, [f"reward.address={server.address}", *overrides])
    return train(config)


def _records(output: Path) -> list[dict]:
    return [json.loads(line) for line in (output / "rollouts.jsonl").read_text().splitlines()]


def _groups_by_step(output: Path) -> dict[int, list[tuple[str, list[float]]]]:
    """Per step, each sampled group's prompt id and scores, in the order they were generated."""
    by_step: dict[int, dict[str, list[float]]] = {}
    for record in _records(output):
        group = by_step.setdefault(record["step"], {}).setdefault(record["prompt_id"], [])
        group.append(record["score"])
    return {step: list(groups.items()) for step, groups in by_step.items()}


def _prompts_by_step(output: Path) -> dict[int, list[str]]:
    by_step: dict[int, list[str]] = {}
    for record in _records(output):
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


@pytest.mark.integration
def test_dynamic_sampling_refills_in_the_rollout_thread(
    tiny_model: Path, tmp_path: Path, server
) -> None:
    # Even rows are always right (contains ""): every group has equal rewards and is filtered.
    # Odd rows are scored by the completion's first byte being ASCII, which a random model
    # gets about half the time: most of their groups carry signal. With 2 prompts a step the
    # thread must go back for more prompts, in cursor order, before it hands a batch over.
    rows = []
    for i in range(40):  # 4 steps use at most 4 rounds x 2 prompts each: no epoch wraps
        if i % 2 == 0:
            rows.append({"id": f"c{i}", "prompt": f"{i}", "reward": CONTAINS, "reference": ""})
        else:
            rows.append({"id": f"m{i}", "prompt": f"{i}", "reward": REGEX, "reference": "^[ -~]"})
    data = write_prompts(tmp_path / "p.jsonl", rows)
    history = _run(
        tiny_model,
        data,
        tmp_path / "run",
        server,
        "data.shuffle=false",
        "rollout.mode=async",
        "rollout.max_staleness=1",
        "algorithm.preset=dapo",
        "algorithm.overlong_weight=0",
        "algorithm.max_gen_rounds=4",
    )
    by_step = _groups_by_step(tmp_path / "run")
    groups = [group for step in sorted(by_step) for group in by_step[step]]
    # Prompts in data order, none skipped, none twice, whatever the number each step used.
    assert [prompt for prompt, _ in groups] == [row["id"] for row in rows[: len(groups)]]
    for metrics in history:
        step_groups = by_step[metrics["step"]]
        informative = [p for p, scores in step_groups if len(set(scores)) > 1]
        assert metrics["gen_rounds"] >= 2  # round 1 drew one always-right row
        assert metrics["filtered_groups"] == len(step_groups) - len(informative)
        assert metrics["train_groups"] == len(informative) <= 2  # never more than it asked for
        assert metrics["dynamic_sampling_exhausted"] is (len(informative) < 2)
        assert metrics["policy_lag_max"] <= 1
        assert all(p.startswith("m") for p in informative)
    assert any(m["train_groups"] > 0 for m in history)


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


def test_a_buffered_dynamic_sampling_batch_resumes_with_its_rounds(
    tiny_model: Path, tmp_path: Path
) -> None:
    # A checkpoint holds step 3's batch, built in 3 rounds: one group carries signal, one was
    # filtered. After the round trip through the checkpoint file the step reports the same.
    def group(prompt: str, scores: list[float]) -> Group:
        completion = Completion([5], [-1.0], "x")
        results = [Result(f"{prompt}.{i}", score) for i, score in enumerate(scores)]
        return Group(
            PromptRow(prompt, (), RewardSpec("x"), None), [1], [completion] * 2, results, 2
        )

    saved = StepBatch(3, None, [group("flat", [1.0, 1.0]), group("mixed", [0.0, 1.0])], rounds=3)
    torch.save({"rollout_buffer": [saved]}, tmp_path / "trainer.pt")
    buffered = torch.load(tmp_path / "trainer.pt", weights_only=False)["rollout_buffer"]
    tokenizer = load_tokenizer(tiny_model)
    model = load_policy(ModelConfig(path=str(tiny_model)), torch.device("cpu"))
    engine = VersionedEngine(HFEngine(model, tokenizer, copy_model=True), version=2)
    plan = RolloutPlan(2, SamplingParams(n=2, max_new_tokens=2), chunk_prompts=1, overlong=None)
    collector = AsyncCollector(
        engine,
        None,  # type: ignore[arg-type]  # nothing left to generate: step 3 is the last
        lambda count: pytest.fail("a buffered step drew prompts"),  # type: ignore[arg-type]
        plan,
        first_step=3,
        last_step=3,
        max_staleness=1,
        on_stale="drop",
        dynamic_sampling=DynamicSampling(),
        max_gen_rounds=3,
        buffered=buffered,
    )
    try:
        collected = collector.collect(3)
    finally:
        collector.close()
    assert collected.rounds == 3
    assert [g.row.id for g in collected.kept] == ["mixed"]
    assert collected.stats.filtered_groups == 1
    assert collected.regenerated_groups == 0
