"""Answer extraction and RE2 compilation: exact outputs on adversarial layouts."""

from __future__ import annotations

import re

import pytest

from verifier_server.verifiers.text import (
    Extraction,
    RegexError,
    compile_re2,
    extract_answer,
    last_fenced_block,
    last_tag_content,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("<answer>4</answer>", "4"),
        ("<answer>1</answer> then <answer>2</answer>", "2"),
        ("<answer>1</answer> then <answer>2", "1"),  # truncated final tag: last complete wins
        ("<answer></answer>", ""),
        ("<answer><answer>x</answer>", "x"),
        ("no tags", None),
        ("</answer> <answer>", None),  # closing before opening
        ("<answer>4", None),
        ("<Answer>4</Answer>", None),  # case-sensitive
    ],
)
def test_last_tag_content(text: str, expected: str | None) -> None:
    assert last_tag_content(text, "answer") == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('```json\n{"a": 1}\n```', '{"a": 1}'),
        ("```\nfirst\n```\ntext\n```python\nsecond\n```\n", "second"),
        ("```\nclosed\n```\n```\nunclosed", "closed"),  # an unclosed final fence is ignored
        ("  ```json\n  [1]\n  ```", "  [1]"),  # indented fences
        ("````\n```\ninner\n```\n````", "```\ninner\n```"),  # longer fence holds a shorter one
        ("```\n```", ""),
        ("```\na\n```json\nb\n```", "a\n```json\nb"),  # "```json" cannot close a fence
        ("inline ```code``` only", None),
        ("no fence", None),
        ("```\nnever closed", None),
    ],
)
def test_last_fenced_block(text: str, expected: str | None) -> None:
    assert last_fenced_block(text) == expected


@pytest.mark.parametrize(
    ("completion", "method", "expected"),
    [
        ("<answer>a</answer>\n```\nb\n```", "auto", Extraction("b", "fenced")),
        ("<answer>a</answer>", "auto", Extraction("a", "answer_tag")),
        (" plain ", "auto", Extraction(" plain ", "raw")),
        ("<answer>a</answer>\n```\nb\n```", "answer_tag", Extraction("a", "answer_tag")),
        (
            "<answer>a</answer>\n```\nb\n```",
            "raw",
            Extraction("<answer>a</answer>\n```\nb\n```", "raw"),
        ),
        ("no fence", "fenced", None),
        ("no tag", "answer_tag", None),
        # Reasoning never counts: an answer inside <think> contradicted after it earns nothing.
        ('<think><answer>{"a": 1}</answer></think> no', "answer_tag", None),
        (
            '<think>```\n{"a": 1}\n```</think> no',
            "auto",
            Extraction('<think>```\n{"a": 1}\n```</think> no', "raw"),
        ),
        ("<think>x</think><answer>b</answer>", "answer_tag", Extraction("b", "answer_tag")),
        # A template that pre-fills <think>: only the closing tag is in the completion.
        ("reasoning</think><answer>b</answer>", "auto", Extraction("b", "answer_tag")),
        # Cut off while thinking: nothing is the answer.
        (
            "<think>maybe <answer>b</answer>",
            "auto",
            Extraction("<think>maybe <answer>b</answer>", "raw"),
        ),
        ("<think>maybe <answer>b</answer>", "answer_tag", None),
    ],
)
def test_extract_answer(completion: str, method: str, expected: Extraction | None) -> None:
    assert extract_answer(completion, method) == expected


def test_fenced_block_of_a_megabyte_of_lines() -> None:
    body = "x = 1\n" * 200_000  # 1.2 MB
    assert last_fenced_block(f"```python\n{body}```\n") == body[:-1]


@pytest.mark.parametrize(
    ("pattern", "problem"),
    [
        (r"(a)\1", "invalid escape sequence"),  # backreference
        (r"a(?=b)", "invalid perl operator"),  # lookahead
        (r"(?<=a)b", "invalid perl operator"),  # lookbehind
        (r"(a", "missing )"),
        (r"a\Z", "invalid escape sequence"),  # Python's \Z; RE2 spells it \z
    ],
)
def test_compile_re2_rejects_what_re2_lacks(pattern: str, problem: str) -> None:
    with pytest.raises(RegexError, match=re.escape(problem)):
        compile_re2(pattern)


def test_compile_re2_cannot_backtrack_on_nested_quantifiers() -> None:
    # Python's re takes exponential time here; RE2 answers in one pass.
    assert compile_re2(r"(a+)+$").search("a" * 50_000 + "!") is None
    assert compile_re2(r"(a+)+$").search("a" * 50_000) is not None


def test_compile_re2_dollar_matches_only_at_the_very_end() -> None:
    # Unlike Python's re, `$` does not match before a final newline.
    assert compile_re2("a$").search("a\n") is None
