"""The engine as the trainer shares it: one call at a time (async mode generates on a
background thread while the trainer pushes weights), and which policy version it samples
from (the number of optimiser steps behind its weights), stamped on every sample."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence

import torch

from rl_client.engines.base import Completion, RolloutEngine, SamplingParams, StreamingEngine


class VersionedEngine:
    def __init__(self, engine: RolloutEngine, version: int) -> None:
        self.engine = engine
        self.version = version  # optimiser steps behind the weights the engine holds
        self._lock = threading.Lock()

    @property
    def pad_token_id(self) -> int:
        return self.engine.pad_token_id

    @property
    def streams(self) -> bool:
        """Whether the engine yields each completion as it finishes (`stream`)."""
        return isinstance(self.engine, StreamingEngine)

    def generate(
        self, prompts: Sequence[Sequence[int]], params: SamplingParams
    ) -> tuple[list[list[Completion]], int]:
        """([B][G] completions, the policy version that sampled them)."""
        with self._lock:
            return self.engine.generate(prompts, params), self.version

    def stream(
        self, prompts: Sequence[Sequence[int]], params: SamplingParams
    ) -> Iterator[tuple[int, int, Completion, int]]:
        """(prompt index, sample index, completion, version) as each completion finishes; the
        engine is held until the last one."""
        assert isinstance(self.engine, StreamingEngine)
        with self._lock:
            for prompt_index, sample_index, completion in self.engine.stream(prompts, params):
                yield prompt_index, sample_index, completion, self.version

    def sync_weights(self, model: torch.nn.Module, version: int) -> None:
        """Waits for the call in progress, then loads `model`'s weights as `version`."""
        with self._lock:
            self.engine.sync_weights(model)
            self.version = version

    def sleep(self) -> None:
        with self._lock:
            self.engine.sleep()

    def close(self) -> None:
        self.engine.close()
