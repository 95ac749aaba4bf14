"""Routing a request's items: validate each, resolve its reward into a plan, and send items
that share a plan together to where they run.

Two routes. Items of a linear-time ("bulk") verifier go to the worker pool still serialized, a
chunk of up to `_BULK_MAX_ITEMS` at a time (the request's own bytes when one chunk is the whole
request; see verifier_server.bulk); their results come back serialized too. Every other item is
converted to a plain `Item` and goes through the Scorer. A bad item is data: it gets its own
INVALID_REQUEST result, and its neighbours are scored. Duplicate ids are a bad *request*
(`DuplicateIdError`): their results could not be told apart.

This module sees protobuf messages because bulk items never become Python objects here; the
servicer (verifier_server.server) turns the slots into the response.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Sequence

from verifier_server import convert
from verifier_server._proto.verifier.v1 import verifier_pb2 as pb
from verifier_server.config import Limits
from verifier_server.resolver import Leaf, Plan, Resolver, SpecError
from verifier_server.scorer import Scorer
from verifier_server.types import Item, Result, RewardSpec, Status
from verifier_server.workers import BulkFailed, BulkJob, WorkerPool

Slot = asyncio.Future[Result] | tuple[asyncio.Future[bytes], int]
"""Where an item's result will be: its own future, or a position in a bulk group's results
(a serialized ScoreResponse with one result per item of the group, in order)."""

_BULK_MIN_ITEMS = 32  # smaller bulk jobs do not pay for their round trip to a worker
_BULK_MAX_ITEMS = 512


class DuplicateIdError(Exception):
    """Two items of one request share an id: their results could not be told apart.
    `field` names the second one (`items[3].id`)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


class Dispatcher:
    """A request's items -> one Slot each, in request order."""

    def __init__(self, resolver: Resolver, scorer: Scorer, pool: WorkerPool, limits: Limits):
        self.resolver = resolver
        self.scorer = scorer
        self.pool = pool
        self.limits = limits
        self.item_limits = convert.ItemLimits(
            max_completion_bytes=limits.max_completion_bytes,
            max_reference_bytes=limits.max_reference_bytes,
        )

    def dispatch(
        self,
        messages: Sequence[pb.Item],
        deadline: float | None,
        payload: bytes | None = None,
        caller: str = "",
    ) -> list[Slot]:
        """Schedules every item; `payload` is the request's own bytes, when the caller has them;
        `caller` names whose work it is. Raises DuplicateIdError before anything is scheduled
        past the duplicate."""
        loop = asyncio.get_running_loop()
        slots: list[Slot | None] = [None] * len(messages)
        groups: dict[int, tuple[Plan, list[int], list[Item]]] = {}
        bulk_groups: dict[int, tuple[Leaf, RewardSpec, list[int]]] = {}
        rewards: dict[bytes, tuple[RewardSpec, Plan] | convert.ItemError | SpecError] = {}
        seen: dict[str, int] = {}
        previous: pb.RewardSpec | None = None
        for index, message in enumerate(messages):
            # Neighbours usually share a spec: comparing it (in C) is cheaper than serializing.
            if previous is None or message.reward != previous:
                key = convert.reward_key(message)
                resolved = rewards.get(key)
                if resolved is None:
                    resolved = rewards[key] = self._resolve(message.reward, key)
                previous = message.reward
            item_id = message.id
            if item_id in seen and item_id:
                raise DuplicateIdError(
                    f"items[{index}].id",
                    f"items[{index}].id {item_id!r} duplicates items[{seen[item_id]}].id; "
                    "ids must be unique within a request",
                )
            seen[item_id] = index
            try:
                if not isinstance(resolved, tuple):
                    raise resolved
                spec, plan = resolved
                if isinstance(plan, Leaf) and plan.verifier.execution == "bulk":
                    bulk_groups.setdefault(id(plan), (plan, spec, []))[2].append(index)
                    continue
                item = convert.item_from_proto(message, self.item_limits, spec)
            except (convert.ItemError, SpecError) as exc:
                slots[index] = loop.create_future()
                slots[index].set_result(_invalid(item_id, index, exc))  # type: ignore[union-attr]
                continue
            group = groups.setdefault(id(plan), (plan, [], []))
            group[1].append(index)
            group[2].append(item)
        for plan, indices, items in groups.values():
            futures = self.scorer.schedule(items, plan, deadline, caller)
            for index, future in zip(indices, futures, strict=True):
                slots[index] = future
        for leaf, spec, indices in bulk_groups.values():
            jobs = self._dispatch_bulk(messages, leaf, spec, indices, deadline, payload, caller)
            for part, group in jobs:
                for position, index in enumerate(part):
                    slots[index] = (group, position)
        return slots  # type: ignore[return-value]

    def _dispatch_bulk(
        self,
        messages: Sequence[pb.Item],
        leaf: Leaf,
        spec: RewardSpec,
        indices: list[int],
        deadline: float | None,
        request_payload: bytes | None,
        caller: str,
    ) -> list[tuple[list[int], asyncio.Future[bytes]]]:
        """The group's items as bulk jobs: (each job's item indices, its serialized results)."""
        # Spread over the idle workers for latency; when none is idle, more parts would only
        # cost copies, so the group goes as few jobs as the size cap allows.
        spread = max(1, self.pool.idle_workers())
        size = min(_BULK_MAX_ITEMS, max(_BULK_MIN_ITEMS, -(-len(indices) // spread)))
        jobs = []
        loop = asyncio.get_running_loop()
        for start in range(0, len(indices), size):
            part = indices[start : start + size]
            group = loop.create_future()
            ids = [messages[i].id for i in part]
            jobs.append((part, group))
            if not self.pool.admission.admits_job(leaf.cost_key, len(part), deadline, caller):
                group.set_result(_refused(ids, self.pool.admission.estimated_wait_s()))
                continue
            if request_payload is not None and len(part) == len(messages):
                payload = request_payload  # the whole request: forwarded as it came
            else:
                payload = pb.ScoreRequest(items=[messages[i] for i in part]).SerializeToString()
            job = BulkJob(leaf.verifier.name, leaf.params, spec, payload, part, self.item_limits)
            future = self.pool.submit_bulk(
                job, self.limits.max_item_timeout_s, deadline, leaf.cost_key, caller
            )
            future.add_done_callback(functools.partial(_settle, group, ids))
            group.add_done_callback(functools.partial(_propagate_cancel, future))
        return jobs

    def _resolve(
        self, reward: pb.RewardSpec, key: bytes
    ) -> tuple[RewardSpec, Plan] | convert.ItemError | SpecError:
        """A reward spec -> (spec, plan), or the error every item with this spec gets."""
        try:
            spec = convert.reward_from_proto(reward)
            return spec, self.resolver.resolve(spec, key)
        except (convert.ItemError, SpecError) as exc:
            return exc


def contiguous_groups(slots: Sequence[Slot]) -> list[asyncio.Future[bytes]] | None:
    """The bulk groups in order when every slot is one and they tile the request in order, so
    the concatenation of their serialized responses is the whole response (repeated fields
    concatenate on the wire); else None."""
    groups: list[asyncio.Future[bytes]] = []
    for slot in slots:
        if not isinstance(slot, tuple):
            return None
        group, position = slot
        if position == 0:
            groups.append(group)
        elif not groups or group is not groups[-1]:
            return None
    return groups


def _invalid(item_id: str, index: int, exc: convert.ItemError | SpecError) -> Result:
    reason = "invalid_" + exc.field.split(".", 1)[0].split("[", 1)[0]
    result = Result.failed(item_id, Status.INVALID_REQUEST, reason, exc.message)
    result.details["field"] = f"items[{index}].{exc.field}"
    return result


def _settle(group: asyncio.Future[bytes], ids: list[str], job: asyncio.Future[bytes]) -> None:
    """A finished bulk job -> its group's serialized results; a failed job -> a failed result
    per item. A group its caller cancelled stays cancelled."""
    if group.done() or job.cancelled():
        return
    try:
        group.set_result(job.result())
    except BulkFailed as exc:
        failed = [Result.failed(item_id, exc.status, exc.reason, exc.message) for item_id in ids]
        group.set_result(convert.results_to_response(failed).SerializeToString())  # type: ignore[arg-type]


def _propagate_cancel(job: asyncio.Future[bytes], group: asyncio.Future[bytes]) -> None:
    if group.cancelled():
        job.cancel()  # a job still queued is then dropped unstarted


def _refused(ids: list[str], queued_s: float) -> bytes:
    why = f"the queue would not finish within the deadline (~{queued_s:.2f} s of work queued)"
    refused = [Result.failed(item_id, Status.OVERLOADED, "overloaded", why) for item_id in ids]
    return convert.results_to_response(refused).SerializeToString()  # type: ignore[arg-type]
