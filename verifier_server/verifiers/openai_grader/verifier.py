"""`openai_grader`: an OpenAI grader JSON, unchanged, as `params.grader`.

Kinds and how they run (fields and score ranges as OpenAI documents them):
- string_check: 1.0 or 0.0 through the `string_check` verifier's comparison (eq, ne;
  like = contains, ilike = contains ignoring case), on the rendered templates, unstripped;
- text_similarity: the metric in [0, 1] (similarity.py); `details.passed` against
  pass_threshold;
- python: `grade(sample, item)` in a sandbox of this server (python_grader.py);
- score_model: a judge backend from `verifier_settings.openai_grader.backends`, named by the
  grader's `model` (a backend's name, or the model it serves), asked for `{"result": x}` with x
  in `range` (the JSON schema carries the range); the score is x, in `range` like OpenAI's;
- label_model: the same, asked for one of `labels`; 1.0 for a passing label, else 0.0;
- multi: every sub-grader, then `calculate_output` over their scores (formula.py).

A completion never earns a non-OK status: a leaf grader that fails in a way the completion
could cause (a python grader raising or timing out, a model giving no verdict, refusing or
timing out) is run again with the completion replaced by "I don't know."; if it succeeds then,
the item scores the grader's lowest value (0, or range[0]; lower still if "I don't know."
scored lower) with the failure's reason and `details.attributed_to = "completion"`. Else it
keeps the failure's status, except that a python grade() raising (`grader_raised`) on either
sample is a verdict, never a status: that sample scores the floor. The first try gets 75% of
the item's time, as the judge's does, not counting waits for a python slot or a backend's
slot (they move its end later, into the probe's share); a try that gets no slot in the
item's time is OVERLOADED.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from pydantic import Field

from sandboxes import Outcome, SandboxError, SandboxPool
from verifier_server.types import Item, Result, Status
from verifier_server.verifiers.base import (
    InvalidItem,
    Params,
    Verifier,
    VerifierContext,
    current_deadline,
    gather_items,
)
from verifier_server.verifiers.judge.backend import BackendError, BackendSettings, ChatBackend
from verifier_server.verifiers.judge.cache import ReplyCache
from verifier_server.verifiers.judge.verdicts import Unparseable, final_json_object
from verifier_server.verifiers.judge.verifier import PLAIN_ANSWER, PROBE_SHARE, probe_worthy
from verifier_server.verifiers.openai_grader import python_grader
from verifier_server.verifiers.openai_grader.formula import evaluate, parse_formula
from verifier_server.verifiers.openai_grader.similarity import METRICS
from verifier_server.verifiers.openai_grader.spec import (
    Grader,
    LabelModelGrader,
    MultiGrader,
    PythonGrader,
    ScoreModelGrader,
    StringCheckGrader,
    TextSimilarityGrader,
)
from verifier_server.verifiers.openai_grader.templates import (
    TemplateError,
    item_namespace,
    render,
    sample_namespace,
)
from verifier_server.verifiers.string_check import StringCheckParams, check_string

_OPERATIONS = {"eq": "eq", "ne": "ne", "like": "contains", "ilike": "icontains"}
_WHERE = "reward.params.grader"


class OpenAIGraderSettings(Params):
    """`verifier_settings.openai_grader` in the server config."""

    backends: dict[str, BackendSettings] = Field(
        default_factory=dict,
        description="OpenAI-compatible endpoints for score_model / label_model, by name.",
    )
    python_slots: int = Field(
        default=2, ge=0, le=16, description="Sandbox slots for python graders; 0: refuse them."
    )
    cache_size: int = Field(default=10_000, ge=0, description="Model replies kept; 0: off.")


class OpenAIGraderParams(Params):
    grader: Grader = Field(description="An OpenAI grader object, as OpenAI documents it.")
    timeout_s: float = Field(
        default=60.0, gt=0, le=600, description="Per item, every sub-grader and retry included."
    )


class GraderFailure(Exception):
    """A grader that gave no score: the item's status unless the completion is to blame.
    `raised`: a python grader's grade() raised on the sample (or returned a non-number, or a
    non-finite one): that sample's verdict, the grader's floor, never a status."""

    def __init__(
        self, status: Status, reason: str, message: str, probe: bool, raised: bool = False
    ) -> None:
        super().__init__(message)
        self.status, self.reason, self.message, self.probe = status, reason, message, probe
        self.raised = raised


@dataclass
class Graded:
    score: float
    reason: str = ""
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class _Context:
    sample: dict[str, Any]
    item: dict[str, Any]
    end: float
    latest: float  # waits for a slot (other items' load) move `end` later, up to this
    probe: bool = False  # the sample is the plain answer: a model's timeouts are the backend's


class OpenAIGraderVerifier(Verifier):
    name = "openai_grader"
    description = (
        "An OpenAI grader JSON (string_check, text_similarity, python, score_model, "
        "label_model, multi) run here, with OpenAI's fields and score ranges."
    )
    Params = OpenAIGraderParams
    Settings = OpenAIGraderSettings
    execution = "async"

    def __init__(self) -> None:
        self._backends: dict[str, ChatBackend] = {}
        # One-slot pools, each lent to one thread at a time (a SandboxPool is not thread-safe):
        # as many python graders run at once as there are pools.
        self._pools: list[SandboxPool] = []
        self._idle: asyncio.Queue[SandboxPool] = asyncio.Queue()
        self._threads: ThreadPoolExecutor | None = None

    async def setup(self, context: VerifierContext) -> None:
        settings: OpenAIGraderSettings = context.settings
        cache: ReplyCache[Any] = ReplyCache(settings.cache_size)
        for name, backend_settings in settings.backends.items():
            self._backends[name] = ChatBackend(
                name, backend_settings, cache, lambda ok, n=name: context.set_serving(ok, n)
            )
            context.set_serving(True, name)  # …/openai_grader/<backend>, as the judge's
        if settings.python_slots:
            # Slots start on first use (subprocess.Popen: fork+exec, safe beside gRPC), so a
            # server that never sees a python grader never pays for them.
            self._pools = [SandboxPool(1) for _ in range(settings.python_slots)]
            for pool in self._pools:
                self._idle.put_nowait(pool)
            self._threads = ThreadPoolExecutor(len(self._pools), "openai-grader-python")

    async def close(self) -> None:
        for backend in self._backends.values():
            await backend.close()
        if self._threads is not None:
            self._threads.shutdown(wait=True)
        for pool in self._pools:
            pool.close()

    async def ascore(self, items: Sequence[Item], params: OpenAIGraderParams) -> list[Result]:
        deadline = current_deadline()
        return await gather_items(items, lambda item: self._item(item, params, deadline))

    async def _item(self, item: Item, params: OpenAIGraderParams, deadline: float | None) -> Result:
        start = time.monotonic()
        end = min(start + params.timeout_s, deadline if deadline is not None else math.inf)
        sample, reference = sample_namespace(item.completion), item_namespace(item.reference)
        context = _Context(sample, reference, end, end)
        try:
            graded = await self._grade(params.grader, context, _WHERE)
        except InvalidItem as exc:
            return exc.to_result(item.id)
        except GraderFailure as exc:
            return Result.failed(item.id, exc.status, exc.reason, exc.message)
        return Result(
            id=item.id,
            score=graded.score,
            reason=graded.reason,
            details=graded.details,
            elapsed_ms=(time.monotonic() - start) * 1000,
        )

    async def _grade(self, grader: Grader, context: _Context, where: str) -> Graded:
        if isinstance(grader, MultiGrader):
            return await self._multi(grader, context, where)
        run = self._leaf(grader, where)
        start = time.monotonic()
        first_end = start + (context.end - start) * (1 - PROBE_SHARE)
        first = _Context(context.sample, context.item, first_end, context.end)
        try:
            return await run(first)
        except GraderFailure as failure:
            if not failure.probe:
                raise
            plain = _Context(
                {"output_text": PLAIN_ANSWER}, context.item, context.end, context.end, True
            )
            try:
                probe_score = (await run(plain)).score
            except GraderFailure as probe_failure:
                # A grade() that raises is that sample's verdict, the floor: on the completion
                # it is the completion's; on "I don't know." it is what a non-answer earns.
                if not (failure.raised or probe_failure.raised):
                    raise failure from None
                probe_score = _lowest(grader)
            # Never above what a non-answer earns: a python grader's scale may go below 0.
            return Graded(
                min(_lowest(grader), probe_score), failure.reason,
                {"error": failure.message, "attributed_to": "completion"},
            )  # fmt: skip

    def _leaf(self, grader: Grader, where: str) -> Callable[[_Context], Awaitable[Graded]]:
        if isinstance(grader, StringCheckGrader):
            return lambda c: _string_check(grader, c, where)
        if isinstance(grader, TextSimilarityGrader):
            return lambda c: _similarity(grader, c, where)
        if isinstance(grader, PythonGrader):
            return lambda c: self._python(grader, c)
        backend = self._backend(grader.model, f"{where}.model")  # type: ignore[union-attr]
        return lambda c: self._model(grader, backend, c, where)  # type: ignore[arg-type]

    async def _multi(self, grader: MultiGrader, context: _Context, where: str) -> Graded:
        names = list(grader.graders)
        parts = await asyncio.gather(
            *(self._grade(grader.graders[n], context, f"{where}.graders.{n}") for n in names)
        )
        scores = {name: part.score for name, part in zip(names, parts, strict=True)}
        details: dict[str, Any] = {"sub_scores": scores}
        reasons = {n: p.reason for n, p in zip(names, parts, strict=True) if p.reason}
        if reasons:
            details["sub_reasons"] = reasons
        try:
            score = evaluate(parse_formula(grader.calculate_output, frozenset(names)), scores)
        except (ZeroDivisionError, ValueError, OverflowError) as exc:
            return Graded(0.0, "formula_undefined", {**details, "error": str(exc)})
        if not math.isfinite(score):
            return Graded(0.0, "formula_undefined", details)
        return Graded(score, "", details)

    async def _python(self, grader: PythonGrader, context: _Context) -> Graded:
        if not self._pools:
            reason = "python graders are off: python_slots is 0 in verifier_settings.openai_grader"
            raise GraderFailure(Status.VERIFIER_ERROR, "sandbox_error", reason, probe=False)
        program = python_grader.program(grader.source, context.sample, context.item)
        message = "no python grader slot came free within the item's time (python_slots)"
        waited_from = time.monotonic()
        try:  # other items' graders hold the slots: the server's load, not this completion's
            async with asyncio.timeout(context.latest - waited_from):
                pool = await self._idle.get()
        except TimeoutError:
            raise GraderFailure(Status.OVERLOADED, "no_sandbox_slot", message, False) from None
        # So the wait moves the run's end later: only the run's own time is the completion's.
        now = time.monotonic()
        wall_s = min(context.latest, context.end + now - waited_from) - now
        if wall_s <= 0:
            self._idle.put_nowait(pool)
            raise GraderFailure(Status.OVERLOADED, "no_sandbox_slot", message, False)
        assert self._threads is not None
        job = self._threads.submit(pool.run, program, python_grader.limits(wall_s))
        # Back in the queue when the run has finished, not when a cancelled caller leaves.
        loop = asyncio.get_running_loop()
        job.add_done_callback(lambda _: loop.call_soon_threadsafe(self._idle.put_nowait, pool))
        try:
            run = await asyncio.wrap_future(job)
        except SandboxError as exc:
            raise GraderFailure(Status.VERIFIER_ERROR, "sandbox_error", str(exc), False) from None
        if run.outcome is Outcome.SANDBOX_ERROR:
            raise GraderFailure(Status.VERIFIER_ERROR, "sandbox_error", run.error, probe=False)
        try:
            score = python_grader.read_score(run)
        except python_grader.PythonFailure as exc:
            raise GraderFailure(
                Status.VERIFIER_ERROR, exc.reason, exc.message, True, exc.raised
            ) from None
        return Graded(score, "", _passed(score, grader.pass_threshold))

    async def _model(
        self,
        grader: ScoreModelGrader | LabelModelGrader,
        backend: ChatBackend,
        context: _Context,
        where: str,
    ) -> Graded:
        messages = [
            {"role": m.role, "content": _render(m.content, context, f"{where}.input")}
            for m in grader.input
        ]
        if isinstance(grader, ScoreModelGrader):
            low, high = grader.range
            result: dict[str, Any] = {"type": "number", "minimum": low, "maximum": high}
            ask = f"a number from {low:g} to {high:g}"
        else:
            result = {"type": "string", "enum": list(grader.labels)}
            ask = f"one of {grader.labels}"
        messages.append({"role": "system", "content": (
            f'Reply with only a JSON object: {{"result": <{ask}>}}')})  # fmt: skip
        schema = {"type": "object", "properties": {"result": result}, "required": ["result"],
                  "additionalProperties": False}  # fmt: skip
        body = {**backend.body(messages, schema), **_sampling(grader)}
        try:
            reply, cached = await backend.complete(
                body, context.end, blame_timeouts=context.probe, latest=context.latest
            )
            value = _result(reply.text, grader)
        except BackendError as exc:
            raise GraderFailure(exc.status, exc.reason, exc.message, probe_worthy(exc)) from None
        except Unparseable as exc:
            raise GraderFailure(Status.VERIFIER_ERROR, exc.reason, exc.message, True) from None
        if isinstance(grader, LabelModelGrader):
            score = 1.0 if value in grader.passing_labels else 0.0
            return Graded(score, "", {"label": value, "cached": cached})
        return Graded(value, "", {"cached": cached, **_passed(value, grader.pass_threshold)})

    def _backend(self, model: str, where: str) -> ChatBackend:
        if model in self._backends:
            return self._backends[model]
        serving = [b for b in self._backends.values() if b.settings.model == model]
        if not serving:
            raise InvalidItem(where, f"no backend named or serving {model!r}; this server has "
                              f"{sorted(self._backends) or 'none'} "
                              "(verifier_settings.openai_grader.backends)")  # fmt: skip
        return serving[0]


async def _string_check(grader: StringCheckGrader, context: _Context, where: str) -> Graded:
    text = _render(grader.input, context, f"{where}.input")
    reference = _render(grader.reference, context, f"{where}.reference")
    params = StringCheckParams(operation=_OPERATIONS[grader.operation], strip=False)  # type: ignore[arg-type]
    return Graded(1.0 if check_string(text, reference, params) else 0.0)


async def _similarity(grader: TextSimilarityGrader, context: _Context, where: str) -> Graded:
    text = _render(grader.input, context, f"{where}.input")
    reference = _render(grader.reference, context, f"{where}.reference")
    metric = METRICS[grader.evaluation_metric]
    score = await asyncio.to_thread(metric, text, reference)  # long texts: off the event loop
    return Graded(score, "", _passed(score, grader.pass_threshold))


def _render(template: str, context: _Context, where: str) -> str:
    try:
        return render(template, context.sample, context.item)
    except TemplateError as exc:
        raise InvalidItem(where, str(exc)) from None


def _result(text: str, grader: ScoreModelGrader | LabelModelGrader) -> Any:
    obj = final_json_object(text)
    value = obj.get("result") if obj is not None else None
    if isinstance(grader, LabelModelGrader):
        if value not in grader.labels:
            raise Unparseable("unparseable_verdict", f"the reply names no label of {grader.labels}")
        return value
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise Unparseable("unparseable_verdict", "the reply has no numeric 'result'")
    low, high = grader.range
    if not (math.isfinite(value) and low <= value <= high):
        raise Unparseable("score_out_of_range", f"result {value:g} is outside {[low, high]}")
    return float(value)


def _sampling(grader: ScoreModelGrader | LabelModelGrader) -> dict[str, Any]:
    if not isinstance(grader, ScoreModelGrader) or grader.sampling_params is None:
        return {}
    params = grader.sampling_params.model_dump(exclude_none=True)
    if "max_completions_tokens" in params:
        params["max_tokens"] = params.pop("max_completions_tokens")
    return params


def _passed(score: float, threshold: float | None) -> dict[str, Any]:
    return {} if threshold is None else {"passed": score >= threshold}


def _lowest(grader: Grader) -> float:
    return grader.range[0] if isinstance(grader, ScoreModelGrader) else 0.0
