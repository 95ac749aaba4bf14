"""GRPO, rejection-sampling fine-tuning and online DPO on the toy task, compared at the same
number of generated tokens. One warm start (the demo's SFT) for all three, then each loop
with the demo's settings (GRPO: 8 prompts x 8 samples a step, lr 5e-4; rft and online_dpo:
16 prompts x 8 samples a round, lr 2e-4), rewards from one sidecar verifier-server each.

    python benchmarks/round_loops.py [--grpo-steps 60] [--rounds 30] [--dir DIR]

The default step counts generate about the same number of tokens in each loop (64 vs 128
samples per step). Prints one table: for each loop, the mean reward of the steps in which
the cumulative generated tokens first reach 25%, 50% and 100% of the smallest loop's total
(a window of 5 steps ending there), the first 5 steps' reward, and the wall time.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

from rl_client import demo
from rl_client.config import TrainConfig
from rl_client.sft import run_sft
from rl_client.trainer import train

WINDOW = 5
QUIET = ["train.threads=1", "output.progress=false", "output.trackers=[]"]


def generated_tokens(history: list[dict[str, Any]], samples_per_step: int) -> list[float]:
    """Cumulative tokens generated after each step (mean length x samples x rounds)."""
    total, cumulative = 0.0, []
    for m in history:
        total += m["response_len_mean"] * samples_per_step * m["gen_rounds"]
        cumulative.append(total)
    return cumulative


def reward_at(history: list[dict[str, Any]], tokens: list[float], budget: float) -> float:
    """Mean reward of the WINDOW steps ending where the cumulative tokens first reach budget."""
    end = next((i for i, t in enumerate(tokens) if t >= budget), len(tokens) - 1) + 1
    window = [m["reward_mean"] for m in history[max(0, end - WINDOW) : end]]
    return sum(window) / len(window)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grpo-steps", type=int, default=60)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--dir", type=Path, default=None, help="default: a temporary dir")
    args = parser.parse_args()
    directory = args.dir or Path(tempfile.mkdtemp(prefix="round-loops-"))
    paths = demo.prepare(directory)
    run_sft(demo.sft_config(directory, paths, ["train.threads=1"]))

    runs: dict[str, tuple[TrainConfig, int]] = {
        "grpo": (
            demo.grpo_config(directory, paths, [f"train.steps={args.grpo_steps}", *QUIET]),
            64,
        ),
    }
    for preset in demo.ROUND_PRESETS:
        config = demo.rounds_config(
            directory, paths, preset, [f"train.steps={args.rounds}", *QUIET]
        )
        runs[preset] = (config, 128)
    results = {}
    for name, (config, samples) in runs.items():
        began = time.perf_counter()
        history = train(config)
        results[name] = (history, generated_tokens(history, samples), time.perf_counter() - began)

    budget = min(tokens[-1] for _, tokens, _ in results.values())
    fractions = (0.25, 0.5, 1.0)
    header = [
        "loop",
        "steps",
        "tokens",
        "first 5",
        *(f"at {f:.0%} tokens" for f in fractions),
        "wall s",
    ]
    print(f"\ntoken budget: {budget:.0f} generated tokens (the smallest loop's total)")
    print(" | ".join(header))
    print(" | ".join("---" for _ in header))
    for name, (history, tokens, wall) in results.items():
        first = sum(m["reward_mean"] for m in history[:WINDOW]) / WINDOW
        at = [reward_at(history, tokens, f * budget) for f in fractions]
        cells = [
            name,
            str(len(history)),
            f"{tokens[-1]:.0f}",
            f"{first:.3f}",
            *(f"{a:.3f}" for a in at),
        ]
        print(" | ".join([*cells, f"{wall:.0f}"]))


if __name__ == "__main__":
    main()
