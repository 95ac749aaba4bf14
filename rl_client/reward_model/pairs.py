"""Preference pairs from JSONL: one object per line,

    {"prompt": "…", "chosen": "…", "rejected": "…"}

where `prompt` may also be a list of chat messages ({"role", "content"}). A bad line is an
error naming the file, the line and the field, before any training starts.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

from rm_encoding.encoding import Turn, conversation


class PairsError(ValueError):
    """The preference file is malformed; the message names the line and field."""


@dataclass(frozen=True)
class Pair:
    chosen: list[Turn]  # the conversation ending with the preferred completion
    rejected: list[Turn]


def load_pairs(path: str | Path) -> list[Pair]:
    path = Path(path)
    pairs = []
    with path.open() as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError as exc:
                raise PairsError(f"{path}:{number}: not valid JSON ({exc})") from None
            pairs.append(_pair(row, f"{path}:{number}"))
    if not pairs:
        raise PairsError(f"{path}: no preference pairs")
    return pairs


def split(pairs: list[Pair], eval_fraction: float, seed: int) -> tuple[list[Pair], list[Pair]]:
    """(train, eval), shuffled with `seed`; eval gets round(n * eval_fraction) pairs."""
    shuffled = pairs[:]
    random.Random(seed).shuffle(shuffled)
    n_eval = round(len(shuffled) * eval_fraction)
    return shuffled[n_eval:], shuffled[:n_eval]


def _pair(row: object, where: str) -> Pair:
    if not isinstance(row, dict):
        raise PairsError(f"{where}: not a JSON object")
    for key in ("chosen", "rejected"):
        if not isinstance(row.get(key), str):
            raise PairsError(f"{where}: {key!r} must be a string")
    prompt = row.get("prompt", "")
    messages: list[dict[str, str]] = []
    if isinstance(prompt, list):
        for index, message in enumerate(prompt):
            if not (
                isinstance(message, dict)
                and isinstance(message.get("role"), str)
                and isinstance(message.get("content"), str)
            ):
                raise PairsError(f"{where}: prompt[{index}] must be {{role: str, content: str}}")
        messages, prompt = prompt, ""
    elif not isinstance(prompt, str):
        raise PairsError(f"{where}: 'prompt' must be a string or a list of messages")
    return Pair(
        conversation(prompt, messages, row["chosen"]),
        conversation(prompt, messages, row["rejected"]),
    )
