"""Math verification throughput: our server vs a plain math-verify loop, on the same pairs.

    .venv/bin/python benchmarks/math_throughput.py [--prompts 128] [--group 8] [--hostile 0.05]

The pairs look like an RL step: `--prompts` gold answers of mixed kinds (integers, fractions,
decimals, radicals, pi, tuples, intervals, sets, expressions, equations), `--group` sampled
completions each, with reasoning in <think>, the answer in \\boxed{}, some in an equivalent
form, many wrong, with the repeats a group really has. In one run:
  (a) a plain in-process loop of `math_verify.verify(parse(gold), parse(completion))`;
  (b) our server over gRPC with the default worker count (one per core), through RewardClient;
  (c) (b) again with a fraction `--hostile` of the completions replaced by hostile answers
      (power towers, huge factorials, deep nesting, issue 65's tower, 100 kB answers); benign
      throughput is benign items per second of wall time.
Items/s is items over wall time. p50/p99 are per-item verification times: (a) each loop
iteration, (b)/(c) `Result.elapsed_ms` measured in the worker. The client, the server and its
workers share this machine's cores.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from verifier_server.client import RewardClient
from verifier_server.sidecar import start_server_process
from verifier_server.types import Item, RewardSpec, Status

# gold -> (equivalent forms, wrong forms)
GOLDS: list[tuple[str, list[str], list[str]]] = [
    ("42", ["42", "42.0"], ["41", "24", "420"]),
    ("7", ["7"], ["6", "8", "-7"]),
    ("120", ["120"], ["100", "12"]),
    ("-3", ["-3"], ["3", "-2"]),
    ("2024", ["2024", "2,024"], ["2023", "2025"]),
    (r"\frac{1}{2}", [r"\frac{1}{2}", "0.5", r"\dfrac{2}{4}"], [r"\frac{1}{3}", "0.25"]),
    (r"\frac{3}{8}", [r"\frac{3}{8}", "0.375"], [r"\frac{3}{4}", r"\frac{8}{3}"]),
    ("0.75", ["0.75", r"\frac{3}{4}"], ["0.7", "0.57"]),
    (r"2\sqrt{2}", [r"2\sqrt{2}", r"\sqrt{8}"], [r"\sqrt{2}", r"2\sqrt{3}"]),
    (r"\frac{\sqrt{3}}{2}", [r"\frac{\sqrt{3}}{2}", r"\frac{1}{2}\sqrt{3}"], [r"\frac{1}{2}"]),
    (r"2\pi", [r"2\pi", r"\pi \cdot 2"], [r"\pi", r"4\pi"]),
    (r"1-\frac{1}{e}", [r"1-\frac{1}{e}", r"\frac{e-1}{e}"], [r"1+\frac{1}{e}"]),
    ("(1,2)", ["(1,2)", "(1, 2)"], ["(2,1)", "(1,3)"]),
    ("[0,1)", ["[0,1)"], ["[0,1]", "(0,1)"]),
    (r"\{1,2,3\}", [r"\{3,2,1\}", "1,2,3"], [r"\{1,2\}"]),
    ("x^2+2x+1", ["(x+1)^2", "x^2+2x+1"], ["(x-1)^2", "x^2+1"]),
    ("x=5", ["5", "x=5"], ["x=4", "y=5"]),
    (r"50\%", [r"50\%", "0.5"], ["5", r"25\%"]),
]
HOSTILE = [
    r"\boxed{9^{9^{9^9}}}",
    r"\boxed{(10^7)!}",
    r"\boxed{\dfrac{5^{\left(5^{\left(5^{\left(5^5\right)}\right)}-4\right)}-5}{16}}",
    r"\boxed{" + "(" * 5000 + "1" + ")" * 5000 + "}",
    r"\boxed{" + "1+" * 50_000 + "1}",
]
REASONING = "<think>" + "Let me work through this carefully, step by step. " * 20 + "</think>\n"


def make_pairs(prompts: int, group: int, seed: int = 0) -> list[tuple[str, str]]:
    """(gold, completion) pairs; each group repeats a few distinct answers, as sampling does."""
    rng = random.Random(seed)
    pairs = []
    for _ in range(prompts):
        gold, right, wrong = rng.choice(GOLDS)
        candidates = rng.sample(right, min(2, len(right))) + rng.sample(wrong, min(2, len(wrong)))
        for _ in range(group):
            answer = rng.choice(candidates)
            pairs.append((gold, f"{REASONING}So the answer is $\\boxed{{{answer}}}$."))
    return pairs


def math_verify_loop(pairs: list[tuple[str, str]]) -> tuple[float, list[float], list[bool]]:
    from math_verify import parse, verify

    parse("$1$"), parse("\\boxed{1}")  # load the parser before the clock starts
    times, verdicts = [], []
    start = time.perf_counter()
    for gold, completion in pairs:
        t0 = time.perf_counter()
        verdicts.append(bool(verify(parse(f"${gold}$"), parse(completion))))
        times.append(time.perf_counter() - t0)
    return time.perf_counter() - start, times, verdicts


def server_run(pairs: list[tuple[str, str]], hostile_ids: set[str]):
    """Scores `pairs` on a fresh server (so no verdict is memoised from an earlier run)."""
    items = [
        Item(id=f"i{n}", completion=completion, reward=RewardSpec("math"), reference=gold)
        for n, (gold, completion) in enumerate(pairs)
    ]
    warm = Item(id="warm", completion=r"\boxed{1}", reward=RewardSpec("math"), reference="1")
    process, address = start_server_process([])  # default workers: one per core
    try:
        with RewardClient(address, timeout_s=600, max_batch_items=128) as client:
            client.wait_ready()
            client.score([warm])
            start = time.perf_counter()
            results = client.score(items)
            wall = time.perf_counter() - start
    finally:
        process.terminate()
        process.wait(30)
    benign = [r for r in results if r.id not in hostile_ids]
    assert all(r.status == Status.OK for r in benign), {r.status for r in benign}
    return wall, results, benign


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 else 0


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--prompts", type=int, default=128, help="gold answers")
    parser.add_argument("--group", type=int, default=8, help="completions per gold")
    parser.add_argument("--hostile", type=float, default=0.05, help="hostile share in (c)")
    args = parser.parse_args()

    pairs = make_pairs(args.prompts, args.group)
    print(f"{len(pairs)} (gold, completion) pairs, {os.cpu_count()} cores")
    a_wall, a_times, a_verdicts = math_verify_loop(pairs)

    b_wall, b_results, _ = server_run(pairs, set())
    rng = random.Random(1)
    hostile_ids = set()
    mixed = list(pairs)
    for n in rng.sample(range(len(pairs)), int(len(pairs) * args.hostile)):
        mixed[n] = (pairs[n][0], HOSTILE[n % len(HOSTILE)])
        hostile_ids.add(f"i{n}")
    c_wall, _, c_benign = server_run(mixed, hostile_ids)

    b_scores = [r.score == 1.0 for r in b_results]
    disagreements = sum(x != y for x, y in zip(a_verdicts, b_scores, strict=True))
    rows = [
        ("(a) math_verify.verify(parse, parse) loop", len(pairs) / a_wall,
         [t * 1000 for t in a_times]),
        ("(b) verifier-server math, gRPC", len(pairs) / b_wall,
         [r.elapsed_ms for r in b_results]),
        (f"(c) as (b), {args.hostile:.0%} hostile: benign items", len(c_benign) / c_wall,
         [r.elapsed_ms for r in c_benign]),
    ]  # fmt: skip
    width = max(len(r[0]) for r in rows)
    print(f"\n{'path':<{width}}  {'items/s':>9}  {'p50 ms':>7}  {'p99 ms':>7}  {'vs (a)':>7}")
    print(f"{'-' * width}  {'-' * 9}  {'-' * 7}  {'-' * 7}  {'-' * 7}")
    for name, rate, times in rows:
        print(
            f"{name:<{width}}  {rate:>9,.0f}  {percentile(times, 50):>7.2f}  "
            f"{percentile(times, 99):>7.2f}  {rate / rows[0][1]:>6.2f}x"
        )
    print(f"\nb/a = {rows[1][1] / rows[0][1]:.2f}   (c benign)/(b) = {rows[2][1] / rows[1][1]:.2f}")
    print(f"verdicts where (a) and (b) disagree: {disagreements} of {len(pairs)}")


if __name__ == "__main__":
    main()
