"""The rollout engine interface. An engine turns prompt token ids into G sampled completions
each, with the sampler's own logprob of every sampled token, and takes new weights after each
update. `hf.py` (transformers `generate`) is the one here; a vLLM engine implements the same
two methods."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

import torch


@dataclass(frozen=True)
class SamplingParams:
    n: int  # G: completions per prompt
    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 256
    stop_strings: tuple[str, ...] = ()


@dataclass(frozen=True)
class Completion:
    token_ids: list[int]  # the sampled tokens, up to and including EOS or a stop string
    logprobs: list[float]  # the sampler's logprob of each token (after temperature, top-p)
    text: str  # decoded, without special tokens
    finish_reason: Literal["stop", "length"] = "stop"  # "length": hit max_new_tokens

    @property
    def truncated(self) -> bool:
        return self.finish_reason == "length"


class RolloutEngine(Protocol):
    def generate(
        self, prompts: Sequence[Sequence[int]], params: SamplingParams
    ) -> list[list[Completion]]:
        """[B prompts] -> [B][G] completions, in prompt order."""
        ...

    def sync_weights(self, model: torch.nn.Module) -> None:
        """Makes the engine sample from `model`'s current weights."""
        ...
