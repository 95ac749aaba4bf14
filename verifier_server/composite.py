"""Composite rewards: weighted sums, min/max and gates over other verifiers or named rewards.

The same model serves named rewards in the server config and the inline form
`RewardSpec(name="composite", params={...})`. The server's dispatcher runs the components;
`combine` below turns their results into one result and is a pure function.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from verifier_server.types import Result, Status


class Component(BaseModel):
    """One part of a composite reward."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(
        default="", description="Key in Result.components; defaults to the verifier name."
    )
    verifier: str = Field(description="A verifier name or a named reward from the config.")
    params: dict[str, Any] = Field(default_factory=dict, description="The verifier's parameters.")
    weight: float = Field(default=1.0, description="Weight in `combine: sum`; ignored by gates.")
    gate: bool = Field(
        default=False,
        description="A gate does not add to the reward: if its score is below "
        "`gate_threshold` the whole reward is 0 (as CGPO's judges).",
    )
    gate_threshold: float = Field(default=1.0, description="Minimum score that passes the gate.")
    reference_key: str | None = Field(
        default=None,
        description="Give this component `reference[reference_key]` instead of the whole "
        "reference (so one item can carry a gold answer and a schema).",
    )

    @property
    def key(self) -> str:
        return self.name or self.verifier


class CompositeParams(BaseModel):
    """A reward made of components."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    description: str = Field(default="", description="Shown by ListVerifiers for named rewards.")
    combine: Literal["sum", "min", "max"] = Field(
        default="sum",
        description="How non-gate components combine: weighted sum, or min / max of the scores.",
    )
    components: list[Component] = Field(min_length=1, description="The parts of the reward.")

    @model_validator(mode="after")
    def _unique_keys(self) -> CompositeParams:
        keys = [c.key for c in self.components]
        duplicates = sorted({k for k in keys if keys.count(k) > 1})
        if duplicates:
            raise ValueError(f"component names must be unique; give `name` to {duplicates}")
        if all(c.gate for c in self.components):
            raise ValueError("at least one component must not be a gate")
        return self


def combine(spec: CompositeParams, item_id: str, parts: Sequence[Result]) -> Result:
    """[component results, in spec order] -> one result.

    A gate that scored below its threshold makes the reward 0 (a verdict, so OK) even if
    other parts could not be verified. Otherwise any part that is not OK makes the whole
    reward not OK, with that part's status: a missing part would bias the sum.
    """
    pairs = list(zip(spec.components, parts, strict=True))
    components = {c.key: p.score for c, p in pairs if p.ok}
    details: dict[str, Any] = {
        c.key: {"status": p.status.name, "reason": p.reason, **p.details} for c, p in pairs
    }
    elapsed_ms = sum(p.elapsed_ms for p in parts)

    def verdict(score: float, status: Status, reason: str = "") -> Result:
        return Result(
            id=item_id,
            score=score,
            status=status,
            reason=reason,
            components=components,
            details=details,
            elapsed_ms=elapsed_ms,
        )

    for component, part in pairs:
        if component.gate and part.ok and part.score < component.gate_threshold:
            return verdict(0.0, Status.OK, f"gate_failed:{component.key}")
    for component, part in pairs:
        if not part.ok:
            return verdict(0.0, part.status, f"component_failed:{component.key}:{part.reason}")
    scored = [(c.weight, p.score) for c, p in pairs if not c.gate]
    if spec.combine == "sum":
        return verdict(sum(weight * score for weight, score in scored), Status.OK)
    pick = min if spec.combine == "min" else max
    return verdict(pick(score for _, score in scored), Status.OK)
