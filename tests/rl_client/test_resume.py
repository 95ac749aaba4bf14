"""A run killed (SIGKILL) after a checkpoint and resumed continues exactly: the same prompts in
the same steps, none skipped or repeated, and the same rewards and losses as a run that was
never interrupted."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from rl_helpers import logged_steps, prompts_by_step, train_settings, wait_for_checkpoint
from safetensors.torch import load_file
from server_process import alive, children_of

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(900)]

STEPS = 6


def _config(tiny_model: Path, data: Path, output: Path, **rollout: object) -> Path:
    settings = train_settings(tiny_model, data, output)
    settings["rollout"].update(rollout)
    settings["train"].update({"steps": STEPS, "lr": 0.01})
    settings["output"].update({"save_every": 2, "keep_checkpoints": 5})
    settings["reward"] = {"sidecar_workers": 1}
    path = output.with_suffix(".yaml")
    path.write_text(yaml.safe_dump(settings))
    return path


def _train(config: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "rl_client.cli", "train", "--config", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


@pytest.mark.parametrize("lazy_until_killed", [False, True])
def test_killed_and_resumed_run_matches_an_uninterrupted_one(
    tiny_model: Path, toy_prompts: Path, tmp_path: Path, lazy_until_killed: bool
) -> None:
    # data.lazy changes how rows are read, not which: a run may switch it across a resume.
    straight = tmp_path / "straight"
    assert _train(_config(tiny_model, toy_prompts, straight)).wait(300) == 0
    # The last step's weights, exported as a plain Hugging Face model.
    last = straight / "checkpoints" / f"step_{STEPS:06d}" / "policy" / "model.safetensors"
    final = load_file(straight / "final" / "model.safetensors")
    assert final.keys() == load_file(last).keys()
    assert all(torch.equal(final[name], tensor) for name, tensor in load_file(last).items())

    resumed = tmp_path / "resumed"
    config = _config(tiny_model, toy_prompts, resumed)
    settings = yaml.safe_load(config.read_text())
    lazy = {**settings, "data": {**settings["data"], "lazy": lazy_until_killed}}
    config.write_text(yaml.safe_dump(lazy))
    _kill_after_first_checkpoint(config, resumed)
    config.write_text(yaml.safe_dump(settings))
    assert _train(config).wait(300) == 0

    assert prompts_by_step(resumed) == prompts_by_step(straight)
    assert logged_steps(resumed) == logged_steps(straight)
    prompts = [
        p for step in sorted(prompts_by_step(straight)) for p in prompts_by_step(straight)[step]
    ]
    # 6 steps x 2 prompts x G=4 completions over a 16-prompt set: no prompt drawn twice.
    assert len(prompts) == STEPS * 2 * 4 and len(set(prompts)) == STEPS * 2


def _kill_after_first_checkpoint(config: Path, output: Path) -> None:
    """Starts a run and SIGKILLs it (mid-step) once its step-2 checkpoint is complete."""
    process = _train(config)
    wait_for_checkpoint(process, output, 2)
    sidecars = children_of(process.pid)
    assert sidecars  # the trainer started its own verifier-server
    process.send_signal(signal.SIGKILL)
    process.wait(30)
    deadline = time.monotonic() + 30  # the sidecar follows its killed parent (PDEATHSIG)
    while any(alive(pid) for pid in sidecars):
        assert time.monotonic() < deadline, "the sidecar outlived the killed trainer"
        time.sleep(0.1)
    assert not (output / "checkpoints" / f"step_{STEPS:06d}").exists()  # killed mid-run


def test_async_run_killed_mid_step_resumes_without_skipping_or_repeating_a_prompt(
    tiny_model: Path, toy_prompts: Path, tmp_path: Path
) -> None:
    # Async mode with max_staleness 1: when step 2's checkpoint is written, the batch of step
    # 3 (and maybe 4) is already generated and scored. It is saved with the checkpoint and
    # trained first after the resume; the data cursor stands right after it.
    settings = {"mode": "async", "max_staleness": 1}
    straight = tmp_path / "straight"
    assert _train(_config(tiny_model, toy_prompts, straight, **settings)).wait(300) == 0

    resumed = tmp_path / "resumed"
    config = _config(tiny_model, toy_prompts, resumed, **settings)
    _kill_after_first_checkpoint(config, resumed)
    state = torch.load(resumed / "checkpoints" / "step_000002" / "trainer.pt", weights_only=False)
    buffered = [batch.step for batch in state["rollout_buffer"]]
    assert buffered and buffered == list(range(3, 3 + len(buffered)))
    assert _train(config).wait(300) == 0

    by_step = prompts_by_step(resumed)
    assert by_step == prompts_by_step(straight)  # the same prompts in the same steps
    prompts = [p for step in sorted(by_step) for p in by_step[step][::4]]  # one per group
    assert len(prompts) == STEPS * 2 and len(set(prompts)) == STEPS * 2  # none twice
    steps = [m["step"] for m in logged_steps(resumed)]
    assert steps == list(range(1, STEPS + 1))  # every step logged once
    assert all(m["policy_lag_max"] <= 1 for m in logged_steps(resumed))
