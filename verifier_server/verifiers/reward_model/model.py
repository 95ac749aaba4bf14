"""A transformers sequence-classification reward model (one label): loading it from a local
directory and scoring batches of conversations. torch and transformers (the `rm` extra) are
imported only here, when a model is loaded, so the server core never needs them.

Each call sorts its conversations by length and runs them in forward passes of at most
`max_batch_tokens` padded tokens, so mixed lengths waste little padding and memory stays
bounded. Sequences are right-padded; the model reads its score at the last non-pad token.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from rm_encoding.encoding import Turn, encode_batch
from rm_encoding.padding import ensure_pad_token, pad_batch

Dtype = Literal["auto", "float32", "bfloat16", "float16"]


@dataclass(frozen=True)
class Scored:
    raw: float | None  # None when the conversation had no tokens at all
    truncated_tokens: int
    batch_size: int  # conversations scored in the same call (across requests)


class RewardModel:
    def __init__(
        self, model: Any, tokenizer: Any, device: str, max_length: int, max_batch_tokens: int
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.device = device
        self.max_length = max_length
        self.max_batch_tokens = max_batch_tokens
        self.pad_token_id: int = model.config.pad_token_id

    @classmethod
    def load(
        cls,
        path: str | Path,
        *,
        device: str = "cpu",
        dtype: Dtype = "auto",
        max_length: int = 4096,
        max_batch_tokens: int = 65_536,
    ) -> RewardModel:
        """Loads a saved model and its tokenizer from a local directory (never from a hub)."""
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        path = Path(path)
        if not path.is_dir():
            raise FileNotFoundError(f"reward model path {str(path)!r} is not a directory")
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        model = AutoModelForSequenceClassification.from_pretrained(
            path, dtype=dtype if dtype == "auto" else getattr(torch, dtype), local_files_only=True
        )
        if model.config.num_labels != 1:
            raise ValueError(
                f"{path}: the model has {model.config.num_labels} labels; a reward model has "
                "one (train it with num_labels=1)"
            )
        ensure_pad_token(model, tokenizer)
        model.to(device).eval()
        return cls(model, tokenizer, device, max_length, max_batch_tokens)

    def score(self, conversations: Sequence[list[Turn]]) -> list[Scored]:
        """Raw scores, in input order. Runs on the caller's thread; do not call concurrently."""
        import torch

        encoded = encode_batch(self.tokenizer, conversations, self.max_length)
        raw: list[float | None] = [None] * len(encoded)
        lengths = [len(e.input_ids) for e in encoded]
        order = sorted((i for i in range(len(encoded)) if lengths[i]), key=lengths.__getitem__)
        with torch.inference_mode():
            for chunk in _chunks(order, lengths, self.max_batch_tokens):
                ids = [encoded[i].input_ids for i in chunk]
                for index, value in zip(chunk, self._forward(ids), strict=True):
                    raw[index] = value
        return [
            Scored(r, e.truncated_tokens, len(encoded)) for r, e in zip(raw, encoded, strict=True)
        ]

    def _forward(self, ids: list[list[int]]) -> list[float]:
        input_ids, attention_mask = pad_batch(ids, self.pad_token_id, self.device)
        logits = self.model(input_ids=input_ids, attention_mask=attention_mask).logits  # [B, 1]
        return logits[:, 0].float().cpu().tolist()


def _chunks(order: list[int], lengths: list[int], max_tokens: int) -> list[list[int]]:
    """Splits indices sorted by length so that (items * longest length) <= max_tokens.

    lengths 3, 5, 9 with max_tokens 12: [3, 5] (2 * 5 = 10), then [9]; an item longer than
    max_tokens on its own still gets a chunk of one.
    """
    chunks: list[list[int]] = []
    for index in order:
        if chunks and (len(chunks[-1]) + 1) * lengths[index] <= max_tokens:
            chunks[-1].append(index)
        else:
            chunks.append([index])
    return chunks
