"""OpenAI grader pieces without a server: the similarity metrics (hand-worked values, the
arithmetic in comments), the calculate_output formula, templates, and the grader JSON's
validation messages."""

from __future__ import annotations

import random

import pytest

from verifier_server.verifiers.openai_grader.formula import FormulaError, evaluate, parse_formula
from verifier_server.verifiers.openai_grader.similarity import METRICS, lcs_length
from verifier_server.verifiers.openai_grader.spec import grader_errors
from verifier_server.verifiers.openai_grader.templates import (
    TemplateError,
    item_namespace,
    render,
    sample_namespace,
)

CAT = "the cat sat on the mat"
CAT_REF = "the cat sat on a mat"


@pytest.mark.parametrize(
    ("metric", "candidate", "reference", "expected"),
    [
        # kitten/sitting: LCS "ittn" = 4 -> 2*4/(6+7) (rapidfuzz fuzz.ratio gives 61.54)
        ("fuzzy_match", "kitten", "sitting", 8 / 13),
        ("fuzzy_match", "", "", 1.0),
        ("fuzzy_match", "abc", "", 0.0),
        # clipped precisions 5/6, 3/5, 2/4, 1/3; equal lengths, no brevity penalty:
        # (5/6 * 3/5 * 1/2 * 1/3) ** (1/4) = (1/12) ** 0.25
        ("bleu", CAT, CAT_REF, (1 / 12) ** 0.25),
        ("bleu", "the cat", "the cat sat", 0.0),  # no 3-grams: precision 0, no smoothing
        # matches 5+3+2+1 = 11 over max(6+5+4+3, 6+5+4+3) = 18
        ("gleu", CAT, CAT_REF, 11 / 18),
        ("gleu", "the cat", "the cat sat", 3 / 6),  # 2+1 matches, reference has 3+2+1
        ("rouge_1", CAT, CAT_REF, 5 / 6),  # overlap 5, P = R = 5/6
        ("rouge_2", CAT, CAT_REF, 3 / 5),
        ("rouge_3", CAT, CAT_REF, 2 / 4),
        ("rouge_l", CAT, CAT_REF, 5 / 6),  # LCS "the cat sat on mat" = 5
        # rouge tokens: lowercased, split on non-alphanumerics: "the cat" vs 5 tokens,
        # LCS 2: P = 1, R = 2/5 -> F = 2 * 1 * 0.4 / 1.4 = 4/7
        ("rouge_l", "The CAT!", "the cat on the mat", 4 / 7),
        ("rouge_5", "a b c d", "a b c d", 0.0),  # no 5-grams at all
    ],
)  # fmt: skip
def test_metrics_match_hand_worked_values(
    metric: str, candidate: str, reference: str, expected: float
) -> None:
    assert METRICS[metric](candidate, reference) == pytest.approx(expected)


def test_bit_parallel_lcs_equals_the_textbook_table() -> None:
    def table(a: str, b: str) -> int:
        rows = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
        for i, x in enumerate(a):
            for j, y in enumerate(b):
                rows[i + 1][j + 1] = (
                    rows[i][j] + 1 if x == y else max(rows[i][j + 1], rows[i + 1][j])
                )
        return rows[-1][-1]

    rng = random.Random(0)
    for _ in range(500):
        a = "".join(rng.choice("abc") for _ in range(rng.randint(0, 15)))
        b = "".join(rng.choice("abc") for _ in range(rng.randint(0, 15)))
        assert lcs_length(a, b) == table(a, b)


@pytest.mark.parametrize(
    ("formula", "expected"),
    [
        ("0.5 * a + 0.5 * b", 0.75),  # 0.5*1 + 0.5*0.5
        ("a ^ 2 + b ** 2", 1.25),  # OpenAI writes powers as ^
        ("min(a, b) - -b", 1.0),
        ("floor(b) + ceil(b) + sqrt(4) + abs(-1)", 4.0),  # 0 + 1 + 2 + 1
    ],
)
def test_formulas_evaluate_over_the_graders_scores(formula: str, expected: float) -> None:
    tree = parse_formula(formula, frozenset({"a", "b"}))
    assert evaluate(tree, {"a": 1.0, "b": 0.5}) == pytest.approx(expected)


@pytest.mark.parametrize(
    "formula",
    [
        "n ^ 0.5",  # (-1) ** 0.5 is complex in Python, not a float
        "(n - 1) ^ (1 / 3)",
        "1 / (a - 1)",
        "log(n)",
        "floor(1e308 * 10)",
    ],
)
def test_formulas_undefined_for_the_scores_raise_what_the_verifier_scores_as_undefined(
    formula: str,
) -> None:
    # A sub-score can be negative (a score_model range [-1, 1]); any other exception would
    # fail the whole batch.
    tree = parse_formula(formula, frozenset({"a", "n"}))
    with pytest.raises((ZeroDivisionError, ValueError, OverflowError)):
        evaluate(tree, {"a": 1.0, "n": -1.0})


def test_min_and_max_of_one_score_are_that_score() -> None:
    tree = parse_formula("min(a) + max(b)", frozenset({"a", "b"}))
    assert evaluate(tree, {"a": 1.0, "b": 0.5}) == 1.5
    longest = parse_formula("a" + " + a" * 200, frozenset({"a"}))  # 200 deep: allowed
    assert evaluate(longest, {"a": 0.5}) == 100.5


@pytest.mark.parametrize(
    ("formula", "message"),
    [
        ('__import__("os")', "unknown function '__import__'"),
        ("a.real", "Attribute is not allowed"),
        ("c + 1", "unknown name 'c'"),
        ("a if b else 1", "IfExp is not allowed"),
        ("(lambda: 1)()", "Call is not allowed"),
        ("min", "unknown name 'min'"),
        ("sqrt(a, b)", "one argument"),
        ("True + a", "Constant is not allowed"),
        ("a +", "not a formula"),
        ("-" * 999 + "a", "nested more than 200 deep"),  # not a RecursionError
        ("a" + " + a" * 201, "nested more than 200 deep"),
    ],
)
def test_formulas_outside_the_whitelist_are_refused(formula: str, message: str) -> None:
    with pytest.raises(FormulaError, match=message):
        parse_formula(formula, frozenset({"a", "b"}))


@pytest.mark.parametrize(("levels", "is_json"), [(200, True), (201, False), (5000, False)])
def test_output_json_is_bounded_in_depth(levels: int, is_json: bool) -> None:
    # 5000 levels: json.loads itself raises RecursionError (not ValueError)
    sample = sample_namespace("[" * levels + "]" * levels)
    assert ("output_json" in sample) is is_json


def test_templates_render_sample_and_item_paths() -> None:
    sample = sample_namespace('{"answer": [1, "x"]}')
    item = item_namespace({"gold": {"list": ["p", "q"]}, "n": 3})
    rendered = render(
        "{{sample.output_text}}|{{ sample.output_json.answer[1] }}|{{ item.gold.list[1] }}|"
        "{{ item.n }}|{{ item.gold }}",
        sample,
        item,
    )
    assert rendered == '{"answer": [1, "x"]}|x|q|3|{"list": ["p", "q"]}'
    # a completion that is not the JSON the template expects renders "": the completion's doing
    assert render("[{{ sample.output_json.answer }}]", sample_namespace("plain"), item) == "[]"
    with pytest.raises(TemplateError, match="has no 'missing'"):
        render("{{ item.missing }}", sample, item)
    assert item_namespace("Paris") == {"reference": "Paris"}


@pytest.mark.parametrize(
    ("grader", "error"),
    [
        ({"type": "endpoint", "name": "x"}, "type: Input tag 'endpoint'"),
        ({"type": "string_check", "name": "x", "input": "{{ sample.output_tools }}",
          "reference": "r", "operation": "eq"}, "input: {{ sample.output_tools }}: sample has"),
        ({"type": "string_check", "name": "x", "input": "i", "reference": "r",
          "operation": "regex"}, "operation: Input should be 'eq', 'ne', 'like' or 'ilike'"),
        ({"type": "text_similarity", "name": "x", "input": "i", "reference": "r",
          "evaluation_metric": "cosine", "pass_threshold": 0.5},
         "evaluation_metric: 'cosine' needs an embedding model"),
        ({"type": "text_similarity", "name": "x", "input": "i", "reference": "r",
          "evaluation_metric": "meteor", "pass_threshold": 0.5},
         "evaluation_metric: 'meteor' needs WordNet"),
        ({"type": "text_similarity", "name": "x", "input": "i", "reference": "r",
          "evaluation_metric": "bleu"}, "pass_threshold: Field required"),
        ({"type": "python", "name": "x", "source": "def g(s, i): return 1"},
         "source: must define a top-level function grade"),
        ({"type": "python", "name": "x", "source": "def grade(s, i):\n return 1\nbreak"},
         "source: not valid Python: 'break' outside loop"),
        ({"type": "python", "name": "x", "source": "def grade(s, i, *, k):\n return 1"},
         "source: grade must accept two positional arguments"),
        ({"type": "python", "name": "x", "source": "def grade(s, i):\n return 1",
          "image_tag": "my-image"}, "image_tag: image 'my-image' is not available"),
        ({"type": "score_model", "name": "x", "model": "m", "range": [1, 0],
          "input": [{"role": "user", "content": "hi"}]}, "range: range must be [min, max]"),
        ({"type": "score_model", "name": "x", "model": "m",
          "input": [{"role": "user", "content": [{"type": "input_image"}]}]},
         "input[0].content: Input should be a valid string"),
        ({"type": "label_model", "name": "x", "model": "m", "labels": ["a"],
          "passing_labels": ["b"], "input": [{"role": "user", "content": "hi"}]},
         "passing_labels ['b'] are not in labels"),
        ({"type": "multi", "name": "m", "calculate_output": "a + b",
          "graders": {"a": {"type": "string_check", "name": "a", "input": "i", "reference": "r",
                            "operation": "like"}}},
         "calculate_output: unknown name 'b'; graders: ['a']"),
        ({"type": "multi", "name": "m", "calculate_output": "a",
          "graders": {"a": {"type": "python", "name": "p", "source": "x = ("}}},
         "graders.a.source: not valid Python"),
    ],
)  # fmt: skip
def test_grader_errors_name_the_field(grader: dict, error: str) -> None:
    errors = grader_errors(grader)
    assert any(error in e for e in errors), errors


def test_a_valid_nested_grader_has_no_errors() -> None:
    leaf = {"type": "string_check", "name": "a", "input": "{{ sample.output_text }}",
            "reference": "{{ item.answer }}", "operation": "ilike"}  # fmt: skip
    assert grader_errors({"type": "multi", "name": "m", "graders": {"a": leaf},
                          "calculate_output": "a"}) == []  # fmt: skip
