"""`judge`: an LLM judge behind any OpenAI-compatible chat endpoint.

Backends (URL, model, the *name* of the API key's environment variable, limits) and custom
rubrics come only from the server config's `verifier_settings.judge`; a request picks a
backend and a rubric by name. Score mode maps the judge's score from the rubric's range to
[0, 1]. Pairwise mode compares the completion with the one in `reference`, asking in both
orders (A/B, then B/A) to cancel position bias: the score is the completion's mean result
(win 1, tie 0.5, loss 0) and `details.consistent` says whether the two orders agreed.

A judge that could not be asked is never a score: the item gets TIMEOUT or
BACKEND_UNAVAILABLE. A judge that answered without a verdict (no verdict, a score outside the
rubric's range) or refused the request (HTTP 4xx: context length, payload size, content filter)
is asked once more with the completion replaced by a plain short answer ("I don't know."; an
empty one might itself be refused): if it gives a verdict then, the completion
caused the failure and is scored 0.0 (OK, the failure's reason, `details.attributed_to:
"completion"`), because a completion that could earn a masked result would be a reward hack;
if not, the judge or its configuration is at fault: VERIFIER_ERROR with the raw reply.

A long completion can also make a judge *slow* (prefill grows with the input): so the first
call gets only `1 - PROBE_SHARE` of the item's time *at the backend* (a wait for a
`max_concurrency` slot or the rate limiter moves its end later, into the probe's share: other
items' load is no completion's doing), and a call that times out is probed the same way within
the rest. A call whose item's time runs out before it was sent is OVERLOADED
(`no_backend_slot`), never probed. A probe that answers in time makes the timeout the completion's
(OK, 0.0, `judge_timeout`); a backend that is slow or down for every input fails the probe
too and keeps its TIMEOUT or BACKEND_UNAVAILABLE.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import Field, model_validator

from verifier_server.types import Item, Result, Status, truncate
from verifier_server.verifiers.base import (
    InvalidItem,
    Params,
    Verifier,
    VerifierContext,
    current_deadline,
    gather_items,
)
from verifier_server.verifiers.judge.backend import (
    BackendError,
    BackendSettings,
    ChatBackend,
    RejectedRequest,
    Reply,
)
from verifier_server.verifiers.judge.cache import ReplyCache
from verifier_server.verifiers.judge.rubrics import (
    BUILTIN_RUBRICS,
    Rubric,
    nonce_for,
    render,
    verdict_schema,
)
from verifier_server.verifiers.judge.verdicts import Unparseable, parse_score, parse_winner

_RATIONALE_CHARS = 1000
PLAIN_ANSWER = "I don't know."  # the probe's stand-in for a completion that broke the judge
_RAW_CHARS = 2000
# The share of an item's time kept for the "I don't know." probe after a timed-out call: the
# probe's input is short, so a backend that answers it at all answers it in a fraction.
PROBE_SHARE = 0.25


class JudgeSettings(Params):
    """`verifier_settings.judge` in the server config."""

    backends: dict[str, BackendSettings] = Field(
        default_factory=dict, description="OpenAI-compatible endpoints, by name."
    )
    rubrics: dict[str, Rubric] = Field(
        default_factory=dict,
        description=f"Extra rubric templates, by name (built in: {sorted(BUILTIN_RUBRICS)}).",
    )
    cache_size: int = Field(
        default=10_000,
        ge=0,
        description="Replies kept for identical requests; 0 turns the cache off.",
    )

    @model_validator(mode="after")
    def _no_shadowing(self) -> JudgeSettings:
        shadowed = sorted(BUILTIN_RUBRICS.keys() & self.rubrics.keys())
        if shadowed:
            raise ValueError(f"rubrics {shadowed} shadow built-in rubrics; rename them")
        return self


class JudgeParams(Params):
    backend: str | None = Field(
        default=None,
        description="A backend named in the server config; may be omitted when it has one.",
    )
    rubric: str = Field(
        default="helpfulness",
        description=f"A rubric: built in {sorted(BUILTIN_RUBRICS)} or named in the server config.",
    )
    timeout_s: float = Field(
        default=60.0,
        gt=0,
        le=600,
        description="Per-item limit from arrival, slot waits and retries included; then TIMEOUT.",
    )
    on_disagreement: Literal["average", "zero"] = Field(
        default="average",
        description="Pairwise, when the two orders disagree: average the two results "
        "(0.5 for a full flip), or score 0.0 (reason inconsistent_verdicts). Never a mask: "
        "a completion that can flip the judge would otherwise escape its penalty.",
    )


class JudgeVerifier(Verifier):
    name = "judge"
    description = (
        "LLM judge over an OpenAI-compatible endpoint from the server config: rubric score "
        "mapped to [0, 1], or pairwise against `reference` in both orders."
    )
    Params = JudgeParams
    Settings = JudgeSettings
    execution = "async"

    def __init__(self) -> None:
        self._backends: dict[str, ChatBackend] = {}
        self._rubrics: dict[str, Rubric] = dict(BUILTIN_RUBRICS)
        self._secret = secrets.token_bytes(32)  # keys the quote markers' nonces

    async def setup(self, context: VerifierContext) -> None:
        settings: JudgeSettings = context.settings
        self._rubrics.update(settings.rubrics)
        cache: ReplyCache[Reply] = ReplyCache(settings.cache_size)

        def report(name: str, serving: bool) -> None:
            context.set_serving(serving, name)
            context.set_serving(all(b.breaker.closed for b in self._backends.values()))

        for name, backend_settings in settings.backends.items():
            self._backends[name] = ChatBackend(
                name, backend_settings, cache, lambda ok, n=name: report(n, ok)
            )
            context.set_serving(True, name)

    async def close(self) -> None:
        for backend in self._backends.values():
            await backend.close()
        self._backends.clear()

    async def ascore(self, items: Sequence[Item], params: JudgeParams) -> list[Result]:
        try:
            backend = self._backend(params)
            rubric = self._rubric(params)
        except InvalidItem as exc:
            return [exc.to_result(item.id) for item in items]
        deadline = current_deadline()
        return await gather_items(
            items, lambda item: self._judge(item, backend, rubric, params, deadline)
        )

    def _backend(self, params: JudgeParams) -> ChatBackend:
        if params.backend is None:
            if len(self._backends) == 1:
                return next(iter(self._backends.values()))
            raise InvalidItem(
                "reward.params.backend",
                f"name a judge backend; this server has {sorted(self._backends) or 'none'} "
                "(verifier_settings.judge.backends in its config)",
            )
        if params.backend not in self._backends:
            raise InvalidItem(
                "reward.params.backend",
                f"unknown judge backend {params.backend!r}; this server has "
                f"{sorted(self._backends) or 'none'}",
            )
        return self._backends[params.backend]

    def _rubric(self, params: JudgeParams) -> Rubric:
        if params.rubric not in self._rubrics:
            raise InvalidItem(
                "reward.params.rubric",
                f"unknown rubric {params.rubric!r}; known: {sorted(self._rubrics)}",
            )
        return self._rubrics[params.rubric]

    # ---- one item

    async def _judge(
        self,
        item: Item,
        backend: ChatBackend,
        rubric: Rubric,
        params: JudgeParams,
        deadline: float | None,
    ) -> Result:
        start = time.monotonic()
        end = min(start + params.timeout_s, deadline if deadline is not None else float("inf"))
        ends = _Ends(first=start + (end - start) * (1 - PROBE_SHARE), probe=end)
        try:
            values = _values(item, rubric)
            if rubric.mode == "pairwise":
                result = await self._pairwise(item.id, values, backend, rubric, params, ends)
            else:
                result = await self._score(item.id, values, backend, rubric, ends)
        except InvalidItem as exc:
            return exc.to_result(item.id)
        except BackendError as exc:
            result = Result.failed(item.id, exc.status, exc.reason, exc.message)
            if exc.raw is not None:
                result.details["raw"] = exc.raw
        result.details.update(backend=backend.name, model=backend.settings.model)
        result.elapsed_ms = (time.monotonic() - start) * 1000
        return result

    async def _ask(
        self,
        backend: ChatBackend,
        rubric: Rubric,
        values: dict[str, str],
        end: float,
        probe: bool = False,
        latest: float | None = None,
    ) -> tuple[Reply, bool]:
        """The judge's reply; only a `probe` (no completion in it) has its timeouts counted
        toward the backend's breaker. Waits for a slot move `end` up to `latest`."""
        json_reply = backend.settings.structured_output != "none"
        nonce = nonce_for(self._secret, [values[k] for k in sorted(values)])
        messages = render(rubric, values, nonce, json_reply=json_reply)
        body = backend.body(messages, verdict_schema(rubric) if json_reply else None)
        return await backend.complete(body, end, blame_timeouts=probe, latest=latest)

    async def _score(
        self,
        item_id: str,
        values: dict[str, str],
        backend: ChatBackend,
        rubric: Rubric,
        ends: _Ends,
    ) -> Result:
        def parse(text: str) -> Any:
            return parse_score(text, rubric.min_score, rubric.max_score)

        plain = {**values, "completion": PLAIN_ANSWER}
        try:
            reply, cached = await self._ask(backend, rubric, values, ends.first, latest=ends.probe)
        except BackendError as exc:
            if not probe_worthy(exc):
                raise
            failure = _failure(item_id, exc, None)
            return await self._attribute(failure, backend, rubric, plain, parse, ends.probe)
        try:
            verdict = _read(parse, reply)
        except Unparseable as exc:
            failure = _failure(item_id, exc, reply)
            return await self._attribute(failure, backend, rubric, plain, parse, ends.probe)
        return Result(
            id=item_id,
            score=rubric.to_unit(verdict.score),
            details={
                "judge_score": verdict.score,
                "rationale": truncate(verdict.rationale, _RATIONALE_CHARS),
                "cached": cached,
            },
        )

    async def _attribute(
        self,
        failure: Result,
        backend: ChatBackend,
        rubric: Rubric,
        plain: dict[str, str],
        parse: Callable[[str], Any],
        end: float,
    ) -> Result:
        """`failure` as it is if the judge also fails on the item with its completion replaced
        by a plain answer (`plain`): the judge's fault. Else the completion's: a verdict of 0.0.
        A probe that cannot be asked at all raises BackendError (TIMEOUT, unavailable)."""
        try:
            probe, _ = await self._ask(backend, rubric, plain, end, probe=True)
            _read(parse, probe)
        except (Unparseable, RejectedRequest):
            return failure
        details = {**failure.details, "attributed_to": "completion"}
        return Result(id=failure.id, score=0.0, reason=failure.reason, details=details)

    async def _pairwise(
        self,
        item_id: str,
        values: dict[str, str],
        backend: ChatBackend,
        rubric: Rubric,
        params: JudgeParams,
        ends: _Ends,
    ) -> Result:
        ours, theirs = values["completion_a"], values["completion_b"]
        swapped = {**values, "completion_a": theirs, "completion_b": ours}
        plain = {**values, "completion_a": PLAIN_ANSWER}
        try:
            (first, cached_1), (second, cached_2) = await asyncio.gather(
                self._ask(backend, rubric, values, ends.first, latest=ends.probe),
                self._ask(backend, rubric, swapped, ends.first, latest=ends.probe),
            )
        except BackendError as exc:
            if not probe_worthy(exc):
                raise
            failure = _failure(item_id, exc, None)
            return await self._attribute(failure, backend, rubric, plain, parse_winner, ends.probe)
        try:
            verdict_1, verdict_2 = _read(parse_winner, first), _read(parse_winner, second)
        except Unparseable as exc:
            failure = _failure(item_id, exc, first if _fails(first.text) else second)
            return await self._attribute(failure, backend, rubric, plain, parse_winner, ends.probe)
        # The completion is A in the first order and B in the second.
        result_1 = {"A": 1.0, "tie": 0.5, "B": 0.0}[verdict_1.winner]
        result_2 = {"B": 1.0, "tie": 0.5, "A": 0.0}[verdict_2.winner]
        consistent = result_1 == result_2
        details: dict[str, Any] = {
            "winner_completion_first": verdict_1.winner,
            "winner_completion_second": verdict_2.winner,
            "consistent": consistent,
            "rationale": truncate(verdict_1.rationale, _RATIONALE_CHARS),
            "rationale_swapped": truncate(verdict_2.rationale, _RATIONALE_CHARS),
            "cached": cached_1 and cached_2,
        }
        zeroed = not consistent and params.on_disagreement == "zero"
        return Result(
            id=item_id,
            score=0.0 if zeroed else (result_1 + result_2) / 2,
            reason="" if consistent else "inconsistent_verdicts",
            details=details,
        )


@dataclass(frozen=True)
class _Ends:
    """time.monotonic() limits: `first` for the item's own calls, `probe` for the probe."""

    first: float
    probe: float


def probe_worthy(exc: BackendError) -> bool:
    """A failure the completion may have caused: a refusal (4xx) or a timeout, of the whole
    item or of one attempt (a long prefill). Connection errors, 5xx, auth and an open breaker
    are the backend's whatever the input."""
    return (
        isinstance(exc, RejectedRequest)
        or exc.status == Status.TIMEOUT
        or (exc.reason == "backend_timeout")
    )


def _values(item: Item, rubric: Rubric) -> dict[str, str]:
    """The texts for the rubric's placeholders; a missing one is the caller's error."""
    prompt = item.prompt or "\n\n".join(f"{m.role}: {m.content}" for m in item.messages)
    used = rubric.placeholders
    if "prompt" in used and not prompt:
        raise InvalidItem("prompt", "this rubric needs the prompt (prompt or messages)")
    if rubric.mode == "pairwise":
        if not isinstance(item.reference, str) or not item.reference:
            raise InvalidItem(
                "reference", "pairwise judging needs the other completion, as a string"
            )
        return {"prompt": prompt, "completion_a": item.completion, "completion_b": item.reference}
    values = {"prompt": prompt, "completion": item.completion}
    if "reference" in used:
        if item.reference is None or item.reference == "":
            raise InvalidItem("reference", "this rubric needs a reference answer")
        values["reference"] = (
            item.reference if isinstance(item.reference, str) else json.dumps(item.reference)
        )
    return values


def _read(parse: Callable[[str], Any], reply: Reply) -> Any:
    """`parse(reply.text)`; a reply without a verdict that was cut at `max_tokens` says so
    (`truncated_verdict`): the fix is a larger `max_tokens` or a shorter rationale, not the
    judge's prompt."""
    try:
        return parse(reply.text)
    except Unparseable as exc:
        if reply.finish_reason != "length":
            raise
        raise Unparseable(
            "truncated_verdict",
            f"the judge's reply was cut at max_tokens (finish_reason 'length') before its "
            f"verdict was complete ({exc.reason}: {exc.message})",
        ) from None


def _fails(text: str) -> bool:
    try:
        parse_winner(text)
    except Unparseable:
        return True
    return False


def _failure(item_id: str, exc: Unparseable | BackendError, reply: Reply | None) -> Result:
    """The failed result for a judge that gave no verdict (raw reply in details): the backend
    error's status, VERIFIER_ERROR for a reply without a verdict."""
    status = exc.status if isinstance(exc, BackendError) else Status.VERIFIER_ERROR
    result = Result.failed(item_id, status, exc.reason, exc.message)
    if isinstance(exc, BackendError) and exc.raw is not None:
        result.details["raw"] = exc.raw
    if reply is not None:
        result.details["raw"] = truncate(reply.text, _RAW_CHARS)
        if reply.finish_reason is not None:
            result.details["finish_reason"] = reply.finish_reason
    return result
