"""Cross-request micro-batching: items submitted by any number of concurrent requests are
gathered into batches of up to `max_batch_size`, waiting at most `max_wait_s` after the first
item of a batch arrives, and each batch runs in one call of `run_batch` on a dedicated thread.

Guarantees: one batch runs at a time (the model is not re-entrant); items whose caller gave up
(future cancelled) before their batch started are dropped from it; an exception in
`run_batch` fails that batch's items only. The event loop never runs `run_batch`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Generic, TypeVar

In = TypeVar("In")
Out = TypeVar("Out")


class MicroBatcher(Generic[In, Out]):
    def __init__(
        self,
        run_batch: Callable[[Sequence[In]], Sequence[Out]],
        max_batch_size: int,
        max_wait_s: float,
        name: str = "batcher",
    ) -> None:
        self._run_batch = run_batch
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_s
        self._queue: asyncio.Queue[tuple[In, asyncio.Future[Out]]] = asyncio.Queue()
        self._thread = ThreadPoolExecutor(1, thread_name_prefix=name)
        self._task = asyncio.get_running_loop().create_task(self._loop())
        self.batch_sizes: list[int] = []  # of every batch run, for tests and diagnostics

    def submit(self, value: In) -> asyncio.Future[Out]:
        future: asyncio.Future[Out] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((value, future))
        return future

    async def close(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        while not self._queue.empty():
            _, future = self._queue.get_nowait()
            future.cancel()
        self._thread.shutdown(wait=True)

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self._queue.get()]
            collect_until = loop.time() + self.max_wait_s
            while len(batch) < self.max_batch_size:
                if self._queue.empty():
                    remaining = collect_until - loop.time()
                    if remaining <= 0:
                        break
                    try:
                        async with asyncio.timeout(remaining):
                            batch.append(await self._queue.get())
                    except TimeoutError:
                        break
                else:
                    batch.append(self._queue.get_nowait())
            live = [(value, future) for value, future in batch if not future.done()]
            if not live:
                continue
            self.batch_sizes.append(len(live))
            values = [value for value, _ in live]
            try:
                outputs = await loop.run_in_executor(self._thread, self._run_batch, values)
                if len(outputs) != len(values):
                    raise RuntimeError(f"{len(outputs)} outputs for a batch of {len(values)}")
            except Exception as exc:  # this batch's items fail; the batcher goes on
                for _, future in live:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for (_, future), output in zip(live, outputs, strict=True):
                if not future.done():
                    future.set_result(output)
