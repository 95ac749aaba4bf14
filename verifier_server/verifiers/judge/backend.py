"""One OpenAI-compatible chat endpoint (vLLM, SGLang, TGI, OpenAI, `transformers serve`):
its settings, and calls to it with limits, retries, a circuit breaker and a reply cache.

Guarantees:
- The API key is read once from the environment variable the config names, sent only in the
  Authorization header, and never written to logs, errors or results: any text from the
  backend that we pass on has the key replaced by `[redacted]`.
- At most `max_concurrency` calls in flight and `requests_per_minute` starts per minute. The
  wait for a slot or a rate-limit token is no input's doing: it moves the call's end later (up
  to the caller's `latest`), so an input is timed only by its time at the backend; a call whose
  time runs out while it waits is STATUS_OVERLOADED (`no_backend_slot`), never a timeout the
  input could be blamed for.
- Connection errors, per-attempt timeouts, HTTP 408 and 5xx are retried with full-jitter
  exponential backoff; HTTP 429 is retried after its `Retry-After` (plus jitter). Nothing is
  retried past the item's end time: a `Retry-After` beyond it fails the item at once.
- `breaker_failures` consecutive failures (connection, timeout, 5xx, 401/403) open the
  breaker: calls then fail at once with STATUS_BACKEND_UNAVAILABLE and the backend reports
  NOT_SERVING; every `breaker_reset_s` a one-token probe request tries it again. A timed-out
  attempt counts only when the caller says its input cannot be to blame (`blame_timeouts`):
  a long completion slows a backend's prefill, and its timeouts must not open the breaker
  for every other item (nor hold the half-open breaker's one trial).

Not guaranteed: that the backend honours `response_format` (`transformers serve` ignores it;
the verdict parser accepts a documented plain-text form too), or fresh samples for identical
requests while the cache is on.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, field_validator

from verifier_server.types import Status, truncate
from verifier_server.verifiers.base import Params
from verifier_server.verifiers.judge.cache import ReplyCache
from verifier_server.verifiers.judge.limits import (
    CircuitBreaker,
    RateLimiter,
    backoff_s,
    parse_retry_after,
)

if TYPE_CHECKING:
    import aiohttp

log = logging.getLogger(__name__)

_RESERVED_BODY_KEYS = frozenset({"model", "messages", "response_format", "stream", "n"})
_RAW_LIMIT = 2000  # characters of a backend's text kept in details
_MAX_BODY_BYTES = 4 << 20


class BackendSettings(Params):
    """One judge backend, from `verifier_settings.judge.backends.<name>` in the server config."""

    base_url: str = Field(
        description="The API root, e.g. http://127.0.0.1:8000/v1; /chat/completions is appended."
    )
    model: str = Field(description="The model name sent with every request.")
    api_key_env: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        description="Name of the environment variable holding the API key (never the key).",
    )
    structured_output: Literal["json_schema", "json_object", "none"] = Field(
        default="json_schema",
        description="How to ask for a JSON verdict: response_format json_schema (OpenAI, "
        "vLLM, SGLang), json_object, or none (the judge ends with a 'SCORE: n' line).",
    )
    max_tokens: int = Field(default=1024, ge=1, description="Longest judge reply.")
    temperature: float = Field(default=0.0, ge=0, le=2, description="Sampling temperature.")
    extra_body: dict[str, Any] = Field(
        default_factory=dict,
        description="Extra request fields, e.g. {chat_template_kwargs: {enable_thinking: false}}.",
    )
    max_concurrency: int = Field(default=8, ge=1, description="Calls in flight at once.")
    requests_per_minute: float | None = Field(
        default=None, gt=0, description="Starts per minute, spaced evenly; null: no limit."
    )
    request_timeout_s: float = Field(default=60.0, gt=0, description="Limit on one HTTP attempt.")
    max_retries: int = Field(default=3, ge=0, description="Retries after the first attempt.")
    backoff_initial_s: float = Field(default=0.5, gt=0, description="First backoff ceiling.")
    backoff_max_s: float = Field(default=30.0, gt=0, description="Largest backoff ceiling.")
    breaker_failures: int = Field(
        default=5, ge=1, description="Consecutive failures that open the circuit breaker."
    )
    breaker_reset_s: float = Field(
        default=30.0, gt=0, description="How long it stays open before a probe."
    )

    @field_validator("base_url")
    @classmethod
    def _url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http:// or https:// URL with a host")
        if parts.username or parts.password:
            raise ValueError("must not hold credentials; use api_key_env")
        if parts.query or parts.fragment:
            raise ValueError("must not have a query or fragment")
        return value.rstrip("/")

    @field_validator("extra_body")
    @classmethod
    def _extra(cls, value: dict[str, Any]) -> dict[str, Any]:
        clash = sorted(_RESERVED_BODY_KEYS & value.keys())
        if clash:
            raise ValueError(f"{clash} are set by the judge and cannot be overridden")
        return value


class BackendError(Exception):
    """A call that produced no usable reply; `status` and `reason` go into the item's result.

    `raw` is backend text (already redacted) worth showing the user, e.g. an error body.
    """

    def __init__(self, status: Status, reason: str, message: str, raw: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.message = message
        self.raw = raw


class RejectedRequest(BackendError):
    """The backend refused this request as bad (a 4xx other than 401/403/408/429): a context
    length exceeded, a payload too large, a content filter, or a misconfigured request."""


class _Clock:
    """One call's end. A wait on our side (a slot, a rate-limit token) may run to `latest` and
    then pushes `end` later by its length, up to `latest`; every watching `asyncio.timeout`
    follows (identical requests in flight share one call, so they share its clock). `queued`
    says whether the call is waiting now."""

    def __init__(self, end: float, latest: float) -> None:
        self.end, self.latest = end, max(end, latest)
        self.queued = False
        self._since = 0.0
        self._watchers: dict[asyncio.Timeout, float] = {}

    def watch(self, timeout: asyncio.Timeout, latest: float) -> None:
        self._watchers[timeout] = latest
        self._reschedule(timeout, latest)

    def unwatch(self, timeout: asyncio.Timeout) -> None:
        self._watchers.pop(timeout, None)

    def wait_started(self) -> None:
        self.queued, self._since = True, time.monotonic()
        self._reschedule_all()

    def wait_ended(self) -> None:
        self.queued = False
        self.end = min(self.latest, self.end + time.monotonic() - self._since)
        self._reschedule_all()

    def _reschedule_all(self) -> None:
        for timeout, latest in self._watchers.items():
            if not timeout.expired():  # one that fired is on its way out: it cannot move
                self._reschedule(timeout, latest)

    def _reschedule(self, timeout: asyncio.Timeout, latest: float) -> None:
        end = min(latest, self.latest if self.queued else self.end)
        timeout.reschedule(asyncio.get_running_loop().time() + end - time.monotonic())


@dataclass(frozen=True)
class Reply:
    text: str
    finish_reason: str | None


class _Retry(Exception):
    """An attempt failed in a way worth another try."""

    def __init__(self, reason: str, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.retry_after_s = retry_after_s


class ChatBackend:
    """Calls one backend. Create and close it on the server's event loop."""

    def __init__(
        self,
        name: str,
        settings: BackendSettings,
        cache: ReplyCache[Reply],
        on_health: Callable[[bool], None] = lambda serving: None,
        rng: random.Random | None = None,
    ) -> None:
        import aiohttp  # here, not at module level: worker processes never call a judge

        self.name = name
        self.settings = settings
        self._key = _read_key(name, settings.api_key_env)
        self._cache = cache
        self._rng = rng or random.Random()
        self._on_health = on_health
        self.breaker = CircuitBreaker(
            settings.breaker_failures, settings.breaker_reset_s, self._breaker_changed
        )
        self._limiter = (
            RateLimiter(settings.requests_per_minute) if settings.requests_per_minute else None
        )
        self._slots = asyncio.Semaphore(settings.max_concurrency)
        self._url = f"{settings.base_url}/chat/completions"
        headers = {"Content-Type": "application/json"}
        if self._key:
            headers["Authorization"] = f"Bearer {self._key}"
        self._session = aiohttp.ClientSession(
            headers=headers,
            connector=aiohttp.TCPConnector(limit=settings.max_concurrency),
            timeout=aiohttp.ClientTimeout(total=None),
        )
        self._probe: asyncio.Task[None] | None = None
        self._clocks: dict[str, _Clock] = {}  # by request key, while its call is in flight

    def __repr__(self) -> str:  # never the key
        return f"ChatBackend({self.name!r}, {self.settings.base_url!r}, {self.settings.model!r})"

    async def close(self) -> None:
        if self._probe is not None:
            self._probe.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._probe
        await self._session.close()

    def body(self, messages: list[dict[str, str]], schema: dict[str, Any] | None) -> dict[str, Any]:
        """The request body; `schema` is the verdict's JSON Schema for `response_format`."""
        s = self.settings
        body: dict[str, Any] = {
            **s.extra_body,
            "model": s.model,
            "messages": messages,
            "max_tokens": s.max_tokens,
            "temperature": s.temperature,
        }
        if schema is not None and s.structured_output == "json_schema":
            body["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "verdict", "schema": schema, "strict": True},
            }
        elif schema is not None and s.structured_output == "json_object":
            body["response_format"] = {"type": "json_object"}
        return body

    async def complete(
        self,
        body: dict[str, Any],
        end: float,
        *,
        blame_timeouts: bool = True,
        latest: float | None = None,
    ) -> tuple[Reply, bool]:
        """(reply, cached) for `body`, finished by `end` (time.monotonic()) or BackendError.

        Time spent waiting for a slot or the rate limiter moves `end` later, up to `latest`
        (default `end`): only time at the backend counts against the input. A call still
        waiting when its time is up is OVERLOADED (`no_backend_slot`).

        `blame_timeouts=False` when `body` holds a completion: its timed-out attempts are then
        not counted toward the breaker (the completion may be too long to prefill in time);
        the caller's probe with a plain answer, sent with True, counts for the backend."""
        key = hashlib.sha256(
            json.dumps([self.name, body], sort_keys=True, ensure_ascii=False).encode()
        ).hexdigest()
        latest = end if latest is None else latest
        clock = self._clocks.get(key) or _Clock(end, latest)  # an identical call's, if in flight

        async def call() -> Reply:
            try:
                return await self._call(body, clock, blame_timeouts)
            finally:
                if self._clocks.get(key) is clock:
                    del self._clocks[key]

        def start() -> Awaitable[Reply]:
            self._clocks[key] = clock
            return call()

        try:
            async with asyncio.timeout(None) as timeout:
                clock.watch(timeout, latest)
                try:
                    return await self._cache.get_or_call(key, start)
                finally:
                    clock.unwatch(timeout)
        except TimeoutError:
            if clock.queued:
                raise self._no_slot() from None
            raise BackendError(
                Status.TIMEOUT,
                "judge_timeout",
                f"judge backend {self.name!r} did not answer within the item's time limit",
            ) from None

    def _no_slot(self) -> BackendError:
        return BackendError(
            Status.OVERLOADED,
            "no_backend_slot",
            f"no slot (max_concurrency) or rate-limit token (requests_per_minute) of judge "
            f"backend {self.name!r} came free within the item's time limit",
        )

    # ---- one call: breaker, slots, attempts, backoff

    async def _call(self, body: dict[str, Any], clock: _Clock, blame_timeouts: bool) -> Reply:
        last: _Retry | None = None
        for attempt in range(self.settings.max_retries + 1):
            if not self.breaker.allow():
                raise BackendError(
                    Status.BACKEND_UNAVAILABLE,
                    "circuit_open",
                    f"judge backend {self.name!r} is failing; the next try is in "
                    f"{self.breaker.retry_in_s():.1f} s",
                )
            try:
                return await self._attempt(body, clock, blame_timeouts)
            except _Retry as retry:
                last = retry
            if attempt == self.settings.max_retries:
                break
            wait = backoff_s(
                attempt, self.settings.backoff_initial_s, self.settings.backoff_max_s, self._rng
            )
            if last.retry_after_s is not None:  # honour it, with jitter against a stampede
                wait = last.retry_after_s + self._rng.uniform(0, self.settings.backoff_initial_s)
            if time.monotonic() + wait >= clock.end:
                raise BackendError(
                    Status.BACKEND_UNAVAILABLE,
                    last.reason,
                    f"{last.message}; the next try ({wait:.1f} s away) would end past the "
                    "item's time limit",
                )
            await asyncio.sleep(wait)
        assert last is not None
        raise BackendError(
            Status.BACKEND_UNAVAILABLE,
            last.reason,
            f"{last.message} (after {self.settings.max_retries + 1} attempts)",
        )

    async def _attempt(self, body: dict[str, Any], clock: _Clock, blame_timeouts: bool) -> Reply:
        """One HTTP request; raises _Retry for what another try may fix, else BackendError."""
        import aiohttp

        clock.wait_started()
        async with self._slots:
            if self._limiter is not None:
                await asyncio.sleep(self._limiter.reserve())
            clock.wait_ended()
            limit_s = min(self.settings.request_timeout_s, clock.end - time.monotonic())
            if limit_s <= 0:  # the wait took the caller's `latest`: nothing was sent
                raise self._no_slot()
            try:
                async with self._session.post(
                    self._url,
                    json=body,
                    timeout=aiohttp.ClientTimeout(total=limit_s),
                    allow_redirects=False,  # the key goes to the configured host only
                ) as response:
                    text = await _read_text(response)
                    status, headers = response.status, response.headers
            except TimeoutError:
                if limit_s < self.settings.request_timeout_s:  # the item's time ran out
                    raise
                if blame_timeouts:
                    self.breaker.record_failure()
                else:
                    self.breaker.release_trial()
                raise _Retry(
                    "backend_timeout",
                    f"judge backend {self.name!r} did not answer within "
                    f"{self.settings.request_timeout_s:g} s",
                ) from None
            except aiohttp.ClientError as exc:
                self.breaker.record_failure()
                raise _Retry(
                    "backend_unreachable",
                    f"judge backend {self.name!r} unreachable: {type(exc).__name__}",
                ) from None
        return self._reply(status, headers, text)

    def _reply(self, status: int, headers: Any, text: str) -> Reply:
        raw = truncate(self._redact(text), _RAW_LIMIT)
        if status == 200:
            self.breaker.record_success()
            reply = _parse_completion(text, raw)
            return Reply(self._redact(reply.text), reply.finish_reason)
        if status == 429:
            self.breaker.record_success()  # rate limited means alive
            raise _Retry(
                "rate_limited",
                f"judge backend {self.name!r} answered 429 Too Many Requests",
                parse_retry_after(headers.get("Retry-After")),
            )
        if status == 408 or status >= 500:
            self.breaker.record_failure()
            raise _Retry(
                "backend_error",
                f"judge backend {self.name!r} answered HTTP {status}: {truncate(raw, 200)}",
                parse_retry_after(headers.get("Retry-After")) if status == 503 else None,
            )
        if status in (401, 403):
            self.breaker.record_failure()
            raise BackendError(
                Status.BACKEND_UNAVAILABLE,
                "backend_auth_failed",
                f"judge backend {self.name!r} refused our credentials (HTTP {status}); "
                f"check the key in {self.settings.api_key_env or '(no api_key_env set)'}",
                raw,
            )
        self.breaker.record_success()
        raise RejectedRequest(
            Status.VERIFIER_ERROR,
            "backend_rejected_request",
            f"judge backend {self.name!r} rejected the request with HTTP {status}",
            raw,
        )

    def _redact(self, text: str) -> str:
        return text.replace(self._key, "[redacted]") if self._key else text

    # ---- health and probing

    def _breaker_changed(self, closed: bool) -> None:
        if closed:
            log.info("judge backend %s is answering again", self.name)
        else:
            log.warning(
                "judge backend %s failed %d times in a row; failing fast for %.0f s",
                self.name,
                self.settings.breaker_failures,
                self.settings.breaker_reset_s,
            )
            if self._probe is None or self._probe.done():
                self._probe = asyncio.get_running_loop().create_task(self._probe_until_closed())
        self._on_health(closed)

    async def _probe_until_closed(self) -> None:
        """While open, sends a one-token request whenever a trial is due, so health recovers
        even when no caller is sending (a trainer may wait for SERVING before it does)."""
        probe = {**self.body([{"role": "user", "content": "ping"}], None), "max_tokens": 1}
        while not self.breaker.closed:
            await asyncio.sleep(self.breaker.retry_in_s() + self._rng.uniform(0, 0.1))
            if not self.breaker.allow():
                continue
            end = time.monotonic() + self.settings.request_timeout_s
            with contextlib.suppress(_Retry, BackendError, TimeoutError):
                await self._attempt(probe, _Clock(end, end), blame_timeouts=True)


async def _read_text(response: aiohttp.ClientResponse) -> str:
    """The body as text, refusing more than _MAX_BODY_BYTES (a misbehaving backend)."""
    chunks, size = [], 0
    async for chunk in response.content.iter_chunked(65_536):
        size += len(chunk)
        if size > _MAX_BODY_BYTES:
            raise BackendError(
                Status.VERIFIER_ERROR,
                "bad_backend_response",
                f"the judge backend's answer is over {_MAX_BODY_BYTES} bytes",
            )
        chunks.append(chunk)
    return b"".join(chunks).decode("utf-8", errors="replace")


def _parse_completion(text: str, raw: str) -> Reply:
    """The assistant text of a chat completion response; garbage is a BackendError."""
    try:
        data = json.loads(text)
        choice = data["choices"][0]
        content = choice["message"]["content"]
    except (ValueError, KeyError, IndexError, TypeError):
        raise BackendError(
            Status.VERIFIER_ERROR,
            "bad_backend_response",
            "the judge backend's answer is not a chat completion",
            raw,
        ) from None
    if not isinstance(content, str):
        raise BackendError(
            Status.VERIFIER_ERROR,
            "bad_backend_response",
            "the judge backend's answer has no text content",
            raw,
        )
    finish = choice.get("finish_reason")
    return Reply(content, finish if isinstance(finish, str) else None)


def _read_key(backend: str, env_name: str | None) -> str | None:
    if env_name is None:
        return None
    key = os.environ.get(env_name, "")
    if not key:
        raise ValueError(
            f"judge backend {backend!r}: environment variable {env_name} (api_key_env) is "
            "not set or empty"
        )
    return key
