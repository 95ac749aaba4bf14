"""Sandbox overhead: per-run wall time of a sandboxed program vs a plain subprocess, and of
whole `code` items through a server; optionally against another checkout, side by side.

    .venv/bin/python benchmarks/sandbox_overhead.py [--runs 200] [--items 20] [--slots 2]
        [--compare-with /path/to/other/checkout] [--rounds 2]

Sequentially (one run in flight at a time, so the figures are latencies):
  (a) plain: `/usr/bin/python3 -c PROGRAM` with subprocess.run, no isolation (the baseline);
  (b) sandboxed: the same program through a warm SandboxPool (runner="python");
  (b') sandboxed exec: `/usr/bin/python3 -c PROGRAM` exec'd inside the sandbox;
  (c) a `code` item with 10 stdin/stdout tests through a real server (2 workers);
  (d) a `code` item with a HumanEval-style test (`check(candidate)`, 3 asserts);
  (e) a `code` item with 3 MBPP-style asserts.
Prints median and p99 wall time and runs/s for each, and each median's ratio to (a). With
--compare-with, each checkout is measured in its own process (this script with the other
checkout first on sys.path, and its server), alternating `--rounds` times, and the table
shows both medians and their ratio. Needs root (the sandbox does). Timings on a shared
machine are noisy.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

THIS_TREE = str(Path(__file__).resolve().parents[1])
TREE = os.environ.get("VERIFIER_RL_BENCH_TREE") or THIS_TREE
sys.path.insert(0, TREE)

from sandboxes import Limits, Program, SandboxPool  # noqa: E402 (after the tree is on the path)

PROGRAM = "import sys\nprint(sum(map(int, sys.stdin.read().split())))"
STDIN = b"1 2 3\n"
FUNCTION = "def add(a, b):\n    return a + b\n"
ROWS = {
    "a": "(a) plain `python3 -c` subprocess",
    "b": "(b) sandboxed, warm slot (runner=python)",
    "b'": "(b') sandboxed, exec `python3 -c`",
    "c": "(c) `code` item, 10 stdin/stdout tests, via server",
    "d": "(d) `code` item, HumanEval check() with 3 asserts, via server",
    "e": "(e) `code` item, 3 MBPP asserts, via server",
}


def timed(fn: Callable[[], object], runs: int) -> list[float]:
    fn()  # warm
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def plain() -> None:
    out = subprocess.run(["/usr/bin/python3", "-c", PROGRAM], input=STDIN, capture_output=True)
    assert out.stdout == b"6\n", out


def code_items(items: int) -> dict[str, list[float]]:
    from verifier_server import Item, RewardSpec
    from verifier_server.client import RewardClient
    from verifier_server.sidecar import start_server_process

    env = {**os.environ, "PYTHONPATH": TREE}
    process, address = start_server_process(["--port", "0", "--workers", "2"], env=env)
    stdio = {"tests": [{"stdin": f"{i} {i}\n", "stdout": f"{2 * i}\n"} for i in range(10)]}
    humaneval = {
        "test": "def check(candidate):\n    assert candidate(1, 2) == 3\n"
        "    assert candidate(-1, 1) == 0\n    assert abs(candidate(0.1, 0.2) - 0.3) < 1e-9\n",
        "entry_point": "add",
    }
    mbpp = {"asserts": ["assert add(1, 2) == 3", "assert add(2, 2) == 4", "assert add(0, 0) == 0"]}
    cases = {"c": (PROGRAM, stdio), "d": (FUNCTION, humaneval), "e": (FUNCTION, mbpp)}
    try:
        spec = RewardSpec("code", {"time_limit_s": 1})
        with RewardClient(address, timeout_s=120) as client:
            client.wait_ready(60)

            def scorer(code: str, reference: dict) -> Callable[[], None]:
                def one() -> None:
                    item = Item("x", f"```python\n{code}\n```", reward=spec, reference=reference)
                    result = client.score([item])[0]
                    assert result.ok and result.score == 1.0, result

                return one

            return {row: timed(scorer(*case), items) for row, case in cases.items()}
    finally:
        process.terminate()
        process.wait(30)


def measure(runs: int, items: int, slots: int) -> dict[str, list[float]]:
    times = {"a": timed(plain, runs)}
    limits = Limits(cpu_s=2, wall_s=5, memory_mb=256)
    inline = Program(("/work/main.py",), files={"main.py": PROGRAM.encode()}, stdin=STDIN,
                     runner="python")  # fmt: skip
    exec_program = Program(("/usr/bin/python3", "-c", PROGRAM), stdin=STDIN)
    with SandboxPool(slots) as pool:
        pool.start()

        def sandboxed(program: Program) -> Callable[[], None]:
            def run() -> None:
                result = pool.run(program, limits)
                assert result.stdout == b"6\n", result

            return run

        times["b"] = timed(sandboxed(inline), runs)
        times["b'"] = timed(sandboxed(exec_program), runs)
    times.update(code_items(items))
    return times


def stats(times: list[float]) -> tuple[float, float, float]:
    ordered = sorted(times)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return statistics.median(ordered) * 1000, p99 * 1000, len(times) / sum(times)


def print_table(times: dict[str, list[float]]) -> None:
    baseline_ms = stats(times["a"])[0]
    print("| path | median ms | p99 ms | runs/s | median vs (a) |")
    print("|---|---:|---:|---:|---:|")
    for row, name in ROWS.items():
        median_ms, p99_ms, rate = stats(times[row])
        print(f"| {name} | {median_ms:.1f} | {p99_ms:.1f} | {rate:.0f} | "
              f"{median_ms / baseline_ms:.2f}x |")  # fmt: skip


def compare(args: argparse.Namespace) -> None:
    """Alternates measuring the other checkout ("before") and this one ("after")."""
    trees = {"before": str(Path(args.compare_with).resolve()), "after": THIS_TREE}
    merged: dict[str, dict[str, list[float]]] = {label: {} for label in trees}
    for _ in range(args.rounds):
        for label, tree in trees.items():
            command = [sys.executable, __file__, "--json", "--runs", str(args.runs),
                       "--items", str(args.items), "--slots", str(args.slots)]  # fmt: skip
            env = {**os.environ, "VERIFIER_RL_BENCH_TREE": tree, "PYTHONPATH": tree}
            out = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
            for row, times in json.loads(out.stdout).items():
                merged[label].setdefault(row, []).extend(times)
    print(f"before: {trees['before']}\nafter: {trees['after']}\n")
    print("| path | before median ms | after median ms | after / before | after vs (a) |")
    print("|---|---:|---:|---:|---:|")
    plain_ms = stats(merged["after"]["a"])[0]
    for row, name in ROWS.items():
        before, after = stats(merged["before"][row])[0], stats(merged["after"][row])[0]
        print(f"| {name} | {before:.1f} | {after:.1f} | {after / before:.2f}x | "
              f"{after / plain_ms:.2f}x |")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=200, help="runs per single-program row")
    parser.add_argument("--items", type=int, default=20, help="code items per item row")
    parser.add_argument("--slots", type=int, default=2, help="slots of the sandbox pool")
    parser.add_argument("--compare-with", help="another checkout to measure as 'before'")
    parser.add_argument("--rounds", type=int, default=2, help="alternations with --compare-with")
    parser.add_argument("--json", action="store_true", help="print raw times as JSON")
    args = parser.parse_args()
    if args.compare_with:
        compare(args)
        return
    times = measure(args.runs, args.items, args.slots)
    if args.json:
        print(json.dumps(times))
    else:
        print_table(times)


if __name__ == "__main__":
    main()
