"""The "length" verifier: a reward from the completion's token count `item.completion_tokens`.

mode "overlong" (default): DAPO's soft overlong punishment (arXiv:2503.14476, eq. 13), with
L_max = `max_tokens` and L_cache = `cache_tokens`:

    0                                   if L <= L_max - L_cache
    ((L_max - L_cache) - L) / L_cache   if L_max - L_cache < L <= L_max   (0 down to -1)
    -1                                  if L > L_max

It is meant to be added to a correctness reward (e.g. in a composite). DAPO's reference
setting is max 20480 = 16384 + cache 4096. cache_tokens=0 gives a hard step at max_tokens.

mode "target": 1.0 inside [`min_tokens`, `max_tokens`]; outside, falling linearly by
1/`tolerance_tokens` per token of distance to the range, reaching 0.0 at `tolerance_tokens`
tokens away (tolerance_tokens=0: 0.0 anywhere outside).

`truncated_penalty`, when set, is the score of every item whose `truncated` flag is set (the
generation hit its limit), whatever its length; when unset, truncation is judged by length alone.

The token count must come from the caller: a completion with `completion_tokens` 0 is an invalid
item, since a silent length of 0 would earn the best length reward.
"""

from __future__ import annotations

from typing import Literal, Self

from pydantic import Field, model_validator

from verifier_server.types import Item, Result, Status
from verifier_server.verifiers.base import InvalidItem, Params, Verifier


def overlong_penalty(length: int, max_tokens: int, cache_tokens: int) -> float:
    """DAPO soft overlong punishment (eq. 13): 0 up to max-cache, linear to -1 at max, -1 beyond."""
    if not 0 <= cache_tokens < max_tokens:
        raise ValueError(f"need 0 <= cache_tokens ({cache_tokens}) < max_tokens ({max_tokens})")
    threshold = max_tokens - cache_tokens
    if length <= threshold:
        return 0.0
    if length <= max_tokens:
        return (threshold - length) / cache_tokens  # cache_tokens > 0 here: threshold < max
    return -1.0


def target_length_reward(
    length: int, min_tokens: int, max_tokens: int, tolerance_tokens: int
) -> float:
    """1.0 in [min_tokens, max_tokens], linear down to 0.0 at tolerance_tokens outside it."""
    if min_tokens <= length <= max_tokens:
        return 1.0
    if tolerance_tokens == 0:
        return 0.0
    distance = min_tokens - length if length < min_tokens else length - max_tokens
    return max(0.0, 1.0 - distance / tolerance_tokens)


_OVERLONG_ONLY = ("cache_tokens",)
_TARGET_ONLY = ("min_tokens", "tolerance_tokens")


class LengthParams(Params):
    mode: Literal["overlong", "target"] = Field(
        default="overlong",
        description="'overlong': DAPO soft overlong penalty in [-1, 0]; 'target': 1.0 in a range.",
    )
    max_tokens: int = Field(
        gt=0,
        description="overlong: L_max, where the penalty reaches -1; target: the range's upper end.",
    )
    cache_tokens: int = Field(
        default=0,
        ge=0,
        description="overlong only: L_cache, the buffer below max_tokens where the penalty ramps.",
    )
    min_tokens: int = Field(default=0, ge=0, description="target only: the range's lower end.")
    tolerance_tokens: int = Field(
        default=0,
        ge=0,
        description="target only: tokens outside the range over which the score falls to 0.",
    )
    truncated_penalty: float | None = Field(
        default=None,
        ge=-1.0,
        le=0.0,
        description="If set, the score of items flagged truncated, whatever their length.",
    )

    @model_validator(mode="after")
    def _fields_fit_mode(self) -> Self:
        unused = _TARGET_ONLY if self.mode == "overlong" else _OVERLONG_ONLY
        for name in unused:
            if name in self.model_fields_set:
                raise ValueError(f"{name} does not apply to mode {self.mode!r}")
        if self.mode == "overlong" and self.cache_tokens >= self.max_tokens:
            raise ValueError(
                f"cache_tokens ({self.cache_tokens}) must be less than max_tokens "
                f"({self.max_tokens})"
            )
        if self.mode == "target" and self.min_tokens > self.max_tokens:
            raise ValueError(
                f"min_tokens ({self.min_tokens}) must not exceed max_tokens ({self.max_tokens})"
            )
        return self


def _length_reason(length: int, params: LengthParams) -> str:
    if params.mode == "overlong":
        if length > params.max_tokens:
            return "over_max_tokens"
        return "overlong_buffer" if length > params.max_tokens - params.cache_tokens else ""
    if length < params.min_tokens:
        return "below_min_tokens"
    return "above_max_tokens" if length > params.max_tokens else ""


class LengthVerifier(Verifier):
    name = "length"
    description = "DAPO soft overlong penalty, or a target-length reward, from completion_tokens."
    Params = LengthParams
    execution = "bulk"

    def score_one(self, item: Item, params: LengthParams) -> Result:
        length = item.completion_tokens
        if length < 0:
            raise InvalidItem("completion_tokens", f"must be >= 0, got {length}")
        if length == 0 and item.completion:
            raise InvalidItem("completion_tokens", "required by the length verifier")
        details = {"completion_tokens": length}

        if item.truncated and params.truncated_penalty is not None:
            return Result(
                id=item.id,
                score=params.truncated_penalty,
                status=Status.OK,
                reason="truncated",
                details=details,
            )
        if params.mode == "overlong":
            score = overlong_penalty(length, params.max_tokens, params.cache_tokens)
        else:
            score = target_length_reward(
                length, params.min_tokens, params.max_tokens, params.tolerance_tokens
            )
        reason = _length_reason(length, params)
        return Result(id=item.id, score=score, status=Status.OK, reason=reason, details=details)
