"""Cross-request micro-batching: sizes, waiting, dropped callers, failures, threads."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence

import pytest

from verifier_server.verifiers.reward_model.batcher import MicroBatcher


async def test_concurrent_submissions_share_batches_in_order() -> None:
    batcher = MicroBatcher(lambda xs: [x * 10 for x in xs], max_batch_size=4, max_wait_s=0.05)
    outputs = await asyncio.gather(*(batcher.submit(x) for x in range(10)))
    assert outputs == [x * 10 for x in range(10)]
    assert batcher.batch_sizes == [4, 4, 2]
    await batcher.close()


async def test_a_lone_item_waits_at_most_max_wait() -> None:
    batcher = MicroBatcher(lambda xs: list(xs), max_batch_size=64, max_wait_s=0.05)
    start = time.monotonic()
    assert await batcher.submit("x") == "x"
    assert 0.04 < time.monotonic() - start < 1.0
    await batcher.close()


async def test_items_from_later_submissions_join_within_the_wait() -> None:
    batcher = MicroBatcher(lambda xs: list(xs), max_batch_size=64, max_wait_s=0.2)
    first = batcher.submit(1)
    await asyncio.sleep(0.05)  # another request arrives while the batch is filling
    second = batcher.submit(2)
    assert await asyncio.gather(first, second) == [1, 2]
    assert batcher.batch_sizes == [2]
    await batcher.close()


async def test_items_whose_caller_gave_up_are_not_run() -> None:
    seen: list[int] = []

    def run(xs: Sequence[int]) -> list[int]:
        seen.extend(xs)
        return list(xs)

    batcher = MicroBatcher(run, max_batch_size=8, max_wait_s=0.05)
    kept, dropped = batcher.submit(1), batcher.submit(2)
    dropped.cancel()
    assert await kept == 1
    assert seen == [1]
    await batcher.close()


async def test_a_failing_batch_fails_only_its_items() -> None:
    def run(xs: Sequence[int]) -> list[int]:
        if 13 in xs:
            raise ValueError("unlucky")
        return list(xs)

    batcher = MicroBatcher(run, max_batch_size=2, max_wait_s=0.01)
    bad, good = batcher.submit(13), batcher.submit(1)
    with pytest.raises(ValueError, match="unlucky"):
        await bad
    with pytest.raises(ValueError):
        await good  # same batch
    assert await batcher.submit(2) == 2
    await batcher.close()


async def test_batches_run_off_the_event_loop_thread() -> None:
    loop_thread = threading.get_ident()
    batcher = MicroBatcher(lambda xs: [threading.get_ident() for _ in xs], 4, 0.0)
    assert await batcher.submit(None) != loop_thread
    await batcher.close()
