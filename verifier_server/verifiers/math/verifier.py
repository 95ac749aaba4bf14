"""The "math" verifier: is the anchored answer of the completion equivalent to the gold answer?

`reference` is the gold: a LaTeX or plain string (`"\\frac{1}{2}"`, `"$x=3$"`, `"\\boxed{7}"`),
a JSON number, or a list of these, any of which is accepted. A gold that cannot be parsed is
STATUS_INVALID_REQUEST naming the item, never a free 1.0.

Score 1.0 or 0.0. Reasons for 0.0 (status OK: the model's fault): `no_answer_found`,
`answer_too_long`, `answer_too_deep`, `answer_too_complex`, `unparseable_answer`,
`multiple_answers`, `trivial_equation`, `unevaluated_answer`, `wrong_unit`, `wrong_answer`.

Runs in the worker pool. The gold is parsed first; everything after is the completion's alone
(`completion_phase`): an answer that gets past the pre-screens (screen.py) and still runs past
`timeout_s` is killed with its worker and comes back OK, 0, `answer_too_complex`, and an
exception the answer provokes is OK, 0 too. A gold that runs past the limit is TIMEOUT (the
caller's reference is at fault). Parsed golds and
verdicts are memoised per worker process, keyed by the gold, the extracted answer and the
parameters that change a verdict.
"""

from __future__ import annotations

import logging
import math
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from pydantic import Field

from verifier_server.execution import completion_phase
from verifier_server.types import JSON, Item, Result, truncate
from verifier_server.verifiers.base import InvalidItem, TimedParams, Verifier
from verifier_server.verifiers.math.equivalence import Verdict, equivalent, is_several, is_trivial
from verifier_server.verifiers.math.extract import (
    EXTRACT_DESCRIPTION,
    ExtractMode,
    all_boxed,
    extract,
    strip_math_delimiters,
)
from verifier_server.verifiers.math.parse import Parsed, ParseLimits, Unparseable, parse_answer
from verifier_server.verifiers.math.screen import Rejected, screen_text

log = logging.getLogger(__name__)

_MAX_NODES = 2000
_MAX_SYMBOLIC_POWER = 100_000
_MAX_GOLDS = 32
_CACHE_SIZE = 50_000
_SHOWN_CHARS = 200


class MathParams(TimedParams):
    timeout_s: float = Field(
        default=5.0,
        gt=0,
        le=300,
        description=(
            "Per-item time limit. An answer that runs past it scores 0 (answer_too_complex); a "
            "gold that does is TIMEOUT."
        ),
    )
    extract: ExtractMode = Field(default="auto", description=EXTRACT_DESCRIPTION)
    rel_tol: float = Field(
        default=1e-4,
        ge=0,
        lt=1,
        description=(
            "Relative tolerance for a decimal answer to an exact gold (which must also have its "
            "written digits right). Exact answers always compare exactly."
        ),
    )
    max_answer_chars: int = Field(
        default=2000, ge=1, le=100_000, description="Longer extracted answers score 0."
    )
    max_depth: int = Field(
        default=10,
        ge=1,
        le=100,
        description=(
            "Answers with brackets nested deeper score 0 (the LaTeX parser's time roughly "
            "doubles with each level past 8)."
        ),
    )
    max_digits: int = Field(
        default=10_000,
        ge=10,
        le=1_000_000,
        description="Answers that would evaluate to a number with more digits score 0.",
    )


@dataclass(frozen=True, slots=True)
class _Gold:
    parsed: tuple[Parsed, ...]
    shown: str
    several: bool  # some reading has several values: an answer may spread them over boxes


class MathVerifier(Verifier):
    name = "math"
    description = (
        "Math answer equivalence (math-verify's parser + sympy, strict on near-misses): the last "
        "\\boxed{} or <answer> tag against the gold in `reference`; score 1 or 0."
    )
    Params = MathParams
    execution = "process"

    def __init__(self) -> None:
        self._golds: OrderedDict[tuple[Any, ...], _Gold | tuple[str, str]] = OrderedDict()
        self._verdicts: OrderedDict[tuple[Any, ...], tuple[Verdict, str]] = OrderedDict()

    def warm_up(self) -> None:
        """Loads the LaTeX parser (about half a second) before the worker takes items."""
        limits = ParseLimits(1000, _MAX_NODES, _MAX_SYMBOLIC_POWER)
        equivalent(parse_answer(r"\frac{x}{2}", limits), parse_answer("x/2", limits), 1e-4)

    def score_one(self, item: Item, params: MathParams) -> Result:
        limits = ParseLimits(params.max_digits, _MAX_NODES, _MAX_SYMBOLIC_POWER)
        gold = self._gold(item.reference, params, limits)  # the caller's part, checked first
        with completion_phase():  # from here on, only the completion decides
            return self._score_answer(item, gold, params, limits)

    def _score_answer(
        self, item: Item, gold: _Gold, params: MathParams, limits: ParseLimits
    ) -> Result:
        found = extract(item.completion, params.extract)
        if found is None:
            return Result(id=item.id, score=0.0, reason="no_answer_found")
        text = found.text
        verdict, parsed_answer = self._verdict(item.reference, gold, text, params, limits)
        if not verdict.equal and gold.several and found.boxes:
            # `\boxed{1}, \boxed{-2}` for a two-root question: all the boxes, in order
            joined = ", ".join(found.boxes)
            together = self._verdict(item.reference, gold, joined, params, limits)
            if together[0].equal:
                text, (verdict, parsed_answer) = joined, together
        details: dict[str, JSON] = {
            "extracted_answer": truncate(text, _SHOWN_CHARS),
            "anchor": found.source,
            "parsed_gold": gold.shown,
            "rule": verdict.rule,
        }
        if parsed_answer:
            details["parsed_answer"] = parsed_answer
        return Result(
            id=item.id,
            score=1.0 if verdict.equal else 0.0,
            reason="" if verdict.equal else verdict.reason,
            details=details,
        )

    def _verdict(
        self, reference: JSON, gold: _Gold, text: str, params: MathParams, limits: ParseLimits
    ) -> tuple[Verdict, str]:
        key = (_gold_key(reference), text, params.rel_tol, params.max_answer_chars,
               params.max_depth, params.max_digits)  # fmt: skip
        cached = _lru_get(self._verdicts, key)
        if cached is None:
            cached = _judge(gold, text, params, limits)
            _lru_put(self._verdicts, key, cached)
        return cached

    def _gold(self, reference: JSON, params: MathParams, limits: ParseLimits) -> _Gold:
        key = (_gold_key(reference), params.max_answer_chars, params.max_depth, params.max_digits)
        gold = _lru_get(self._golds, key)
        if gold is None:
            try:
                gold = _parse_gold(reference, params, limits)
            except InvalidItem as exc:
                gold = (exc.field, exc.message)  # cached as data: a re-raised instance grows
            _lru_put(self._golds, key, gold)
        if isinstance(gold, tuple):
            raise InvalidItem(*gold)
        return gold


def _judge(
    gold: _Gold, answer: str, params: MathParams, limits: ParseLimits
) -> tuple[Verdict, str]:
    """(verdict, parsed answer as text) for one extracted answer against every gold reading."""
    try:  # every exception here is the completion's doing (the gold was parsed already)
        screen_text(
            answer,
            params.max_answer_chars,
            params.max_depth,
            params.max_digits,
            _MAX_SYMBOLIC_POWER,
        )
        parsed = parse_answer(answer, limits)
        verdicts = [equivalent(g, parsed, params.rel_tol) for g in gold.parsed]
        verdict = next((v for v in verdicts if v.equal), verdicts[0])
        return verdict, truncate(str(parsed.value), _SHOWN_CHARS)
    except Rejected as exc:
        return Verdict(False, "pre_screen", exc.reason), ""
    except Unparseable:
        return Verdict(False, "parse", "unparseable_answer"), ""
    except (RecursionError, MemoryError):
        return Verdict(False, "error", "answer_too_complex"), ""
    except Exception as exc:  # the gold parsed fine: whatever broke, the answer broke it
        log.warning("math answer %r raised %s", truncate(answer, 200), type(exc).__name__)
        return Verdict(False, "error", "unparseable_answer"), ""


def _parse_gold(reference: JSON, params: MathParams, limits: ParseLimits) -> _Gold:
    values = reference if isinstance(reference, list) else [reference]
    if not values:
        raise InvalidItem("reference", "an empty list: give at least one gold answer")
    if len(values) > _MAX_GOLDS:
        raise InvalidItem("reference", f"{len(values)} gold answers, over the cap of {_MAX_GOLDS}")
    parsed = []
    for index, value in enumerate(values):
        field = f"reference[{index}]" if isinstance(reference, list) else "reference"
        text = _gold_text(value, field)
        try:
            screen_text(
                text,
                params.max_answer_chars,
                params.max_depth,
                params.max_digits,
                _MAX_SYMBOLIC_POWER,
            )
            gold = parse_answer(text, limits)
        except (Rejected, Unparseable) as exc:
            raise InvalidItem(
                field, f"cannot parse the gold answer {truncate(text, 80)!r}: {exc}"
            ) from None
        if is_trivial(gold.value):
            raise InvalidItem(
                field, f"the gold answer {truncate(text, 80)!r} is always true or never true"
            )
        parsed.append(gold)
    shown = " | ".join(truncate(str(p.value), _SHOWN_CHARS) for p in parsed)
    several = any(is_several(p.value) for p in parsed)
    return _Gold(tuple(parsed), truncate(shown, _SHOWN_CHARS), several)


def _gold_text(value: JSON, field: str) -> str:
    if isinstance(value, bool) or value is None:
        raise InvalidItem(field, "missing: the gold answer, as a string or a number")
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidItem(field, f"{value} is not a finite number")
        # JSON numbers arrive as doubles: 3.0 is the integer 3; exact beyond 2**53 needs a string.
        return str(int(value)) if value.is_integer() else repr(value)
    if not isinstance(value, str):
        raise InvalidItem(field, f"expected a string or a number, got {type(value).__name__}")
    boxes = all_boxed(value)  # a gold in several boxes is all of them, in order
    text = ", ".join(strip_math_delimiters(b) for b in boxes) if boxes else value
    text = strip_math_delimiters(text)
    if not text:
        raise InvalidItem(field, "an empty gold answer")
    return text


def _gold_key(reference: JSON) -> Any:
    if isinstance(reference, list):
        return tuple(_gold_key(value) for value in reference)
    return (
        (type(reference).__name__, reference)
        if not isinstance(reference, dict)
        else repr(reference)
    )


def _lru_get(cache: OrderedDict[Any, Any], key: Any) -> Any:
    value = cache.get(key)
    if value is not None:
        cache.move_to_end(key)
    return value


def _lru_put(cache: OrderedDict[Any, Any], key: Any, value: Any) -> None:
    cache[key] = value
    if len(cache) > _CACHE_SIZE:
        cache.popitem(last=False)
