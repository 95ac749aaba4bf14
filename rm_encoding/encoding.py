"""How a (prompt, completion) pair becomes reward-model input. The `reward_model` verifier and
the trainer (`python -m rl_client.reward_model.train`) both call these, so a model is served
exactly as it was trained.

The conversation is the prompt's messages (or the prompt text as one user turn) followed by
the completion as the assistant turn, rendered with the tokenizer's chat template (when it
has none: the turns' texts joined by blank lines, with the tokenizer's own special tokens).
Past `max_length` tokens the *start* is cut, keeping the completion's end, which is what the
reward head reads.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

Turn = dict[str, str]


def conversation(prompt: str, messages: Sequence[Any], completion: str) -> list[Turn]:
    """`messages`: objects with `role` and `content` (ChatMessage) or dicts with those keys."""
    turns = [
        {"role": m["role"], "content": m["content"]}
        if isinstance(m, dict)
        else {"role": m.role, "content": m.content}
        for m in messages
    ]
    if not turns and prompt:
        turns = [{"role": "user", "content": prompt}]
    return [*turns, {"role": "assistant", "content": completion}]


@dataclass(frozen=True)
class Encoded:
    input_ids: list[int]
    truncated_tokens: int  # cut from the start to fit max_length


def render(tokenizer: Any, turns: list[Turn]) -> str:
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(turns, tokenize=False)
    return "\n\n".join(turn["content"] for turn in turns)


def encode_batch(
    tokenizer: Any, conversations: Sequence[list[Turn]], max_length: int
) -> list[Encoded]:
    """Token ids of each conversation, cut from the left to `max_length`."""
    texts = [render(tokenizer, turns) for turns in conversations]
    # A chat template writes its own special tokens (BOS and the like): add none again.
    templated = bool(getattr(tokenizer, "chat_template", None))
    ids_batch = tokenizer(texts, add_special_tokens=not templated)["input_ids"]
    return [Encoded(list(ids[-max_length:]), max(0, len(ids) - max_length)) for ids in ids_batch]
