"""Finding the answer in a math completion, in time linear in the completion's length.

The answer must be anchored: the content of the last `\\boxed{…}` (or `\\fbox{…}`), brace-balanced
so that `\\boxed{1-\\frac{1}{e}}` yields all of `1-\\frac{1}{e}`, or the content of the last
complete `<answer>…</answer>`. A number in prose is not an answer unless the caller asks for
`lenient` extraction. Reasoning never counts: text up to the last `</think>` is dropped, and a
completion with an unclosed `<think>` (truncated mid-thought) has no answer at all.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from verifier_server.verifiers.text import answer_region, last_tag_content

ExtractMode = Literal["auto", "boxed", "answer_tag", "lenient"]

EXTRACT_DESCRIPTION = (
    "Where the answer is. 'boxed': the last \\boxed{…} or \\fbox{…}; 'answer_tag': the last "
    "complete <answer>…</answer> (a \\boxed{…} inside it is unwrapped); 'auto': the answer tag "
    "if there is one, else the last box; 'lenient': as auto, then 'the answer is …' / "
    "'Answer: …', then the last number. Text inside <think>…</think> never counts."
)

_BOX_COMMANDS = ("\\boxed", "\\fbox")
_LENIENT_CUES = ("final answer is", "answer is", "answer:")
_DIGITS = frozenset("0123456789")  # str.isdigit() also accepts "²" and "①"
_SENTENCE_END = re.compile(r"\.(?:\s|$)")


@dataclass(frozen=True, slots=True)
class Extracted:
    """The answer text and the anchor it came from: "boxed", "answer_tag", "cue" or "number";
    `boxes` holds every box of the answer when there are several (`\\boxed{1}, \\boxed{-2}`)."""

    text: str
    source: str
    boxes: tuple[str, ...] = ()


def last_boxed(text: str) -> str | None:
    """The content of the last complete, non-empty, outermost `\\boxed{…}`/`\\fbox{…}`, braces
    balanced; `\\boxed 5` (one token after a space) is accepted too. A box inside a box is part
    of the outer box's content. None when there is no such box."""
    boxes = all_boxed(text)
    return boxes[-1] if boxes else None


def all_boxed(text: str) -> list[str]:
    """The contents of every complete, non-empty, outermost box, in order. One forward pass."""
    found: list[str] = []
    position = 0
    while True:
        start = _next_box(text, position)
        if start is None:
            return found
        command = next(cmd for cmd in _BOX_COMMANDS if text.startswith(cmd, start))
        content, end = _box_content(text, start + len(command))
        if content is not None and content.strip():
            found.append(content)
        position = end


def _next_box(text: str, position: int) -> int | None:
    starts = [i for i in (text.find(cmd, position) for cmd in _BOX_COMMANDS) if i >= 0]
    return min(starts) if starts else None


def _box_content(text: str, after: int) -> tuple[str | None, int]:
    """(content, index after the box); content None for an unclosed box."""
    rest = text[after:].lstrip(" ")
    skipped = len(text) - after - len(rest)
    opening = after + skipped
    if rest.startswith("{"):
        close = matching_brace(text, opening)
        return (None, opening + 1) if close is None else (text[opening + 1 : close], close + 1)
    if skipped and rest:  # `\boxed 5`: one token, up to whitespace or `$`
        token = rest.split(None, 1)[0]
        return token.split("$", 1)[0], opening + len(token)
    return None, after


def matching_brace(text: str, open_at: int) -> int | None:
    """Index of the `}` closing the `{` at `open_at`; escaped braces `\\{ \\}` do not count."""
    depth = 0
    i = open_at
    n = len(text)
    while i < n:
        ch = text[i]
        if ch == "\\":
            i += 2
            continue
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    return None


def extract(completion: str, mode: ExtractMode) -> Extracted | None:
    """The anchored answer of `completion` by `mode`, or None when there is none."""
    region = answer_region(completion)
    if mode in ("answer_tag", "auto", "lenient"):
        tagged = last_tag_content(region, "answer")
        if tagged is not None:
            boxed = last_boxed(tagged)
            return Extracted(
                strip_math_delimiters(boxed if boxed is not None else tagged), "answer_tag"
            )
        if mode == "answer_tag":
            return None
    boxes = all_boxed(region)
    if boxes:
        several = tuple(strip_math_delimiters(b) for b in boxes) if len(boxes) > 1 else ()
        return Extracted(strip_math_delimiters(boxes[-1]), "boxed", several)
    if mode == "lenient":
        return _lenient(region)
    return None


def strip_math_delimiters(text: str) -> str:
    """`$x$`, `$$x$$`, `\\(x\\)`, `\\[x\\]` -> `x`; also a trailing full stop."""
    text = text.strip().removesuffix(".").strip()
    for left, right in (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]")):
        if len(text) >= len(left) + len(right) and text.startswith(left) and text.endswith(right):
            text = text[len(left) : len(text) - len(right)].strip()
            break
    return text.removesuffix(".").strip()


def _lenient(region: str) -> Extracted | None:
    """'The answer is X' / 'Answer: X' (the last such cue), else the last number."""
    lowered = region.lower()
    best = max((lowered.rfind(cue), cue) for cue in _LENIENT_CUES)
    if best[0] >= 0:
        rest = region[best[0] + len(best[1]) :].strip()
        line = _cue_answer(rest)
        if line:
            return Extracted(strip_math_delimiters(line), "cue")
    number = _last_number(region)
    return None if number is None else Extracted(number, "number")


def _cue_answer(rest: str) -> str:
    """What follows a cue: a `$…$` span if it starts with one (Minerva's `The final answer is
    $100$. I hope it is correct.`), else its first sentence on its line."""
    if rest.startswith("$"):
        opening = "$$" if rest.startswith("$$") else "$"
        close = rest.find(opening, len(opening))
        if close > 0:
            return rest[: close + len(opening)]
    line = rest.split("\n", 1)[0].strip()
    end = _SENTENCE_END.search(line)
    return line[: end.start()] if end else line


def _last_number(text: str) -> str | None:
    """The last run of digits (with a sign, one decimal point and thousands commas), scanning
    back from the end without a regex."""
    end = len(text)
    while end > 0 and text[end - 1] not in _DIGITS:
        end -= 1
    if end == 0:
        return None
    start = end
    while start > 0 and (text[start - 1] in _DIGITS or text[start - 1] in ".,"):
        start -= 1
    while start < end and text[start] in ".,":
        start += 1
    if start > 0 and text[start - 1] == "-":
        start -= 1
    return text[start:end]
