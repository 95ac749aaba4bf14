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
        ("rloo", "rloo", "seq_mean_token_sum", 0.05),
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
        (["eval.k=[1,16]"], "eval.k [16]: each k must be between 1 and the samples per prompt (8,"),
        (["eval.n_samples=4", "eval.k=[2,8]"], "eval.k [8]: each k must be between 1 and"),
        (["data.format=tsv"], "data.format: Input should be 'auto', 'jsonl'"),
        (
            ["data.reference_key=gold", "data.columns={reference: answer}"],
            "  data: data.columns.reference and data.reference_key both name the reference",
        ),
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
        (
            ["rollout.remote.weights_dir=w"],
            "rollout.remote: set exactly one of rollout.remote.base_url (one server) and "
            "rollout.remote.urls",
        ),
        (
            ["rollout.remote={weights_dir: w, base_url: 'http://a:1', urls: ['http://b:1']}"],
            "set exactly one of rollout.remote.base_url",
        ),
        (["rollout.remote={weights_dir: w, urls: []}"], "rollout.remote.urls is empty"),
        (
            ["rollout.remote={weights_dir: w, urls: ['http://a:1', 'http://a:1']}"],
            "rollout.remote.urls lists ['http://a:1'] more than once",
        ),
    ],
)
def test_rollout_combinations_that_are_refused(overrides: list[str], message: str) -> None:
    raw = {"model": {"path": "m"}, "data": {"path": "d"}, "output": {"dir": "o"}}
    with pytest.raises(ConfigError, match=re.escape(message)):
        build_config(TrainConfig, raw, overrides)


def test_remote_servers_from_base_url_or_urls() -> None:
    raw = {"model": {"path": "m"}, "data": {"path": "d"}, "output": {"dir": "o"}}
    one = build_config(
        TrainConfig, raw, ["rollout.remote={weights_dir: w, base_url: 'http://a:1'}"]
    )
    many = build_config(
        TrainConfig, raw, ["rollout.remote={weights_dir: w, urls: ['http://a:1', 'http://b:2']}"]
    )
    assert one.rollout.remote is not None and one.rollout.remote.server_urls == ["http://a:1"]
    assert many.rollout.remote is not None
    assert many.rollout.remote.server_urls == ["http://a:1", "http://b:2"]


@pytest.mark.parametrize(
    ("estimator", "placement", "reason"),
    [
        ("k1", "loss", "k1 as a loss has zero expected gradient"),
        ("k2", "reward", "k2 in the reward gives a biased gradient"),
        ("k3", "reward", "k3 in the reward gives a biased gradient"),
        ("k3_k2grad", "reward", "a detached reward penalty never uses"),
    ],
)
def test_kl_estimator_and_placement_that_do_not_optimise_a_kl_are_refused(
    estimator: str, placement: str, reason: str
) -> None:
    overrides = [
        "algorithm.kl_coef=0.1",
        f"algorithm.kl_estimator={estimator}",
        f"algorithm.kl_placement={placement}",
    ]
    with pytest.raises(ConfigError) as error:
        build_config(TrainConfig, BASE, overrides)
    message = str(error.value)
    assert f"algorithm.kl_estimator='{estimator}' with algorithm.kl_placement='{placement}'" in (
        message
    )
    assert reason in message
    # With kl_coef 0 there is no KL term: nothing to refuse.
    build_config(TrainConfig, BASE, [*overrides[1:], "algorithm.kl_coef=0"])


@pytest.mark.parametrize(
    ("estimator", "placement"),
    [("k1", "reward"), ("k2", "loss"), ("k3", "loss"), ("k3_k2grad", "loss")],
)
def test_kl_combinations_that_optimise_a_kl_are_accepted(estimator: str, placement: str) -> None:
    overrides = [
        "algorithm.kl_coef=0.1",
        f"algorithm.kl_estimator={estimator}",
        f"algorithm.kl_placement={placement}",
    ]
    assert build_config(TrainConfig, BASE, overrides).algorithm.kl_estimator == estimator


def test_reinforce_pp_preset_is_the_papers_form() -> None:
    # k1 per token in the reward (was k2: a biased gradient), reward-to-go, token whitening.
    algo = build_config(TrainConfig, BASE, ["algorithm.preset=reinforce_pp"]).algorithm
    assert (algo.kl_estimator, algo.kl_placement, algo.reinforce_pp_form) == (
        "k1",
        "reward",
        "token",
    )
    with pytest.raises(ConfigError, match=r"reinforce_pp_form='token' needs algorithm\.advantage"):
        build_config(TrainConfig, BASE, ["algorithm.reinforce_pp_form=token"])


def test_reinforce_pp_baseline_with_groups_of_one_is_refused() -> None:
    # A group of one is its own mean: REINFORCE++-baseline's advantages would all be 0 (the
    # token form would keep only the KL penalty), and the run would train on nothing.
    overrides = ["algorithm.preset=reinforce_pp", "rollout.group_size=1"]
    with pytest.raises(ConfigError) as error:
        build_config(TrainConfig, BASE, overrides)
    message = str(error.value)
    assert "algorithm.group_baseline=True needs rollout.group_size >= 2" in message
    assert "every advantage would be 0" in message
    # Plain REINFORCE++ normalises over the batch: groups of one are fine.
    algo = build_config(TrainConfig, BASE, [*overrides, "algorithm.group_baseline=false"]).algorithm
    assert algo.advantage == "reinforce_pp" and not algo.group_baseline


AGENT = ["rollout.agent.environment=math_python", "rollout.agent.max_episode_tokens=300"]


def test_the_response_budget_of_an_agentic_episode_is_the_episode_budget() -> None:
    assert build_config(TrainConfig, BASE, ["rollout.max_new_tokens=40"]).response_budget == 40
    config = build_config(TrainConfig, BASE, ["rollout.max_new_tokens=40", *AGENT])
    assert config.response_budget == 300
    # The overlong cache is a fraction of it: 300 * .01 = 3 tokens is enough, though
    # 40 * .01 = .4 would not be.
    overlong = ["algorithm.overlong_weight=1", "algorithm.overlong_cache_fraction=0.01"]
    build_config(TrainConfig, BASE, ["rollout.max_new_tokens=40", *AGENT, *overlong])
    with pytest.raises(ConfigError, match=r"rollout\.max_new_tokens must be >= 1 token"):
        build_config(TrainConfig, BASE, ["rollout.max_new_tokens=40", *overlong])
