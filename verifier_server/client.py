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
from pathlib import Path
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
class ClientTls:
    """TLS for the client's channel. `ca_file`: PEM roots that signed the server's certificate
    (None: the system's); `cert_file` + `key_file`: the client's own certificate, for servers
    that require mutual TLS; `server_name`: the name to check the certificate against, when it
    differs from the address's host."""

    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    server_name: str | None = None

    def credentials(self) -> grpc.ChannelCredentials:
        def read(path: str | None) -> bytes | None:
            return None if path is None else Path(path).read_bytes()

        if (self.cert_file is None) != (self.key_file is None):
            raise RewardClientError("tls: set both cert_file and key_file, or neither")
        return grpc.ssl_channel_credentials(
            read(self.ca_file), read(self.key_file), read(self.cert_file)
        )


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
        tls: ClientTls | None = None,
        token: str | None = None,
    ) -> None:
        """`tls`: connect with TLS (see ClientTls); `token`: sent as `authorization: Bearer`
        on every call, for servers with `server.auth`."""
        if max_in_flight < 1 or max_batch_items < 1:
            raise RewardClientError("max_in_flight and max_batch_items must be >= 1")
        self.timeout_s = timeout_s
        self.max_batch_items = max_batch_items
        self.max_batch_bytes = max_message_mb * 1024 * 1024 // 2
        self.backoff_initial_s = backoff_initial_s
        self.backoff_max_s = backoff_max_s
        max_bytes = max_message_mb * 1024 * 1024
        self._metadata = (("authorization", f"Bearer {token}"),) if token else None
        options = [
            ("grpc.lb_policy_name", "round_robin"),
            ("grpc.max_receive_message_length", max_bytes),
            ("grpc.max_send_message_length", max_bytes),
            # gRPC's default reconnect back-off (1 s doubling to 120 s) left a client
            # blind to a restarted server for seconds: retry a lost server quickly.
            ("grpc.initial_reconnect_backoff_ms", 100),
            ("grpc.min_reconnect_backoff_ms", 100),
            ("grpc.max_reconnect_backoff_ms", 1000),
        ]
        if tls is not None and tls.server_name:
            options.append(("grpc.ssl_target_name_override", tls.server_name))
        target = channel_target(address)
        self._channel = (
            grpc.aio.secure_channel(target, tls.credentials(), options=options)
            if tls is not None
            else grpc.aio.insecure_channel(target, options=options)
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
        batches = self._split(items)
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
                try:
                    batch.append(convert.item_to_proto(item, rewards))
                except UnicodeEncodeError:
                    raise RewardClientError(_unencodable(item, "item")) from None
                if len(batch) >= batch_items:
                    yield pb.ScoreRequest(items=batch)
                    batch = []
            if batch:
                yield pb.ScoreRequest(items=batch)

        call = self._stub.ScoreStream(
            requests(),
            timeout=timeout_s if timeout_s is not None else self.timeout_s,
            metadata=self._metadata,
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
        response = await self._stub.ListVerifiers(
            pb.ListVerifiersRequest(), timeout=timeout_s, metadata=self._metadata
        )
        return [
            VerifierInfo(v.name, v.description, json_format.MessageToDict(v.params_schema), v.kind)
            for v in response.verifiers
        ]

    async def health(self, service: str = "", *, timeout_s: float = 5.0) -> str:
        """ "SERVING", "NOT_SERVING", "SERVICE_UNKNOWN" or "UNAVAILABLE" (server unreachable)."""
        try:
            response = await self._health.Check(
                health_pb2.HealthCheckRequest(service=service),
                timeout=timeout_s,
                metadata=self._metadata,
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

    def _split(self, items: Sequence[Item]) -> list[Sequence[Item]]:
        """Batches of at most `max_batch_items` and about `max_batch_bytes` (4 bytes a char:
        an upper bound for UTF-8, so a batch never outgrows the message cap)."""
        batches: list[Sequence[Item]] = []
        start, size = 0, 0
        for index, item in enumerate(items):
            item_size = 4 * (len(item.completion) + len(item.prompt)) + 256
            if index > start and (
                index - start >= self.max_batch_items or size + item_size > self.max_batch_bytes
            ):
                batches.append(items[start:index])
                start, size = index, 0
            size += item_size
        if start < len(items):
            batches.append(items[start:])
        return batches

    async def _score_batch(self, batch: Sequence[Item], deadline: float) -> list[Result]:
        results: list[Result | None] = [None] * len(batch)
        request = _request(batch)
        pending = list(range(len(batch)))  # invariant: request.items[k] is batch[pending[k]]
        attempt = 0
        while True:
            try:
                async with self._in_flight:
                    # The time left is measured once a slot is free: waiting for one counts.
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        self._fill(
                            results, batch, pending, Status.TIMEOUT, "deadline_exceeded",
                            "client timeout",
                        )  # fmt: skip
                        break
                    response = await self._stub.Score(
                        request, timeout=remaining, metadata=self._metadata
                    )
            except grpc.aio.AioRpcError as exc:
                why = exc.details() or ""
                if exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
                    self._fill(results, batch, pending, Status.TIMEOUT, "deadline_exceeded", why)
                    break
                if exc.code() not in _RETRYABLE_CODES:
                    raise RewardClientError(
                        f"Score failed: {exc.code().name}: {why}", exc.code()
                    ) from None
                # Kept if the retries run out; the same request is sent again.
                self._fill(results, batch, pending, Status.BACKEND_UNAVAILABLE, "unavailable", why)
            else:
                retry = self._take(response, batch, pending, results)
                if not retry:
                    break
                request = pb.ScoreRequest(items=[request.items[k] for k in retry])
                pending = [pending[k] for k in retry]
            await self._backoff(attempt, deadline)
            attempt += 1
        return results  # type: ignore[return-value]

    @staticmethod
    def _take(
        response: pb.ScoreResponse,
        batch: Sequence[Item],
        pending: list[int],
        results: list[Result | None],
    ) -> list[int]:
        """Stores the results of `pending` (Score answers in request order); returns the
        indices into `pending` of items to retry (OVERLOADED)."""
        if len(response.results) != len(pending):
            raise RewardClientError(
                f"the server returned {len(response.results)} results for {len(pending)} items"
            )
        retry = []
        for k, (position, proto_result) in enumerate(zip(pending, response.results, strict=True)):
            result = convert.result_from_proto(proto_result)
            if result.id != batch[position].id:
                raise RewardClientError(
                    f"result {result.id!r} came back in place of {batch[position].id!r}"
                )
            results[position] = result
            if result.status == Status.OVERLOADED:
                retry.append(k)
        return retry

    @staticmethod
    def _fill(
        results: list[Result | None],
        batch: Sequence[Item],
        positions: list[int],
        status: Status,
        reason: str,
        why: str,
    ) -> None:
        """Failure results for `positions`, keeping any earlier failure (e.g. OVERLOADED)."""
        for position in positions:
            if results[position] is None or status != Status.TIMEOUT:
                results[position] = Result.failed(batch[position].id, status, reason, why)

    async def _backoff(self, attempt: int, deadline: float) -> None:
        """Full jitter: uniform(0, min(max, initial * 2^attempt)), never past the deadline."""
        ceiling = min(self.backoff_max_s, self.backoff_initial_s * 2**attempt)
        delay = min(random.uniform(0, ceiling), max(0.0, deadline - time.monotonic()))
        await asyncio.sleep(delay)


def _request(batch: Sequence[Item]) -> pb.ScoreRequest:
    try:
        return convert.request_from_items(batch)
    except UnicodeEncodeError:  # a lone surrogate somewhere: say where
        for index, item in enumerate(batch):
            try:
                convert.item_to_proto(item)
            except UnicodeEncodeError:
                raise RewardClientError(_unencodable(item, f"items[{index}]")) from None
        raise


def _unencodable(item: Item, where: str) -> str:
    """Names the first field of `item` that is not encodable as UTF-8 (a lone surrogate)."""
    fields: list[tuple[str, object]] = [
        ("id", item.id),
        ("completion", item.completion),
        ("prompt", item.prompt),
        ("group_id", item.group_id),
        *((f"messages[{i}].content", m.content) for i, m in enumerate(item.messages)),
        *((f"messages[{i}].role", m.role) for i, m in enumerate(item.messages)),
        ("reward.name", item.reward.name if item.reward else ""),
        ("reward.params", item.reward.params if item.reward else None),
        ("reference", item.reference),
    ]
    bad = next((name for name, value in fields if not _encodable(value)), "a field")
    return (
        f"{where}.{bad}: not valid UTF-8 (a lone surrogate such as '\\ud800'); "
        "protobuf strings must be UTF-8: encode with errors='replace' or drop the item"
    )


def _encodable(value: object) -> bool:
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return False
        return True
    if isinstance(value, dict):
        return all(_encodable(k) and _encodable(v) for k, v in value.items())
    if isinstance(value, list | tuple):
        return all(_encodable(v) for v in value)
    return True


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
