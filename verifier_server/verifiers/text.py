"""Reading answers out of model text, in linear time.

Completions are hostile input: everything here runs in time linear in the completion's length,
using `str.find`/`str.rfind` and single passes (no backtracking regexes over model text).
Patterns supplied by callers are compiled with RE2, whose matching is linear in the text.

- `answer_region`: the completion after its reasoning (after the last `</think>`).
- `last_tag_content`: the content of the last complete `<tag>…</tag>` pair.
- `last_fenced_block`: the content of the last complete backtick code fence.
- `extract_answer`: one of the above, picked by a verifier's `extract` parameter.
- `compile_re2`: a cached RE2 compile that reports unsupported syntax as `RegexError`.
- `utf8_safe`: the text with each lone surrogate replaced by U+FFFD, for RE2 and protobuf.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Literal

import re2

ExtractMethod = Literal["raw", "answer_tag", "fenced", "auto"]

EXTRACT_DESCRIPTION = (
    "Which part of the completion to check. 'raw': the whole completion; 'answer_tag': the "
    "content of the last complete <answer>…</answer>; 'fenced': the content of the last "
    "complete ``` code fence (its info string, e.g. 'json', dropped); 'auto': the last fence if "
    "there is one, else the last <answer> tag if there is one, else the whole completion. "
    "Fences and tags count only after the reasoning (after the last </think>; none while a "
    "<think> is left open)."
)


@dataclass(frozen=True, slots=True)
class Extraction:
    """An extracted answer and where it came from ("raw", "answer_tag" or "fenced")."""

    text: str
    source: str


def answer_region(completion: str) -> str:
    """The part of the completion after the reasoning: after the last `</think>`; empty when a
    `<think>` is left open (the model was cut off while thinking). Reasoning never counts as
    the answer, so an answer written inside it and contradicted after it earns nothing."""
    close = completion.rfind("</think>")
    region = completion[close + len("</think>") :] if close >= 0 else completion
    return "" if "<think>" in region else region


def last_tag_content(text: str, tag: str = "answer") -> str | None:
    """The content of the last complete `<tag>…</tag>` pair, or None if there is none.

    "Last" is anchored on the last closing tag, so a trailing unclosed `<tag>` (a truncated
    completion) is ignored and the previous complete pair wins.
    """
    close = text.rfind(f"</{tag}>")
    if close < 0:
        return None
    opening = f"<{tag}>"
    start = text.rfind(opening, 0, close)
    if start < 0:
        return None
    return text[start + len(opening) : close]


def last_fenced_block(text: str) -> str | None:
    """The content of the last complete backtick fence, or None if there is none.

    Follows CommonMark for backtick fences: a fence line starts (after indentation) with three
    or more backticks; the opening line's remainder is the info string ("json") and is dropped;
    the block closes at a line of only backticks, at least as many as opened it. An unclosed
    final fence is ignored. Tilde fences and inline backticks are not fences here.
    """
    last: str | None = None
    fence_len = 0  # backticks of the open fence; 0 when outside a fence
    content_start = 0
    line_start = 0
    while line_start <= len(text):
        line_end = text.find("\n", line_start)
        if line_end < 0:
            line_end = len(text)
        line = text[line_start:line_end].strip()
        if line.startswith("```"):
            ticks = len(line) - len(line.lstrip("`"))
            if fence_len == 0:
                fence_len, content_start = ticks, line_end + 1
            elif ticks == len(line) and ticks >= fence_len:
                last = text[content_start : max(content_start, line_start - 1)]  # minus "\n"
                fence_len = 0
        line_start = line_end + 1
    return last


_MISSING_REASONS = {"answer_tag": "missing_answer_tag", "fenced": "missing_fenced_block"}


def extract_answer(completion: str, method: ExtractMethod) -> Extraction | None:
    """The part of `completion` that `method` selects, or None when it is absent. Fences and
    tags are searched only after the reasoning (see `answer_region`): an answer written inside
    `<think>` and contradicted after it earns nothing. `raw` is the whole completion, as asked."""
    region = answer_region(completion)
    if method in ("fenced", "auto"):
        block = last_fenced_block(region)
        if block is not None:
            return Extraction(block, "fenced")
        if method == "fenced":
            return None
    if method in ("answer_tag", "auto"):
        content = last_tag_content(region, "answer")
        if content is not None:
            return Extraction(content, "answer_tag")
        if method == "answer_tag":
            return None
    return Extraction(completion, "raw")


def missing_reason(method: ExtractMethod) -> str:
    """The result reason when `extract_answer(…, method)` found nothing."""
    return _MISSING_REASONS[method]


class RegexError(ValueError):
    """A pattern RE2 cannot compile (bad syntax, or a backreference/lookaround RE2 lacks)."""


_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.log_errors = False  # RE2 would log each bad (caller-supplied) pattern to stderr


@functools.lru_cache(maxsize=512)
def compile_re2(pattern: str) -> re2._Regexp:
    """Compiles `pattern` with RE2: matching is linear in the text, whatever the pattern.

    RE2 has no backreferences or lookaround, `$` matches only at the very end (not before a
    final newline) and `\\d`, `\\w`, `\\b` are ASCII-only. Raises `RegexError` naming the problem.
    """
    try:
        return re2.compile(pattern, _RE2_OPTIONS)
    except UnicodeEncodeError:
        raise RegexError("the pattern holds a lone surrogate, which UTF-8 cannot encode") from None
    except re2.error as exc:
        reason = exc.args[0] if exc.args else "cannot compile"
        if isinstance(reason, bytes):
            reason = reason.decode("utf-8", "replace")
        raise RegexError(f"RE2 cannot compile the pattern: {reason}") from None


_LONE_SURROGATE = re.compile("[\ud800-\udfff]")  # a character class: one linear pass


def utf8_safe(text: str) -> str:
    """`text` with each lone surrogate replaced by U+FFFD (the text itself when it has none).

    JSON's `"\\ud800"` escape decodes to a lone surrogate, which UTF-8 cannot encode: RE2
    (which matches UTF-8) and protobuf strings would raise on it. So a pattern sees U+FFFD there.
    """
    if text.isascii():
        return text
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return _LONE_SURROGATE.sub("\ufffd", text)
    return text
