"""The OpenAI grader JSON, as typed models: the fields and value ranges OpenAI documents for
the grader kinds this server can run. What it cannot run is refused here, naming the field
(an image input, an embedding metric, a python image other than the documented one)."""

from __future__ import annotations

import ast
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from verifier_server.verifiers.openai_grader.formula import FormulaError, parse_formula
from verifier_server.verifiers.openai_grader.templates import TemplateError, check_template

SIMILARITY_METRICS = ("fuzzy_match", "bleu", "gleu", "rouge_1", "rouge_2", "rouge_3",
                      "rouge_4", "rouge_5", "rouge_l")  # fmt: skip
# Documented by OpenAI but needing a model or data we do not ship (an embedding model;
# WordNet for METEOR's synonyms): refused with this reason.
_UNRUNNABLE_METRICS = {
    "cosine": "needs an embedding model, which this server does not run",
    "meteor": "needs WordNet synonym data, which this server does not ship",
}
PYTHON_IMAGE_TAGS = ("2025-05-08",)


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _template(value: str) -> str:
    try:
        check_template(value)
    except TemplateError as exc:
        raise ValueError(str(exc)) from None
    return value


Template = Annotated[str, AfterValidator(_template)]


class StringCheckGrader(_Spec):
    type: Literal["string_check"]
    name: str = Field(description="The grader's name.")
    input: Template = Field(description="The text to check, e.g. {{ sample.output_text }}.")
    reference: Template = Field(description="The text to compare with, e.g. {{ item.answer }}.")
    operation: Literal["eq", "ne", "like", "ilike"] = Field(
        description="eq / ne: (in)equality; like: input contains reference; ilike: the same, "
        "ignoring case."
    )


class TextSimilarityGrader(_Spec):
    type: Literal["text_similarity"]
    name: str
    input: Template
    reference: Template
    pass_threshold: float = Field(description="A score at or above it passes (details.passed).")
    evaluation_metric: str = Field(description=f"One of {list(SIMILARITY_METRICS)}.")

    @field_validator("evaluation_metric")
    @classmethod
    def _metric(cls, value: str) -> str:
        if value in _UNRUNNABLE_METRICS:
            raise ValueError(f"{value!r} {_UNRUNNABLE_METRICS[value]}")
        if value not in SIMILARITY_METRICS:
            raise ValueError(f"unknown metric {value!r}; one of {list(SIMILARITY_METRICS)}")
        return value


class PythonGrader(_Spec):
    type: Literal["python"]
    name: str
    source: str = Field(description="Python defining grade(sample, item) -> float.")
    image_tag: str | None = Field(default=None, description=f"One of {PYTHON_IMAGE_TAGS}.")
    pass_threshold: float | None = None

    @field_validator("source")
    @classmethod
    def _source(cls, value: str) -> str:
        try:
            # Compiled in full, not only parsed: `return` at top level fails only then. What
            # fails here is the caller's; what grade() raises later is a sample's verdict.
            compile(value, "<grader>", "exec", dont_inherit=True)
            tree = ast.parse(value)
        except SyntaxError as exc:
            raise ValueError(f"not valid Python: {exc.msg} (line {exc.lineno})") from None
        except (ValueError, RecursionError, MemoryError) as exc:  # a NUL byte, deep nesting
            raise ValueError(f"not valid Python: {type(exc).__name__}: {exc}") from None
        grades = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "grade"]
        if not grades:
            raise ValueError("must define a top-level function grade(sample, item)")
        if not _takes_two_positional(grades[-1].args):
            raise ValueError("grade must accept two positional arguments: grade(sample, item)")
        return value

    @field_validator("image_tag")
    @classmethod
    def _image(cls, value: str | None) -> str | None:
        if value is not None and value not in PYTHON_IMAGE_TAGS:
            raise ValueError(
                f"image {value!r} is not available; graders run in this server's "
                f"sandbox (the standard library only), tags {PYTHON_IMAGE_TAGS}"
            )
        return value


class Message(_Spec):
    role: Literal["system", "developer", "user", "assistant"]
    content: Template = Field(description="A template; images and other parts are not supported.")
    type: Literal["message"] | None = None


class SamplingParams(_Spec):
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    max_completions_tokens: int | None = Field(default=None, ge=1)
    seed: int | None = None


class ScoreModelGrader(_Spec):
    type: Literal["score_model"]
    name: str
    model: str = Field(description="A judge backend's name, or the model one of them serves.")
    input: list[Message] = Field(min_length=1)
    range: tuple[float, float] = Field(default=(0.0, 1.0), description="[min, max] score.")
    pass_threshold: float | None = None
    sampling_params: SamplingParams | None = None

    @field_validator("range")
    @classmethod
    def _range(cls, value: tuple[float, float]) -> tuple[float, float]:
        if not value[0] < value[1]:
            raise ValueError("range must be [min, max] with min < max")
        return value


class LabelModelGrader(_Spec):
    type: Literal["label_model"]
    name: str
    model: str
    input: list[Message] = Field(min_length=1)
    labels: list[str] = Field(min_length=1)
    passing_labels: list[str] = Field(min_length=1)

    @model_validator(mode="after")
    def _subset(self) -> LabelModelGrader:
        extra = sorted(set(self.passing_labels) - set(self.labels))
        if extra:
            raise ValueError(f"passing_labels {extra} are not in labels")
        return self


class MultiGrader(_Spec):
    type: Literal["multi"]
    name: str
    graders: dict[str, Grader] = Field(min_length=1)
    calculate_output: str = Field(description="A formula over the graders' names.")

    @field_validator("calculate_output")
    @classmethod
    def _formula(cls, value: str, info: ValidationInfo) -> str:
        if "graders" in info.data:  # else the graders' own errors are reported
            try:
                parse_formula(value, frozenset(info.data["graders"]))
            except FormulaError as exc:
                raise ValueError(str(exc)) from None
        return value


Grader = Annotated[
    StringCheckGrader | TextSimilarityGrader | PythonGrader | ScoreModelGrader
    | LabelModelGrader | MultiGrader,
    Field(discriminator="type"),
]  # fmt: skip
MultiGrader.model_rebuild()


def _takes_two_positional(args: ast.arguments) -> bool:
    """Whether a function with these parameters can be called as f(sample, item)."""
    positional = len(args.posonlyargs) + len(args.args)
    required = positional - len(args.defaults)
    required_keywords = any(default is None for default in args.kw_defaults)
    return required <= 2 and (positional >= 2 or args.vararg is not None) and not required_keywords


class _Holder(BaseModel):
    grader: Grader


def grader_errors(data: Any) -> list[str]:
    """Every problem with a grader JSON, as 'path: message' lines (empty when it is valid)."""
    try:
        _Holder.model_validate({"grader": data})
    except ValidationError as exc:
        return [_line(error) for error in exc.errors()]
    return []


def _line(error: Any) -> str:
    message = error["msg"].removeprefix("Value error, ")
    return f"{_path(error['loc'][1:], error['type'])}: {message}"


def _path(loc: tuple[Any, ...], kind: str) -> str:
    """('multi', 'graders', 'a', 'string_check', 'input') -> graders.a.input: pydantic's
    discriminator tags dropped, list indices in brackets."""
    parts: list[str] = []
    kinds = {"string_check", "text_similarity", "python", "score_model", "label_model", "multi"}
    for part in loc:
        if isinstance(part, int):
            parts[-1:] = [f"{parts[-1]}[{part}]"] if parts else [f"[{part}]"]
        elif part not in kinds or (parts and parts[-1] == "graders"):
            parts.append(str(part))
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        parts.append("type")
    return ".".join(parts) or "(grader)"
