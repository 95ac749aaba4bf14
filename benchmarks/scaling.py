"""Step time, tokens/s and weight-sync time of one training config on 1 and on N processes
(`torchrun -m rl_client train`, FSDP2), on the same global batch, and whether the runs agree.

    python benchmarks/scaling.py [--steps 6] [--nproc 1,2] [--models 64x2,512x4]
                                 [--set KEY=VALUE ...]

For each model (HIDDENxLAYERS: a random Qwen2-style toy model, `rl_client.toy`; 64x2 is the
tests' model, 512x4 one of 17M parameters where the communication cost shows) the same config
(same seed, same `rollout.prompts_per_step` prompts a step, so the same global batch) is
launched once per process count, with its sidecar reward server. The reward is `string_check`
"the completion contains a digit": about half of a random model's completions do, so the
groups' advantages are not zero and the update does real work.

Prints, per model and process count, medians over the steps after `--warmup`: s/step, completion
tokens/s (the step's sampled tokens over its time), the generate / train / sync split
(`time_sync_s` in metrics.jsonl: on N processes the FSDP full-state-dict gather plus the
engine's reload; 0 on one process, whose engine shares the module), and each ratio to the
first process count. Every process runs `--threads` (1) torch threads, so N processes use N
cores where one process uses one: on a CPU the N-process figure includes that extra core.

Then the agreement. Each step must draw the same prompts on every process count (checked
exactly, from rollouts.jsonl: one data cursor, contiguous shares). The completions cannot be
the same: each process samples with its own stream (`train.seed` + rank), so the rewards and
losses are those of different samples of the same policy. They must agree within sampling
noise: the mean reward over all steps within 3 standard errors of the first count's. And on
every count the engine must sample from the sharded learner's weights: `logprob_drift_max`
(the largest |sampler - learner| logprob of a step's tokens) at most `--max-drift` (1e-3, for
float32; bf16 needs more) on every step. Per step, the reward, loss and gradient norm are
printed side by side. The update itself (same rollouts -> same weights, to 2e-6) is tested
exactly by tests/rl_client/test_distributed.py. Exits 1 when a run fails or the runs disagree.

`--model-path` trains a given Hugging Face model instead of the toy ones (the same prompts).
`--summary FILE` also writes the timing tables and the problems as JSON. `--set` passes
KEY=VALUE overrides to every run (benchmarks/gpu_check.sh uses it for
`train.device=cuda`, `train.bf16=true`, `rollout.engine=vllm`, ...).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
REWARD = {"name": "string_check", "params": {"operation": "regex"}}


@dataclass(frozen=True)
class Run:
    """One launch's per-step metrics, the prompt ids each step drew (in rank order) and the
    completions and completion tokens each step sampled (all processes)."""

    metrics: list[dict]
    prompts: dict[int, list[str]]
    samples: dict[int, int]
    tokens: dict[int, int]


def parse_model(spec: str) -> tuple[int, int]:
    hidden, _, layers = spec.partition("x")
    if not (hidden.isdigit() and layers.isdigit() and int(hidden) % 64 == 0):
        raise SystemExit(f"--models: {spec!r} is not HIDDENxLAYERS with HIDDEN a multiple of 64")
    return int(hidden), int(layers)


def write_config(directory: Path, model: Path, args: argparse.Namespace) -> Path:
    from rl_client import toy

    prompts = toy.write_rl_prompts(
        directory / "prompts.jsonl", 512, seed=0, reward=REWARD, reference=lambda _: "[0-9]"
    )
    settings = {
        "model": {"path": str(model)},
        "data": {"path": str(prompts)},
        "rollout": {
            "prompts_per_step": args.prompts,
            "group_size": args.group,
            "max_new_tokens": args.max_new_tokens,
        },
        "algorithm": {"preset": "grpo", "kl_coef": 0.0},
        "train": {"steps": args.steps, "lr": 1e-4, "micro_batch_size": 8, "seed": 0},
        "reward": {"sidecar_workers": 1},
        "output": {"progress": False, "trackers": [], "resume": False},
    }
    settings["output"]["save_every"] = args.steps + 1  # timings without checkpoint writes
    config = directory / "config.yaml"
    config.write_text(yaml.safe_dump(settings))
    return config


def launch(config: Path, output: Path, nproc: int, args: argparse.Namespace) -> Run:
    """`torchrun --nproc_per_node nproc -m rl_client train`; its log on failure."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    command += ["--nproc_per_node", str(nproc), "-m", "rl_client", "train", "--config"]
    threads = args.threads or max(1, (os.cpu_count() or 1) // nproc)
    command += [str(config), f"output.dir={output}", f"train.threads={threads}", *args.set]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": str(threads)}  # code first
    print(f"$ {' '.join(command[1:])}", flush=True)
    done = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        sys.stderr.write(done.stdout[-3000:] + done.stderr[-6000:])
        raise SystemExit(f"the {nproc}-process run failed (exit {done.returncode})")
    metrics = [json.loads(line) for line in (output / "metrics.jsonl").read_text().splitlines()]
    prompts: dict[int, list[str]] = {}
    samples: dict[int, int] = {}
    tokens: dict[int, int] = {}
    for line in (output / "rollouts.jsonl").read_text().splitlines():
        record = json.loads(line)
        step = record["step"]
        drawn = prompts.setdefault(step, [])
        if not drawn or drawn[-1] != record["prompt_id"]:  # a group's G records in a row
            drawn.append(record["prompt_id"])
        samples[step] = samples.get(step, 0) + 1
        tokens[step] = tokens.get(step, 0) + record["tokens"]
    return Run(metrics, prompts, samples, tokens)


def timings(run: Run, warmup: int) -> dict[str, float]:
    """Medians over the steps after the warm-up."""
    after = run.metrics[warmup:]
    if not after:
        raise SystemExit(f"--steps must exceed --warmup ({warmup})")

    def median(key: str) -> float:
        return statistics.median(m[key] for m in after)

    rates = [run.tokens[m["step"]] / m["time_step_s"] for m in after]
    return {
        "s/step": median("time_step_s"),
        "tokens/s": statistics.median(rates),
        "generate": median("time_generate_s"),
        "train": median("time_train_s"),
        "sync": median("time_sync_s"),
    }


# Per step, side by side for every process count: the reward of the step's samples, the loss
# (on-policy GRPO: about 0, the advantages being centred) and the gradient norm.
COLUMNS = {"reward_mean": "reward", "loss": "loss", "grad_norm": "grad norm"}


def agreement(runs: dict[int, Run], max_drift: float) -> list[str]:
    """Prints the per-step metrics side by side; returns the problems (none: they agree)."""
    counts = list(runs)
    first = runs[counts[0]]
    print("step" + "".join(f"{f'{c} {n}p':>13}" for c in COLUMNS.values() for n in counts))
    for index, step in enumerate(first.metrics):
        rows = [runs[n].metrics[index] for n in counts]
        cells = [f"{r[k]:>13.3g}" if r.get(k) is not None else f"{'-':>13}"
                 for k in COLUMNS for r in rows]  # fmt: skip
        print(f"{step['step']:>4}" + "".join(cells))
    problems = []
    same_prompts = all(runs[n].prompts == first.prompts for n in counts)
    print("the same prompts every step: " + ("yes" if same_prompts else "NO"))
    if not same_prompts:
        problems.append(f"the process counts {counts} drew different prompts")
    for n, run in runs.items():
        # The engine samples from the weights the sharded learner has: after every sync its
        # logprobs are the learner's, up to float error.
        drift = max(m["logprob_drift_max"] or 0.0 for m in run.metrics)
        print(f"{n}p: largest |sampler - learner| logprob {drift:.2g} (limit {max_drift:g})")
        if not drift <= max_drift:
            problems.append(f"{n} processes: logprob drift {drift:.3g} > {max_drift:g}")
        if not all(math.isfinite(m.get("loss", math.nan)) for m in run.metrics):
            problems.append(f"{n} processes: a step without a finite loss")
    samples = {n: sum(run.samples.values()) for n, run in runs.items()}
    means = {n: statistics.fmean(m["reward_mean"] for m in run.metrics) for n, run in runs.items()}
    spread = statistics.fmean(m["reward_std"] ** 2 for m in first.metrics)
    for n in counts[1:]:
        bound = 3 * math.sqrt(spread / samples[counts[0]] + spread / samples[n])
        gap = abs(means[n] - means[counts[0]])
        print(f"mean reward {counts[0]}p {means[counts[0]]:.3f}, {n}p {means[n]:.3f}: "
              f"|difference| {gap:.3f}, 3 standard errors {bound:.3f}")  # fmt: skip
        if gap > bound:
            problems.append(f"{n} processes: mean reward differs by {gap:.3f} > {bound:.3f}")
    return problems


def report(label: str, results: dict[int, dict[str, float]]) -> None:
    """The timing table; ratios to the first process count (sync: none when that is ~0)."""
    counts = list(results)
    base = results[counts[0]]
    columns = list(base)
    print(f"\n{label}")
    print(f"{'processes':<10}" + "".join(f"{c:>10}" for c in columns)
          + "".join(f"{c + ' x':>12}" for c in ("s/step", "tokens/s", "sync")))  # fmt: skip
    for n, row in results.items():
        ratios = [f"{row[c] / base[c]:>12.2f}" for c in ("s/step", "tokens/s")]
        # One process's engine shares the learner's module: its sync is ~0, no ratio.
        ratios.append(
            f"{row['sync'] / base['sync']:>12.2f}" if base["sync"] > 1e-3 else f"{'-':>12}"
        )
        print(f"{n:<10}" + "".join(f"{row[c]:>10.3f}" for c in columns) + "".join(ratios))


def threads_text(threads: int) -> str:
    if threads:
        return f"{threads} thread(s) a process"
    return f"{os.cpu_count()} cores shared by the processes"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=6, help="training steps per run")
    parser.add_argument("--warmup", type=int, default=2, help="first steps left out of timings")
    parser.add_argument("--nproc", default="1,2", help="process counts, comma-separated")
    parser.add_argument("--models", default="64x2,512x4", help="HIDDENxLAYERS, comma-separated")
    parser.add_argument("--prompts", type=int, default=4, help="rollout.prompts_per_step")
    parser.add_argument("--group", type=int, default=4, help="rollout.group_size")
    parser.add_argument("--max-new-tokens", type=int, default=32, help="rollout.max_new_tokens")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads per process (0: the machine's cores over the process count, so "
        "every count has the same cores; on a loaded 2-core machine, 2 threads in one process "
        "ran 3-30x slower than 1)",
    )
    parser.add_argument(
        "--max-drift", type=float, default=1e-3, help="largest logprob_drift_max accepted"
    )
    parser.add_argument("--model-path", help="a Hugging Face model to use instead of --models")
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="override for every run"
    )
    parser.add_argument("--dir", help="work directory (default: a temporary one)")
    parser.add_argument("--summary", help="write {tables, problems} as JSON to this file")
    args = parser.parse_args()
    counts = [int(n) for n in args.nproc.split(",")]
    if any(args.prompts % n for n in counts):
        raise SystemExit(f"--prompts {args.prompts} must be a multiple of every --nproc {counts}")

    from rl_client import toy

    problems = []
    with tempfile.TemporaryDirectory() as scratch:
        directory = Path(args.dir or scratch)
        models = (
            {Path(args.model_path).name: Path(args.model_path)}
            if args.model_path
            else {spec: parse_model(spec) for spec in args.models.split(",")}
        )
        tables = {}
        for spec, shape in models.items():
            place = directory / spec
            place.mkdir(parents=True, exist_ok=True)
            if isinstance(shape, Path):
                model = shape
            else:
                model = toy.build_model(place / "model", hidden_size=shape[0], layers=shape[1])
            config = write_config(place, model, args)
            runs = {n: launch(config, place / f"run_{n}p", n, args) for n in counts}
            print(f"\nmodel {spec}: per-step reward_mean and loss")
            problems += [f"model {spec}: {p}" for p in agreement(runs, args.max_drift)]
            tables[spec] = {n: timings(run, args.warmup) for n, run in runs.items()}
        print(f"\n{args.steps} steps, {args.prompts} prompts x {args.group} samples x up to "
              f"{args.max_new_tokens} tokens, {threads_text(args.threads)}; medians over "
              f"steps {args.warmup + 1}..{args.steps}; times in s")  # fmt: skip
        for spec, results in tables.items():
            report(f"model {spec}", results)
    for problem in problems:
        print(f"DISAGREE: {problem}")
    if args.summary:
        Path(args.summary).write_text(json.dumps({"tables": tables, "problems": problems}))
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
