"""Reward-model throughput: cross-request batching vs scoring one request at a time.

    .venv/bin/python benchmarks/reward_model.py [--seconds 5] [--callers 32] [--hidden 256]

Builds a small randomly initialised Llama reward model (--hidden, --layers; word-level
tokenizer), saves it to a temp directory and starts a real `verifier-server` that serves it
twice under two names: `single` (max_batch_size 1: every request is scored alone, the way a
reward model is usually called) and `batched` (max_batch_size --max-batch, max_wait_ms
--wait-ms: items from concurrent requests share forward passes). The same load drives both:
--callers concurrent callers, each sending one-item requests back to back (as a trainer
streams completions as they finish), for each completion length in --tokens (words, about
one token each). Prints items/s for each, the mean batch size seen, and the ratio. On CPU a
small model is compute-bound well before batch 32, so the gain shrinks as inputs grow; on a
GPU (--device cuda) a forward pass costs nearly the same for 1 or 32 items.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests" / "support")]

from tiny_models import BASIC_WORDS, random_reward_model  # noqa: E402

from verifier_server.client import AsyncRewardClient  # noqa: E402
from verifier_server.sidecar import start_server_process  # noqa: E402
from verifier_server.types import Item, RewardSpec  # noqa: E402


async def drive(address: str, model: str, callers: int, seconds: float, tokens: int) -> dict:
    """`callers` loops of one-item requests for `seconds`; items/s and mean batch size."""
    rng = random.Random(0)
    async with AsyncRewardClient(address, timeout_s=120) as client:

        def item(n: int) -> Item:
            words = " ".join(rng.choices(BASIC_WORDS, k=tokens))
            reward = RewardSpec("reward_model", {"model": model})
            return Item(id=str(n), prompt="rate the answer", completion=words, reward=reward)

        await client.score([item(0)])  # warm up the model and the connection
        done, batch_sizes = 0, []
        end = time.monotonic() + seconds

        async def caller() -> None:
            nonlocal done
            while time.monotonic() < end:
                (result,) = await client.score([item(done)])
                assert result.ok, result
                done += 1
                batch_sizes.append(result.details["batch_size"])

        start = time.monotonic()
        await asyncio.gather(*(caller() for _ in range(callers)))
        elapsed = time.monotonic() - start
    return {"items_s": done / elapsed, "batch": sum(batch_sizes) / max(1, len(batch_sizes))}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=5.0, help="measuring time per row")
    parser.add_argument("--callers", type=int, default=32, help="concurrent one-item callers")
    parser.add_argument(
        "--tokens", type=int, nargs="+", default=[16, 64], help="words per completion"
    )
    parser.add_argument("--hidden", type=int, default=256, help="model hidden size")
    parser.add_argument("--layers", type=int, default=4, help="model layers")
    parser.add_argument("--max-batch", type=int, default=32, help="batched: max_batch_size")
    parser.add_argument("--wait-ms", type=float, default=5.0, help="batched: max_wait_ms")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, auto")
    parser.add_argument(
        "--torch-threads",
        type=int,
        default=1,
        help="torch threads in the server (1: client and server share this machine's cores, "
        "and oversubscribed OpenMP threads were 100x slower per matmul here)",
    )
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        path = random_reward_model(Path(tmp) / "rm", hidden=args.hidden, layers=args.layers)
        common = {"path": str(path), "device": args.device, "max_length": 512}
        models = {
            "single": {**common, "max_batch_size": 1, "max_wait_ms": 0},
            "batched": {**common, "max_batch_size": args.max_batch, "max_wait_ms": args.wait_ms},
        }
        config = Path(tmp) / "server.yaml"
        settings = {"reward_model": {"models": models, "torch_threads": args.torch_threads}}
        config.write_text(json.dumps({"server": {"workers": 1}, "verifier_settings": settings}))
        process, address = start_server_process(["--config", str(config)])
        try:
            rows = {
                (tokens, name): asyncio.run(
                    drive(address, name, args.callers, args.seconds, tokens)
                )
                for tokens in args.tokens
                for name in ("single", "batched")
            }
        finally:
            process.terminate()
            process.wait(30)
    print(
        f"reward model: Llama hidden {args.hidden}, {args.layers} layers, {args.device}, "
        f"{args.torch_threads} torch thread(s); {args.callers} concurrent callers of one-item "
        f"requests; {os.cpu_count()} cores shared by client and server"
    )
    print(f"\n{'words':>5}  {'path':<44}  {'items/s':>9}  {'mean batch':>10}  {'vs single':>9}")
    print(f"{'-' * 5}  {'-' * 44}  {'-' * 9}  {'-' * 10}  {'-' * 9}")
    labels = {
        "single": "one request at a time (max_batch_size 1)",
        "batched": f"cross-request batching (max {args.max_batch}, {args.wait_ms:g} ms)",
    }
    for (tokens, name), row in rows.items():
        base = rows[(tokens, "single")]["items_s"]
        print(
            f"{tokens:>5}  {labels[name]:<44}  {row['items_s']:>9.1f}  {row['batch']:>10.1f}  "
            f"{row['items_s'] / base:>8.2f}x"
        )


if __name__ == "__main__":
    main()
