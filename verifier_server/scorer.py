"""From a plan to results: run each leaf where its verifier declared (worker pool, thread,
event loop), with admission against the caller's deadline, and combine composites.

Every item gets exactly one result, whatever happens to its neighbours.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any

from verifier_server.composite import CompositeParams, combine
from verifier_server.execution import checked_results, run_batch
from verifier_server.resolver import Composite, Leaf, Plan
from verifier_server.types import Item, Result, Status
from verifier_server.verifiers.base import deadline_var
from verifier_server.workers import WorkerPool

log = logging.getLogger(__name__)

_THREAD_CHUNK = 256
_ASYNC_GRACE_S = 1.0  # an async verifier gets this long past the caller's deadline to answer


class Scorer:
    """Schedules plans on the worker pool, the thread pool or the event loop."""

    def __init__(
        self, pool: WorkerPool, threads: ThreadPoolExecutor, max_queued_items: int
    ) -> None:
        self.pool = pool
        self.threads = threads
        self.max_queued_items = max_queued_items
        self._loop = asyncio.get_running_loop()
        self._queued = 0

    def schedule(
        self, items: Sequence[Item], plan: Plan, deadline: float | None, caller: str = ""
    ) -> list[asyncio.Future[Result]]:
        """One future per item; all items share `plan`. Futures always resolve to a Result.
        `caller` names whose work it is (the worker pool is fair between callers)."""
        if isinstance(plan, Composite):
            return self._schedule_composite(items, plan, deadline, caller)
        execution = plan.verifier.execution
        if execution == "process":
            return self._schedule_process(items, plan, deadline, caller)
        if execution == "bulk":
            return self._run_async(items, self._thread(items, plan))
        return self._run_async(items, self._async(items, plan, deadline))

    def _schedule_process(
        self, items: Sequence[Item], plan: Leaf, deadline: float | None, caller: str
    ) -> list[asyncio.Future[Result]]:
        name = plan.verifier.name
        admitted = self.pool.admission.admissible(plan.cost_key, len(items), deadline, caller)
        admitted = min(admitted, max(0, self.max_queued_items - self._queued))
        futures = self.pool.submit(
            name, plan.params, items[:admitted], plan.timeout_s, deadline, plan.cost_key, caller
        )
        self._queued += len(futures)
        for future in futures:
            future.add_done_callback(self._dequeued)
        for item in items[admitted:]:
            rejected = self._loop.create_future()
            queued_s = self.pool.admission.estimated_wait_s()
            why = (
                f"the queue would not finish within the deadline (~{queued_s:.2f} s of work queued)"
            )
            rejected.set_result(Result.failed(item.id, Status.OVERLOADED, "overloaded", why))
            futures.append(rejected)
        return futures

    def _dequeued(self, _future: asyncio.Future[Result]) -> None:
        self._queued -= 1

    async def _thread(self, items: Sequence[Item], plan: Leaf) -> list[Result]:
        results: list[Result] = []
        for start in range(0, len(items), _THREAD_CHUNK):
            chunk = items[start : start + _THREAD_CHUNK]
            results += await self._loop.run_in_executor(
                self.threads, run_batch, plan.verifier, chunk, plan.params
            )
        return results

    async def _async(
        self, items: Sequence[Item], plan: Leaf, deadline: float | None
    ) -> list[Result]:
        start = time.perf_counter()
        deadline_var.set(deadline)  # this task's own context: see verifiers.base.current_deadline
        budget_s = None if deadline is None else deadline - time.monotonic() + _ASYNC_GRACE_S
        backstop = asyncio.timeout(budget_s)
        try:
            async with backstop:
                output = await plan.verifier.ascore(items, plan.params)
            results = checked_results(output, items)
        except Exception as exc:  # the verifier's failure is its items' status, not ours
            if backstop.expired():  # it ignored the caller's deadline
                message = "the async verifier did not answer before the caller's deadline"
                return [Result.failed(i.id, Status.TIMEOUT, "deadline", message) for i in items]
            log.exception("async verifier %s failed", plan.verifier.name)
            message = f"{type(exc).__name__}: {exc}"
            return [
                Result.failed(i.id, Status.VERIFIER_ERROR, "verifier_exception", message)
                for i in items
            ]
        per_item_ms = (time.perf_counter() - start) * 1000 / max(1, len(items))
        for result in results:
            result.elapsed_ms = result.elapsed_ms or per_item_ms
        return results

    def _run_async(self, items: Sequence[Item], coro: Any) -> list[asyncio.Future[Result]]:
        futures = [self._loop.create_future() for _ in items]

        def done(task: asyncio.Task[list[Result]]) -> None:
            if task.cancelled():
                results = [Result.failed(i.id, Status.OVERLOADED, "cancelled") for i in items]
            elif task.exception() is not None:
                exc = task.exception()
                log.error("internal error while scoring", exc_info=exc)
                results = [
                    Result.failed(i.id, Status.VERIFIER_ERROR, "internal_error", repr(exc))
                    for i in items
                ]
            else:
                results = task.result()
            for future, result in zip(futures, results, strict=True):
                if not future.done():
                    future.set_result(result)

        task = self._loop.create_task(coro)
        task.add_done_callback(done)
        waiting = len(futures)

        def cancel_if_abandoned(future: asyncio.Future[Result]) -> None:
            # Every caller of the batch has gone (a cancelled RPC, a deadline's cut-off): a
            # judge would go on spending its budget for nobody. Threads stop between chunks.
            nonlocal waiting
            if future.cancelled():
                waiting -= 1
                if waiting == 0:
                    task.cancel()

        for future in futures:
            future.add_done_callback(cancel_if_abandoned)
        return futures

    def _schedule_composite(
        self, items: Sequence[Item], plan: Composite, deadline: float | None, caller: str
    ) -> list[asyncio.Future[Result]]:
        missing = {
            index: component.reference_key
            for index, item in enumerate(items)
            for component in plan.spec.components
            if component.reference_key is not None
            and not (isinstance(item.reference, dict) and component.reference_key in item.reference)
        }
        good = [item for index, item in enumerate(items) if index not in missing]
        per_part = []
        for component, part in zip(plan.spec.components, plan.parts, strict=True):
            key = component.reference_key
            part_items = (
                good if key is None else [replace(i, reference=i.reference[key]) for i in good]
            )
            per_part.append(iter(self.schedule(part_items, part, deadline, caller)))
        futures = []
        for index, item in enumerate(items):
            if index in missing:
                future = self._loop.create_future()
                message = (
                    f"reference.{missing[index]} is missing; a component of the reward needs it"
                )
                result = Result.failed(
                    item.id, Status.INVALID_REQUEST, "invalid_reference", message
                )
                result.details["field"] = f"reference.{missing[index]}"
                future.set_result(result)
                futures.append(future)
            else:
                parts = [next(part_futures) for part_futures in per_part]
                futures.append(self._combine_when_done(plan.spec, item.id, parts))
        return futures

    def _combine_when_done(
        self, spec: CompositeParams, item_id: str, parts: list[asyncio.Future[Result]]
    ) -> asyncio.Future[Result]:
        future = self._loop.create_future()
        remaining = len(parts)

        def part_done(_: asyncio.Future[Result]) -> None:
            nonlocal remaining
            remaining -= 1
            if remaining == 0 and not future.done():
                future.set_result(combine(spec, item_id, [p.result() for p in parts]))

        def cancel_parts(done: asyncio.Future[Result]) -> None:
            if done.cancelled():
                for part in parts:
                    part.cancel()

        for part in parts:
            part.add_done_callback(part_done)
        future.add_done_callback(cancel_parts)
        return future
