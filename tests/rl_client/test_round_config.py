"""The rft and online_dpo presets and their keys: what the presets set, and the combinations
refused with an error that names the key."""

from __future__ import annotations

import pytest

from rl_client.cli import build_parser
from rl_client.config import ConfigError, TrainConfig, build_config

BASE = {"model": {"path": "m"}, "data": {"path": "d.jsonl"}, "output": {"dir": "out"}}


def test_rft_preset() -> None:
    algo = build_config(TrainConfig, BASE, ["algorithm.preset=rft"]).algorithm
    assert (algo.objective, algo.kl_coef, algo.pass_threshold, algo.rft_max_per_prompt) == (
        "rft",
        0.0,
        1.0,
        1,
    )
    assert not algo.needs_reference_model and not algo.uses_critic


def test_online_dpo_preset_and_explicit_values_win() -> None:
    overrides = ["algorithm.preset=online_dpo", "algorithm.dpo_loss=ipo"]
    algo = build_config(TrainConfig, BASE, overrides).algorithm
    assert (algo.objective, algo.dpo_beta, algo.dpo_pairs, algo.dpo_reference) == (
        "dpo",
        0.1,
        "best_worst",
        "initial",
    )
    assert algo.dpo_loss == "ipo"
    assert algo.needs_reference_model  # the initial model, fixed
    round_ref = build_config(TrainConfig, BASE, [*overrides, "algorithm.dpo_reference=round"])
    assert not round_ref.algorithm.needs_reference_model  # the policy itself, before the update


def test_rft_samples_one_per_prompt_if_asked() -> None:
    # best-of-1 is a valid (if weak) RFT; GRPO's group baseline would need two
    config = build_config(TrainConfig, BASE, ["algorithm.preset=rft", "rollout.group_size=1"])
    assert config.rollout.group_size == 1


@pytest.mark.parametrize(
    ("overrides", "key", "why"),
    [
        (["algorithm.preset=online_dpo", "rollout.group_size=1"], "rollout.group_size", ">= 2"),
        (["algorithm.preset=online_dpo", "algorithm.kl_coef=0.1"], "algorithm.kl_coef", "dpo_beta"),
        (["algorithm.preset=rft", "algorithm.kl_coef=0.1"], "algorithm.kl_coef", "must be 0"),
        (["algorithm.preset=rft", "algorithm.overlong_weight=1"], "algorithm.overlong_weight", ""),
        (["algorithm.preset=rft", "algorithm.dynamic_sampling=true"], "dynamic_sampling", "pass"),
        (["algorithm.preset=online_dpo", "algorithm.dpo_loss=hinge"], "algorithm.dpo_loss", ""),
        (["algorithm.preset=online_dpo", "algorithm.dpo_beta=0"], "algorithm.dpo_beta", ""),
        (["algorithm.preset=rft", "algorithm.rft_max_per_prompt=0"], "rft_max_per_prompt", ""),
        (["algorithm.preset=online_dpo", "algorithm.dpo_min_margin=-1"], "dpo_min_margin", ""),
        # the grpo preset's KL term with the rft objective: said, not silently dropped
        (["algorithm.objective=rft"], "algorithm.kl_coef", "must be 0"),
    ],
)
def test_refused_with_the_key_named(overrides: list[str], key: str, why: str) -> None:
    with pytest.raises(ConfigError) as error:
        build_config(TrainConfig, BASE, overrides)
    assert key in str(error.value) and why in str(error.value)


def test_dpo_may_refill_groups_with_no_pair() -> None:
    # dynamic sampling drops the groups whose members all score alike: for DPO exactly the
    # groups that give no pair
    overrides = ["algorithm.preset=online_dpo", "algorithm.dynamic_sampling=true"]
    assert build_config(TrainConfig, BASE, overrides).algorithm.dynamic_sampling


def test_train_help_lists_the_presets_and_their_keys(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--help"])
    text = capsys.readouterr().out
    assert "rejection-sampling fine-tuning (rft)" in text and "online_dpo" in text
    for key in ("objective", "pass_threshold", "rft_max_per_prompt", "dpo_beta", "dpo_loss"):
        assert f"algorithm.{key} (" in text
