"""Rollouts with transformers `generate`, on CPU or GPU, sharing the learner's model object.

The sampler's logprobs are read from the scores `generate` returns, which are the logits after
its processors (temperature, top-p), so they are the probabilities the tokens were actually
drawn with. `top_k` is forced off (transformers' default of 50 would silently truncate the
distribution the learner does not truncate).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import torch
from transformers import GenerationConfig

from rl_client.engines.base import Completion, SamplingParams


class HFEngine:
    def __init__(
        self,
        model: torch.nn.Module,
        tokenizer: Any,
        *,
        batch_size: int = 64,
        copy_model: bool = False,
    ) -> None:
        # copy_model: sample from a private copy refreshed at each sync (async mode generates
        # while the learner changes its own module), not from the learner's module itself.
        self.copy_model = copy_model
        self.model = copy.deepcopy(model).eval() if copy_model else model
        self.tokenizer = tokenizer
        self.batch_size = batch_size  # completions per generate call
        self.eos_token_id: int = tokenizer.eos_token_id
        self.pad_token_id: int = (
            tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.eos_token_id
        )

    def sync_weights(self, model: torch.nn.Module) -> None:
        """Shared module: nothing to copy. Private copy: the learner's weights copied in."""
        if self.copy_model:
            self.model.load_state_dict(model.state_dict())
        else:
            self.model = model

    def sleep(self) -> None:
        """Nothing to free: the module is the learner's (or a CPU-sized copy)."""

    def close(self) -> None:
        """Nothing to stop."""

    @torch.no_grad()
    def generate(
        self, prompts: Sequence[Sequence[int]], params: SamplingParams
    ) -> list[list[Completion]]:
        config = GenerationConfig(
            do_sample=True,
            temperature=params.temperature,
            top_p=params.top_p,
            top_k=0,
            max_new_tokens=params.max_new_tokens,
            num_return_sequences=params.n,
            stop_strings=list(params.stop_strings) or None,
            eos_token_id=self.eos_token_id,
            pad_token_id=self.pad_token_id,
            return_dict_in_generate=True,
            output_scores=True,
        )
        per_call = max(1, self.batch_size // params.n)
        completions: list[list[Completion]] = []
        was_training = self.model.training
        self.model.eval()
        try:
            for start in range(0, len(prompts), per_call):
                completions += self._generate_chunk(prompts[start : start + per_call], config)
        finally:
            self.model.train(was_training)
        return completions

    def _generate_chunk(
        self, prompts: Sequence[Sequence[int]], config: GenerationConfig
    ) -> list[list[Completion]]:
        device = next(self.model.parameters()).device
        width = max(len(p) for p in prompts)
        input_ids = torch.full((len(prompts), width), self.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((len(prompts), width), dtype=torch.long)
        for row, prompt in enumerate(prompts):  # left padding: every prompt ends at `width`
            input_ids[row, width - len(prompt) :] = torch.tensor(prompt, dtype=torch.long)
            attention_mask[row, width - len(prompt) :] = 1
        out = self.model.generate(
            input_ids=input_ids.to(device),
            attention_mask=attention_mask.to(device),
            generation_config=config,
            tokenizer=self.tokenizer if config.stop_strings else None,
        )
        new_tokens = out.sequences[:, width:]  # [N, T]
        scores = torch.stack(out.scores, dim=1).float()  # [N, T, V], processed logits
        token_logprobs = torch.log_softmax(scores, dim=-1).gather(-1, new_tokens.unsqueeze(-1))
        token_logprobs = token_logprobs.squeeze(-1).cpu()
        new_tokens = new_tokens.cpu()
        flat = [
            self._completion(new_tokens[i].tolist(), token_logprobs[i].tolist(), config)
            for i in range(new_tokens.shape[0])
        ]
        n = config.num_return_sequences
        return [flat[i * n : (i + 1) * n] for i in range(len(prompts))]

    def _completion(
        self, tokens: list[int], logprobs: list[float], config: GenerationConfig
    ) -> Completion:
        """Cuts a generated row after its EOS or the token that completed a stop string."""
        end, reason = len(tokens), "length"
        if self.eos_token_id in tokens:
            end, reason = tokens.index(self.eos_token_id) + 1, "stop"
        if config.stop_strings:
            stop_end = self._stop_string_end(tokens[:end], config.stop_strings)
            if stop_end is not None:
                end, reason = stop_end, "stop"
        tokens, logprobs = tokens[:end], logprobs[:end]
        text = self.tokenizer.decode(tokens, skip_special_tokens=True)
        return Completion(tokens, logprobs, text, reason)  # type: ignore[arg-type]

    def _stop_string_end(self, tokens: list[int], stop_strings: list[str]) -> int | None:
        """The number of tokens up to the end of the first stop string, if any."""
        text = self.tokenizer.decode(tokens)
        ends = [text.find(s) + len(s) for s in stop_strings if s in text]
        if not ends:
            return None
        target = min(ends)
        low, high = 1, len(tokens)  # the shortest prefix whose text reaches `target`
        while low < high:
            middle = (low + high) // 2
            if len(self.tokenizer.decode(tokens[:middle])) >= target:
                high = middle
            else:
                low = middle + 1
        return low
