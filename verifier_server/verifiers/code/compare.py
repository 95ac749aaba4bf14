"""Comparing a program's stdout with the expected output, outside the sandbox.

Pure functions on bytes and str. Output that is not valid UTF-8 never matches. In every mode
the number of lines must match (after dropping trailing empty lines), so printing fewer
lines than expected cannot pass a comparator that zips lines.
"""

from __future__ import annotations

import math
from typing import Literal

CompareMode = Literal["exact", "whitespace", "float"]


def outputs_match(actual: bytes, expected: str, mode: CompareMode, tolerance: float) -> bool:
    try:
        text = actual.decode("utf-8")
    except UnicodeDecodeError:
        return False
    if mode == "exact":
        return text == expected
    got, want = _token_lines(text), _token_lines(expected)
    if len(got) != len(want):
        return False
    if mode == "whitespace":
        return got == want
    return all(
        len(a) == len(b) and all(tokens_close(x, y, tolerance) for x, y in zip(a, b, strict=True))
        for a, b in zip(got, want, strict=True)
    )


def tokens_close(actual: str, expected: str, tolerance: float) -> bool:
    """Equal as text, or both finite numbers within `tolerance` absolute or relative.

    e.g. tolerance 1e-6: "0.3333333" ~ "0.333333333" (diff 3.3e-8), "1000000.5" ~ "1000000.0"
    (relative 5e-7), but "1.1" !~ "1.2".
    """
    if actual == expected:
        return True
    try:
        a, b = float(actual), float(expected)
    except ValueError:
        return False
    if not (math.isfinite(a) and math.isfinite(b)):
        return False
    return abs(a - b) <= tolerance * max(1.0, abs(b))


def _token_lines(text: str) -> list[list[str]]:
    lines = [line.split() for line in text.splitlines()]
    while lines and not lines[-1]:
        lines.pop()
    return lines
