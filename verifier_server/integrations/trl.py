"""TRL: a `GRPOTrainer` reward function backed by the server.

    from verifier_server.integrations import trl_reward
    trainer = GRPOTrainer(..., reward_funcs=trl_reward("math", address="127.0.0.1:50051"))

TRL calls a reward function with `prompts`, `completions`, `completion_ids` and every other
dataset column as a keyword argument (a list, one value per completion), plus `log_metric`.
Each call is one request; `reference` comes from the column named `reference_column`. Items
the server could not verify are returned as None, which TRL turns into NaN and leaves out of
the reward (nan-aware sums); the share of each status is logged through `log_metric` as
`<name>/status_<status>` and, when any item failed, through `logging` too.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from verifier_server.integrations.connection import (
    check_reward,
    describe,
    reward_spec,
    shared_client,
    status_counts,
)
from verifier_server.types import ChatMessage, Item, RewardSpec, Status

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrlReward:
    """A picklable reward function, named `name` for TRL (which reads `__name__`); see
    `trl_reward`."""

    spec: RewardSpec
    address: str | None
    reference_column: str | None
    token: str | None
    timeout_s: float
    name: str

    @property
    def __name__(self) -> str:  # type: ignore[override]
        return self.name

    def __call__(
        self,
        prompts: Sequence[Any],
        completions: Sequence[Any],
        completion_ids: Sequence[Any] | None = None,
        **columns: Any,
    ) -> list[float | None]:
        references = self._references(columns, len(completions))
        items = [
            Item(
                id=str(index),
                completion=_text(completion, f"completions[{index}]"),
                reward=self.spec,
                reference=reference,
                **_prompt(prompt, f"prompts[{index}]"),
            )
            for index, (prompt, completion, reference) in enumerate(
                zip(prompts, completions, references, strict=True)
            )
        ]
        results = shared_client(self.address, self.token).score(items, timeout_s=self.timeout_s)
        check_reward(results)
        counts = status_counts(results)
        log_metric = columns.get("log_metric")
        if callable(log_metric):
            for status, n in counts.items():
                log_metric(f"{self.__name__}/status_{status.lower()}", n / max(1, len(results)))
        if counts["OK"] < len(results):
            log.warning("%s: %d of %d items not verified (%s)", self.__name__,
                        len(results) - counts["OK"], len(results), describe(counts))  # fmt: skip
        return [r.score if r.status == Status.OK else None for r in results]

    def _references(self, columns: Mapping[str, Any], n: int) -> Sequence[Any]:
        if self.reference_column is None:
            return [None] * n
        if self.reference_column not in columns:
            available = sorted(
                k for k in columns if k not in ("trainer_state", "log_extra", "log_metric")
            )
            raise ValueError(
                f"reference_column {self.reference_column!r} is not a dataset column; "
                f"the columns TRL passed are {available}"
            )
        return columns[self.reference_column]


def trl_reward(
    spec: str | RewardSpec | Mapping[str, Any],
    *,
    address: str | None = None,
    reference_column: str | None = "reference",
    token: str | None = None,
    timeout_s: float = 120.0,
    name: str | None = None,
) -> TrlReward:
    """A TRL reward function that scores each call's completions in one request.

    `spec`: a verifier or named reward (`"math"`, `RewardSpec("code", {...})` or
    `{"name": ..., "params": {...}}`); `address`: the gRPC server (default
    $VERIFIER_SERVER_ADDRESS, else 127.0.0.1:50051); `reference_column`: the dataset column
    that holds each prompt's reference (None: no reference); `token`: for servers with
    `server.auth` (default $VERIFIER_SERVER_TOKEN); `timeout_s`: per call, retries included;
    `name`: what TRL logs the reward as (default `verifier_<spec name>`)."""
    resolved = reward_spec(spec, "spec")
    return TrlReward(
        resolved, address, reference_column, token, timeout_s, name or f"verifier_{resolved.name}"
    )


def _text(completion: Any, where: str) -> str:
    """A completion: a string, or (conversational) the text of its assistant messages. With
    tools, TRL appends the tools' answers to the completion as `tool` messages: those are the
    environment's words, not the policy's, and must not earn it a score."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, Sequence) and all(isinstance(m, Mapping) for m in completion):
        return "".join(_content(m) for m in completion if m.get("role") == "assistant")
    raise ValueError(
        f"{where}: expected a string or a list of messages, got {type(completion).__name__}"
    )


def _content(message: Mapping[str, Any]) -> str:
    """A message's text: its content string, or the text parts of a list of content blocks."""
    content = message.get("content") or ""
    if isinstance(content, str):
        return content
    return "".join(
        str(part.get("text") or "") for part in content
        if isinstance(part, Mapping) and part.get("type") == "text"
    )  # fmt: skip


def _prompt(prompt: Any, where: str) -> dict[str, Any]:
    """`prompt=` for a string prompt, `messages=` for a conversational one."""
    if isinstance(prompt, str):
        return {"prompt": prompt}
    if isinstance(prompt, Sequence) and all(isinstance(m, Mapping) for m in prompt):
        for n, message in enumerate(prompt):
            if not isinstance(message.get("role"), str):
                raise ValueError(f"{where}[{n}].role: a message needs a string role")
        return {"messages": tuple(ChatMessage(m["role"], _content(m)) for m in prompt)}
    raise ValueError(
        f"{where}: expected a string or a list of messages, got {type(prompt).__name__}"
    )
