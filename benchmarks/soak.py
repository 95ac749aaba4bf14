"""Soak: mixed load with random worker kills and bad input for N minutes; does anything leak?

    .venv/bin/python benchmarks/soak.py [--minutes 10] [--workers 2] [--clients 4]
                                        [--kill-every-s 5] [--forkserver-every 0]

Starts a real `verifier-server` subprocess. `--clients` threads each send, back to back,
requests of a random mix (format and string_check in bulk, math, json_schema), with a
deadline; one in ten requests carries bad items (unknown verifier, bad params, a reference
that does not parse), and one in fifty is bytes that are not a request. Every
`--kill-every-s` a random worker is SIGKILLed (with `--forkserver-every N`, every Nth kill is
the forkserver's: all workers die with it and it restarts). At the end it prints items/s, RPC
latency percentiles, how items ended (OK, and each non-OK status), "lost" items (a wrong verdict for
a good item, or a non-OK status that neither a kill, the bad input nor overload explains), and
the server's fds, threads and RSS at start and end.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import signal
import sys
import threading
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import grpc

from verifier_server._proto.verifier.v1 import verifier_pb2 as pb
from verifier_server._proto.verifier.v1 import verifier_pb2_grpc as pb_grpc
from verifier_server.sidecar import start_server_process

GOOD = "<think>ok</think><answer>42</answer>"
SCHEMA = {"type": "object", "required": ["a"], "properties": {"a": {"type": "integer"}}}


def good_item(rng: random.Random, item_id: str) -> tuple[pb.Item, float]:
    """A well-formed item and the score it must get."""
    kind = rng.choice(["format", "string_check", "math", "json_schema"])
    right = rng.random() < 0.5
    item = pb.Item(id=item_id, reward=pb.RewardSpec(name=kind))
    if kind == "format":
        item.completion = GOOD if right else "no tags"
    elif kind == "string_check":
        item.completion = GOOD if right else "<answer>41</answer>"
        item.reward.params.update({"extract": "answer_tag"})
        item.reference.string_value = "42"
    elif kind == "math":
        item.completion = r"so \boxed{\frac{1}{2}}" if right else r"\boxed{0.4}"
        item.reference.string_value = "1/2"
    else:
        item.completion = '{"a": 1}' if right else '{"a": "x"}'
        item.reference.struct_value.update(SCHEMA)
    return item, 1.0 if right else 0.0


def bad_item(rng: random.Random, item_id: str) -> pb.Item:
    item = pb.Item(id=item_id, completion="x")
    choice = rng.randrange(3)
    if choice == 0:
        item.reward.name = "no_such_verifier"
    elif choice == 1:
        item.reward.name = "format"
        item.reward.params.update({"no_such_param": 1})
    else:
        item.reward.name = "math"
        item.reference.string_value = r"\frac{"
    return item


def server_usage(pid: int) -> tuple[int, int, float]:
    """(open fds, threads, RSS MB) of the server process itself."""
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    status = Path(f"/proc/{pid}/status").read_text()
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    return fds, int(fields["Threads"]), int(fields["VmRSS"].split()[0]) / 1024


def processes() -> list[tuple[int, int, bytes]]:
    """(pid, parent pid, command line) of every process still there."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
                cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
            except OSError:
                continue
            found.append((int(entry), int(stat.rsplit(")", 1)[1].split()[1]), cmdline))
    return found


def forkserver_pids(server_pid: int) -> list[int]:
    """The server's forkserver (the parent of its workers)."""
    return [
        pid for pid, parent, cmd in processes() if parent == server_pid and b"forkserver" in cmd
    ]


def worker_pids(server_pid: int) -> list[int]:
    """The pool's workers: children of the server's forkserver child."""
    forkservers = set(forkserver_pids(server_pid))
    return [pid for pid, parent, _ in processes() if parent in forkservers]


class Tally:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.statuses: Counter[str] = Counter()
        self.lost = 0
        self.latencies_s: list[float] = []
        self.rpc_errors: Counter[str] = Counter()


def client(address: str, seed: int, end: float, tally: Tally) -> None:
    rng = random.Random(seed)
    with grpc.insecure_channel(address) as channel:
        stub = pb_grpc.VerifierServiceStub(channel)
        garbage = channel.unary_unary("/verifier.v1.VerifierService/Score")
        n = 0
        while time.monotonic() < end:
            n += 1
            if n % 50 == 0:
                try:
                    garbage(b"\xff\xfe not a request", timeout=5)
                except grpc.RpcError as exc:
                    with tally.lock:
                        tally.rpc_errors[f"garbage:{exc.code().name}"] += 1
                continue
            size = rng.choice([1, 8, 64, 256])
            items, expected = [], []
            for k in range(size):
                item, score = good_item(rng, f"{seed}-{n}-{k}")
                items.append(item)
                expected.append(score)
            if n % 10 == 0:
                items.append(bad_item(rng, f"{seed}-{n}-bad"))
                expected.append(None)
            started = time.monotonic()
            try:
                response = stub.Score(pb.ScoreRequest(items=items), timeout=10)
            except grpc.RpcError as exc:
                with tally.lock:
                    tally.rpc_errors[exc.code().name] += 1
                continue
            elapsed = time.monotonic() - started
            with tally.lock:
                tally.latencies_s.append(elapsed)
                for result, score in zip(response.results, expected, strict=True):
                    status = pb.Status.Name(result.status).removeprefix("STATUS_")
                    tally.statuses[status] += 1
                    if score is None:
                        tally.lost += status != "INVALID_REQUEST"
                    elif status == "OK":
                        tally.lost += result.score != score
                    elif not (
                        status in ("OVERLOADED", "TIMEOUT") or result.reason == "worker_died"
                    ):
                        tally.lost += 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--kill-every-s", type=float, default=5.0)
    parser.add_argument(
        "--forkserver-every", type=int, default=0,
        help="every Nth kill is the forkserver's (its workers die with it); 0: never",
    )  # fmt: skip
    args = parser.parse_args()

    process, address = start_server_process(["--workers", str(args.workers)])
    try:
        time.sleep(2.0)  # warm-up: workers ready, sandboxes up
        start_usage = server_usage(process.pid)
        tally, started = Tally(), time.monotonic()
        end = started + args.minutes * 60
        threads = [
            threading.Thread(target=client, args=(address, seed, end, tally))
            for seed in range(args.clients)
        ]
        for thread in threads:
            thread.start()
        kills, rng = 0, random.Random(0)
        while time.monotonic() < end:
            time.sleep(min(args.kill_every_s, max(0.0, end - time.monotonic())))
            pids = worker_pids(process.pid)
            if args.forkserver_every and (kills + 1) % args.forkserver_every == 0:
                pids = forkserver_pids(process.pid)
            if pids and time.monotonic() < end:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(rng.choice(pids), signal.SIGKILL)
                kills += 1
            done = sum(tally.statuses.values())
            print(f"  {time.monotonic() - started:6.0f} s  {done} items  {kills} kills", flush=True)
        for thread in threads:
            thread.join()
        elapsed = time.monotonic() - started
        time.sleep(3.0)  # let replacements settle before the final reading
        end_usage = server_usage(process.pid)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(30)

    latencies = sorted(tally.latencies_s) or [0.0]
    pct = {p: latencies[min(len(latencies) - 1, int(p / 100 * len(latencies)))] for p in (50, 99)}
    total = sum(tally.statuses.values())
    print(f"\nsoak: {args.minutes:g} min, {args.workers} workers, {args.clients} clients, "
          f"{kills} worker kills")  # fmt: skip
    print(f"{'items/s':>22}  {total / elapsed:,.0f}")
    print(f"{'RPC p50 / p99':>22}  {pct[50] * 1000:.1f} ms / {pct[99] * 1000:.1f} ms")
    for status, n in sorted(tally.statuses.items()):
        print(f"{status:>22}  {n}")
    print(f"{'RPC errors':>22}  {dict(tally.rpc_errors) or 0}")
    print(f"{'items lost':>22}  {tally.lost}")
    print(f"{'':>22}  {'start':>10}  {'end':>10}")
    for label, a, b in zip(("server fds", "server threads", "server RSS MB"), start_usage,
                           end_usage, strict=True):  # fmt: skip
        print(f"{label:>22}  {a:>10.0f}  {b:>10.0f}")


if __name__ == "__main__":
    main()
