"""Prompt datasets, chat templates, and the resumable cursor over them.

A row: {"id"?, "prompt": str | [{"role", "content"}, ...], "reward"?: {"name", "params"?},
"reference"?: any JSON}, each field read from the dataset column `columns` maps it to (by
default its own name). A row without "reward" uses the dataset's default (`data.reward`).
Every problem is reported with the row it is in, before training starts (with `data.lazy`,
when the row is drawn); rows without a usable reference are counted and reported once
(their items would be masked every step).
How the rows are stored (JSONL, Parquet, CSV, `datasets`) is `data_sources`' job.
"""

from __future__ import annotations

import random
import sys
from array import array
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rl_client.data_sources import DataError, Format, LazySequence, open_rows, read_rows
from verifier_server.types import JSON, ChatMessage, RewardSpec


@dataclass(frozen=True)
class PromptRow:
    id: str
    messages: tuple[ChatMessage, ...]
    reward: RewardSpec
    reference: JSON


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


ROW_FIELDS = ("id", "prompt", "reference", "reward")
MISSING_SHOWN = 5  # row numbers listed in the missing-reference warning


def load_prompts(
    path: str | Path,
    *,
    format: Format = "auto",
    split: str = "train",
    columns: dict[str, str] | None = None,
    default_reward: dict[str, Any] | None = None,
    system_prompt: str | None = None,
    lazy: bool = False,
) -> Sequence[PromptRow]:
    """Reads and checks every row. `columns` maps a row field (id, prompt, reference, reward)
    to the dataset column holding it. Ids default to the row number; duplicates are an error.

    `lazy` (`data.lazy`): rows stay on disk and each is read and checked when drawn
    (`LazyPrompts`); only the first row's columns are checked now, and ids are not checked
    for duplicates (`rl-client data check` reads and checks every row beforehand)."""
    column = {name: name for name in ROW_FIELDS} | (columns or {})
    default = _reward_spec(default_reward, "data.reward") if default_reward is not None else None
    table = (
        open_rows(path, format=format, split=split)
        if lazy
        else read_rows(path, format=format, split=split)
    )
    if not table:
        raise DataError(f"{path}: no rows")
    sample = [table[0]] if lazy else table
    _check_columns(path, sample, column, (columns or {}).get("reference"))
    convert = RowConverter(str(path), column, default, system_prompt)
    if lazy:
        return LazyPrompts(table, convert)
    rows: list[PromptRow] = []
    seen: set[str] = set()
    for index, raw in enumerate(table):
        row = convert(index, raw)
        if row.id in seen:
            raise DataError(f"{path}: row {index} (id {row.id!r}): duplicate id")
        seen.add(row.id)
        rows.append(row)
    warning = missing_references(rows, column["reference"])
    if warning is not None:
        print(f"warning: {path}: {warning}", file=sys.stderr)
    return rows


def _check_columns(
    path: str | Path, table: Sequence[dict[str, Any]], column: dict[str, str], named: str | None
) -> None:
    """The prompt column (and an explicitly mapped reference column) exist in some row."""
    if not any(column["prompt"] in row for row in table):
        raise DataError(
            f"{path}: no column {column['prompt']!r} for the prompt; its columns: "
            f"{', '.join(table[0])} (map one with data.columns.prompt)"
        )
    if named is not None and not any(named in row for row in table):
        raise DataError(
            f"{path}: no column {named!r} for the reference (data.columns."
            f"reference); its columns: {', '.join(table[0])}"
        )


@dataclass(frozen=True)
class RowConverter:
    """One dataset row (a dict of columns) -> a checked PromptRow; errors name the row."""

    path: str
    column: dict[str, str]
    default: RewardSpec | None
    system_prompt: str | None

    def __call__(self, index: int, row: dict[str, Any]) -> PromptRow:
        column = self.column
        row_id = str(row[column["id"]]) if row.get(column["id"]) is not None else str(index)
        where = f"{self.path}: row {index} (id {row_id!r})"
        if column["prompt"] not in row:
            raise DataError(f"{where}: missing {column['prompt']!r}")
        if row.get(column["reward"]) is not None:
            reward = _reward_spec(row[column["reward"]], f"{where}: {column['reward']}")
        elif self.default is not None:
            reward = self.default
        else:
            raise DataError(f"{where}: no 'reward' in the row and no data.reward default")
        prompt = row[column["prompt"]]
        messages = to_messages(prompt, self.system_prompt, f"{where}: {column['prompt']}")
        return PromptRow(row_id, messages, reward, row.get(column["reference"]))


class LazyPrompts(LazySequence[PromptRow]):
    """The dataset's rows read and checked one at a time, when the cursor draws them."""

    def __init__(self, table: Sequence[dict[str, Any]], convert: RowConverter) -> None:
        self._table = table
        self._convert = convert

    def __len__(self) -> int:
        return len(self._table)

    def _read(self, index: int) -> PromptRow:
        return self._convert(index, self._table[index])


def missing_references(rows: Sequence[PromptRow], reference_column: str) -> str | None:
    """Rows whose reference is absent or empty (None, '', [], {}), counted with the first row
    numbers, or None when every row has one. Whether a present reference parses is the
    verifier's call (the server marks such items invalid: masked, never scored); a missing
    one is caught here, once, instead of as masked items every step. Silent when no row has a
    reference: rewards such as `length`, `format` or a reward model need none."""
    missing = [index for index, row in enumerate(rows) if row.reference in (None, "", [], {})]
    if not missing or len(missing) == len(rows):
        return None
    shown = ", ".join(str(index) for index in missing[:MISSING_SHOWN])
    more = f" and {len(missing) - MISSING_SHOWN} more" if len(missing) > MISSING_SHOWN else ""
    return (
        f"{len(missing)} of {len(rows)} rows have no {reference_column!r} (rows {shown}{more}): "
        "their items will be masked (the reward server cannot check them); fix or drop those "
        "rows, or map the right column with data.columns.reference"
    )


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

    def _epoch_order(self, epoch: int) -> array[int]:
        # An int64 array, not a list: 8 bytes a row for a large dataset, and the seeded
        # shuffle gives the very order a list would (the same swaps), so checkpoints carry over.
        order = array("q", range(self.size))
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
