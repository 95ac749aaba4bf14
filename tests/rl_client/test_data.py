"""Prompt datasets and the resumable cursor."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from rl_client.data import DataError, PromptCursor, load_prompts
from verifier_server.types import ChatMessage, RewardSpec

ROWS = [
    {"id": "a", "prompt": "What is 1+1?", "reference": "2"},
    {
        "id": "b",
        "prompt": [{"role": "user", "content": "Say hi"}],
        "reward": {"name": "string_check", "params": {"operation": "contains"}},
        "reference": "hi",
    },
]


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet"])
def test_rows_with_default_and_own_reward(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"p{suffix}"
    if suffix == ".jsonl":
        _write_jsonl(path, ROWS)
    else:  # Parquet columns need one type: chat messages for both rows, no per-row reward
        messages = [
            [{"role": "user", "content": "What is 1+1?"}],
            [{"role": "user", "content": "Say hi"}],
        ]
        rows = [
            {"id": r["id"], "prompt": m, "reference": r["reference"]}
            for r, m in zip(ROWS, messages, strict=True)
        ]
        pq.write_table(pa.Table.from_pylist(rows), path)
    loaded = load_prompts(path, default_reward={"name": "math"}, system_prompt="Be brief.")
    assert [r.id for r in loaded] == ["a", "b"]
    assert loaded[0].messages == (
        ChatMessage("system", "Be brief."),
        ChatMessage("user", "What is 1+1?"),
    )
    assert loaded[0].reward == RewardSpec("math", {})
    assert loaded[0].reference == "2"
    if suffix == ".jsonl":
        assert loaded[1].reward == RewardSpec("string_check", {"operation": "contains"})


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ([{"prompt": "x"}], "row 0 (id '0'): no 'reward' in the row and no data.reward default"),
        (
            [{"id": "p", "prompt": "y", "reward": {"name": "m"}}, {"id": "q", "text": "x"}],
            "row 1 (id 'q'): missing 'prompt'",
        ),
        ([{"id": "q", "text": "x"}], "no column 'prompt' for the prompt; its columns: id, text"),
        ([{"id": "q", "prompt": 3, "reward": {"name": "m"}}], "id 'q'): prompt: expected a string"),
        ([{"id": "q", "prompt": "x", "reward": {"nam": "m"}}], "reward: expected {'name': str"),
        (
            [{"id": "q", "prompt": "x", "reward": {"name": "m"}}] * 2,
            "row 1 (id 'q'): duplicate id",
        ),
        (
            [{"id": "q", "prompt": [{"role": "user"}], "reward": {"name": "m"}}],
            "prompt[0]: expected",
        ),
    ],
)
def test_bad_rows_are_named(tmp_path: Path, rows: list[dict], message: str) -> None:
    path = _write_jsonl(tmp_path / "p.jsonl", rows)
    with pytest.raises(DataError) as error:
        load_prompts(path)
    assert message in str(error.value)


def test_not_json(tmp_path: Path) -> None:
    path = tmp_path / "p.jsonl"
    path.write_text('{"prompt": "x"}\n{oops\n')
    with pytest.raises(DataError, match=r"p.jsonl:2: not valid JSON"):
        load_prompts(path)


def test_cursor_covers_each_epoch_once_and_resumes_exactly() -> None:
    cursor = PromptCursor(5, seed=7, shuffle=True)
    first_epoch = cursor.take(5)
    assert sorted(first_epoch) == [0, 1, 2, 3, 4]
    taken = cursor.take(3)  # crosses into epoch 1
    state = cursor.state_dict()
    rest = cursor.take(6)
    resumed = PromptCursor(5, seed=7, shuffle=True)
    resumed.load_state_dict(state)
    assert resumed.take(6) == rest
    second_epoch = taken + rest[:2]
    assert sorted(second_epoch) == [0, 1, 2, 3, 4]
    assert second_epoch != first_epoch  # a fresh order each epoch


def test_cursor_refuses_a_different_dataset() -> None:
    state = PromptCursor(5, seed=0, shuffle=False).state_dict()
    with pytest.raises(DataError, match="had 5 rows, this one has 6"):
        PromptCursor(6, seed=0, shuffle=False).load_state_dict(state)
