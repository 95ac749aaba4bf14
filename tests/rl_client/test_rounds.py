"""The rft and online DPO rounds: which completions train (verified winners only, pairs of
verified items only, never a tie), then whole rounds against a real reward server, resumed
exactly, in sync and async mode."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import pytest
import torch
from rl_helpers import VOLATILE_METRICS, train_settings, write_prompts
from transformers import AutoModelForCausalLM

from rl_client.algorithms.losses import Normalizer
from rl_client.algorithms.sft import sft_loss
from rl_client.batch import build_batch
from rl_client.config import AlgorithmConfig, TrainConfig, TrainSettings, build_config
from rl_client.data import PromptRow
from rl_client.engines.base import Completion
from rl_client.learner import Learner
from rl_client.rollout import Group
from rl_client.rounds import dpo_pairs, rejection_sampling_winners
from rl_client.sft import IGNORE, collate
from rl_client.trainer import train
from verifier_server.types import Result, RewardSpec, Status

CONTAINS = {"name": "string_check", "params": {"operation": "contains"}}
LETTER = {"name": "string_check", "params": {"operation": "regex"}}
BASE = {"model": {"path": "m"}, "data": {"path": "d.jsonl"}, "output": {"dir": "out"}}


def _group(name: str, results: list[tuple[Status, float]]) -> Group:
    """Completion i has the text f'{name}{i}'; a masked result may hold any score."""
    row = PromptRow(name, (), RewardSpec("math"), None)
    completions = [Completion([i], [0.0], f"{name}{i}") for i in range(len(results))]
    scored = [Result(f"{name}{i}", score, status) for i, (status, score) in enumerate(results)]
    return Group(row, [1], completions, scored)


OK, TIMEOUT, ERROR = Status.OK, Status.TIMEOUT, Status.VERIFIER_ERROR


def _texts(groups: list[Group]) -> list[list[str]]:
    return [[c.text for c in g.completions] for g in groups]


def test_rft_keeps_only_verified_winners() -> None:
    algo = build_config(TrainConfig, BASE, ["algorithm.preset=rft"]).algorithm
    groups = [
        # a masked item carrying a 1.0 in its score field is still no winner
        _group("a", [(OK, 1.0), (TIMEOUT, 1.0), (OK, 0.0), (OK, 1.0)]),
        _group("b", [(ERROR, 1.0), (OK, 0.0)]),  # no verified winner: left out
        _group("c", [(OK, 0.5), (OK, 1.0)]),
    ]
    assert _texts(rejection_sampling_winners(groups, algo)) == [["a0"], ["c1"]]  # k = 1
    algo = algo.model_copy(update={"rft_max_per_prompt": 4, "pass_threshold": 0.5})
    assert _texts(rejection_sampling_winners(groups, algo)) == [["a0", "a3"], ["c0", "c1"]]


def test_dpo_pairs_never_include_masked_items() -> None:
    algo = build_config(TrainConfig, BASE, ["algorithm.preset=online_dpo"]).algorithm
    groups = [
        # the masked items hold the best (5.0) and the worst (-3.0) scores: neither is used
        _group("a", [(OK, 0.0), (ERROR, 5.0), (OK, 1.0), (OK, 1.0), (TIMEOUT, -3.0)]),
        _group("b", [(OK, 1.0), (TIMEOUT, 0.0)]),  # one verified member: no pair
        _group("c", [(OK, 0.5), (OK, 0.5)]),  # a tie: no pair
    ]
    pairs, pair_groups = dpo_pairs(groups, algo)
    assert (_texts(pairs), pair_groups) == ([["a2", "a0"]], 1)
    every = algo.model_copy(update={"dpo_pairs": "all"})
    pairs, pair_groups = dpo_pairs(groups, every)
    assert (_texts(pairs), pair_groups) == ([["a2", "a0"], ["a3", "a0"]], 1)


def test_the_rft_loss_is_the_sft_loss(tiny_model: Path) -> None:
    """rft trains its winners with what `rl-client sft` minimises: the token mean of the
    cross-entropy over the completion tokens (here transformers' own loss on sft's rows)."""
    model = AutoModelForCausalLM.from_pretrained(str(tiny_model))
    prompts, completions = [[5, 6, 7], [8, 9]], [[10, 11, 12, 13], [14]]
    groups = [
        Group(
            PromptRow(f"p{i}", (), RewardSpec("math"), None),
            p,
            [Completion(c, [0.0] * len(c), "")],
            [Result(f"p{i}", 1.0)],
        )
        for i, (p, c) in enumerate(zip(prompts, completions, strict=True))
    ]
    batch = build_batch(groups, pad_token_id=0, mask_truncated=False)
    learner = Learner(
        model,
        algo=AlgorithmConfig(),
        train=TrainSettings(),
        temperature=1.0,
        seq_len_norm=1.0,
        device=torch.device("cpu"),
    )
    rows = slice(0, batch.size)
    out = learner.forward(model, batch, rows, values=False)
    ours = sft_loss(out.logprobs, batch.loss_mask, Normalizer.of(batch.loss_mask, 1.0)).loss
    examples = [
        (p + c, [IGNORE] * len(p) + c, list(range(len(p) + len(c))))
        for p, c in zip(prompts, completions, strict=True)
    ]
    theirs = model(**collate(examples, pad_id=0)).loss
    assert ours.item() == pytest.approx(theirs.item(), abs=1e-5)


def _letter_prompts(path: Path, count: int, *, masked: int = 0) -> Path:
    """A letter anywhere: a random model earns it sometimes, so groups are mixed. The `masked`
    rows 'bad*' carry a reference string_check cannot use: INVALID_REQUEST for every item."""
    rows = [
        {"id": f"q{i}", "prompt": f"q{i}", "reward": LETTER, "reference": "[a-z]"}
        for i in range(count)
    ]
    rows += [
        {"id": f"bad{i}", "prompt": f"b{i}", "reward": LETTER, "reference": 7}
        for i in range(masked)
    ]
    return write_prompts(path, rows)


def _train(model: Path, data: Path, output: Path, overrides: list[str]) -> list[dict]:
    return train(build_config(TrainConfig, train_settings(model, data, output), overrides))


def _rollouts(output: Path) -> dict[int, dict[str, list[float | None]]]:
    """step -> prompt id -> the scores of its completions (None: masked)."""
    by_step: dict[int, dict[str, list[float | None]]] = defaultdict(lambda: defaultdict(list))
    for line in (output / "rollouts.jsonl").read_text().splitlines():
        record = json.loads(line)
        by_step[record["step"]][record["prompt_id"]].append(record["score"])
    return by_step


@pytest.mark.integration
def test_an_rft_round_trains_on_the_verified_winners(
    tiny_model: Path, tmp_path: Path, server
) -> None:
    rows = [
        {"id": "always", "prompt": "a", "reward": CONTAINS, "reference": ""},  # every item 1
        {"id": "never", "prompt": "b", "reward": CONTAINS, "reference": "QQQQQQQQQQ"},  # 0
        {"id": "masked", "prompt": "c", "reward": CONTAINS, "reference": 7},  # INVALID_REQUEST
    ]
    data = write_prompts(tmp_path / "p.jsonl", rows)
    overrides = [
        f"reward.address={server.address}",
        "algorithm.preset=rft",
        "algorithm.rft_max_per_prompt=2",
        "rollout.prompts_per_step=3",
        "train.steps=1",
    ]
    (metrics,) = _train(tiny_model, data, tmp_path / "run", overrides)
    # G = 4: 'always' gives 4 passes (k = 2 kept), 'never' 4 failures, 'masked' 4 masked
    assert metrics["kept_items"] == 2 and metrics["train_groups"] == 1
    assert metrics["kept_fraction"] == pytest.approx(2 / 12)
    assert metrics["pass_rate"] == pytest.approx(4 / 8)  # of the verified items only
    assert metrics["masked_items"] == 4 and metrics["dropped_groups"] == 1
    assert metrics["update_skipped"] is False and metrics["sft_loss"] > 0


@pytest.mark.integration
def test_an_online_dpo_round_pairs_verified_items_only(
    tiny_model: Path, tmp_path: Path, server
) -> None:
    data = _letter_prompts(tmp_path / "p.jsonl", 6, masked=2)
    overrides = [
        f"reward.address={server.address}",
        "algorithm.preset=online_dpo",
        "algorithm.dpo_pairs=all",
        "rollout.prompts_per_step=8",
        "rollout.group_size=6",
        "data.shuffle=false",
        "train.steps=2",
    ]
    history = _train(tiny_model, data, tmp_path / "run", overrides)
    logged = _rollouts(tmp_path / "run")
    for metrics in history:
        groups = logged[metrics["step"]]
        assert all(s is None for p, scores in groups.items() if p.startswith("bad") for s in scores)
        # every ordered pair of verified items with different scores, none with a masked one
        expected = {
            prompt: sum(
                1 for a in scores for b in scores if a is not None and b is not None and a > b
            )
            for prompt, scores in groups.items()
        }
        assert metrics["pairs"] == sum(expected.values())
        assert metrics["pair_groups"] == sum(1 for n in expected.values() if n > 0)
        assert metrics["masked_items"] == 12
    assert any(m["pairs"] > 0 for m in history)


def _metrics(output: Path) -> list[dict]:
    lines = (output / "metrics.jsonl").read_text().splitlines()
    return [
        {k: v for k, v in json.loads(line).items() if k not in VOLATILE_METRICS} for line in lines
    ]


@pytest.mark.integration
@pytest.mark.parametrize("preset", ["online_dpo", "rft"])
def test_a_resumed_round_run_matches_an_uninterrupted_one(
    tiny_model: Path, tmp_path: Path, server, preset: str
) -> None:
    data = _letter_prompts(tmp_path / "p.jsonl", 8)
    overrides = [
        f"reward.address={server.address}",
        f"algorithm.preset={preset}",
        "algorithm.pass_threshold=1.0",
        "algorithm.rft_max_per_prompt=4",
        "train.lr=0.01",
        "output.save_every=2",
    ]

    def run(name: str, steps: int) -> Path:
        _train(tiny_model, data, tmp_path / name, [*overrides, f"train.steps={steps}"])
        return tmp_path / name

    straight = run("straight", 4)
    run("resumed", 2)
    resumed = run("resumed", 4)  # continues from the checkpoint of round 2
    assert [m["step"] for m in _metrics(resumed)] == [1, 2, 3, 4]
    assert _metrics(resumed) == _metrics(straight)
    assert _rollouts(resumed) == _rollouts(straight)
    trained = "pairs" if preset == "online_dpo" else "kept_items"
    assert sum(m[trained] for m in _metrics(straight)) > 0


@pytest.mark.integration
def test_rounds_run_in_async_mode(tiny_model: Path, tmp_path: Path, server) -> None:
    # The next round's samples generate while this round trains, at most one version old.
    data = _letter_prompts(tmp_path / "p.jsonl", 8)
    overrides = [
        f"reward.address={server.address}",
        "algorithm.preset=online_dpo",
        "algorithm.dpo_reference=round",
        "rollout.mode=async",
        "rollout.max_staleness=1",
        "train.steps=3",
    ]
    history = _train(tiny_model, data, tmp_path / "run", overrides)
    assert [m["step"] for m in history] == [1, 2, 3]
    assert all(m["policy_lag_max"] is None or m["policy_lag_max"] <= 1 for m in history)
