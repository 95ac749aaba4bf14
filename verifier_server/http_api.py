"""The HTTP/JSON front end (`serve --http-port`): the gRPC service's calls for clients that
speak JSON -- curl, a Node program without generated code, OpenRLHF's `--remote_rm_url`.

    POST /v1/score                 body: ScoreRequest in protobuf's JSON mapping, plus an
                                   optional "timeout_s"; answer: ScoreResponse as JSON
    GET  /v1/verifiers             ListVerifiersResponse as JSON
    GET  /healthz                  {"status": "SERVING"} (200) or NOT_SERVING (503);
                                   ?service=NAME asks about one verifier, as gRPC health does
    POST /v1/openrlhf/{reward}     OpenRLHF's remote reward protocol, scored with {reward}

It runs on the server's event loop and goes through the servicer's own path (admission,
quotas, limits, cut-off before the deadline, status per item), so an item gets the same
result over either port. Request-level errors map as on gRPC: INVALID_ARGUMENT -> 400 with
`{"error", "field"}`, UNAUTHENTICATED -> 401; a body over `limits.max_message_mb` -> 413.
The deadline comes from the `X-Timeout-S` header or the body's "timeout_s" (not both), and
counts from the request's arrival; a body still uploading at the header's deadline gets 408.
Tokens, when configured, are checked as on gRPC (`Authorization: Bearer ...`, health open).
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from google.protobuf import json_format

from verifier_server import convert
from verifier_server._proto.verifier.v1 import verifier_pb2 as pb
from verifier_server.access import AccessInterceptor, caller_var, request_id_var
from verifier_server.integrations import openrlhf
from verifier_server.integrations.connection import reward_spec
from verifier_server.server import SERVICE_NAME, RequestError, VerifierServicer, cut_off_after

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Middleware = Callable[[web.Request, Handler], Awaitable[web.StreamResponse]]
HealthLookup = Callable[[str], bool | None]
"""Service name -> serving (True), not serving (False), or unknown (None)."""

_OPEN_PATHS = ("/healthz",)  # answered without a token, like gRPC health
_NO_TOKEN = "a valid token is required: send 'Authorization: Bearer <token>'"


class BadRequest(Exception):
    """A request the front end refuses before scoring: 400 (or `status`), naming the field."""

    def __init__(self, field: str, message: str, status: int = 400) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.status = status


def build_app(
    servicer: VerifierServicer,
    health: HealthLookup,
    tokens: dict[str, str] | None,
    max_body_bytes: int,
) -> web.Application:
    """The aiohttp application over `servicer`; `tokens` as for the gRPC port."""
    routes = _Routes(servicer, health)
    app = web.Application(
        middlewares=[_errors_and_access(tokens, max_body_bytes)], client_max_size=max_body_bytes
    )
    app.router.add_post("/v1/score", routes.score)
    app.router.add_get("/v1/verifiers", routes.verifiers)
    app.router.add_get("/healthz", routes.healthz)
    app.router.add_post("/v1/openrlhf/{reward}", routes.openrlhf_reward)
    return app


def _errors_and_access(tokens: dict[str, str] | None, max_body_bytes: int) -> Middleware:
    """The middleware round every request: its request id, its caller from the token
    (401 without a valid one, except on the open paths), and request-level errors as
    `{"error", "field"}` answers."""
    access = AccessInterceptor(tokens)
    checking = bool(tokens)

    @web.middleware
    async def errors_and_access(request: web.Request, handler: Handler) -> web.StreamResponse:
        request_id = (request.headers.get("X-Request-Id") or uuid.uuid4().hex[:16])[:64]
        request_id_var.set(request_id)  # each request runs in its own task: its own context
        caller: str | None = ""
        if checking and request.path not in _OPEN_PATHS:
            caller = access.caller(request.headers.get("Authorization"))
        try:
            if caller is None:
                response = _error(401, "authorization", _NO_TOKEN)
            else:
                caller_var.set(caller)
                response = await handler(request)
        except BadRequest as exc:
            response = _error(exc.status, exc.field, str(exc))
        except RequestError as exc:
            response = _error(400, exc.field, str(exc))
        except web.HTTPRequestEntityTooLarge:
            response = _error(413, "<body>", f"over the server's {max_body_bytes}-byte cap")
        response.headers["X-Request-Id"] = request_id
        return response

    return errors_and_access


class _Routes:
    """The handlers, each over the servicer's transport-neutral calls."""

    def __init__(self, servicer: VerifierServicer, health: HealthLookup) -> None:
        self._servicer = servicer
        self._health = health

    async def score(self, request: web.Request) -> web.Response:
        arrived, header_s = time.monotonic(), _header_timeout_s(request)
        body = await _json_body(request, header_s)
        if not isinstance(body, dict):
            raise BadRequest("<body>", f"expected a JSON object, got {type(body).__name__}")
        cut_off = _cut_off(arrived, _timeout_s(header_s, body.pop("timeout_s", None)))
        try:
            message = json_format.ParseDict(body, pb.ScoreRequest())
        except json_format.ParseError as exc:
            raise BadRequest(_parse_error_field(str(exc)), str(exc)) from None
        except OverflowError as exc:  # an integer beyond a double, in reference or params
            raise BadRequest("<body>", f"a number too large for a double: {exc}") from None
        response = await self._servicer.score(message, cut_off, _peer(request))
        return _json(json_format.MessageToDict(
            response, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
        ))  # fmt: skip

    async def verifiers(self, request: web.Request) -> web.Response:
        return _json(json_format.MessageToDict(
            self._servicer.list_verifiers(), preserving_proto_field_name=True
        ))  # fmt: skip

    async def healthz(self, request: web.Request) -> web.Response:
        service = request.query.get("service", "")
        name = f"{SERVICE_NAME}/{service}" if service else ""
        serving = self._health(name)
        if serving is None:
            return _json({"status": "SERVICE_UNKNOWN", "service": service}, status=404)
        status = "SERVING" if serving else "NOT_SERVING"
        return _json({"status": status, "service": service}, status=200 if serving else 503)

    async def openrlhf_reward(self, request: web.Request) -> web.Response:
        arrived, header_s = time.monotonic(), _header_timeout_s(request)
        body = await _json_body(request, header_s)
        # OpenRLHF posts a whole rollout batch at once (every sample, with one server) and cannot
        # split it: split here into requests of the server's cap, as the Python client does.
        cap = self._servicer.config.limits.max_items_per_request
        try:
            spec = reward_spec(request.match_info["reward"], "reward")
            items = openrlhf.items_from_request(body, spec)
            messages = [
                convert.request_from_items(items[start : start + cap])
                for start in range(0, len(items), cap)
            ]
        except openrlhf.ProtocolError as exc:
            raise BadRequest(exc.field, exc.message) from None
        except (json_format.ParseError, ValueError, OverflowError) as exc:
            # not UTF-8 (a lone surrogate); an integer beyond a double
            raise BadRequest("<body>", str(exc)) from None
        cut_off, peer = _cut_off(arrived, header_s), _peer(request)
        scores = (self._servicer.score(m, cut_off, peer) for m in messages)
        responses = await asyncio.gather(*scores)
        results = [convert.result_from_proto(r) for one in responses for r in one.results]
        try:
            return _json(openrlhf.response_from_results(results))
        except ValueError as exc:  # the reward in the URL: unknown, or bad params
            raise BadRequest("reward", str(exc)) from None


async def _json_body(request: web.Request, within_s: float | None) -> Any:
    """The body as JSON; it must arrive within `within_s` (the header's deadline, which, as a
    gRPC deadline does, covers the upload: a body sent a byte a second held the call open)."""
    try:
        async with asyncio.timeout(within_s):
            body = await request.read()
    except TimeoutError:
        raise BadRequest("X-Timeout-S", f"the body did not arrive within {within_s} s",
                         status=408) from None  # fmt: skip
    try:
        return json.loads(body)  # bytes: UTF-8 (or -16/-32, detected), whatever the header says
    except ValueError as exc:  # also: not UTF-8, an integer of over 4300 digits
        raise BadRequest("<body>", f"not valid JSON: {exc}") from None
    except RecursionError:
        raise BadRequest("<body>", "JSON nested too deeply") from None


def _header_timeout_s(request: web.Request) -> float | None:
    """The deadline in seconds from the X-Timeout-S header (None: not given)."""
    header = request.headers.get("X-Timeout-S")
    return None if header is None else _seconds(header, "X-Timeout-S")


def _timeout_s(header_s: float | None, from_body: Any) -> float | None:
    """The call's deadline in seconds, from the header or the body (None: no deadline)."""
    if header_s is not None and from_body is not None:
        raise BadRequest("timeout_s", "given both as the X-Timeout-S header and in the body; "
                         "set it in only one place")  # fmt: skip
    return header_s if from_body is None else _seconds(from_body, "timeout_s")


def _cut_off(arrived: float, timeout_s: float | None) -> float | None:
    """The cut-off of a call that arrived at monotonic time `arrived` (None: no deadline)."""
    return None if timeout_s is None else cut_off_after(timeout_s - (time.monotonic() - arrived))


def _seconds(raw: Any, field: str) -> float:
    """A positive, finite number of seconds; BadRequest naming `field` otherwise."""
    try:
        value = float(raw)
    except (TypeError, ValueError, OverflowError):
        raise BadRequest(field, f"expected a number of seconds, got {raw!r}") from None
    if not math.isfinite(value) or value <= 0 or isinstance(raw, bool):
        raise BadRequest(field, f"expected a positive number of seconds, got {raw!r}")
    return value


def _parse_error_field(message: str) -> str:
    """The field protobuf's JSON parser complains about, from its message: the location it
    names (`at "ScoreRequest.items[0]"` + `no field named "x"`), else the chain of
    `Failed to parse items field: Failed to parse id field`."""
    where = re.search(r'at "?ScoreRequest\.?([\w\[\].]*?)\.*"?\.*\s*$', message.split("\n")[0])
    unknown = re.search(r'no field named "([^"]+)"', message)
    if where is not None and (where.group(1) or unknown is not None):
        path = where.group(1)
        if unknown is not None:
            path = f"{path}.{unknown.group(1)}" if path else unknown.group(1)
        return path
    chain = re.findall(r"Failed to parse (\w+) field", message)
    return ".".join(chain) or "<body>"


def _peer(request: web.Request) -> str:
    return f"http:{request.remote}"


def _json(value: Any, status: int = 200) -> web.Response:
    return web.json_response(value, status=status, dumps=lambda v: json.dumps(v, allow_nan=False))


def _error(status: int, field: str, message: str) -> web.Response:
    return _json({"error": message, "field": field}, status=status)
