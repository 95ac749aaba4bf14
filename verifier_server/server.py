"""The gRPC front end: validation, admission, deadlines, dispatch, health, graceful stop.

A bad *item* is data: it gets a non-OK result and its neighbours are scored. A bad *request*
(too many items, duplicate ids) is a gRPC status code. The event loop never runs verifier
code: "process" verifiers run in the worker pool (started before the gRPC server, since gRPC
forbids forking after), and so do "bulk" verifiers, whose items are shipped to a worker still
serialized, a chunk at a time (see verifier_server.bulk).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import AsyncIterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import grpc
from google.protobuf.message import DecodeError
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection

from verifier_server import convert
from verifier_server._proto.verifier.v1 import verifier_pb2 as pb
from verifier_server._proto.verifier.v1 import verifier_pb2_grpc as pb_grpc
from verifier_server.config import ServerConfig
from verifier_server.lifecycle import ServerVerifiers
from verifier_server.registry import Registry
from verifier_server.scoring import Leaf, Plan, Resolver, Scorer, SpecError
from verifier_server.types import Item, Result, RewardSpec, Status
from verifier_server.verifiers.composite import CompositeParams
from verifier_server.workers import BulkFailed

log = logging.getLogger(__name__)

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["VerifierService"].full_name


class VerifierServicer(pb_grpc.VerifierServiceServicer):
    """A thin servicer: proto in, plain functions, proto out."""

    def __init__(
        self, registry: Registry, config: ServerConfig, resolver: Resolver, scorer: Scorer
    ) -> None:
        self.registry = registry
        self.config = config
        self.resolver = resolver
        self.scorer = scorer
        self.item_limits = convert.ItemLimits(
            max_completion_bytes=config.limits.max_completion_bytes
        )

    async def Score(self, payload: bytes, context: grpc.aio.ServicerContext) -> pb.ScoreResponse:
        """Takes the request still serialized (see `add_servicer`): items of linear-time
        verifiers are forwarded to the workers as these very bytes, with no copy per item."""
        try:
            request = pb.ScoreRequest.FromString(payload)
        except DecodeError as exc:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, f"the request is not a ScoreRequest: {exc}"
            )
        await self._check_request(request, context)
        try:
            slots = self._schedule(request.items, _deadline(context), payload)
        except DuplicateIdError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        groups = _contiguous_groups(slots)
        if groups is not None:  # all bulk, in request order: the workers' bytes are the answer
            return pb.ScoreResponse.FromString(b"".join([await group for group in groups]))
        response = pb.ScoreResponse()
        results = response.results
        parsed: dict[int, Sequence[pb.Result]] = {}
        # In order, not gather(): awaiting a finished future costs nothing, and gather's
        # per-future callbacks were a measurable share of the per-item cost.
        for slot in slots:
            if isinstance(slot, tuple):
                group, position = slot
                if id(group) not in parsed:
                    parsed[id(group)] = pb.ScoreResponse.FromString(await group).results
                results.append(parsed[id(group)][position])
            else:
                results.append(convert.result_to_proto(await slot))
        return response

    async def ScoreStream(
        self, request_iterator: AsyncIterator[pb.ScoreRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.ScoreResponse]:
        finished: asyncio.Queue[list[pb.Result] | None] = asyncio.Queue()
        pending = 0
        reading_done = False

        def on_item(future: asyncio.Future[Result]) -> None:
            finished.put_nowait([convert.result_to_proto(future.result())])

        def on_group(future: asyncio.Future[bytes]) -> None:
            finished.put_nowait(list(pb.ScoreResponse.FromString(future.result()).results))

        async def read() -> None:
            nonlocal pending, reading_done
            async for request in request_iterator:
                await self._check_request(request, context)
                try:
                    slots = self._schedule(request.items, _deadline(context))
                except DuplicateIdError as exc:
                    await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
                pending += len(slots)
                groups = {id(s[0]): s[0] for s in slots if isinstance(s, tuple)}
                for group in groups.values():
                    group.add_done_callback(on_group)
                for slot in slots:
                    if not isinstance(slot, tuple):
                        slot.add_done_callback(on_item)
            reading_done = True
            finished.put_nowait(None)  # wake the writer to re-check

        reader = asyncio.create_task(read())
        try:
            while True:
                first = await finished.get()
                batch = [] if first is None else first
                while not finished.empty():  # send everything ready in one message
                    batch += finished.get_nowait() or []
                pending -= len(batch)
                if batch:
                    yield pb.ScoreResponse(results=batch)
                if reader.done():
                    reader.result()  # re-raise a request-level abort
                    if reading_done and pending == 0:
                        return
        finally:
            reader.cancel()

    async def ListVerifiers(
        self, request: pb.ListVerifiersRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListVerifiersResponse:
        response = pb.ListVerifiersResponse()
        for name, cls in self.registry.items():
            info = response.verifiers.add(name=name, description=cls.description, kind="verifier")
            info.params_schema.update(cls.params_schema())
        composite = response.verifiers.add(
            name="composite",
            kind="verifier",
            description="Weighted sums, min/max and gates over other verifiers, inline.",
        )
        composite.params_schema.update(CompositeParams.model_json_schema())
        for name, reward in sorted(self.config.rewards.items()):
            info = response.verifiers.add(name=name, description=reward.description, kind="reward")
            info.params_schema.update({"type": "object", "additionalProperties": False})
        return response

    # ---- helpers

    async def _check_request(
        self, request: pb.ScoreRequest, context: grpc.aio.ServicerContext
    ) -> None:
        cap = self.config.limits.max_items_per_request
        if len(request.items) > cap:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"items: {len(request.items)} items in one request, over the server's cap of "
                f"{cap}; split the batch (the Python client does this for you)",
            )

    def _schedule(
        self, messages: Sequence[pb.Item], deadline: float | None, payload: bytes | None = None
    ) -> list[Slot]:
        """Validates each item, resolves its reward, and schedules items sharing a plan together.

        Items of a linear-time ("bulk") verifier go to the worker pool still serialized (as
        `payload`, the request's own bytes, when given); the others are converted here and go
        through the Scorer.
        """
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
                    f"items[{index}].id {item_id!r} duplicates items[{seen[item_id]}].id; "
                    "ids must be unique within a request"
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
                result = Result.failed(
                    item_id or f"#{index}", Status.INVALID_REQUEST, _reason(exc.field), exc.message
                )
                result.details["field"] = f"items[{index}].{exc.field}"
                slots[index] = loop.create_future()
                slots[index].set_result(result)  # type: ignore[union-attr]
                continue
            group = groups.setdefault(id(plan), (plan, [], []))
            group[1].append(index)
            group[2].append(item)
        for plan, indices, items in groups.values():
            for index, future in zip(
                indices, self.scorer.schedule(items, plan, deadline), strict=True
            ):
                slots[index] = future
        for leaf, spec, indices in bulk_groups.values():
            self._schedule_bulk(messages, leaf, spec, indices, deadline, slots, payload)
        return slots  # type: ignore[return-value]

    def _schedule_bulk(
        self,
        messages: Sequence[pb.Item],
        leaf: Leaf,
        spec: RewardSpec,
        indices: list[int],
        deadline: float | None,
        slots: list[Slot | None],
        request_payload: bytes | None,
    ) -> None:
        pool = self.scorer.pool
        # Spread over the idle workers for latency; when none is idle, more parts would only
        # cost copies, so the group goes as few jobs as the size cap allows.
        spread = max(1, pool.idle_workers())
        size = min(_BULK_MAX_ITEMS, max(_BULK_MIN_ITEMS, -(-len(indices) // spread)))
        for start in range(0, len(indices), size):
            part = indices[start : start + size]
            if request_payload is not None and len(part) == len(messages):
                payload, first = request_payload, 0  # the whole request: forwarded as it came
            else:
                payload = pb.ScoreRequest(items=[messages[i] for i in part]).SerializeToString()
                first = 0
            future = pool.submit_bulk(
                leaf.verifier.name, leaf.params, spec, payload, first, part, self.item_limits,
                self.config.limits.max_item_timeout_s, deadline, leaf.cost_key,
            )  # fmt: skip
            group = asyncio.get_running_loop().create_future()
            future.add_done_callback(
                lambda f, g=group, p=part: g.set_result(_bulk_bytes(f, [messages[i].id for i in p]))
            )
            for position, index in enumerate(part):
                slots[index] = (group, position)

    def _resolve(
        self, reward: pb.RewardSpec, key: bytes
    ) -> tuple[RewardSpec, Plan] | convert.ItemError | SpecError:
        """A reward spec -> (spec, plan), or the error every item with this spec gets."""
        try:
            spec = convert.reward_from_proto(reward)
            return spec, self.resolver.resolve(spec, key)
        except (convert.ItemError, SpecError) as exc:
            return exc


def add_servicer(servicer: VerifierServicer, server: grpc.aio.Server) -> None:
    """Registers the service as the generated code would, except that `Score` receives its
    request as bytes (the servicer parses it, and forwards bulk items without re-serializing)."""
    handlers = {
        "Score": grpc.unary_unary_rpc_method_handler(
            servicer.Score, response_serializer=pb.ScoreResponse.SerializeToString
        ),
        "ScoreStream": grpc.stream_stream_rpc_method_handler(
            servicer.ScoreStream,
            request_deserializer=pb.ScoreRequest.FromString,
            response_serializer=pb.ScoreResponse.SerializeToString,
        ),
        "ListVerifiers": grpc.unary_unary_rpc_method_handler(
            servicer.ListVerifiers,
            request_deserializer=pb.ListVerifiersRequest.FromString,
            response_serializer=pb.ListVerifiersResponse.SerializeToString,
        ),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE_NAME, handlers),))
    server.add_registered_method_handlers(SERVICE_NAME, handlers)


Slot = asyncio.Future[Result] | tuple[asyncio.Future[bytes], int]
"""Where an item's result will be: its own future, or a position in a bulk group's results
(a serialized ScoreResponse with one result per item of the group, in order)."""

_BULK_MIN_ITEMS = 32  # smaller bulk jobs do not pay for their round trip to a worker
_BULK_MAX_ITEMS = 512


def _bulk_bytes(future: asyncio.Future[bytes], ids: list[str]) -> bytes:
    """A finished bulk job -> its serialized results; a failed job -> a failed result per item."""
    try:
        return future.result()
    except BulkFailed as exc:
        failed = [Result.failed(item_id, exc.status, exc.reason, exc.message) for item_id in ids]
        return convert.results_to_response(failed).SerializeToString()  # type: ignore[arg-type]


def _contiguous_groups(slots: Sequence[Slot]) -> list[asyncio.Future[bytes]] | None:
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


class DuplicateIdError(Exception):
    """Two items of one request share an id: their results could not be told apart."""


def _reason(field: str) -> str:
    return "invalid_" + field.split(".", 1)[0].split("[", 1)[0]


def _deadline(context: grpc.aio.ServicerContext) -> float | None:
    remaining = context.time_remaining()
    return None if remaining is None else time.monotonic() + remaining


@dataclass
class RunningServer:
    """A started server; `bound` lists the addresses it listens on."""

    server: grpc.aio.Server
    health: HealthServicer
    pool: object
    threads: ThreadPoolExecutor
    bound: list[str]
    registry: Registry
    verifiers: ServerVerifiers | None = None

    async def stop(self, grace_s: float) -> None:
        """Health NOT_SERVING, drain in-flight RPCs for `grace_s`, then stop the workers."""
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace_s)
        if self.verifiers is not None:
            await self.verifiers.close()
        await self.pool.close()  # type: ignore[attr-defined]
        self.threads.shutdown(wait=False, cancel_futures=True)


async def start_server(config: ServerConfig, registry: Registry) -> RunningServer:
    """Starts the worker pool, then the gRPC server. Raises if a port cannot be bound."""
    from verifier_server.workers import WorkerPool

    settings, limits = config.server, config.limits
    resolver = Resolver(registry, config)
    loop = asyncio.get_running_loop()
    pool = WorkerPool(settings.workers, plugins=config.plugins, memory_mb=settings.worker_memory_mb)
    pool.start(loop)  # before any gRPC object exists: gRPC forbids fork afterwards
    health = HealthServicer()
    serving = health_pb2.HealthCheckResponse.SERVING
    verifiers = ServerVerifiers(
        health, SERVICE_NAME, serving, health_pb2.HealthCheckResponse.NOT_SERVING
    )
    try:  # stateful verifiers (judge backends, reward models) set up before serving
        await verifiers.start(registry, config)
    except BaseException:
        await pool.close()
        raise
    threads = ThreadPoolExecutor(settings.threads, thread_name_prefix="verifier-thread")
    scorer = Scorer(pool, threads, limits.max_queued_items)
    max_bytes = limits.max_message_mb * 1024 * 1024
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", max_bytes),
            ("grpc.max_send_message_length", max_bytes),
            ("grpc.so_reuseport", 0),  # a second server on the port must fail, not share it
        ],
    )
    add_servicer(VerifierServicer(registry, config, resolver, scorer), server)
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    service_names = [
        SERVICE_NAME,
        health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
        reflection.SERVICE_NAME,
    ]
    reflection.enable_server_reflection(service_names, server)
    bound = []
    try:
        if settings.port is not None:
            port = server.add_insecure_port(f"{settings.host}:{settings.port}")
            host = f"[{settings.host}]" if ":" in settings.host else settings.host
            bound.append(f"{host}:{port}")
        if settings.unix:
            server.add_insecure_port(f"unix:{settings.unix}")
            bound.append(f"unix:{settings.unix}")
    except RuntimeError as exc:
        await verifiers.close()
        await pool.close()
        raise RuntimeError(f"cannot listen on {settings.host}:{settings.port}: {exc}") from None
    await server.start()
    await health.set("", serving)
    await health.set(SERVICE_NAME, serving)
    for name in [*registry.names(), *config.rewards]:
        if f"{SERVICE_NAME}/{name}" not in verifiers.reported:  # a verifier's own word wins
            await health.set(f"{SERVICE_NAME}/{name}", serving)
    return RunningServer(server, health, pool, threads, bound, registry, verifiers)


async def serve(
    config: ServerConfig, registry: Registry, ready: asyncio.Event | None = None
) -> None:
    """Runs until SIGTERM or SIGINT, then stops gracefully within `config.server.grace_s`."""
    running = await start_server(config, registry)
    log.info(
        "verifier-server listening on %s with %d workers",
        ", ".join(running.bound),
        config.server.workers,
    )
    print(f"verifier-server listening on {', '.join(running.bound)}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if ready is not None:
        ready.set()
    await stop.wait()
    log.info("stopping: draining in-flight work for up to %.1f s", config.server.grace_s)
    with contextlib.suppress(asyncio.CancelledError):
        await running.stop(config.server.grace_s)
