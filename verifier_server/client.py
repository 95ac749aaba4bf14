"""Python client: `AsyncRewardClient` and its sync twin `RewardClient`.

    with RewardClient("127.0.0.1:50051") as client:
        results = client.score([Item(id="a", completion="<answer>4</answer>",
                                     reward=RewardSpec("string_check"), reference="4")])

- `score(items)` returns one Result per item, in input order. Large batches are split
  (`max_batch_items`, and by size under the message cap) and sent concurrently.
- In-flight RPCs per client are capped (`max_in_flight`): past ~1,000 on one channel grpcio
  fails calls with CANCELLED.
- gRPC UNAVAILABLE and items that come back STATUS_OVERLOADED are retried with jittered
  exponential backoff until `timeout_s` runs out; what is still failing then is returned as
  non-OK results (BACKEND_UNAVAILABLE, TIMEOUT, OVERLOADED) for the caller to mask.
- A request the server rejects (INVALID_ARGUMENT, ...) raises RewardClientError: that is a bug
  in the caller, not a reward.
- Several addresses are spread with gRPC's `round_robin` policy.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf import json_format
from grpc_health.v1 import health_pb2, health_pb2_grpc

from verifier_server import convert
from verifier_server._proto.verifier.v1 import verifier_pb2 as pb
from verifier_server._proto.verifier.v1 import verifier_pb2_grpc as pb_grpc
from verifier_server.types import Item, Result, Status

_RETRYABLE_CODES = frozenset({grpc.StatusCode.UNAVAILABLE})


class RewardClientError(Exception):
    """The server rejected a request (a caller bug), or the client is misused."""

    def __init__(self, message: str, code: grpc.StatusCode | None = None) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class VerifierInfo:
    name: str
    description: str
    params_schema: dict[str, Any]
    kind: str


def channel_target(addresses: str | Sequence[str]) -> str:
    """ "host:port", "unix:/path", or several "ip:port" joined into one round-robin target."""
    if isinstance(addresses, str):
        return addresses
    if not addresses:
        raise RewardClientError("no server address given")
    if len(addresses) == 1:
        return addresses[0]
    if any(a.startswith(("unix:", "dns:", "ipv4:", "ipv6:")) for a in addresses):
        raise RewardClientError(
            "several addresses must be plain ip:port pairs; use one dns: target instead"
        )
    scheme = "ipv6" if all(a.startswith("[") for a in addresses) else "ipv4"
    return f"{scheme}:{','.join(addresses)}"


class AsyncRewardClient:
    """Async client for one server or several replicas. Use in one event loop."""

    def __init__(
        self,
        address: str | Sequence[str],
        *,
        timeout_s: float = 120.0,
        max_batch_items: int = 256,
        max_in_flight: int = 64,
        max_message_mb: int = 64,
        backoff_initial_s: float = 0.05,
        backoff_max_s: float = 2.0,
    ) -> None:
        if max_in_flight < 1 or max_batch_items < 1:
            raise RewardClientError("max_in_flight and max_batch_items must be >= 1")
        self.timeout_s = timeout_s
        self.max_batch_items = max_batch_items
        self.max_batch_bytes = max_message_mb * 1024 * 1024 // 2
        self.backoff_initial_s = backoff_initial_s
        self.backoff_max_s = backoff_max_s
        max_bytes = max_message_mb * 1024 * 1024
        self._channel = grpc.aio.insecure_channel(
            channel_target(address),
            options=[
                ("grpc.lb_policy_name", "round_robin"),
                ("grpc.max_receive_message_length", max_bytes),
                ("grpc.max_send_message_length", max_bytes),
            ],
        )
        self._stub = pb_grpc.VerifierServiceStub(self._channel)
        self._health = health_pb2_grpc.HealthStub(self._channel)
        self._in_flight = asyncio.Semaphore(max_in_flight)

    async def __aenter__(self) -> AsyncRewardClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self._channel.close()

    async def score(self, items: Sequence[Item], *, timeout_s: float | None = None) -> list[Result]:
        """One result per item, in input order; retried until `timeout_s` (default: client's)."""
        deadline = time.monotonic() + (timeout_s if timeout_s is not None else self.timeout_s)
        rewards: dict[int, pb.RewardSpec] = {}  # items usually share one spec: convert it once
        messages = [convert.item_to_proto(item, rewards) for item in items]
        batches = self._split(messages)
        chunks = await asyncio.gather(*(self._score_batch(batch, deadline) for batch in batches))
        return [result for chunk in chunks for result in chunk]

    async def score_stream(
        self,
        items: AsyncIterable[Item] | Iterable[Item],
        *,
        timeout_s: float | None = None,
        batch_items: int = 32,
    ) -> AsyncIterator[Result]:
        """Streams items to the server and yields results as they finish (completion order).

        No retries: a stream is for lowest latency; items that come back OVERLOADED are yielded
        as such. Use `score` for retried batches.
        """

        async def requests() -> AsyncIterator[pb.ScoreRequest]:
            batch: list[pb.Item] = []
            rewards: dict[int, pb.RewardSpec] = {}
            async for item in _aiter(items):
                batch.append(convert.item_to_proto(item, rewards))
                if len(batch) >= batch_items:
                    yield pb.ScoreRequest(items=batch)
                    batch = []
            if batch:
                yield pb.ScoreRequest(items=batch)

        call = self._stub.ScoreStream(
            requests(), timeout=timeout_s if timeout_s is not None else self.timeout_s
        )
        try:
            async for response in call:
                for result in response.results:
                    yield convert.result_from_proto(result)
        except grpc.aio.AioRpcError as exc:
            raise RewardClientError(
                f"ScoreStream failed: {exc.code().name}: {exc.details()}", exc.code()
            ) from None

    async def list_verifiers(self, *, timeout_s: float = 10.0) -> list[VerifierInfo]:
        response = await self._stub.ListVerifiers(pb.ListVerifiersRequest(), timeout=timeout_s)
        return [
            VerifierInfo(v.name, v.description, json_format.MessageToDict(v.params_schema), v.kind)
            for v in response.verifiers
        ]

    async def health(self, service: str = "", *, timeout_s: float = 5.0) -> str:
        """ "SERVING", "NOT_SERVING", "SERVICE_UNKNOWN" or "UNAVAILABLE" (server unreachable)."""
        try:
            response = await self._health.Check(
                health_pb2.HealthCheckRequest(service=service), timeout=timeout_s
            )
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND:
                return "SERVICE_UNKNOWN"
            return "UNAVAILABLE"
        return health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)

    async def wait_ready(self, timeout_s: float = 30.0) -> None:
        """Waits until the server answers its health check with SERVING."""
        end = time.monotonic() + timeout_s
        while await self.health(timeout_s=1.0) != "SERVING":
            if time.monotonic() > end:
                raise RewardClientError(f"server not SERVING after {timeout_s:g} s")
            await asyncio.sleep(0.1)

    # ---- internals

    def _split(self, messages: list[pb.Item]) -> list[list[pb.Item]]:
        batches: list[list[pb.Item]] = []
        current: list[pb.Item] = []
        size = 0
        for message in messages:
            message_size = message.ByteSize()
            if current and (
                len(current) >= self.max_batch_items or size + message_size > self.max_batch_bytes
            ):
                batches.append(current)
                current, size = [], 0
            current.append(message)
            size += message_size
        if current:
            batches.append(current)
        return batches

    async def _score_batch(self, batch: list[pb.Item], deadline: float) -> list[Result]:
        results: dict[str, Result] = {}
        pending = batch
        attempt = 0
        while pending:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                for message in pending:
                    results.setdefault(
                        message.id,
                        _failed(message, Status.TIMEOUT, "deadline_exceeded", "client timeout"),
                    )
                break
            try:
                async with self._in_flight:
                    response = await self._stub.Score(
                        pb.ScoreRequest(items=pending), timeout=remaining
                    )
            except grpc.aio.AioRpcError as exc:
                if exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
                    for message in pending:
                        results[message.id] = _failed(
                            message, Status.TIMEOUT, "deadline_exceeded", exc.details() or ""
                        )
                    break
                if exc.code() not in _RETRYABLE_CODES:
                    raise RewardClientError(
                        f"Score failed: {exc.code().name}: {exc.details()}", exc.code()
                    ) from None
                for message in pending:  # kept if the retries run out
                    results[message.id] = _failed(
                        message, Status.BACKEND_UNAVAILABLE, "unavailable", exc.details() or ""
                    )
            else:
                retry = []
                by_id = {m.id: m for m in pending}
                for proto_result in response.results:
                    result = convert.result_from_proto(proto_result)
                    results[result.id] = result
                    if result.status == Status.OVERLOADED and result.id in by_id:
                        retry.append(by_id[result.id])
                if not retry:
                    break
                pending = retry
            await self._backoff(attempt, deadline)
            attempt += 1
        return [results[message.id] for message in batch]

    async def _backoff(self, attempt: int, deadline: float) -> None:
        """Full jitter: uniform(0, min(max, initial * 2^attempt)), never past the deadline."""
        ceiling = min(self.backoff_max_s, self.backoff_initial_s * 2**attempt)
        delay = min(random.uniform(0, ceiling), max(0.0, deadline - time.monotonic()))
        await asyncio.sleep(delay)


def _failed(message: pb.Item, status: Status, reason: str, why: str) -> Result:
    return Result.failed(message.id, status, reason, why)


async def _aiter(items: AsyncIterable[Item] | Iterable[Item]) -> AsyncIterator[Item]:
    if isinstance(items, AsyncIterable):
        async for item in items:
            yield item
    else:
        for item in items:
            yield item


class RewardClient:
    """Blocking client. Runs an AsyncRewardClient on a private event loop thread, so it works
    from any thread and inside programs that already run an event loop (notebooks)."""

    def __init__(self, address: str | Sequence[str], **options: Any) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="reward-client", daemon=True
        )
        self._thread.start()
        self._client: AsyncRewardClient = self._call(_make_client(address, options))

    def __enter__(self) -> RewardClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def score(self, items: Sequence[Item], *, timeout_s: float | None = None) -> list[Result]:
        """One result per item, in input order (see AsyncRewardClient.score)."""
        return self._call(self._client.score(items, timeout_s=timeout_s))

    def list_verifiers(self) -> list[VerifierInfo]:
        return self._call(self._client.list_verifiers())

    def health(self, service: str = "") -> str:
        return self._call(self._client.health(service))

    def wait_ready(self, timeout_s: float = 30.0) -> None:
        self._call(self._client.wait_ready(timeout_s))

    def close(self) -> None:
        if self._loop.is_closed():
            return
        self._call(self._client.close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()

    def _call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()


async def _make_client(address: str | Sequence[str], options: dict[str, Any]) -> AsyncRewardClient:
    return AsyncRewardClient(address, **options)
