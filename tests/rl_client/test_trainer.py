"""The loop against a real reward server: masking, dropped groups, dynamic sampling and its
budget, overlong shaping, the critic branch, LoRA with its adapter-free reference."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from rl_helpers import train_settings, write_prompts

from rl_client.config import TrainConfig, build_config
from rl_client.data import DataError
from rl_client.evaluate import evaluate
from rl_client.trainer import train

pytestmark = pytest.mark.integration

CONTAINS = {"name": "string_check", "params": {"operation": "contains"}}
LETTER = {"name": "string_check", "params": {"operation": "regex"}}


def _run(settings: dict, overrides: list[str]) -> list[dict]:
    return train(build_config(TrainConfig, settings, overrides))


def _rollouts(output: Path) -> list[dict]:
    return [json.loads(line) for line in (output / "rollouts.jsonl").read_text().splitlines()]


def test_unverifiable_items_are_masked_and_counted(
    tiny_model: Path, tmp_path: Path, server
) -> None:
    # Rows "bad*" carry a non-string reference: string_check answers INVALID_REQUEST for each
    # of their completions. They must be masked (never scored 0) and their groups dropped.
    rows = [
        {"id": "good0", "prompt": "a", "reward": CONTAINS, "reference": "x"},
        {"id": "bad0", "prompt": "b", "reward": CONTAINS, "reference": 7},
        {"id": "good1", "prompt": "c", "reward": CONTAINS, "reference": "y"},
        {"id": "bad1", "prompt": "d", "reward": CONTAINS, "reference": 8},
    ]
    data = write_prompts(tmp_path / "p.jsonl", rows)
    settings = train_settings(tiny_model, data, tmp_path / "run")
    history = _run(
        settings,
        [f"reward.address={server.address}", "data.shuffle=false", "rollout.prompts_per_step=4"],
    )
    first = history[0]
    assert first["masked_items"] == 8  # 2 bad rows x G=4
    assert first["masked_INVALID_REQUEST"] == 8
    assert first["dropped_groups"] == 2
    assert first["train_groups"] == 2
    assert first["update_skipped"] is False
    records = _rollouts(tmp_path / "run")
    bad = [r for r in records if r["prompt_id"].startswith("bad")]
    assert bad and all(r["status"] == "INVALID_REQUEST" and r["score"] is None for r in bad)
    # each record carries the prompt and the reference it was scored against
    by_id = {row["id"]: row for row in rows}
    for record in records:
        row = by_id[record["prompt_id"]]
        assert record["prompt"] == [{"role": "user", "content": row["prompt"]}]
        assert record["reference"] == row["reference"]


def test_dynamic_sampling_budget_runs_out_without_crashing(
    tiny_model: Path, toy_prompts: Path, tmp_path: Path, server
) -> None:
    # A random model never writes \boxed{answer}: every group is all zeros, so every group is
    # filtered, the budget of 2 rounds runs out, and the step trains on nothing and says so.
    settings = train_settings(tiny_model, toy_prompts, tmp_path / "run")
    history = _run(
        settings,
        [
            f"reward.address={server.address}",
            "algorithm.preset=dapo",
            "algorithm.max_gen_rounds=2",
            "algorithm.overlong_weight=0",
        ],
    )
    for metrics in history:
        assert metrics["gen_rounds"] == 2
        assert metrics["filtered_groups"] == 4  # 2 prompts per round x 2 rounds
        assert metrics["dynamic_sampling_exhausted"] is True
        assert metrics["update_skipped"] is True
        assert metrics["train_groups"] == 0
    assert [m["step"] for m in history] == [1, 2]


def test_overlong_penalty_is_added_through_the_length_verifier(
    tiny_model: Path, toy_prompts: Path, tmp_path: Path, server
) -> None:
    # max_new_tokens 6, cache fraction 0.5 -> L_cache 3: a 6-token (truncated) completion gets
    # the full -1; the task reward of a random model is 0, so the reward is 0 + 1.0 * -1 = -1.
    settings = train_settings(tiny_model, toy_prompts, tmp_path / "run")
    history = _run(
        settings,
        [
            f"reward.address={server.address}",
            "algorithm.overlong_weight=1.0",
            "algorithm.overlong_cache_fraction=0.5",
            "algorithm.mask_truncated=true",
            "train.steps=1",
        ],
    )
    records = _rollouts(tmp_path / "run")
    six = [r for r in records if r["tokens"] == 6]
    assert six and all(r["score"] == pytest.approx(-1.0) for r in six)
    assert history[0]["reward_overlong_mean"] <= 0
    assert history[0]["reward_task_mean"] == 0.0


def test_ppo_preset_trains_a_value_head(
    tiny_model: Path, toy_prompts: Path, tmp_path: Path, server
) -> None:
    settings = train_settings(tiny_model, toy_prompts, tmp_path / "run")
    history = _run(
        settings,
        [
            f"reward.address={server.address}",
            "algorithm.preset=ppo",
            "algorithm.kl_coef=0.05",
            "algorithm.dual_clip=3",
        ],
    )
    for metrics in history:
        assert metrics["value_loss"] >= 0
        assert "dual_clip_fraction" in metrics
        assert metrics["kl"] is not None  # kl_coef > 0: the reference is loaded
    assert history[0]["kl"] == pytest.approx(0.0, abs=1e-6)  # the reference is the start


def test_lora_reference_is_the_base_without_adapters(
    tiny_model: Path, tmp_path: Path, server
) -> None:
    # A reward a random model sometimes earns (a letter anywhere), so the policy moves.
    rows = [
        {"id": f"q{i}", "prompt": f"q{i}", "reward": LETTER, "reference": "[a-zA-Z]"}
        for i in range(8)
    ]
    data = write_prompts(tmp_path / "p.jsonl", rows)
    settings = train_settings(tiny_model, data, tmp_path / "run")
    overrides = [
        f"reward.address={server.address}",
        "model.lora_r=4",
        "model.lora_target_modules=[q_proj, v_proj]",
        "algorithm.kl_coef=0.1",
        "train.lr=0.05",
        "train.steps=3",
    ]
    history = _run(settings, overrides)
    assert history[0]["kl"] == pytest.approx(0.0, abs=1e-6)  # LoRA B starts at 0
    assert history[-1]["kl"] > 1e-6  # the adapters moved the policy away from the base
    policy = tmp_path / "run" / "checkpoints" / "step_000003" / "policy"
    assert (policy / "adapter_config.json").exists()
    # The adapter checkpoint loads back for evaluation (base from model.path + adapters).
    report = evaluate(build_config(TrainConfig, settings, overrides), model_path=str(policy))
    assert report["prompts"] == 8 and report["masked_items"] == 0


def test_unknown_reward_name_is_an_error_before_training(
    tiny_model: Path, tmp_path: Path, server
) -> None:
    rows = [{"id": "q0", "prompt": "a", "reward": {"name": "maths"}, "reference": "1"}]
    data = write_prompts(tmp_path / "p.jsonl", rows)
    settings = train_settings(tiny_model, data, tmp_path / "run")
    with pytest.raises(DataError, match=r"unknown reward 'maths' \(first in row 'q0'\)"):
        _run(settings, [f"reward.address={server.address}"])
    assert not (tmp_path / "run" / "metrics.jsonl").exists()


def test_a_fresh_run_in_a_used_dir_starts_clean_logs(
    tiny_model: Path, toy_prompts: Path, tmp_path: Path, server
) -> None:
    settings = train_settings(tiny_model, toy_prompts, tmp_path / "run")
    overrides = [f"reward.address={server.address}", "output.resume=false", "train.steps=1"]
    _run(settings, overrides)
    _run(settings, overrides)
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == [1]


def test_a_dataset_smaller_than_the_batch_repeats_prompts_within_a_step(
    tiny_model: Path, tmp_path: Path, server
) -> None:
    rows = [{"id": "only", "prompt": "a", "reward": LETTER, "reference": "[a-z]"}]
    data = write_prompts(tmp_path / "p.jsonl", rows)
    settings = train_settings(tiny_model, data, tmp_path / "run")
    history = _run(settings, [f"reward.address={server.address}", "train.steps=1"])
    assert history[0]["train_groups"] + history[0]["dropped_groups"] == 2
    assert history[0]["data_epoch"] == 1
