"""Seconds per GRPO step: rl_client (rewards through a sidecar verifier-server) against TRL's
GRPOTrainer (rewards from an in-process Python function), in one run, on the same tiny
model, prompts, group size, generation length, learning rate and reward.

    python benchmarks/vs_trl.py [--steps 30] [--prompts 2] [--group 4] [--max-new-tokens 16]

TRL is installed on first use into its own virtualenv, `.bench-venv-trl` (torch 2.13 CPU, trl,
transformers in the range rl_client uses). Both start from the same SFT warm-started model.
Each trainer runs `--repeats` times, alternating, so a change in the machine's load hits
both; the first `--warmup` steps of every run are left out of the timings. Prints a table:
s/step for each, the ratio ours/TRL (target <= 0.8), where our step's time goes, TRL's time
inside `generate`, and the mean reward over the first and the last steps.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TRL_VENV = ROOT / ".bench-venv-trl"
TRL_PACKAGES = ["trl", "transformers>=5.16.1,<5.20"]


def ensure_trl_venv() -> Path:
    python = TRL_VENV / "bin" / "python"
    stamp = TRL_VENV / ".installed"
    if stamp.exists():
        return python
    print(f"installing TRL into {TRL_VENV} (first run only)...", flush=True)
    subprocess.run([sys.executable, "-m", "venv", str(TRL_VENV)], check=True)
    pip = [str(python), "-m", "pip", "install", "-q"]
    subprocess.run([*pip, "torch==2.13.0"], check=True)  # the CPU build, as in make setup
    subprocess.run([*pip, *TRL_PACKAGES], check=True)
    stamp.touch()
    return python


def run_trl(python: Path, job: dict) -> dict:
    out = subprocess.run(
        [str(python), str(ROOT / "benchmarks" / "_trl_grpo.py"), json.dumps(job)],
        capture_output=True,
        text=True,
        check=False,
    )
    for line in out.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT ") :])
    raise RuntimeError(f"TRL run failed (exit {out.returncode}):\n{out.stderr[-3000:]}")


def run_ours(directory: Path, paths: dict[str, Path], args: argparse.Namespace) -> list[dict]:
    from rl_client import demo
    from rl_client.trainer import train

    config = demo.grpo_config(
        directory,
        paths,
        [
            f"train.steps={args.steps}",
            f"train.lr={args.lr}",
            "train.warmup_steps=0",
            f"train.micro_batch_size={args.prompts * args.group}",
            f"rollout.prompts_per_step={args.prompts}",
            f"rollout.group_size={args.group}",
            f"rollout.max_new_tokens={args.max_new_tokens}",
            f"output.dir={directory / 'ours'}",
            f"output.save_every={args.steps + 1}",
            "output.progress=false",
            "output.trackers=[]",
            "output.log_rollouts=false",
            "reward.sidecar_workers=1",
            *([f"train.threads={args.threads}"] if args.threads else []),
        ],
    )
    return train(config)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=60, help="GRPO steps for each trainer")
    parser.add_argument("--warmup", type=int, default=5, help="first steps left out of timings")
    parser.add_argument("--repeats", type=int, default=2, help="runs of each trainer, alternating")
    parser.add_argument("--prompts", type=int, default=2, help="prompts per step")
    parser.add_argument("--group", type=int, default=4, help="completions per prompt (G)")
    parser.add_argument("--max-new-tokens", type=int, default=16, help="generation budget")
    parser.add_argument("--lr", type=float, default=1e-4, help="learning rate (constant)")
    parser.add_argument("--sft-steps", type=int, default=800, help="warm-start SFT steps")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch CPU threads for both (default: torch's)"
    )
    parser.add_argument("--dir", help="work directory (default: a temporary one)")
    args = parser.parse_args()

    python = ensure_trl_venv()
    from rl_client import demo, toy
    from rl_client.sft import run_sft

    with tempfile.TemporaryDirectory() as scratch:
        directory = Path(args.dir or scratch)
        paths = demo.prepare(directory)
        if (directory / "sft" / "config.json").exists():  # --dir of an earlier run: reuse it
            print(f"reusing the warm-started model in {directory / 'sft'}")
        else:
            run_sft(demo.sft_config(directory, paths, [f"train.steps={args.sft_steps}"]))
        job = {
            "model": str(directory / "sft"),
            "prompts": str(paths["rl_data"]),
            "system_prompt": toy.SYSTEM_PROMPT,
            "output": str(directory / "trl"),
            "steps": args.steps,
            "prompts_per_step": args.prompts,
            "group_size": args.group,
            "max_new_tokens": args.max_new_tokens,
            "lr": args.lr,
            "seed": 0,
            "threads": args.threads,
        }
        # Alternate the two trainers so that a change in the machine's load hits both.
        trl_runs, our_runs = [], []
        for _ in range(args.repeats):
            trl_runs.append(run_trl(python, job))
            our_runs.append(run_ours(directory, paths, args))

    skip, last = args.warmup, max(1, args.steps // 5)
    trl_steps = [t for run in trl_runs for t in run["step_s"][skip:]]
    trl_gen = [t for run in trl_runs for t in run["generate_s"][skip:]]
    ours_after = [m for run in our_runs for m in run[skip:]]
    trl_step, trl_generate = statistics.median(trl_steps), statistics.median(trl_gen)
    ours_step = statistics.median(m["time_step_s"] for m in ours_after)
    parts = {
        name: statistics.median(m[key] for m in ours_after)
        for name, key in (
            ("generate", "time_generate_s"),
            ("reward wait", "time_reward_s"),
            ("train", "time_train_s"),
        )
    }
    trl_first = statistics.fmean(r for run in trl_runs for r in run["rewards"][:last])
    trl_reward = statistics.fmean(r for run in trl_runs for r in run["rewards"][-last:])
    ours_first = statistics.fmean(m["reward_mean"] for run in our_runs for m in run[:last])
    ours_reward = statistics.fmean(m["reward_mean"] for run in our_runs for m in run[-last:])

    print(
        f"\nGRPO, {args.prompts} prompts x {args.group} samples x {args.max_new_tokens} new "
        f"tokens, {args.steps} steps x {args.repeats} runs each, alternating (median over "
        f"steps {skip + 1}..{args.steps} of every run)\n"
    )
    rows = [
        (
            "trainer",
            "s/step",
            "generate s",
            "reward s",
            "train+other s",
            f"reward, first -> last {last} steps",
        ),
        (
            "TRL GRPOTrainer",
            f"{trl_step:.4f}",
            f"{trl_generate:.4f}",
            "in-process",
            f"{trl_step - trl_generate:.4f}",
            f"{trl_first:.3f} -> {trl_reward:.3f}",
        ),
        (
            "rl_client",
            f"{ours_step:.4f}",
            f"{parts['generate']:.4f}",
            f"{parts['reward wait']:.4f}",
            f"{ours_step - parts['generate'] - parts['reward wait']:.4f}",
            f"{ours_first:.3f} -> {ours_reward:.3f}",
        ),
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for index, row in enumerate(rows):
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)))
        if index == 0:
            print("  ".join("-" * w for w in widths))
    print(f"\nratio ours/TRL (s/step): {ours_step / trl_step:.2f}  (target <= 0.8)")
    print(f"our train step alone: {parts['train']:.4f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
