"""Where the math answer is: anchors only, reasoning excluded, braces balanced."""

from __future__ import annotations

import pytest

from verifier_server.verifiers.math.extract import (
    answer_region,
    extract,
    last_boxed,
    strip_math_delimiters,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (r"\boxed{1-\frac{1}{e}}", r"1-\frac{1}{e}"),  # not cut at the first `}`
        (r"\boxed{\{1, 2\}}", r"\{1, 2\}"),  # escaped braces do not count
        (r"\boxed{a} then \boxed{b}", "b"),  # the last box
        (r"\boxed{a} then \boxed{b", "a"),  # an unclosed last box falls back to a complete one
        (r"\fbox{7}", "7"),
        (r"\boxed 42 done", "42"),
        (r"\boxed {42}", "42"),
        (r"$\boxed 42$", "42"),
        (r"\boxed{}", None),  # an empty box is no answer
        (r"\boxed{5}\boxed{}", "5"),
        (r"\boxed{6 \boxed{5}}", r"6 \boxed{5}"),  # the outer box, not the inner one
        ("no box", None),
        (r"\boxed", None),
    ],
)
def test_last_boxed(text: str, expected: str | None) -> None:
    assert last_boxed(text) == expected


@pytest.mark.parametrize(
    ("completion", "region"),
    [
        ("<think>a</think>b", "b"),
        ("<think>a</think>b<think>c</think>d", "d"),
        ("<think>never closed \\boxed{1}", ""),
        ("prefilled think ends</think> answer", " answer"),
        ("plain", "plain"),
        ("<think>a</think> \\boxed{5} <think>more", ""),  # a think opened again, never closed
    ],
)
def test_answer_region_drops_reasoning(completion: str, region: str) -> None:
    assert answer_region(completion) == region


def test_answer_tag_wins_in_auto_and_unwraps_a_box() -> None:
    found = extract(r"\boxed{1} <answer>$\boxed{2}$</answer>", "auto")
    assert found is not None and (found.text, found.source) == ("2", "answer_tag")


def test_boxed_mode_ignores_the_answer_tag() -> None:
    found = extract(r"<answer>2</answer> \boxed{1}", "boxed")
    assert found is not None and found.text == "1"
    assert extract("<answer>2</answer>", "boxed") is None


def test_answer_tag_mode_ignores_boxes() -> None:
    assert extract(r"\boxed{1}", "answer_tag") is None


@pytest.mark.parametrize(
    ("completion", "expected"),
    [
        ("so the final answer is $\\frac{1}{2}$.\nThanks", r"\frac{1}{2}"),
        ("Answer: 17", "17"),
        ("we get 3 then 4, and so -12.5 apples", "-12.5"),
        ("1,234 people", "1,234"),
        ("no digits here", None),
        # Minerva's format: the `$…$` after the cue, not the whole tail
        ("Final Answer: The final answer is $100$. I hope it is correct.", "100"),
        ("Final Answer: The final answer is 3.5. I hope it is correct.", "3.5"),
        ("the answer is 7. Done", "7"),
        ("it is 100\u00b2", "100"),  # "²" is not a digit of the number
        ("only \u2460 here", None),
    ],
)
def test_lenient_reads_cues_then_the_last_number(completion: str, expected: str | None) -> None:
    found = extract(completion, "lenient")
    assert (found.text if found else None) == expected


@pytest.mark.parametrize("mode", ["auto", "boxed", "answer_tag"])
def test_a_bare_number_in_prose_is_not_an_answer(mode: str) -> None:
    assert extract("The answer is 5.", mode) is None  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "expected"),
    [("$x$", "x"), ("$$x$$", "x"), (r"\(x\)", "x"), (r"\[x\]", "x"), (" 5. ", "5"), ("$", "$")],
)
def test_strip_math_delimiters(text: str, expected: str) -> None:
    assert strip_math_delimiters(text) == expected
