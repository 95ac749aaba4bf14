"""Memory and time of reading a prompt dataset eagerly (the default) and lazily (`data.lazy`).

Writes a JSONL file of short math rows, then in a fresh process per mode loads it as the
trainer does (`load_prompts`) and draws `--draw` rows in the cursor's shuffled order. Prints
the resident memory the dataset added, the load time and the draw rate, side by side.

    .venv/bin/python benchmarks/data_memory.py --rows 200000
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
from pathlib import Path

MEASURE = """
import json, resource, sys, time
from rl_client.data import PromptCursor, load_prompts
path, lazy, draw = sys.argv[1], sys.argv[2] == "1", int(sys.argv[3])
def rss_mib():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
before = rss_mib()
began = time.perf_counter()
rows = load_prompts(path, default_reward={"name": "math"}, lazy=lazy)
loaded = time.perf_counter() - began
after = rss_mib()
cursor = PromptCursor(len(rows), seed=0, shuffle=True)
began = time.perf_counter()
drawn = [rows[i] for i in cursor.take(draw)]
drew = time.perf_counter() - began
print(json.dumps({"rows": len(rows), "rss_mib": after - before, "load_s": loaded,
                  "draw_per_s": draw / drew, "peak_mib": resource.getrusage(
                      resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def write_rows(path: Path, count: int) -> None:
    rng = random.Random(0)
    with path.open("w") as f:
        for i in range(count):
            a, b = rng.randint(1, 999), rng.randint(1, 999)
            row = {
                "id": f"r{i}",
                "prompt": f"What is {a} + {b}? Put the answer in a box.",
                "reference": str(a + b),
            }
            f.write(json.dumps(row) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=200_000, help="rows in the JSONL file")
    parser.add_argument("--draw", type=int, default=10_000, help="rows drawn after loading")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "prompts.jsonl"
        write_rows(path, args.rows)
        size_mib = path.stat().st_size / 2**20
        results = {}
        for mode, flag in (("eager", "0"), ("lazy", "1")):
            out = subprocess.run(
                [sys.executable, "-c", MEASURE, str(path), flag, str(args.draw)],
                check=True,
                capture_output=True,
                text=True,
            ).stdout
            results[mode] = json.loads(out.strip().splitlines()[-1])
    print(f"{args.rows} rows, {size_mib:.1f} MiB JSONL, {args.draw} rows drawn shuffled")
    print(f"{'mode':<6} {'RSS added MiB':>14} {'load s':>8} {'draws/s':>10}")
    for mode, r in results.items():
        print(f"{mode:<6} {r['rss_mib']:>14.1f} {r['load_s']:>8.2f} {r['draw_per_s']:>10.0f}")
    print(
        f"lazy/eager memory: {results['lazy']['rss_mib'] / results['eager']['rss_mib']:.3f}, "
        f"load time: {results['lazy']['load_s'] / results['eager']['load_s']:.2f}"
    )


if __name__ == "__main__":
    main()
