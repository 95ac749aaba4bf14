"""`reward_model`: a transformers sequence-classification reward model (e.g. one trained with
`python -m rl_client.reward_model.train`) loaded from a local path in the server config.

Items from all concurrent requests for one model are batched together (up to
`max_batch_size`, waiting at most `max_wait_ms` for a batch to fill) and scored on a thread of
their own, so the event loop stays free. The score is the raw reward, or its sigmoid, or its
standardisation by the running mean and std of every raw score the model has produced in this
server process; `details.raw_score` holds the raw value. A NaN or infinite model output, or an
input with no tokens, is scored as the worst the model has given (reasons "non_finite_score",
"no_tokens"), never masked: a completion must not be able to earn a non-OK status.

Needs the `rm` extra (torch, transformers) only when a model is configured.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import Field, field_validator

from rm_encoding.encoding import Turn, conversation
from verifier_server.types import Item, Result, Status
from verifier_server.verifiers.base import (
    InvalidItem,
    Params,
    Verifier,
    VerifierContext,
    current_deadline,
)
from verifier_server.verifiers.reward_model.batcher import MicroBatcher
from verifier_server.verifiers.reward_model.model import Dtype, RewardModel, Scored
from verifier_server.verifiers.reward_model.normalize import Normalize, RunningStats, sigmoid


class ModelSettings(Params):
    """One reward model, from `verifier_settings.reward_model.models.<name>`."""

    path: str = Field(description="Local directory of the saved model and its tokenizer.")
    device: str = Field(
        default="cpu",
        pattern=r"^(cpu|auto|cuda(:\d+)?)$",
        description="cpu, cuda, cuda:N, or auto (cuda when available).",
    )
    dtype: Dtype = Field(default="auto", description="auto (as saved), float32, bfloat16, float16.")
    max_length: int = Field(
        default=4096, ge=1, description="Tokens per conversation; longer ones lose their start."
    )
    max_batch_size: int = Field(
        default=32, ge=1, description="Items gathered, across requests, into one batch."
    )
    max_wait_ms: float = Field(
        default=5.0, ge=0, description="How long a batch waits to fill after its first item."
    )
    max_batch_tokens: int = Field(
        default=65_536, ge=1, description="Padded tokens in one forward pass (bounds memory)."
    )

    @field_validator("path")
    @classmethod
    def _is_directory(cls, value: str) -> str:
        # Checked here so that `verifier-server check` on the serving host reports it.
        if not Path(value).is_dir():
            raise ValueError(f"{value!r} is not a directory (a saved model and its tokenizer)")
        return value


class RewardModelSettings(Params):
    """`verifier_settings.reward_model` in the server config."""

    models: dict[str, ModelSettings] = Field(
        default_factory=dict, description="Reward models, by name."
    )
    torch_threads: int | None = Field(
        default=None, ge=1, description="torch CPU threads in the server process (None: torch's)."
    )


class RewardModelParams(Params):
    model: str | None = Field(
        default=None,
        description="A model named in the server config; may be omitted when it has one.",
    )
    normalize: Normalize = Field(
        default="none",
        description="none: the raw score; sigmoid: 1/(1+e^-raw); running: (raw - mean) / std "
        "over every raw score this model has produced since the server started.",
    )
    timeout_s: float = Field(
        default=60.0, gt=0, le=600, description="Per-item limit, waiting for a batch included."
    )


@dataclass
class _Served:
    model: RewardModel
    batcher: MicroBatcher[list[Turn], Scored]
    stats: RunningStats = field(default_factory=RunningStats)


class RewardModelVerifier(Verifier):
    name = "reward_model"
    description = (
        "A transformers sequence-classification reward model from the server config, "
        "batched across requests; raw score, sigmoid, or running standardisation."
    )
    Params = RewardModelParams
    Settings = RewardModelSettings
    execution = "async"

    def __init__(self) -> None:
        self._served: dict[str, _Served] = {}

    async def setup(self, context: VerifierContext) -> None:
        settings: RewardModelSettings = context.settings
        if settings.models and settings.torch_threads is not None:
            import torch

            torch.set_num_threads(settings.torch_threads)
        for name, s in settings.models.items():
            model = await asyncio.to_thread(
                RewardModel.load,
                s.path,
                device=s.device,
                dtype=s.dtype,
                max_length=s.max_length,
                max_batch_tokens=s.max_batch_tokens,
            )
            batcher = MicroBatcher(
                model.score, s.max_batch_size, s.max_wait_ms / 1000, name=f"reward-model-{name}"
            )
            self._served[name] = _Served(model, batcher)
            context.set_serving(True, name)

    async def close(self) -> None:
        for served in self._served.values():
            await served.batcher.close()
        self._served.clear()

    def batch_sizes(self, model: str) -> list[int]:
        """Sizes of the batches run so far for `model` (diagnostics, tests, benchmarks)."""
        return self._served[model].batcher.batch_sizes

    async def ascore(self, items: Sequence[Item], params: RewardModelParams) -> list[Result]:
        try:
            served = self._model(params)
        except InvalidItem as exc:
            return [exc.to_result(item.id) for item in items]
        start = time.monotonic()
        deadline = current_deadline()
        end = min(start + params.timeout_s, deadline if deadline is not None else math.inf)
        futures = [
            served.batcher.submit(conversation(item.prompt, item.messages, item.completion))
            for item in items
        ]
        _, pending = await asyncio.wait(futures, timeout=max(0.0, end - time.monotonic()))
        for future in pending:
            future.cancel()  # dropped from its batch if that has not started
        elapsed_ms = (time.monotonic() - start) * 1000
        results = [
            _result(item, future, served.stats, params.normalize)
            for item, future in zip(items, futures, strict=True)
        ]
        for result in results:
            result.elapsed_ms = elapsed_ms
        return results

    def _model(self, params: RewardModelParams) -> _Served:
        if params.model is None and len(self._served) == 1:
            return next(iter(self._served.values()))
        if params.model not in self._served:
            raise InvalidItem(
                "reward.params.model",
                f"unknown reward model {params.model!r}; this server has "
                f"{sorted(self._served) or 'none'} (verifier_settings.reward_model.models)",
            )
        return self._served[params.model]


def _result(
    item: Item, future: asyncio.Future[Scored], stats: RunningStats, normalize: Normalize
) -> Result:
    if future.cancelled():
        return Result.failed(
            item.id, Status.TIMEOUT, "timeout", "the reward model did not score it in time"
        )
    if future.exception() is not None:
        exc = future.exception()
        return Result.failed(
            item.id, Status.VERIFIER_ERROR, "model_error", f"{type(exc).__name__}: {exc}"
        )
    scored = future.result()
    details: dict[str, Any] = {"batch_size": scored.batch_size}
    if scored.raw is None:  # nothing to read: an empty completion without a prompt
        return _worst(item.id, "no_tokens", stats, normalize, details)
    if not math.isfinite(scored.raw):
        details["model_output"] = str(scored.raw)
        return _worst(item.id, "non_finite_score", stats, normalize, details)
    stats.add(scored.raw)
    details["raw_score"] = scored.raw
    if scored.truncated_tokens:
        details["truncated_tokens"] = scored.truncated_tokens
    if normalize == "sigmoid":
        score = sigmoid(scored.raw)
    elif normalize == "running":
        score = stats.standardise(scored.raw)
        details.update(running_mean=stats.mean, running_std=stats.std, running_count=stats.count)
    else:
        score = scored.raw
    return Result(id=item.id, score=score, details=details)


def _worst(
    item_id: str, reason: str, stats: RunningStats, normalize: Normalize, details: dict[str, Any]
) -> Result:
    """An item the model gave no usable score for (a NaN or infinite output, e.g. a float16
    overflow; no tokens at all), which its completion may have provoked: scored as the worst
    this model has given (a mask would be no penalty, +inf the best reward), i.e. its lowest
    raw score so far (0.0 before any), normalised as asked."""
    floor = stats.minimum if stats.count else 0.0
    if normalize == "sigmoid":
        score = 0.0
    elif normalize == "running":
        score = stats.standardise(floor)
    else:
        score = floor
    return Result(id=item_id, score=score, reason=reason, details=details)
