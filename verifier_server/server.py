"""The gRPC front end: the servicer (proto in, proto out), health, start and graceful stop.

A request is checked here (a bad *request* -- too many items, duplicate ids, bytes that are not
a ScoreRequest -- is a gRPC status code), its items are routed by verifier_server.dispatch, and
the slots it returns become the response. A bad *item* is data: it gets a non-OK result and
its neighbours are scored. The event loop never runs verifier code: the worker pool is started
before the gRPC server (gRPC forbids forking after).

`VerifierServicer.score` and `list_verifiers` are the calls without gRPC's context (a bad
request is a RequestError): the HTTP/JSON front end (verifier_server.http_api, started here
on `server.http_port`) goes through them, so both ports share admission, quotas, limits and
the cut-off before the deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import ssl
import sys
import time
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import grpc
from aiohttp import web
from google.protobuf.message import DecodeError
from grpc_health.v1 import health_pb2
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection

from verifier_server import convert
from verifier_server._proto.verifier.v1 import verifier_pb2 as pb
from verifier_server._proto.verifier.v1 import verifier_pb2_grpc as pb_grpc
from verifier_server.access import (
    AccessInterceptor,
    Quotas,
    caller_var,
    load_tokens,
    server_credentials,
)
from verifier_server.composite import CompositeParams
from verifier_server.config import ServerConfig, ServerSettings
from verifier_server.dispatch import Dispatcher, DuplicateIdError, Slot, contiguous_groups
from verifier_server.lifecycle import ServerVerifiers
from verifier_server.registry import Registry
from verifier_server.resolver import Resolver
from verifier_server.scorer import Scorer
from verifier_server.types import Result, Status
from verifier_server.verifiers.code import sandbox_env

if TYPE_CHECKING:
    from verifier_server.metrics import Metrics

log = logging.getLogger(__name__)

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["VerifierService"].full_name


class RequestError(Exception):
    """A bad *request* (not a bad item): INVALID_ARGUMENT over gRPC, 400 over HTTP.
    `field` names the part of the request at fault."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


class VerifierServicer(pb_grpc.VerifierServiceServicer):
    """A thin servicer: proto in, dispatch, proto out."""

    def __init__(
        self,
        registry: Registry,
        config: ServerConfig,
        dispatcher: Dispatcher,
        quotas: Quotas | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.registry = registry
        self.config = config
        self.dispatcher = dispatcher
        self.quotas = quotas or Quotas(None)
        self.metrics = metrics

    async def Score(self, payload: bytes, context: grpc.aio.ServicerContext) -> pb.ScoreResponse:
        """Takes the request still serialized (see `add_servicer`): items of linear-time
        verifiers are forwarded to the workers as these very bytes, with no copy per item.

        Answers before the caller's deadline: items unfinished at the cut-off get TIMEOUT
        (and their work is cancelled), so one late item never costs the whole response."""
        request = await _parse(pb.ScoreRequest, payload, context)
        try:
            return await self.score(request, _cut_off(context), f"peer:{context.peer()}", payload)
        except RequestError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
            raise  # unreachable: abort raises

    async def score(
        self,
        request: pb.ScoreRequest,
        cut_off: float | None,
        peer: str,
        payload: bytes | None = None,
    ) -> pb.ScoreResponse:
        """The transport-neutral Score, shared with the HTTP front end: `cut_off` is the
        monotonic time by which the response must be assembled (None: no deadline), `peer`
        the connection that takes turns when the caller has no token. Raises RequestError."""
        slots = self._dispatch(request, cut_off, peer, payload)
        try:
            finished = await _wait(slots, None if cut_off is None else cut_off - time.monotonic())
        except asyncio.CancelledError:  # the caller has gone: so has the reason to work
            _cancel(slots)
            raise
        if finished and (groups := contiguous_groups(slots)) is not None:
            # All bulk, in request order: the workers' bytes are the answer.
            response = pb.ScoreResponse.FromString(b"".join([group.result() for group in groups]))
            self._count(request.items, response.results)
            return response
        response = pb.ScoreResponse()
        results = response.results
        parsed: dict[int, Sequence[pb.Result]] = {}
        for message, slot in zip(request.items, slots, strict=True):
            if isinstance(slot, tuple):
                group, position = slot
                if not group.done() or group.cancelled():
                    results.append(_late(message.id))
                    continue
                if id(group) not in parsed:
                    parsed[id(group)] = pb.ScoreResponse.FromString(group.result()).results
                results.append(parsed[id(group)][position])
            elif slot.done() and not slot.cancelled():
                results.append(convert.result_to_proto(slot.result()))
            else:
                results.append(_late(message.id))
        _cancel(slots)  # the late ones: their callers will not wait for them
        self._count(request.items, results)
        return response

    async def ScoreStream(
        self, request_iterator: AsyncIterator[bytes], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.ScoreResponse]:
        """Results stream back as items finish. Ids must be unique among the stream's items
        still in flight (their results could not be told apart)."""
        finished: asyncio.Queue[list[pb.Result] | None] = asyncio.Queue()
        in_flight: dict[str, str] = {}  # id -> reward name, of items whose results are to send
        all_slots: list[Slot] = []
        pending = 0
        reading_done = False

        def on_item(future: asyncio.Future[Result]) -> None:
            if not future.cancelled():
                finished.put_nowait([convert.result_to_proto(future.result())])

        def on_group(future: asyncio.Future[bytes]) -> None:
            if not future.cancelled():
                finished.put_nowait(list(pb.ScoreResponse.FromString(future.result()).results))

        async def read() -> None:
            nonlocal pending, reading_done
            try:
                async for payload in request_iterator:
                    request = await _parse(pb.ScoreRequest, payload, context)
                    for index, message in enumerate(request.items):
                        if message.id in in_flight:
                            await context.abort(
                                grpc.StatusCode.INVALID_ARGUMENT,
                                f"items[{index}].id {message.id!r} is already in flight on this "
                                "stream; ids must be unique among the stream's unanswered items",
                            )
                    try:
                        slots = self._dispatch(request, _cut_off(context), f"peer:{context.peer()}")
                    except RequestError as exc:
                        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
                    all_slots.extend(slots)
                    pending += len(slots)
                    in_flight.update((m.id, m.reward.name) for m in request.items if m.id)
                    groups = {id(s[0]): s[0] for s in slots if isinstance(s, tuple)}
                    for group in groups.values():
                        group.add_done_callback(on_group)
                    for slot in slots:
                        if not isinstance(slot, tuple):
                            slot.add_done_callback(on_item)
                reading_done = True
            finally:
                finished.put_nowait(None)  # wake the writer to re-check (also after an abort)

        reader = asyncio.create_task(read())
        try:
            while True:
                first = await finished.get()
                batch = [] if first is None else first
                while not finished.empty():  # send everything ready in one message
                    batch += finished.get_nowait() or []
                pending -= len(batch)
                if self.metrics is not None:
                    rewards = [in_flight.get(r.id, "") for r in batch]
                    self.metrics.count_results(
                        (name, _STATUS_NAMES[r.status], r.reason)
                        for name, r in zip(rewards, batch, strict=True)
                    )
                for result in batch:
                    in_flight.pop(result.id, None)
                if batch:
                    yield pb.ScoreResponse(results=batch)
                if reader.done():
                    reader.result()  # re-raise a request-level abort
                    if reading_done and pending == 0:
                        return
        finally:
            reader.cancel()
            _cancel(all_slots)  # a no-op for finished ones; stops work nobody will read

    async def ListVerifiers(
        self, payload: bytes, context: grpc.aio.ServicerContext
    ) -> pb.ListVerifiersResponse:
        await _parse(pb.ListVerifiersRequest, payload, context)
        return self.list_verifiers()

    def list_verifiers(self) -> pb.ListVerifiersResponse:
        """The verifiers, `composite` and the named rewards (shared with the HTTP front end)."""
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

    def _dispatch(
        self,
        request: pb.ScoreRequest,
        cut_off: float | None,
        peer: str,
        payload: bytes | None = None,
    ) -> list[Slot]:
        """The request's items scheduled; RequestError for a bad request."""
        cap = self.config.limits.max_items_per_request
        if len(request.items) > cap:
            raise RequestError(
                "items",
                f"items: {len(request.items)} items in one request, over the server's cap of "
                f"{cap}; split the batch (the Python client does this for you)",
            )
        # Work is admitted and started against the cut-off, not the deadline itself: a job
        # admitted to finish just before the deadline finished after the response had left
        # (its items came back TIMEOUT instead of OVERLOADED at once).
        caller = caller_var.get()
        if self.quotas.active:
            refused = self.quotas.admit(caller, len(request.items))
            if refused is not None:
                return _refused(request.items, refused)
        # Callers take turns for workers: by token, or when there are none, by connection
        # (anonymous callers used to share one first-in first-out queue).
        turn = caller or peer
        try:
            slots = self.dispatcher.dispatch(request.items, cut_off, payload, turn)
        except DuplicateIdError as exc:
            if self.quotas.active:
                self.quotas.release(caller, len(request.items))
            raise RequestError(exc.field, str(exc)) from None
        if self.quotas.active:
            self._release_when_done(slots, caller)
        return slots

    def _count(self, items: Sequence[pb.Item], results: Sequence[pb.Result]) -> None:
        if self.metrics is not None:
            self.metrics.count_results(
                (item.reward.name, _STATUS_NAMES[result.status], result.reason)
                for item, result in zip(items, results, strict=True)
            )

    def _release_when_done(self, slots: Sequence[Slot], caller: str) -> None:
        counts: dict[int, list[Any]] = {}
        for slot in slots:
            future = slot[0] if isinstance(slot, tuple) else slot
            counts.setdefault(id(future), [future, 0])[1] += 1
        for future, n_items in counts.values():
            future.add_done_callback(lambda _, n=n_items: self.quotas.release(caller, n))


def add_servicer(servicer: VerifierServicer, server: grpc.aio.Server) -> None:
    """Registers the service as the generated code would, except that the handlers receive
    requests as bytes: they parse them, so bytes that are not the request message get
    INVALID_ARGUMENT (a deserializer's failure would be UNKNOWN, and hang a stream), and
    `Score` forwards bulk items without re-serializing."""
    handlers = {
        "Score": grpc.unary_unary_rpc_method_handler(
            servicer.Score, response_serializer=pb.ScoreResponse.SerializeToString
        ),
        "ScoreStream": grpc.stream_stream_rpc_method_handler(
            servicer.ScoreStream, response_serializer=pb.ScoreResponse.SerializeToString
        ),
        "ListVerifiers": grpc.unary_unary_rpc_method_handler(
            servicer.ListVerifiers, response_serializer=pb.ListVerifiersResponse.SerializeToString
        ),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE_NAME, handlers),))
    server.add_registered_method_handlers(SERVICE_NAME, handlers)


def add_standard_services(
    health: HealthServicer, service_names: Sequence[str], server: grpc.aio.Server
) -> None:
    """Health and reflection, registered as their generated code would, except that requests
    arrive as bytes and are parsed here: bytes that are not the request message get
    INVALID_ARGUMENT, not UNKNOWN and an ERROR traceback in the log (health needs no token,
    so anyone who reaches the port could write those)."""
    from grpc_reflection.v1alpha import _async as reflection_aio
    from grpc_reflection.v1alpha import reflection_pb2

    check, response = health_pb2.HealthCheckRequest, health_pb2.HealthCheckResponse
    reflector = reflection_aio.ReflectionServicer(service_names)

    async def watch(payload: bytes, context: grpc.aio.ServicerContext) -> None:
        await health.Watch(await _parse(check, payload, context), context)  # context.write()s

    async def reflect(
        payloads: AsyncIterator[bytes], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[Any]:
        async def requests() -> AsyncIterator[Any]:
            async for payload in payloads:
                yield await _parse(reflection_pb2.ServerReflectionRequest, payload, context)

        async for message in reflector.ServerReflectionInfo(requests(), context):
            yield message

    async def health_check(payload: bytes, context: grpc.aio.ServicerContext) -> Any:
        return await health.Check(await _parse(check, payload, context), context)

    services = {
        health_pb2.DESCRIPTOR.services_by_name["Health"].full_name: {
            "Check": grpc.unary_unary_rpc_method_handler(
                health_check, response_serializer=response.SerializeToString
            ),
            "Watch": grpc.unary_stream_rpc_method_handler(
                watch, response_serializer=response.SerializeToString
            ),
        },
        reflection.SERVICE_NAME: {
            "ServerReflectionInfo": grpc.stream_stream_rpc_method_handler(
                reflect,
                response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString,
            )
        },
    }
    for name, handlers in services.items():
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(name, handlers),))
        server.add_registered_method_handlers(name, handlers)


_SERVING = health_pb2.HealthCheckResponse.SERVING
_CUT_OFF_MARGIN_S = 0.5  # the response leaves this long (at most a tenth of the time) early
_STATUS_NAMES = {value: name.removeprefix("STATUS_") for name, value in pb.Status.items()}


async def _parse(message_type: Any, payload: bytes, context: grpc.aio.ServicerContext) -> Any:
    try:
        return message_type.FromString(payload)
    except DecodeError as exc:
        await context.abort(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"the request is not a {message_type.DESCRIPTOR.name}: {exc}",
        )


def _cut_off(context: grpc.aio.ServicerContext) -> float | None:
    """The monotonic time by which the response must be assembled to reach the caller in
    time, from the RPC's deadline (None: no deadline)."""
    return cut_off_after(context.time_remaining())


def cut_off_after(remaining_s: float | None) -> float | None:
    """The cut-off of a call with `remaining_s` left (None: no deadline)."""
    if remaining_s is None:
        return None
    return time.monotonic() + max(0.0, remaining_s - min(_CUT_OFF_MARGIN_S, remaining_s / 10))


async def _wait(slots: Sequence[Slot], timeout_s: float | None) -> bool:
    """Waits for every slot (True), or until `timeout_s` passes (False)."""
    futures = {id(f): f for f in (s[0] if isinstance(s, tuple) else s for s in slots)}
    pending = [f for f in futures.values() if not f.done()]
    if not pending:
        return True
    if timeout_s is None:
        # In order, not gather(): awaiting a finished future costs nothing, and gather's
        # per-future callbacks were a measurable share of the per-item cost.
        for future in pending:
            await future
        return True
    try:
        async with asyncio.timeout(timeout_s):  # at the cut-off, cancels the one awaited:
            for future in pending:  # it is late, and the caller cancels the late ones anyway
                await future
    except TimeoutError:
        return False
    return True


def _cancel(slots: Sequence[Slot]) -> None:
    for slot in slots:
        future = slot[0] if isinstance(slot, tuple) else slot
        if not future.done():
            future.cancel()


def _refused(messages: Sequence[pb.Item], reason: str) -> list[Slot]:
    """OVERLOADED for every item: the caller is over its quota (see verifier_server.access)."""
    why = {
        "quota_in_flight": "this caller has its maximum of items in flight; retry later",
        "rate_limited": "this caller sent more items per second than its quota; retry later",
    }[reason]
    loop = asyncio.get_running_loop()
    slots: list[Slot] = []
    for message in messages:
        future: asyncio.Future[Result] = loop.create_future()
        future.set_result(Result.failed(message.id, Status.OVERLOADED, reason, why))
        slots.append(future)
    return slots


def _late(item_id: str) -> pb.Result:
    return convert.result_to_proto(
        Result.failed(
            item_id,
            Status.TIMEOUT,
            "deadline",
            "not finished when the caller's deadline came; its work was stopped",
        )
    )


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
    metrics: Metrics | None = None
    http: web.AppRunner | None = None

    async def stop(self, grace_s: float) -> None:
        """Health NOT_SERVING, drain in-flight RPCs (and HTTP requests) for `grace_s`, then
        stop the workers."""
        await self.health.enter_graceful_shutdown()
        if self.http is None:
            await self.server.stop(grace_s)
        else:
            await asyncio.gather(self.server.stop(grace_s), self.http.cleanup())
        if self.verifiers is not None:
            await self.verifiers.close()
        await self.pool.close()  # type: ignore[attr-defined]
        self.threads.shutdown(wait=False, cancel_futures=True)
        if self.metrics is not None:
            self.metrics.close()


async def start_server(config: ServerConfig, registry: Registry) -> RunningServer:
    """Starts the worker pool, then the gRPC server. Raises if a port cannot be bound."""
    from verifier_server.workers import WorkerPool

    settings, limits = config.server, config.limits
    # Files and secrets first: a bad path is a config error before anything starts.
    credentials = server_credentials(settings.tls) if settings.tls else None
    tokens = load_tokens(settings.auth) if settings.auth else None
    _warn_if_exposed(settings)
    resolver = Resolver(registry, config)
    sandbox_vars = sandbox_env.worker_env(config.sandbox, os.environ)
    sandbox_env.check_at_start({**os.environ, **sandbox_vars}, settings.workers)
    loop = asyncio.get_running_loop()
    pool = WorkerPool(
        settings.workers,
        plugins=config.plugins,
        memory_mb=settings.worker_memory_mb,
        env=sandbox_vars,
    )
    pool.start(loop)  # before any gRPC object exists: gRPC forbids fork afterwards
    metrics = None
    if settings.metrics_port is not None:
        from verifier_server.metrics import Metrics

        metrics = Metrics()
        metrics.watch_pool(pool)
        pool.observer = metrics
    health = _Health(metrics)
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
    dispatcher = Dispatcher(resolver, scorer, pool, limits)
    max_bytes = limits.max_message_mb * 1024 * 1024
    # The interceptor costs a little per RPC: only when there are tokens or request ids to log.
    intercept = tokens is not None or settings.log_format == "json"
    server = grpc.aio.server(
        interceptors=[AccessInterceptor(tokens)] if intercept else None,
        options=[
            ("grpc.max_receive_message_length", max_bytes),
            ("grpc.max_send_message_length", max_bytes),
            ("grpc.so_reuseport", 0),  # a second server on the port must fail, not share it
        ],
    )
    servicer = VerifierServicer(registry, config, dispatcher, Quotas(settings.auth), metrics)
    add_servicer(servicer, server)
    service_names = [
        SERVICE_NAME,
        health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
        reflection.SERVICE_NAME,
    ]
    add_standard_services(health, service_names, server)
    bound = []
    http: web.AppRunner | None = None
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    where = f"{host}:{settings.port}"  # what could not be bound, for the error
    try:
        if settings.port is not None:
            port = (
                server.add_secure_port(where, credentials)
                if credentials is not None
                else server.add_insecure_port(where)
            )
            bound.append(f"{host}:{port}")
        if settings.unix:
            where = f"unix:{settings.unix}"
            server.add_insecure_port(where)
            bound.append(where)
        if settings.http_port is not None:
            where = f"{host}:{settings.http_port} (HTTP)"
            http = await _start_http(servicer, health, tokens, settings, max_bytes)
            bound.append(f"{'https' if settings.tls else 'http'}://{host}:{http.addresses[0][1]}")
        if metrics is not None:
            assert settings.metrics_port is not None
            where = f"{host}:{settings.metrics_port} (metrics)"
            port = metrics.serve(settings.metrics_port, settings.host)
            bound.append(f"http://{host}:{port}/metrics")
    except (RuntimeError, OSError) as exc:
        if http is not None:
            await http.cleanup()
        await verifiers.close()
        await pool.close()
        raise RuntimeError(f"cannot listen on {where}: {exc}") from None
    await server.start()
    await health.set("", serving)
    await health.set(SERVICE_NAME, serving)
    for name in [*registry.names(), *config.rewards]:
        if f"{SERVICE_NAME}/{name}" not in verifiers.reported:  # a verifier's own word wins
            await health.set(f"{SERVICE_NAME}/{name}", serving)
    pool.on_capacity = _capacity_reporter(health, registry, config, verifiers.reported)
    return RunningServer(server, health, pool, threads, bound, registry, verifiers, metrics, http)


async def _start_http(
    servicer: VerifierServicer,
    health: _Health,
    tokens: dict[str, str] | None,
    settings: ServerSettings,
    max_bytes: int,
) -> web.AppRunner:
    """The HTTP/JSON front end (verifier_server.http_api) on `settings.http_port`, with the
    gRPC port's TLS and tokens."""
    from verifier_server.http_api import build_app

    ssl_context = None
    if settings.tls is not None:
        tls = settings.tls
        ssl_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ssl_context.load_cert_chain(tls.cert_file, tls.key_file)
        if tls.client_ca_file:
            ssl_context.load_verify_locations(tls.client_ca_file)
            ssl_context.verify_mode = ssl.CERT_REQUIRED
    # handler_cancellation: a client that hangs up cancels its request's work, as a cancelled
    # RPC does (aiohttp's default lets the handler run on for nobody).
    runner = web.AppRunner(
        build_app(servicer, health.serving, tokens, max_bytes),
        access_log=None, handler_cancellation=True,
    )  # fmt: skip
    await runner.setup()
    site = web.TCPSite(
        runner, settings.host, settings.http_port, ssl_context=ssl_context,
        shutdown_timeout=settings.grace_s, reuse_port=False,
    )  # fmt: skip
    try:
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    return runner


class _Health(HealthServicer):
    """The standard health service, also shown as a metric when metrics are on."""

    def __init__(self, metrics: Metrics | None) -> None:
        super().__init__()
        self._metrics = metrics
        self._statuses: dict[str, Any] = {}
        self._shutting_down = False

    def serving(self, service: str) -> bool | None:
        """Whether `service` is SERVING; None for a name never set (for the HTTP /healthz)."""
        if service not in self._statuses:
            return None
        return not self._shutting_down and self._statuses[service] == _SERVING

    async def enter_graceful_shutdown(self) -> None:
        self._shutting_down = True
        await super().enter_graceful_shutdown()

    async def set(self, service: str, status: Any) -> None:
        self._statuses[service] = status
        await super().set(service, status)
        if self._metrics is not None:
            serving = status == health_pb2.HealthCheckResponse.SERVING
            self._metrics.health.labels(service).set(1 if serving else 0)


def _warn_if_exposed(settings: ServerSettings) -> None:
    """Off loopback, anyone who reaches the port runs code in the sandboxes and spends judge
    budget: say so when TLS or tokens are missing."""
    if settings.host in ("127.0.0.1", "::1", "localhost") or settings.port is None:
        return
    missing = [
        what for what, on in (("TLS", settings.tls), ("auth tokens", settings.auth)) if not on
    ]
    if missing:
        message = (
            f"listening on {settings.host} without {' and '.join(missing)}: anyone who can reach "
            "the port can run code in the sandboxes and spend judge budget (see server.tls and "
            "server.auth in the README)"
        )
        log.warning(message)
        print(f"warning: {message}", file=sys.stderr, flush=True)


def _capacity_reporter(
    health: HealthServicer, registry: Registry, config: ServerConfig, reported: set[str]
) -> Callable[[bool], None]:
    """The pool's capacity -> health: with no ready worker (a crash loop of respawns, say),
    the server, the named rewards and every verifier that runs in the pool are NOT_SERVING,
    so a load balancer or a probe stops sending work that could only time out."""
    names = [
        f"{SERVICE_NAME}/{name}"
        for name in [*registry.names(), *config.rewards]
        if name in config.rewards or registry.get(name).execution in ("process", "bulk")
    ]

    def report(has_capacity: bool) -> None:
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if has_capacity
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )

        async def apply() -> None:
            for service in ["", SERVICE_NAME, *names]:
                if service not in reported:  # a verifier's own word wins
                    await health.set(service, status)

        asyncio.get_running_loop().create_task(apply())

    return report


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
