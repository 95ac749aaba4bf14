"""The "string_check" verifier: compare the completion (or its extracted answer) to a string.

`item.reference` is the string to compare with (a pattern for "regex"); anything else is an
invalid item. Operations, with `answer` the extracted, optionally stripped completion:

- "eq" / "ne": `answer == reference` / `answer != reference`
- "contains" / "icontains": `reference in answer`, the latter after `str.casefold` on both
- "regex": RE2 pattern `reference` found anywhere in `answer` (`regex_mode` "search", like
  `re.search`), or matching all of it ("fullmatch"). A pattern RE2 cannot compile (including
  backreferences and lookaround, which RE2 does not have) is an invalid reference.

`strip` strips surrounding whitespace from the answer and, except for "regex", from the
reference. When `extract` finds nothing (no <answer> tag, no fence) the score is 0.0 with
reason "missing_answer_tag"/"missing_fenced_block".

Guarantees: linear time in the completion for every operation (RE2 cannot backtrack), so it
runs in a thread. Scores are 1.0 or 0.0, and nothing in a completion gives a non-OK status (a
lone surrogate, which RE2's UTF-8 cannot hold, is matched as U+FFFD).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from verifier_server.types import Item, Result, Status, truncate
from verifier_server.verifiers.base import InvalidItem, Params, Verifier
from verifier_server.verifiers.text import (
    EXTRACT_DESCRIPTION,
    ExtractMethod,
    RegexError,
    compile_re2,
    extract_answer,
    missing_reason,
    utf8_safe,
)

Operation = Literal["eq", "ne", "contains", "icontains", "regex"]

_FAILURE_REASONS: dict[str, str] = {
    "eq": "not_equal",
    "ne": "equal",
    "contains": "not_found",
    "icontains": "not_found",
    "regex": "no_match",
}


class StringCheckParams(Params):
    operation: Operation = Field(
        default="eq",
        description=(
            "eq/ne: exact (in)equality; contains/icontains: the reference is a substring "
            "(icontains: case-insensitive via casefold); regex: the reference is an RE2 pattern."
        ),
    )
    strip: bool = Field(
        default=True,
        description="Strip surrounding whitespace from the answer and a non-regex reference.",
    )
    extract: ExtractMethod = Field(default="raw", description=EXTRACT_DESCRIPTION)
    regex_mode: Literal["search", "fullmatch"] = Field(
        default="search",
        description="For operation 'regex': match anywhere ('search') or the whole answer.",
    )


def check_string(answer: str, reference: str, params: StringCheckParams) -> bool:
    """Whether `answer` passes `params.operation` against `reference` (already validated)."""
    if params.strip:
        answer = answer.strip()
        if params.operation != "regex":
            reference = reference.strip()
    match params.operation:
        case "eq":
            return answer == reference
        case "ne":
            return answer != reference
        case "contains":
            return reference in answer
        case "icontains":
            return reference.casefold() in answer.casefold()
        case "regex":
            pattern = compile_re2(reference)
            matcher = pattern.search if params.regex_mode == "search" else pattern.fullmatch
            return matcher(utf8_safe(answer)) is not None  # RE2 cannot encode lone surrogates
    raise AssertionError(f"unhandled operation {params.operation!r}")


class StringCheckVerifier(Verifier):
    name = "string_check"
    description = "1.0 if the completion equals/contains/matches the reference string, else 0.0."
    Params = StringCheckParams
    execution = "bulk"

    def score_one(self, item: Item, params: StringCheckParams) -> Result:
        reference = item.reference
        if not isinstance(reference, str):
            raise InvalidItem("reference", f"must be a string, got {type(reference).__name__}")
        if params.operation == "regex":
            try:
                compile_re2(reference)
            except RegexError as exc:
                raise InvalidItem("reference", str(exc)) from None

        extraction = extract_answer(item.completion, params.extract)
        if extraction is None:
            return Result(
                id=item.id, score=0.0, status=Status.OK, reason=missing_reason(params.extract)
            )
        if check_string(extraction.text, reference, params):
            return Result(id=item.id, score=1.0, status=Status.OK)
        return Result(
            id=item.id,
            score=0.0,
            status=Status.OK,
            reason=_FAILURE_REASONS[params.operation],
            details={
                "answer": utf8_safe(truncate(extraction.text, 200)),
                "source": extraction.source,
            },
        )
