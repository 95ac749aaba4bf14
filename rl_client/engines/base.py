"""The rollout engine interface. An engine turns prompt token ids into G sampled completions
each, with the sampler's own logprob of every sampled token, and takes new weights after each
update. Engines: `hf.py` (transformers `generate`), `vllm_local.py` (in-process `vllm.LLM`),
`vllm_remote.py` (a `vllm serve` over HTTP). An engine that can also yield each completion as
it finishes has a `stream(prompts, params)` method yielding (prompt index, sample index,
completion); the rollout then requests each reward at once."""

from __future__ import annotations

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


def gather_stream(
    stream: Iterator[tuple[int, int, Completion]], num_prompts: int, n: int
) -> list[list[Completion]]:
    """A streaming engine's `generate`: its (prompt, sample, completion) in [B][G] order."""
    out: list[list[Completion | None]] = [[None] * n for _ in range(num_prompts)]
    for prompt_index, sample_index, completion in stream:
        out[prompt_index][sample_index] = completion
    return [[c for c in group if c is not None] for group in out]
