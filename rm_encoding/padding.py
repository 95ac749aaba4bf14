"""Padding a batch of token ids for a sequence classifier (torch is imported only here)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def pad_batch(ids: Sequence[Sequence[int]], pad_token_id: int, device: Any) -> tuple[Any, Any]:
    """Right-padded `input_ids` and `attention_mask`, both [B, T] with T the longest length."""
    import torch

    width = max(len(seq) for seq in ids)
    input_ids = torch.full((len(ids), width), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(ids), width), dtype=torch.long)
    for row, seq in enumerate(ids):
        input_ids[row, : len(seq)] = torch.tensor(seq, dtype=torch.long)
        attention_mask[row, : len(seq)] = 1
    return input_ids.to(device), attention_mask.to(device)


def ensure_pad_token(model: Any, tokenizer: Any) -> None:
    """Batches need a pad token: the tokenizer's, else its EOS, recorded in the model config."""
    if tokenizer.pad_token_id is None:
        if tokenizer.eos_token is None:
            raise ValueError("the tokenizer has neither a pad nor an EOS token")
        tokenizer.pad_token = tokenizer.eos_token
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
