"""The gRPC servicer: proto in, dispatch, proto out.

A request is checked here (a bad *request* -- too many items, duplicate ids, bytes that are not
a ScoreRequest -- is a gRPC status code), its items are routed by verifier_server.dispatch, and
the slots it returns become the response. A bad *item* is data: it gets a non-OK result and
its neighbours are scored. The event loop never runs verifier code. Assembling, starting and
stopping a server around this servicer is verifier_server.startup's job.

`VerifierServicer.score` and `list_verifiers` are the calls without gRPC's context (a bad
request is a RequestError): the HTTP/JSON front end (verifier_server.http_api) goes through
them, so both ports share admission, quotas, limits and the cut-off before the deadline.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterable, Sequence
from typing import TYPE_CHECKING, Any

import grpc
from google.protobuf.message import DecodeError

from verifier_server import convert
from verifier_server._proto.verifier.v1 import verifier_pb2 as pb
from verifier_server._proto.verifier.v1 import verifier_pb2_grpc as pb_grpc
from verifier_server.access import Quotas, caller_var
from verifier_server.composite import CompositeParams
from verifier_server.config import ServerConfig
from verifier_server.dispatch import Dispatcher, DuplicateIdError, Slot, contiguous_groups
from verifier_server.registry import Registry
from verifier_server.types import Result, Status

if TYPE_CHECKING:
    from verifier_server.metrics import Metrics

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
        request = await parse_request(pb.ScoreRequest, payload, context)
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
            self._count((item.reward.name for item in request.items), response.results)
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
        self._count((item.reward.name for item in request.items), results)
        return response

    async def ScoreStream(
        self, request_iterator: AsyncIterator[bytes], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.ScoreResponse]:
        """Results stream back as items finish. Ids must be unique among the stream's items
        still in flight (their results could not be told apart). A reader task dispatches
        the incoming messages; this generator is the writer."""
        stream = _Stream()
        reader = asyncio.create_task(self._read_stream(request_iterator, context, stream))
        try:
            while True:
                batch = await stream.next_batch()
                self._count((stream.in_flight.get(r.id, "") for r in batch), batch)
                for result in batch:
                    stream.in_flight.pop(result.id, None)
                if batch:
                    yield pb.ScoreResponse(results=batch)
                if reader.done():
                    reader.result()  # re-raise a request-level abort
                    if stream.reading_done and stream.pending == 0:
                        return
        finally:
            reader.cancel()
            _cancel(stream.slots)  # a no-op for finished ones; stops work nobody will read

    async def _read_stream(
        self,
        request_iterator: AsyncIterator[bytes],
        context: grpc.aio.ServicerContext,
        stream: _Stream,
    ) -> None:
        """ScoreStream's reader: each message checked and dispatched, its slots handed to
        `stream`; a bad request aborts the RPC."""
        try:
            async for payload in request_iterator:
                request = await parse_request(pb.ScoreRequest, payload, context)
                for index, message in enumerate(request.items):
                    if message.id in stream.in_flight:
                        await context.abort(
                            grpc.StatusCode.INVALID_ARGUMENT,
                            f"items[{index}].id {message.id!r} is already in flight on this "
                            "stream; ids must be unique among the stream's unanswered items",
                        )
                try:
                    slots = self._dispatch(request, _cut_off(context), f"peer:{context.peer()}")
                except RequestError as exc:
                    await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
                stream.add(request.items, slots)
            stream.reading_done = True
        finally:
            stream.finished.put_nowait(None)  # wake the writer to re-check (also after an abort)

    async def ListVerifiers(
        self, payload: bytes, context: grpc.aio.ServicerContext
    ) -> pb.ListVerifiersResponse:
        await parse_request(pb.ListVerifiersRequest, payload, context)
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

    def _count(self, rewards: Iterable[str], results: Sequence[pb.Result]) -> None:
        """Results by reward name, status and reason, when metrics are on."""
        if self.metrics is not None:
            self.metrics.count_results(
                (name, _STATUS_NAMES[result.status], result.reason)
                for name, result in zip(rewards, results, strict=True)
            )

    def _release_when_done(self, slots: Sequence[Slot], caller: str) -> None:
        counts: dict[int, list[Any]] = {}
        for slot in slots:
            future = slot[0] if isinstance(slot, tuple) else slot
            counts.setdefault(id(future), [future, 0])[1] += 1
        for future, n_items in counts.values():
            future.add_done_callback(lambda _, n=n_items: self.quotas.release(caller, n))


class _Stream:
    """One ScoreStream's items between its reader (which adds them) and its writer (which
    sends their results as they finish)."""

    def __init__(self) -> None:
        self.finished: asyncio.Queue[list[pb.Result] | None] = asyncio.Queue()
        self.in_flight: dict[str, str] = {}  # id -> reward name, of items whose results are to send
        self.slots: list[Slot] = []
        self.pending = 0
        self.reading_done = False

    def add(self, items: Sequence[pb.Item], slots: list[Slot]) -> None:
        """Dispatched `items`: their results go to the queue as their slots finish."""
        self.slots.extend(slots)
        self.pending += len(slots)
        self.in_flight.update((m.id, m.reward.name) for m in items if m.id)
        groups = {id(s[0]): s[0] for s in slots if isinstance(s, tuple)}
        for group in groups.values():
            group.add_done_callback(self._on_group)
        for slot in slots:
            if not isinstance(slot, tuple):
                slot.add_done_callback(self._on_item)

    async def next_batch(self) -> list[pb.Result]:
        """Waits for a finished result (or the reader's wake-up, which may bring none), then
        takes everything ready, to send in one message."""
        first = await self.finished.get()
        batch = [] if first is None else first
        while not self.finished.empty():
            batch += self.finished.get_nowait() or []
        self.pending -= len(batch)
        return batch

    def _on_item(self, future: asyncio.Future[Result]) -> None:
        if not future.cancelled():
            self.finished.put_nowait([convert.result_to_proto(future.result())])

    def _on_group(self, future: asyncio.Future[bytes]) -> None:
        if not future.cancelled():
            self.finished.put_nowait(list(pb.ScoreResponse.FromString(future.result()).results))


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


_CUT_OFF_MARGIN_S = 0.5  # the response leaves this long (at most a tenth of the time) early
_STATUS_NAMES = {value: name.removeprefix("STATUS_") for name, value in pb.Status.items()}


async def parse_request(
    message_type: Any, payload: bytes, context: grpc.aio.ServicerContext
) -> Any:
    """`payload` parsed as `message_type`; bytes that are not one abort the RPC with
    INVALID_ARGUMENT (a deserializer's failure would be UNKNOWN). Shared with the standard
    services (verifier_server.standard_services)."""
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
