"""End to end on the toy task, like `make run` (`rl-client demo --preset rft|online_dpo`): the
demo's tiny model, warm-started once for the module, then rejection-sampling fine-tuning and
online DPO through a sidecar verifier-server. The reward must rise over the rounds."""

from __future__ import annotations

from pathlib import Path

import pytest

from rl_client import demo
from rl_client.sft import run_sft
from rl_client.trainer import train

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(900)]

ROUNDS = 24
WINDOW = 6  # rounds averaged at each end


@pytest.fixture(scope="module")
def warm_start(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Path]]:
    """The demo's SFT warm start: half its answers are `\\boxed{?}`."""
    directory = tmp_path_factory.mktemp("toy")
    paths = demo.prepare(directory)
    run_sft(demo.sft_config(directory, paths, ["train.threads=1"]))
    return directory, paths


def _rounds(warm_start: tuple[Path, dict[str, Path]], preset: str) -> list[dict]:
    directory, paths = warm_start
    overrides = [
        f"train.steps={ROUNDS}",
        "train.threads=1",
        "output.progress=false",
        "output.trackers=[]",
    ]
    return train(demo.rounds_config(directory, paths, preset, overrides))


def _rise(history: list[dict]) -> tuple[float, float]:
    rewards = [m["reward_mean"] for m in history]
    return sum(rewards[:WINDOW]) / WINDOW, sum(rewards[-WINDOW:]) / WINDOW


def test_rft_raises_the_reward_on_the_toy_task(warm_start: tuple[Path, dict[str, Path]]) -> None:
    history = _rounds(warm_start, "rft")
    first, last = _rise(history)
    assert last > first + 0.08, f"reward {first:.3f} -> {last:.3f}"
    for m in history:  # the toy reward is 0 or 1: the winners are exactly the passes
        assert m["kept_items"] == round(m["pass_rate"] * 128)
        assert m["masked_items"] == 0
    assert (warm_start[0] / "rft" / "checkpoints" / f"step_{ROUNDS:06d}" / "policy").is_dir()


def test_online_dpo_raises_the_reward_on_the_toy_task(
    warm_start: tuple[Path, dict[str, Path]],
) -> None:
    history = _rounds(warm_start, "online_dpo")
    first, last = _rise(history)
    assert last > first + 0.08, f"reward {first:.3f} -> {last:.3f}"
    assert all(m["pairs"] <= 16 for m in history)  # best vs worst: one pair per group at most
    trained = [m for m in history if m["pairs"]]
    assert len(trained) > ROUNDS // 2
    assert all(m["dpo_loss"] > 0 and 0 <= m["dpo_accuracy"] <= 1 for m in trained)
