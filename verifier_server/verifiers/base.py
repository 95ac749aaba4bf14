"""The verifier interface: a name, a parameter model, one method that scores a batch.

Adding a verifier is one new module with a `Verifier` subclass plus its registration
(built-ins in `verifier_server.registry`, plugins through the `verifier_server.verifiers`
entry-point group or `--plugin module`). Where it runs is declared by `execution`:

- "process" (default): CPU-bound or possibly slow work. Runs in the server's worker pool, one
  item at a time, with a hard per-item time limit enforced by killing the worker.
- "bulk": work that is linear-time by construction (format, length, RE2 regexes). Scored a
  chunk at a time: in a worker process (items shipped still serialized, so the server's
  event loop does no per-item conversion), or in a server thread when part of a composite.
  The time limit applies to the whole chunk, not to each item.
- "async": I/O-bound work (remote judges); `ascore` runs on the server's event loop.

Verifiers that keep state in the server process (an HTTP client, a loaded model) declare a
`Settings` model, filled from the config's `verifier_settings.<name>` and never from a request,
and override `setup`/`close`, which the server calls around serving (see
verifier_server.lifecycle). Only "async" verifiers run in the server process; the worker
processes of "process" and "bulk" verifiers never call `setup`.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from verifier_server.types import Item, Result, Status

Execution = Literal["process", "bulk", "async"]
log = logging.getLogger(__name__)


class Params(BaseModel):
    """Base of every verifier's parameter model: unknown keys are an error."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class NoParams(Params):
    """For verifiers without parameters."""


class TimedParams(Params):
    """Parameters of a verifier that runs in the worker pool with a per-item time limit."""

    timeout_s: float = Field(
        default=10.0, gt=0, le=300, description="Per-item time limit; past it the item is TIMEOUT."
    )


class InvalidItem(Exception):
    """Raised by a verifier when the caller's item is malformed (not when the model is wrong).

    `field` is a path into the item, e.g. "reference.tests[2].stdout"; the result becomes
    STATUS_INVALID_REQUEST with reason "invalid_<first path component>".
    """

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message

    def to_result(self, item_id: str) -> Result:
        root = self.field.split(".", 1)[0].split("[", 1)[0]
        result = Result.failed(item_id, Status.INVALID_REQUEST, f"invalid_{root}", self.message)
        result.details["field"] = self.field
        return result


async def gather_items(
    items: Sequence[Item], score: Callable[[Item], Awaitable[Result]]
) -> list[Result]:
    """`score(item)` for every item at once, for an async verifier's `ascore`. An exception
    from one item (a bug that input reached) fails that item alone, as VERIFIER_ERROR
    (`verifier_exception`): without this, one completion could fail its whole batch."""
    outcomes = await asyncio.gather(*(score(item) for item in items), return_exceptions=True)
    results = []
    for item, outcome in zip(items, outcomes, strict=True):
        if isinstance(outcome, Exception):
            log.error("scoring item %r failed", item.id, exc_info=outcome)
            message = f"{type(outcome).__name__}: {outcome}"
            outcome = Result.failed(item.id, Status.VERIFIER_ERROR, "verifier_exception", message)
        elif isinstance(outcome, BaseException):  # cancellation and exits are not the item's
            raise outcome
        results.append(outcome)
    return results


@dataclass(frozen=True)
class VerifierContext:
    """What the server hands a verifier's `setup`.

    `settings`: the verifier's validated `Settings` (None if it declares none).
    `set_serving(serving, part=None)`: reports the verifier's health, shown by the gRPC health
    service as `verifier.v1.VerifierService/<name>` (or `…/<name>/<part>`, e.g. one backend).
    Safe to call from the event loop at any time; ignored once the server is shutting down.
    """

    settings: Any
    set_serving: Callable[..., None]


deadline_var: contextvars.ContextVar[float | None] = contextvars.ContextVar(
    "verifier_deadline", default=None
)


def current_deadline() -> float | None:
    """Inside `ascore`: the `time.monotonic()` by which the caller wants results, or None.

    An async verifier uses it to stop retrying once the caller has given up.
    """
    return deadline_var.get()


class Verifier:
    """Scores items. Subclasses set the class attributes and override one scoring method.

    Instances are created once per process (server and each worker) with no arguments, so
    caches live on the instance. A verifier must not keep per-request state.
    """

    name: ClassVar[str]
    description: ClassVar[str] = ""
    Params: ClassVar[type[Params]] = NoParams
    execution: ClassVar[Execution] = "process"
    Settings: ClassVar[type[Params] | None] = None
    """Server-side settings (backends, model paths, secrets' env var names) from the config's
    `verifier_settings.<name>`. Anything that must not be chosen by a caller goes here."""

    async def setup(self, context: VerifierContext) -> None:
        """Called once in the server process before it serves; raise to stop start-up."""

    async def close(self) -> None:
        """Called once when the server stops, after in-flight requests drained."""

    def score(self, items: Sequence[Item], params: Any) -> list[Result]:
        """Returns one result per item, in order. The default calls `score_one` per item."""
        results = []
        for item in items:
            try:
                results.append(self.score_one(item, params))
            except InvalidItem as exc:
                results.append(exc.to_result(item.id))
        return results

    def score_one(self, item: Item, params: Any) -> Result:
        raise NotImplementedError(f"{type(self).__name__} implements neither score nor score_one")

    def warm_up(self) -> None:
        """Prepares per-process resources (e.g. sandbox slots). Called once in each worker
        before it reports ready, so before the gRPC server exists; a failure is logged and
        the verifier's items then fail on their own."""

    async def ascore(self, items: Sequence[Item], params: Any) -> list[Result]:
        """The async form, used when `execution == "async"`."""
        raise NotImplementedError(f"{type(self).__name__} is async but has no ascore")

    @classmethod
    def timeout_s(cls, params: Params) -> float | None:
        """The per-item time limit for the worker pool (from `params.timeout_s` if any)."""
        return getattr(params, "timeout_s", None)

    @classmethod
    def params_schema(cls) -> dict[str, Any]:
        return cls.Params.model_json_schema()
