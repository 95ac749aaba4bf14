"""The "format" verifier: is the completion, e.g., <think>…</think><answer>…</answer> and no more?

Rule: every tag in `tags` appears exactly once as `<tag>` and once as `</tag>`, the pairs come in
the listed order without overlapping, and only whitespace lies before, between and after them
(`allow_text_outside` drops this last condition).
Score 1.0 when the rule holds, else 0.0 with the first broken rule as `reason` ("missing_tag",
"duplicate_tag", "out_of_order", "nested_tag", "text_outside_tags") and the tag in `details`.

Chat templates that pre-fill the first opening tag (Qwen3/DeepSeek-R1 put `<think>` into the
prompt; open-r1 #560, TRL #6966) make the completion start inside it: set `prefilled_open_tag`,
and the completion must then not contain that opening tag at all (it would be a second one).

Guarantees: linear time in the completion (a fixed number of `str.count`/`str.find` passes per
tag, no regexes), so it runs in a thread. Tags are matched literally and case-sensitively;
attributes (`<answer type="x">`) are not recognised. Empty tag contents are allowed.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from pydantic import Field, field_validator

from verifier_server.types import Item, Result, Status
from verifier_server.verifiers.base import Params, Verifier


class FormatParams(Params):
    tags: tuple[str, ...] = Field(
        default=("think", "answer"),
        min_length=1,
        description="Tag names that must each appear exactly once, in this order.",
    )
    prefilled_open_tag: bool = Field(
        default=False,
        description=(
            "The prompt already ends with the first opening tag (e.g. '<think>'), so the "
            "completion starts inside it and must not repeat it."
        ),
    )
    allow_text_outside: bool = Field(
        default=False,
        description="Allow non-whitespace text before, between and after the tags.",
    )

    @field_validator("tags")
    @classmethod
    def _plain_distinct_names(cls, tags: tuple[str, ...]) -> tuple[str, ...]:
        for tag in tags:
            if not tag or any(char in "<>/" or char.isspace() for char in tag):
                raise ValueError(f"tags: {tag!r} must be non-empty without '<', '>', '/', spaces")
        if len(set(tags)) != len(tags):
            raise ValueError(f"tags: {list(tags)} names a tag twice")
        return tags


@dataclass(frozen=True, slots=True)
class Violation:
    """The first broken rule: a result `reason` and the `details` saying where."""

    reason: str
    details: dict[str, str | int]


def check_format(
    completion: str, tags: tuple[str, ...], *, prefilled_open_tag: bool, allow_text_outside: bool
) -> Violation | None:
    """None if `completion` follows the rule, else the first violation."""
    # 1. every marker exactly once (the prefilled one: zero times).
    spans: list[tuple[int, int]] = []  # per tag: (index of "<tag>", index after "</tag>")
    for position, tag in enumerate(tags):
        opening, closing = f"<{tag}>", f"</{tag}>"
        expected_opening = 0 if position == 0 and prefilled_open_tag else 1
        for marker, expected in ((opening, expected_opening), (closing, 1)):
            count = completion.count(marker)
            if count < expected:
                return Violation("missing_tag", {"tag": tag, "marker": marker})
            if count > expected:
                return Violation("duplicate_tag", {"tag": tag, "marker": marker})
        start = completion.find(opening) if expected_opening else 0
        end = completion.find(closing)
        if end < start:
            return Violation("out_of_order", {"tag": tag, "marker": closing})
        spans.append((start, end + len(closing)))

    # 2. consecutive pairs in order and disjoint (this makes the whole sequence ordered).
    for i in range(1, len(tags)):
        (prev_start, prev_end), (start, end) = spans[i - 1], spans[i]
        if start >= prev_end:
            continue
        if end <= prev_start:
            return Violation("out_of_order", {"tag": tags[i], "before": tags[i - 1]})
        return Violation("nested_tag", {"tag": tags[i], "inside": tags[i - 1]})

    # 3. only whitespace outside the pairs.
    if not allow_text_outside:
        gaps = [(0, spans[0][0])] if not prefilled_open_tag else []
        gaps += [(prev[1], cur[0]) for prev, cur in itertools.pairwise(spans)]
        gaps.append((spans[-1][1], len(completion)))
        for gap_start, gap_end in gaps:
            if completion[gap_start:gap_end].strip():
                return Violation("text_outside_tags", {"at": gap_start})
    return None


class FormatVerifier(Verifier):
    name = "format"
    description = "1.0 if the completion is exactly the listed tags in order, else 0.0."
    Params = FormatParams
    execution = "bulk"

    def score_one(self, item: Item, params: FormatParams) -> Result:
        violation = check_format(
            item.completion,
            params.tags,
            prefilled_open_tag=params.prefilled_open_tag,
            allow_text_outside=params.allow_text_outside,
        )
        if violation is None:
            return Result(id=item.id, score=1.0, status=Status.OK)
        return Result(
            id=item.id,
            score=0.0,
            status=Status.OK,
            reason=violation.reason,
            details=dict(violation.details),
        )
