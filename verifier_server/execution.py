"""Calling a verifier safely: exceptions, malformed output and timings become results.

Used in the worker processes (one item at a time) and by the thread path (a chunk at a time).
A verifier's exception or garbage output becomes STATUS_VERIFIER_ERROR for its own items only.

`completion_phase()` marks the part of scoring that only the completion decides (the gold was
already checked): a worker killed for its time limit, or crashed, inside it was stopped by the
completion, and the pool scores the item OK 0 instead of TIMEOUT or VERIFIER_ERROR, since a
masked item is no penalty and a policy would learn to provoke it.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from verifier_server.types import Item, Result, Status, truncate
from verifier_server.verifiers.base import InvalidItem, Verifier

# In a worker process: tells its parent when the completion phase starts and ends.
_phase_reporter: Callable[[bool], None] | None = None


def set_phase_reporter(report: Callable[[bool], None]) -> None:
    """Called once by a worker process: `report(True)` on entering the completion phase,
    `report(False)` on leaving it (the worker sends both to its parent over its pipe)."""
    global _phase_reporter
    _phase_reporter = report


@contextlib.contextmanager
def completion_phase() -> Iterator[None]:
    """Work inside is on the completion alone (its extraction, parsing, comparison): if the
    worker is killed for time or crashes meanwhile, the completion is to blame (OK, 0), not
    the caller. A no-op outside a worker process."""
    if _phase_reporter is not None:
        _phase_reporter(True)
    try:
        yield
    finally:
        if _phase_reporter is not None:
            _phase_reporter(False)


def run_batch(verifier: Verifier, items: Sequence[Item], params: Any) -> list[Result]:
    """Scores `items`; if the batch call fails, retries item by item to isolate the culprit."""
    if len(items) <= 1:
        return [run_one(verifier, item, params) for item in items]
    start = time.perf_counter()
    try:
        results = checked_results(verifier.score(items, params), items)
    except Exception:  # isolate the failing item(s): each gets its own status below
        return [run_one(verifier, item, params) for item in items]
    per_item_ms = (time.perf_counter() - start) * 1000 / len(items)
    for result in results:
        result.elapsed_ms = result.elapsed_ms or per_item_ms
    return results


def run_one(verifier: Verifier, item: Item, params: Any) -> Result:
    start = time.perf_counter()
    try:
        result = checked_results(verifier.score([item], params), [item])[0]
    except InvalidItem as exc:
        result = exc.to_result(item.id)
    except MemoryError:
        result = Result.failed(item.id, Status.VERIFIER_ERROR, "memory_limit", "out of memory")
    except BadOutput as exc:
        result = Result.failed(item.id, Status.VERIFIER_ERROR, "bad_verifier_output", str(exc))
    except BaseException as exc:
        if isinstance(exc, KeyboardInterrupt):
            raise
        message = f"{type(exc).__name__}: {_safe_str(exc)}"
        result = Result.failed(item.id, Status.VERIFIER_ERROR, "verifier_exception", message)
    result.elapsed_ms = (time.perf_counter() - start) * 1000
    return result


class BadOutput(Exception):
    """A verifier returned something that is not one valid Result per item."""


def checked_results(output: object, items: Sequence[Item]) -> list[Result]:
    """Validates a verifier's output: a list of Results, one per item, ids matching."""
    if not isinstance(output, list) or len(output) != len(items):
        got = (
            f"{type(output).__name__} of length {len(output)}"
            if isinstance(output, list)
            else type(output).__name__
        )
        raise BadOutput(f"expected a list of {len(items)} Result, got {got}")
    for item, result in zip(items, output, strict=True):
        if not isinstance(result, Result):
            raise BadOutput(f"expected Result, got {type(result).__name__}")
        if result.id != item.id:
            raise BadOutput(f"result id {truncate(str(result.id), 80)!r} != item id {item.id!r}")
        if not isinstance(result.status, Status) or result.status == Status.UNSPECIFIED:
            raise BadOutput(f"invalid status {truncate(repr(result.status), 80)}")
        if not isinstance(result.score, int | float) or not math.isfinite(result.score):
            raise BadOutput(f"score must be a finite float, got {truncate(repr(result.score), 80)}")
        if not isinstance(result.details, dict) or not isinstance(result.components, dict):
            raise BadOutput("details and components must be dicts")
        if not all(
            isinstance(v, int | float) and math.isfinite(v) for v in result.components.values()
        ):
            raise BadOutput("components must map names to finite floats")
        result.score = float(result.score)
    return list(output)


def _safe_str(exc: BaseException) -> str:
    """str() of an exception that may wrap untrusted objects, bounded in output size."""
    try:
        return truncate(str(exc), 300)
    except Exception:
        return "<unprintable>"
