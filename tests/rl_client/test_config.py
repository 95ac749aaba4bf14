"""Config loading: presets, overrides, errors that name the key."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from rl_client.config import ConfigError, SFTConfig, TrainConfig, build_config, load_config

BASE = {"model": {"path": "m"}, "data": {"path": "d.jsonl"}, "output": {"dir": "out"}}


def test_preset_fills_knobs_and_explicit_values_win() -> None:
    config = build_config(TrainConfig, {**BASE, "algorithm": {"preset": "dapo", "clip_high": 0.3}})
    assert config.algorithm.loss_aggregation == "token_mean"
    assert config.algorithm.dynamic_sampling is True
    assert config.algorithm.clip_low == 0.2
    assert config.algorithm.clip_high == 0.3  # set explicitly: overrides the preset's 0.28


@pytest.mark.parametrize(
    ("preset", "advantage", "aggregation", "kl_coef"),
    [
        ("grpo", "grpo", "seq_mean_token_mean", 0.04),
        ("dapo", "grpo", "token_mean", 0.0),
        ("dr_grpo", "dr_grpo", "seq_mean_token_sum_norm", 0.0),
        ("rloo", "rloo", "seq_mean_token_mean", 0.05),
        ("reinforce_pp", "reinforce_pp", "token_mean", 0.01),
        ("ppo", "gae", "token_mean", 0.05),
    ],
)
def test_presets(preset: str, advantage: str, aggregation: str, kl_coef: float) -> None:
    config = build_config(TrainConfig, BASE, [f"algorithm.preset={preset}"])
    assert config.algorithm.advantage == advantage
    assert config.algorithm.loss_aggregation == aggregation
    assert config.algorithm.kl_coef == kl_coef


def test_overrides_parse_yaml_values(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("model: {path: m}\ndata: {path: d.jsonl}\noutput: {dir: o}\n")
    config = load_config(
        TrainConfig,
        path,
        ["rollout.group_size=4", "rollout.stop_strings=['</answer>']", "algorithm.dual_clip=3"],
    )
    assert config.rollout.group_size == 4
    assert config.rollout.stop_strings == ["</answer>"]
    assert config.algorithm.dual_clip == 3.0


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["rollout.grop_size=4"], "rollout.grop_size: unknown key; did you mean group_size?"),
        (["rollout.top_p=1.5"], "rollout.top_p: Input should be less than or equal to 1"),
        (["algorithm.preset=ppo2"], "algorithm.preset: unknown preset 'ppo2'; valid: dapo,"),
        (["algorithm.loss_aggregation=sum"], "algorithm.loss_aggregation: Input should be"),
        (
            ["rollout.group_size=1"],
            "rollout.group_size must be >= 2 for algorithm.advantage='grpo'",
        ),
        (["train.steps"], "expected key=value"),
        (["algorithm.dual_clip=0.5"], "algorithm.dual_clip: Input should be greater than 1"),
    ],
)
def test_errors_name_the_key(overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError) as error:
        build_config(TrainConfig, BASE, overrides)
    assert message in str(error.value)


def test_missing_required_sections_are_named() -> None:
    with pytest.raises(ConfigError) as error:
        build_config(TrainConfig, {"model": {"path": "m"}})
    assert "data: Field required" in str(error.value)
    assert "output: Field required" in str(error.value)


def test_config_is_frozen() -> None:
    config = build_config(TrainConfig, BASE)
    with pytest.raises(ValueError, match="frozen"):
        config.rollout.group_size = 3  # type: ignore[misc]


def test_bad_yaml_file(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("model: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(SFTConfig, path)


@pytest.mark.parametrize("path", sorted(Path(__file__).parents[2].glob("examples/rl/*.yaml")))
def test_example_configs_validate(path: Path) -> None:
    cls = SFTConfig if path.stem == "sft" else TrainConfig
    assert load_config(cls, path)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["rollout.engine=vllm_remote"], "needs a rollout.remote section"),
        (
            ["rollout.engine=vllm", "rollout.mode=async", "rollout.vllm.sleep_mode=true"],
            "sleep_mode needs rollout.mode='sync'",
        ),
        (["rollout.on_stale=never"], "rollout.on_stale"),
        (["rollout.agent.max_turns=2"], "rollout.agent.environment"),
    ],
)
def test_rollout_combinations_that_are_refused(overrides: list[str], message: str) -> None:
    raw = {"model": {"path": "m"}, "data": {"path": "d"}, "output": {"dir": "o"}}
    with pytest.raises(ConfigError, match=re.escape(message)):
        build_config(TrainConfig, raw, overrides)
