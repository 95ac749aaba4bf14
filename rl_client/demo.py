"""`rl-client demo` (what `make run` does), end to end on a CPU in minutes:

1. build a tiny Qwen2-style model and a byte-level tokenizer locally (no hub);
2. warm-start it with a short SFT on synthetic answers in the task's format, of which only
   some are right (so it learns the format, and where the answer roughly lies);
3. train it with GRPO (or `--preset rft` / `online_dpo`: rejection-sampling fine-tuning,
   online DPO) against a sidecar verifier-server on single-digit addition answered in
   `\\boxed{}`, scored by the `math` verifier;
4. print the summary table and the reward curve.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rl_client import toy
from rl_client.config import SFTConfig, TrainConfig, build_config

# The toy task's reward, scored by the server's `math` verifier: the last \boxed{} must be
# mathematically equal to the sum.
TOY_REWARD: dict[str, Any] = {"name": "math", "params": {"extract": "boxed"}}


def prepare(directory: Path, *, prompts: int = 256, sft_rows: int = 2000) -> dict[str, Path]:
    """Builds the model and writes the SFT and RL data under `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    base = toy.build_model(directory / "base")
    sft_data = toy.write_sft_data(
        directory / "sft.jsonl", sft_rows, seed=1, correct_fraction=0.5, ops="+"
    )
    rl_data = toy.write_rl_prompts(
        directory / "prompts.jsonl",
        prompts,
        seed=2,
        reward=TOY_REWARD,
        ops="+",
    )
    return {"base": base, "sft_data": sft_data, "rl_data": rl_data}


def sft_config(directory: Path, paths: dict[str, Path], overrides: Sequence[str] = ()) -> SFTConfig:
    settings = {
        "model": {"path": str(paths["base"])},
        "data": {"path": str(paths["sft_data"]), "system_prompt": toy.SYSTEM_PROMPT},
        "train": {"steps": 800, "batch_size": 32, "lr": 1e-3, "warmup_steps": 10},
        "output": {"dir": str(directory / "sft")},
    }
    return build_config(SFTConfig, settings, overrides)


def grpo_config(
    directory: Path, paths: dict[str, Path], overrides: Sequence[str] = ()
) -> TrainConfig:
    settings = {
        "model": {"path": str(directory / "sft")},
        "data": {"path": str(paths["rl_data"]), "system_prompt": toy.SYSTEM_PROMPT},
        "rollout": {
            "prompts_per_step": 8,
            "group_size": 8,
            "max_new_tokens": 16,
            "temperature": 1.0,
        },
        "algorithm": {"preset": "grpo", "kl_coef": 0.0},
        "train": {"steps": 100, "lr": 5e-4, "micro_batch_size": 64, "warmup_steps": 2},
        "output": {"dir": str(directory / "grpo"), "save_every": 50, "resume": False},
    }
    return build_config(TrainConfig, settings, overrides)


ROUND_PRESETS = ("rft", "online_dpo")


def rounds_config(
    directory: Path, paths: dict[str, Path], preset: str, overrides: Sequence[str] = ()
) -> TrainConfig:
    """rft or online_dpo on the toy task: 30 rounds of 16 prompts x 8 samples. rft keeps
    every verified winner (up to 8 per prompt); a learning rate above ~5e-4 made online DPO
    collapse onto one answer here."""
    if preset not in ROUND_PRESETS:
        raise ValueError(f"preset {preset!r}: one of {', '.join(ROUND_PRESETS)}")
    algorithm: dict[str, Any] = {"preset": preset}
    if preset == "rft":
        algorithm["rft_max_per_prompt"] = 8
    settings = {
        "model": {"path": str(directory / "sft")},
        "data": {"path": str(paths["rl_data"]), "system_prompt": toy.SYSTEM_PROMPT},
        "rollout": {"prompts_per_step": 16, "group_size": 8, "max_new_tokens": 16},
        "algorithm": algorithm,
        "train": {"steps": 30, "lr": 2e-4, "micro_batch_size": 64},
        "output": {"dir": str(directory / preset), "save_every": 10, "resume": False},
    }
    return build_config(TrainConfig, settings, overrides)


def run_demo(directory: str | Path, *, steps: int | None = None, preset: str = "grpo") -> int:
    from rl_client.sft import run_sft
    from rl_client.trainer import train

    directory = Path(directory)
    paths = prepare(directory)
    run_sft(sft_config(directory, paths))
    overrides = [f"train.steps={steps}"] if steps is not None else []
    if preset == "grpo":
        train(grpo_config(directory, paths, overrides))
    else:
        train(rounds_config(directory, paths, preset, overrides))
    return 0
