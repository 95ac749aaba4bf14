"""Server overhead: `format` items/s through gRPC vs calling the verifier in-process.

    .venv/bin/python benchmarks/server_overhead.py [--seconds 5] [--batch 256] [--clients 1 8]

Starts a real `verifier-server` subprocess on a loopback port, then for each client count runs
that many client *processes* (as trainers would be), each sending batches of `--batch` items
back to back for `--seconds`. Two client kinds:
  sdk: `RewardClient.score(items)`, what a Python trainer calls (builds protos, parses results);
  raw: a pre-serialised ScoreRequest through a bare stub, i.e. the server's own capacity.
The baseline is `FormatVerifier().score(batch)` in this process, in the same run. Client and
server share this machine's cores, so the ratio is a lower bound for a separate reward host.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from verifier_server.sidecar import start_server_process
from verifier_server.types import Item, RewardSpec

COMPLETION = (
    "<think>" + "Let me reason about this step by step. " * 40 + "</think>\n<answer>42</answer>"
)


def make_items(n: int, prefix: str = "") -> list[Item]:
    return [
        Item(id=f"{prefix}{i}", completion=COMPLETION, reward=RewardSpec("format"))
        for i in range(n)
    ]


def in_process_rate(batch: int, seconds: float) -> float:
    from verifier_server.verifiers.format import FormatVerifier

    verifier, params, items = FormatVerifier(), FormatVerifier.Params(), make_items(batch)
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        results = verifier.score(items, params)
        assert results[-1].score == 1.0
        done += batch
    return done / (time.perf_counter() - start)


def client_loop(
    kind: str, address: str, batch: int, seconds: float, start_at: float, counts
) -> None:
    import grpc

    from verifier_server import convert
    from verifier_server._proto.verifier.v1 import verifier_pb2 as pb
    from verifier_server.client import RewardClient

    items = make_items(batch, prefix=f"{os.getpid()}-")
    if kind == "raw":
        channel = grpc.insecure_channel(
            address, options=[("grpc.max_receive_message_length", 64 << 20)]
        )
        call = channel.unary_unary("/verifier.v1.VerifierService/Score")
        payload = convert.request_from_items(items).SerializeToString()

        def score_once() -> None:
            response = pb.ScoreResponse.FromString(call(payload, timeout=60))
            assert len(response.results) == batch

    else:
        client = RewardClient(address, max_batch_items=batch)

        def score_once() -> None:
            assert client.score(items)[-1].score == 1.0

    score_once()  # warm up the connection
    while time.time() < start_at:
        time.sleep(0.001)
    done, end = 0, start_at + seconds
    while time.time() < end:
        score_once()
        done += batch
    counts.put(done / (time.time() - start_at))


def grpc_rate(kind: str, address: str, clients: int, batch: int, seconds: float) -> float:
    ctx = multiprocessing.get_context("spawn")
    counts = ctx.Queue()
    start_at = time.time() + 3.0  # every client connected and warm before the clock starts
    procs = [
        ctx.Process(target=client_loop, args=(kind, address, batch, seconds, start_at, counts))
        for _ in range(clients)
    ]
    for proc in procs:
        proc.start()
    rates = [counts.get(timeout=seconds + 60) for _ in procs]
    for proc in procs:
        proc.join()
    return sum(rates)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=5.0, help="measuring time per row")
    parser.add_argument("--batch", type=int, default=256, help="items per request")
    parser.add_argument(
        "--clients", type=int, nargs="+", default=[1, 8], help="client process counts"
    )
    parser.add_argument("--kinds", nargs="+", default=["sdk", "raw"], choices=["sdk", "raw"])
    parser.add_argument("--workers", type=int, default=2, help="server worker processes")
    args = parser.parse_args()

    print(
        f"format items of {len(COMPLETION)} chars, batches of {args.batch}, {os.cpu_count()} cores"
    )
    baseline = in_process_rate(args.batch, args.seconds)
    process, address = start_server_process(
        ["--workers", str(args.workers), "--log-level", "WARNING"]
    )
    rows = [("in-process FormatVerifier.score", baseline)]
    try:
        for kind in args.kinds:
            for clients in args.clients:
                rows.append(
                    (
                        f"gRPC {kind}, {clients} client process(es)",
                        grpc_rate(kind, address, clients, args.batch, args.seconds),
                    )
                )
    finally:
        process.terminate()
        process.wait(30)
    width = max(len(name) for name, _ in rows)
    print(f"\n{'path':<{width}}  {'items/s':>10}  {'vs in-process':>13}")
    print(f"{'-' * width}  {'-' * 10}  {'-' * 13}")
    for name, rate in rows:
        print(f"{name:<{width}}  {rate:>10,.0f}  {rate / baseline:>12.2f}x")


if __name__ == "__main__":
    main()
