"""The json_schema verifier's params."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from verifier_server.verifiers.base import TimedParams
from verifier_server.verifiers.text import EXTRACT_DESCRIPTION, ExtractMethod


class JsonSchemaParams(TimedParams):
    timeout_s: float = Field(
        default=5.0, gt=0, le=300, description="Per-item time limit; past it the item is TIMEOUT."
    )
    extract: ExtractMethod = Field(default="auto", description=EXTRACT_DESCRIPTION)
    scoring: Literal["binary", "fraction"] = Field(
        default="binary",
        description=(
            "binary: 1.0 if valid else 0.0. fraction: (top-level required properties present "
            "and valid + 1 if the whole instance is valid) / (number required + 1)."
        ),
    )
    check_formats: bool = Field(
        default=False, description="Assert the 'format' keyword instead of ignoring it."
    )
    max_json_chars: int = Field(
        default=1_000_000, gt=0, description="Longer extracted JSON text scores 0 ('too_large')."
    )
    max_depth: int = Field(
        default=64,
        ge=1,
        le=100,
        description="Deeper array/object nesting scores 0 ('too_deep') without parsing.",
    )
    max_items: int = Field(
        default=10_000, ge=1, description="A longer array anywhere scores 0 ('too_large')."
    )
    max_validation_steps: int = Field(
        default=1_000_000,
        ge=1,
        description="Keyword evaluations allowed per item; past it the completion scores 0 "
        "('too_complex'), deterministically, before the time limit can make it TIMEOUT.",
    )
