"""Sandbox overhead: per-run wall time of a sandboxed program vs a plain subprocess.

    .venv/bin/python benchmarks/sandbox_overhead.py [--runs 200] [--items 20] [--slots 2]

In one run, sequentially (one run in flight at a time, so the figures are latencies):
  (a) plain: `/usr/bin/python3 -c PROGRAM` with subprocess.run, no isolation (the baseline);
  (b) sandboxed: the same program through a warm SandboxPool (runner="python");
  (b') sandboxed exec: `/usr/bin/python3 -c PROGRAM` exec'd inside the sandbox;
  (c) a full `code` item with 10 stdin/stdout tests through a real server (2 workers).
Prints median and p99 wall time and runs/s for each, and each median's ratio to (a).
Needs root (the sandbox does). Timings on a shared machine are noisy.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sandboxes import Limits, Program, SandboxPool

PROGRAM = "import sys\nprint(sum(map(int, sys.stdin.read().split())))"
STDIN = b"1 2 3\n"


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


def code_item_rate(items: int) -> list[float]:
    from verifier_server import Item, RewardSpec
    from verifier_server.client import RewardClient
    from verifier_server.sidecar import start_server_process

    process, address = start_server_process(["--port", "0", "--workers", "2"])
    try:
        tests = [{"stdin": f"{i} {i}\n", "stdout": f"{2 * i}\n"} for i in range(10)]
        spec = RewardSpec("code", {"time_limit_s": 1})
        completion = f"```python\n{PROGRAM}\n```"
        with RewardClient(address, timeout_s=120) as client:
            client.wait_ready(60)

            def one() -> None:
                item = Item(id="x", completion=completion, reward=spec, reference={"tests": tests})
                result = client.score([item])[0]
                assert result.ok and result.score == 1.0, result

            return timed(one, items)
    finally:
        process.terminate()
        process.wait(30)


def row(name: str, times: list[float], baseline_ms: float | None) -> str:
    ordered = sorted(times)
    median_ms = statistics.median(ordered) * 1000
    p99_ms = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000
    ratio = f"{median_ms / baseline_ms:.2f}x" if baseline_ms else "1.00x"
    rate = len(times) / sum(times)
    return f"| {name} | {median_ms:.1f} | {p99_ms:.1f} | {rate:.0f} | {ratio} |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=200, help="runs per single-program row")
    parser.add_argument("--items", type=int, default=20, help="code items for row (c)")
    parser.add_argument("--slots", type=int, default=2, help="slots of the sandbox pool")
    args = parser.parse_args()

    plain_times = timed(plain, args.runs)
    limits = Limits(cpu_s=2, wall_s=5, memory_mb=256)
    inline = Program(("/work/main.py",), files={"main.py": PROGRAM.encode()}, stdin=STDIN,
                     runner="python")  # fmt: skip
    exec_program = Program(("/usr/bin/python3", "-c", PROGRAM), stdin=STDIN)
    with SandboxPool(args.slots) as pool:
        pool.start()

        def sandboxed(program: Program) -> Callable[[], None]:
            def run() -> None:
                result = pool.run(program, limits)
                assert result.stdout == b"6\n", result

            return run

        inline_times = timed(sandboxed(inline), args.runs)
        exec_times = timed(sandboxed(exec_program), args.runs)
    item_times = code_item_rate(args.items)

    baseline_ms = statistics.median(plain_times) * 1000
    print("| path | median ms | p99 ms | runs/s | median vs (a) |")
    print("|---|---:|---:|---:|---:|")
    print(row("(a) plain `python3 -c` subprocess", plain_times, None))
    print(row("(b) sandboxed, warm slot (runner=python)", inline_times, baseline_ms))
    print(row("(b') sandboxed, exec `python3 -c`", exec_times, baseline_ms))
    print(row("(c) `code` item, 10 tests, via server", item_times, baseline_ms))


if __name__ == "__main__":
    main()
