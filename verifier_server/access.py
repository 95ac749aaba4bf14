"""Who may call the server, over what, and how much: TLS credentials, bearer tokens checked on
every RPC (health excepted, so probes need no secret), and per-caller quotas.

A caller is named by the label of its token (`token-1`, or the name given in the tokens file);
the token itself is never logged. Without `auth`, every caller is "" and quotas do not apply.
The interceptor also gives every RPC a request id (the caller's `x-request-id`, or a new one)
that log lines carry (see verifier_server.logs).
"""

from __future__ import annotations

import contextvars
import hmac
import os
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from verifier_server.config import AuthSettings, ConfigError, TlsSettings

caller_var: contextvars.ContextVar[str] = contextvars.ContextVar("caller", default="")
request_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="")

OPEN_METHOD_PREFIXES = ("/grpc.health.v1.Health/",)  # answered without a token


def server_credentials(tls: TlsSettings) -> grpc.ServerCredentials:
    """TLS, or mutual TLS when `client_ca_file` is set (clients must present a certificate
    signed by that CA). Raises ConfigError naming the file that cannot be read."""
    key, cert = (
        _read(tls.key_file, "server.tls.key_file"),
        _read(tls.cert_file, "server.tls.cert_file"),
    )
    ca = _read(tls.client_ca_file, "server.tls.client_ca_file") if tls.client_ca_file else None
    return grpc.ssl_server_credentials(
        [(key, cert)], root_certificates=ca, require_client_auth=ca is not None
    )


def _read(path: str, key: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"{key}: cannot read {path}: {exc.strerror}") from None


def load_tokens(auth: AuthSettings) -> dict[str, str]:
    """Token -> caller label. A tokens file holds one token a line, optionally after a label
    (`trainer-a s3cret`); blank lines and `#` comments are skipped. An environment variable
    holds tokens separated by commas."""
    if auth.tokens_file is not None:
        lines = _read(auth.tokens_file, "server.auth.tokens_file").decode().splitlines()
        where = "server.auth.tokens_file"
    else:
        assert auth.tokens_env is not None
        value = os.environ.get(auth.tokens_env)
        if not value:
            raise ConfigError(f"server.auth.tokens_env: ${auth.tokens_env} is not set or empty")
        lines = value.split(",")
        where = f"${auth.tokens_env}"
    tokens: dict[str, str] = {}
    for line in lines:
        fields = line.split("#", 1)[0].split()
        if not fields:
            continue
        if len(fields) > 2:
            raise ConfigError(f"{where}: a line holds a token, or a label and a token")
        token = fields[-1]
        label = fields[0] if len(fields) == 2 else f"token-{len(tokens) + 1}"
        if len(token) < 16:
            raise ConfigError(f"{where}: token of {label!r} is shorter than 16 characters")
        tokens[token] = label
    if not tokens:
        raise ConfigError(f"{where}: no token found")
    return tokens


class AccessInterceptor(grpc.aio.ServerInterceptor):
    """Checks `authorization: Bearer <token>` (when tokens are configured) and sets the caller
    and request id for the RPC's handler and every task it starts."""

    def __init__(self, tokens: dict[str, str] | None) -> None:
        self._tokens = [(t.encode(), label) for t, label in (tokens or {}).items()]

    def caller(self, authorization: str | None) -> str | None:
        """The label of the token presented, or None. Compares with every token in constant
        time, so the time taken says nothing about which prefix matched."""
        scheme, _, presented_text = (authorization or "").partition(" ")
        if scheme.lower() != "bearer":  # auth schemes are case-insensitive (RFC 9110 11.1)
            return None
        presented = presented_text.strip().encode()
        found = None
        for token, label in self._tokens:
            if hmac.compare_digest(presented, token):
                found = label
        return found

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        if handler is None:
            return handler
        metadata = {key: value for key, value in details.invocation_metadata or ()}
        request_id = str(metadata.get("x-request-id") or uuid.uuid4().hex[:16])[:64]
        caller: str | None = ""
        if self._tokens and not details.method.startswith(OPEN_METHOD_PREFIXES):
            caller = self.caller(metadata.get("authorization"))
        return _wrap(handler, caller, request_id)


def _wrap(handler: grpc.RpcMethodHandler, caller: str | None, request_id: str) -> Any:
    """The same handler, run with the caller and request id set, or refused when the caller
    is None (no valid token)."""

    async def enter(context: grpc.aio.ServicerContext) -> None:
        caller_var.set(caller or "")  # in the handler's own context: its tasks inherit them
        request_id_var.set(request_id)
        if caller is None:
            await context.abort(
                grpc.StatusCode.UNAUTHENTICATED,
                "a valid token is required: send metadata 'authorization: Bearer <token>'",
            )

    for kind in ("unary_unary", "stream_unary"):  # one response
        behavior = getattr(handler, kind)
        if behavior is not None:

            async def respond(request: Any, context: Any, behavior: Any = behavior) -> Any:
                await enter(context)
                return await behavior(request, context)

            return handler._replace(**{kind: respond})
    kind = "unary_stream" if handler.unary_stream is not None else "stream_stream"
    streaming = getattr(handler, kind)

    async def stream(request: Any, context: Any) -> Any:  # a stream of responses
        await enter(context)
        async for response in streaming(request, context):
            yield response

    return handler._replace(**{kind: stream})


@dataclass
class _Bucket:
    in_flight: int = 0
    tokens: float = 0.0  # items the rate allows now
    refilled_at: float = field(default_factory=time.monotonic)


class Quotas:
    """Per-caller limits: items in flight at once, and items per second (a token bucket that
    holds up to one second of items, or one request's worth, whichever is more)."""

    def __init__(self, auth: AuthSettings | None) -> None:
        self.max_in_flight = auth.max_in_flight_items if auth else None
        self.items_per_s = auth.items_per_s if auth else None
        self._buckets: dict[str, _Bucket] = {}

    @property
    def active(self) -> bool:
        return self.max_in_flight is not None or self.items_per_s is not None

    def admit(self, caller: str, n_items: int) -> str | None:
        """Takes `n_items` for `caller`; or says why not ("quota_in_flight", "rate_limited")."""
        bucket = self._buckets.setdefault(caller, _Bucket(tokens=self._capacity(n_items)))
        if self.max_in_flight is not None and bucket.in_flight + n_items > self.max_in_flight:
            return "quota_in_flight"
        if self.items_per_s is not None:
            now = time.monotonic()
            capacity = self._capacity(n_items)
            bucket.tokens = min(
                capacity, bucket.tokens + (now - bucket.refilled_at) * self.items_per_s
            )
            bucket.refilled_at = now
            if bucket.tokens < n_items:
                return "rate_limited"
            bucket.tokens -= n_items
        bucket.in_flight += n_items
        return None

    def release(self, caller: str, n_items: int) -> None:
        bucket = self._buckets.get(caller)
        if bucket is not None:
            bucket.in_flight -= n_items

    def _capacity(self, n_items: int) -> float:
        return max(self.items_per_s or 0.0, float(n_items))
