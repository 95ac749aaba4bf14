"""Prompt datasets (JSONL or Parquet), chat templates, and the resumable cursor over them.

A row: {"id"?, <prompt_key>: str | [{"role", "content"}, ...], "reward"?: {"name", "params"?},
<reference_key>?: any JSON}. A row without "reward" uses the dataset's default (`data.reward`).
Every problem is reported with the row it is in, before training starts.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from verifier_server.types import JSON, ChatMessage, RewardSpec


class DataError(Exception):
    """A dataset could not be read, or a row is malformed (the message names the row)."""


@dataclass(frozen=True)
class PromptRow:
    id: str
    messages: tuple[ChatMessage, ...]
    reward: RewardSpec
    reference: JSON


def read_rows(path: str | Path) -> list[dict[str, Any]]:
    """The rows of a .jsonl or .parquet file as dicts."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file")
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        return pq.read_table(path).to_pylist()
    if path.suffix not in (".jsonl", ".json"):
        raise DataError(f"{path}: expected a .jsonl or .parquet file")
    rows = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}:{number}: not valid JSON: {exc.msg}") from None
        if not isinstance(row, dict):
            raise DataError(f"{path}:{number}: a row must be a JSON object")
        rows.append(row)
    return rows


def to_messages(value: Any, system_prompt: str | None, where: str) -> tuple[ChatMessage, ...]:
    """A prompt string or a list of {"role", "content"} dicts -> chat messages."""
    if isinstance(value, str):
        messages = [ChatMessage("user", value)]
    elif isinstance(value, list) and value:
        messages = []
        for index, message in enumerate(value):
            if not (
                isinstance(message, dict)
                and isinstance(message.get("role"), str)
                and isinstance(message.get("content"), str)
            ):
                raise DataError(f"{where}[{index}]: expected {{'role': str, 'content': str}}")
            messages.append(ChatMessage(message["role"], message["content"]))
    else:
        raise DataError(f"{where}: expected a string or a non-empty list of messages")
    if system_prompt is not None:
        messages.insert(0, ChatMessage("system", system_prompt))
    return tuple(messages)


def _reward_spec(value: Any, where: str) -> RewardSpec:
    if not isinstance(value, dict) or not isinstance(value.get("name"), str):
        raise DataError(f"{where}: expected {{'name': str, 'params': {{...}}}}")
    unknown = set(value) - {"name", "params"}
    if unknown:
        raise DataError(f"{where}: unknown keys {sorted(unknown)}")
    params = value.get("params") or {}
    if not isinstance(params, dict):
        raise DataError(f"{where}.params: expected a mapping")
    return RewardSpec(value["name"], params)


def load_prompts(
    path: str | Path,
    *,
    prompt_key: str = "prompt",
    reference_key: str = "reference",
    default_reward: dict[str, Any] | None = None,
    system_prompt: str | None = None,
) -> list[PromptRow]:
    """Reads and checks every row. Ids default to the row number; duplicates are an error."""
    default = _reward_spec(default_reward, "data.reward") if default_reward is not None else None
    rows: list[PromptRow] = []
    seen: set[str] = set()
    for index, row in enumerate(read_rows(path)):
        row_id = str(row.get("id", index))
        where = f"{path}: row {index} (id {row_id!r})"
        if row_id in seen:
            raise DataError(f"{where}: duplicate id")
        seen.add(row_id)
        if prompt_key not in row:
            raise DataError(f"{where}: missing {prompt_key!r}")
        if row.get("reward") is not None:
            reward = _reward_spec(row["reward"], f"{where}: reward")
        elif default is not None:
            reward = default
        else:
            raise DataError(f"{where}: no 'reward' in the row and no data.reward default")
        messages = to_messages(row[prompt_key], system_prompt, f"{where}: {prompt_key}")
        rows.append(PromptRow(row_id, messages, reward, row.get(reference_key)))
    if not rows:
        raise DataError(f"{path}: no rows")
    return rows


def render_prompt(tokenizer: Any, messages: Sequence[ChatMessage]) -> str:
    """The chat template applied, ending where the assistant's answer starts."""
    return tokenizer.apply_chat_template(
        [{"role": m.role, "content": m.content} for m in messages],
        tokenize=False,
        add_generation_prompt=True,
    )


class PromptCursor:
    """Walks the dataset in a seeded order, epoch after epoch, and can be saved and restored:
    a resumed run draws exactly the prompts the uninterrupted run would have drawn."""

    def __init__(self, size: int, *, seed: int, shuffle: bool) -> None:
        self.size = size
        self.seed = seed
        self.shuffle = shuffle
        self.epoch = 0
        self.position = 0
        self._order = self._epoch_order(0)

    def _epoch_order(self, epoch: int) -> list[int]:
        order = list(range(self.size))
        if self.shuffle:
            random.Random(self.seed * 1_000_003 + epoch).shuffle(order)
        return order

    def take(self, count: int) -> list[int]:
        """The next `count` row indices, crossing into the next epoch when one runs out."""
        taken = []
        for _ in range(count):
            if self.position == self.size:
                self.epoch += 1
                self.position = 0
                self._order = self._epoch_order(self.epoch)
            taken.append(self._order[self.position])
            self.position += 1
        return taken

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "position": self.position, "size": self.size}

    def load_state_dict(self, state: dict[str, int]) -> None:
        if state["size"] != self.size:
            raise DataError(
                f"the checkpoint's dataset had {state['size']} rows, this one has {self.size}"
            )
        self.epoch, self.position = state["epoch"], state["position"]
        self._order = self._epoch_order(self.epoch)
