"""The rollout engine interface. An engine turns prompt token ids into G sampled completions
each, with the sampler's own logprob of every sampled token, and takes new weights after each
update. Engines: `hf.py` (transformers `generate`), `vllm_local.py` (in-process `vllm.LLM`),
`vllm_remote.py` (a `vllm serve` over HTTP). An engine that can also yield each completion as
it finishes is a `StreamingEngine`: its `stream(prompts, params)` yields (prompt index, sample
index, completion), and the rollout then requests each reward at once."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
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
    # Multi-turn episodes: 1 on the tokens the policy sampled, 0 on tool outputs (not in the
    # loss). None: every token is the policy's.
    loss_mask: tuple[int, ...] | None = None

    @property
    def truncated(self) -> bool:
        return self.finish_reason == "length"


class RolloutEngine(Protocol):
    def generate(
        self, prompts: Sequence[Sequence[int]], params: SamplingParams
    ) -> list[list[Completion]]:
        """[B prompts] -> [B][G] completions, in prompt order."""
        ...

    @property
    def pad_token_id(self) -> int: ...

    def sync_weights(self, model: torch.nn.Module) -> None:
        """Makes the engine sample from `model`'s current weights."""
        ...

    def sleep(self) -> None:
        """The trainer is about to update: free what the engine can (GPU memory)."""
        ...

    def close(self) -> None: ...


class StreamingEngine(ABC):
    """An engine that yields each completion as it finishes; `generate` gathers the stream."""

    @abstractmethod
    def stream(
        self, prompts: Sequence[Sequence[int]], params: SamplingParams
    ) -> Iterator[tuple[int, int, Completion]]:
        """(prompt index, sample index, completion), in the order they finish."""

    def generate(
        self, prompts: Sequence[Sequence[int]], params: SamplingParams
    ) -> list[list[Completion]]:
        """[B prompts] -> [B][G] completions, in prompt order."""
        out: list[list[Completion | None]] = [[None] * params.n for _ in prompts]
        for prompt_index, sample_index, completion in self.stream(prompts, params):
            out[prompt_index][sample_index] = completion
        return [[c for c in group if c is not None] for group in out]
