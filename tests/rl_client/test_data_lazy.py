"""`data.lazy`: rows read from disk when drawn, for datasets larger than memory. The rows are
the eager reader's, row for row, in every format; errors name the row when it is drawn; the
seeded order is the list-based one; a lazy training run draws the very prompts an eager one
does."""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path

import datasets
import pytest
from rl_helpers import VOLATILE_METRICS, train_settings

from rl_client.config import TrainConfig, build_config
from rl_client.data import DataError, LazyPrompts, PromptCursor, load_prompts
from rl_client.data_sources import JsonlRows
from rl_client.trainer import train

MATH = {"name": "math"}
# Mixed reference types in one column: exact JSON values, which an Arrow column could not hold.
JSONL_ROWS = [
    {"id": "a", "prompt": "What is 1+1?", "reference": 2},
    {"id": "b", "prompt": [{"role": "user", "content": "Name it."}], "reference": "x"},
    {"id": "c", "prompt": "Pairs?", "reference": {"pair": [1, 2]}, "reward": {"name": "json"}},
    {"id": "d", "prompt": "None?"},
]
TABLE = [
    {"qid": "q1", "question": "What is 1+1?", "answer": "2"},
    {"qid": "q2", "question": "What is 2+3?", "answer": ""},  # empty cell: missing (None)
    {"qid": "q3", "question": "What is 3*3?", "answer": "9"},
]
MAPPED = {"prompt": "question", "reference": "answer", "id": "qid"}


def _jsonl(path: Path, rows: list[dict]) -> Path:
    # a blank line in the middle, skipped by both readers
    lines = [json.dumps(r) for r in rows]
    path.write_text("\n".join([*lines[:2], "", *lines[2:]]) + "\n")
    return path


def _csv(path: Path) -> Path:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(TABLE[0]))
        writer.writeheader()
        writer.writerows(TABLE)
    return path


def _parquet(path: Path) -> Path:
    datasets.Dataset.from_list(TABLE).to_parquet(str(path))
    return path


def _hf_disk(path: Path) -> Path:
    datasets.DatasetDict(
        {"train": datasets.Dataset.from_list(TABLE), "test": datasets.Dataset.from_list(TABLE[:1])}
    ).save_to_disk(str(path))
    return path


def _hf_dir(path: Path) -> Path:
    path.mkdir()
    _csv(path / "train.csv")
    return path


SOURCES = {
    "jsonl": (lambda p: _jsonl(p / "d.jsonl", JSONL_ROWS), None),
    "csv": (lambda p: _csv(p / "d.csv"), MAPPED),
    "parquet": (lambda p: _parquet(p / "d.parquet"), MAPPED),
    "hf_disk": (lambda p: _hf_disk(p / "saved"), MAPPED),
    "hf": (lambda p: _hf_dir(p / "splits"), MAPPED),
}


@pytest.mark.parametrize("kind", sorted(SOURCES))
def test_lazy_rows_are_the_eager_rows(kind: str, tmp_path: Path) -> None:
    make, columns = SOURCES[kind]
    path = make(tmp_path)
    fmt = "hf" if kind == "hf" else "auto"
    kwargs = {"format": fmt, "columns": columns, "default_reward": MATH, "system_prompt": "Be."}
    eager = load_prompts(path, **kwargs)
    lazy = load_prompts(path, lazy=True, **kwargs)
    assert isinstance(lazy, LazyPrompts)
    assert len(lazy) == len(eager)
    assert [lazy[i] for i in range(len(lazy))] == list(eager)
    assert lazy[1:3] == list(eager[1:3])
    assert lazy[-1] == eager[-1]


def test_csv_cells_stay_strings_and_empty_cells_are_missing(tmp_path: Path) -> None:
    lazy = load_prompts(_csv(tmp_path / "d.csv"), columns=MAPPED, default_reward=MATH, lazy=True)
    assert [lazy[i].reference for i in range(3)] == ["2", None, "9"]


def test_a_bad_line_is_an_error_naming_it_when_drawn_not_before(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text('{"prompt": "ok"}\n{"prompt": "ok too"}\n{"prompt": broken\n[1, 2]\n')
    rows = load_prompts(path, default_reward=MATH, lazy=True)
    assert rows[1].messages[0].content == "ok too"
    with pytest.raises(DataError, match=r"d\.jsonl:3: not valid JSON"):
        rows[2]
    with pytest.raises(DataError, match=r"d\.jsonl:4: a row must be a JSON object"):
        rows[3]


def test_a_row_without_its_prompt_is_an_error_naming_the_row_when_drawn(tmp_path: Path) -> None:
    path = _jsonl(tmp_path / "d.jsonl", [{"prompt": "a"}, {"question": "b"}])
    rows = load_prompts(path, default_reward=MATH, lazy=True)
    with pytest.raises(DataError, match=r"row 1 \(id '1'\): missing 'prompt'"):
        rows[1]


def test_a_missing_prompt_column_is_an_error_at_load(tmp_path: Path) -> None:
    path = _jsonl(tmp_path / "d.jsonl", [{"question": "a"}])
    with pytest.raises(DataError, match=r"no column 'prompt'.*data\.columns\.prompt"):
        load_prompts(path, default_reward=MATH, lazy=True)


def test_jsonl_rows_are_read_from_disk_when_indexed(tmp_path: Path) -> None:
    # Rewriting a row in place (same length) after the index is built shows in the next
    # read: nothing of the row is held in memory.
    path = _jsonl(tmp_path / "d.jsonl", [{"prompt": "aaaa"}, {"prompt": "bbbb"}])
    rows = JsonlRows(path)
    assert rows[1] == {"prompt": "bbbb"}
    path.write_text(path.read_text().replace("bbbb", "cccc"))
    assert rows[1] == {"prompt": "cccc"}
    assert len(rows) == 2


def test_the_seeded_order_is_the_shuffled_list_order() -> None:
    # The cursor keeps its order in an int64 array; random.shuffle makes the same swaps on a
    # list, so checkpoints written before the change resume to the same prompts.
    cursor = PromptCursor(50, seed=7, shuffle=True)
    drawn = cursor.take(120)  # crosses two epoch boundaries
    expected = []
    for epoch in range(3):
        order = list(range(50))
        random.Random(7 * 1_000_003 + epoch).shuffle(order)
        expected += order
    assert drawn == expected[:120]


@pytest.mark.integration
def test_a_lazy_run_draws_and_trains_exactly_as_an_eager_one(
    tiny_model: Path, toy_prompts: Path, tmp_path: Path, server
) -> None:
    histories = []
    for lazy in (False, True):
        settings = train_settings(tiny_model, toy_prompts, tmp_path / f"run_{lazy}")
        settings["data"]["lazy"] = lazy
        config = build_config(TrainConfig, settings, [f"reward.address={server.address}"])
        history = train(config)
        rollouts = (tmp_path / f"run_{lazy}" / "rollouts.jsonl").read_text().splitlines()
        drawn = [(r["step"], r["prompt_id"]) for r in map(json.loads, rollouts)]
        metrics = [{k: v for k, v in m.items() if k not in VOLATILE_METRICS} for m in history]
        histories.append((drawn, metrics))
    assert histories[0][0] and histories[0] == histories[1]
