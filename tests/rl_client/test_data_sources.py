"""Prompt datasets from CSV, `datasets` save_to_disk directories and load_dataset, with column
mapping, named splits and the missing-reference warning: real files in tmp dirs."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import datasets
import pytest

from rl_client.config import ConfigError, DataConfig, TrainConfig, build_config
from rl_client.data import DataError, load_prompts
from rl_client.run import prompts_from_config
from verifier_server.types import ChatMessage

MATH = {"name": "math"}
QUESTIONS = [
    {"question": "What is 1+1?", "answer": "2", "qid": "q1"},
    {"question": "What is 2+3?", "answer": "5", "qid": "q2"},
    {"question": "What is 3*3?", "answer": "9", "qid": "q3"},
]


def _write_csv(path: Path, rows: list[dict]) -> Path:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def _data(path: Path, **settings: object) -> DataConfig:
    return DataConfig.model_validate({"path": str(path), "reward": MATH, **settings})


def test_csv_with_a_column_mapping(tmp_path: Path) -> None:
    path = _write_csv(tmp_path / "q.csv", QUESTIONS)
    data = _data(path, columns={"prompt": "question", "reference": "answer", "id": "qid"})
    rows = prompts_from_config(data, data.path, data.split)
    assert [r.id for r in rows] == ["q1", "q2", "q3"]
    assert rows[1].messages == (ChatMessage("user", "What is 2+3?"),)
    assert [r.reference for r in rows] == ["2", "5", "9"]  # CSV cells are strings


def test_prompt_key_and_reference_key_are_the_same_mapping(tmp_path: Path) -> None:
    path = _write_csv(tmp_path / "q.csv", QUESTIONS)
    data = _data(path, prompt_key="question", reference_key="answer")
    assert data.column_map == {"prompt": "question", "reference": "answer"}
    assert [r.reference for r in prompts_from_config(data, data.path, "train")] == ["2", "5", "9"]


def test_one_column_named_in_two_places_is_a_config_error(tmp_path: Path) -> None:
    settings = {
        "model": {"path": "m"},
        "data": {"path": "q.csv", "prompt_key": "q", "columns": {"prompt": "question"}},
        "output": {"dir": "out"},
    }
    with pytest.raises(ConfigError, match=r"data\.columns\.prompt and data\.prompt_key both"):
        build_config(TrainConfig, settings)


def test_an_unknown_row_field_in_columns_is_a_config_error() -> None:
    settings = {
        "model": {"path": "m"},
        "data": {"path": "q.csv", "columns": {"question": "prompt"}},
        "output": {"dir": "out"},
    }
    with pytest.raises(ConfigError, match=r"data\.columns\.question"):
        build_config(TrainConfig, settings)


def test_save_to_disk_dataset(tmp_path: Path) -> None:
    datasets.Dataset.from_list(QUESTIONS).save_to_disk(str(tmp_path / "saved"))
    rows = load_prompts(
        tmp_path / "saved",
        columns={"prompt": "question", "reference": "answer"},
        default_reward=MATH,
    )
    assert [r.reference for r in rows] == ["2", "5", "9"]
    assert [r.id for r in rows] == ["0", "1", "2"]


def test_save_to_disk_dataset_dict_picks_the_split(tmp_path: Path) -> None:
    splits = datasets.DatasetDict(
        {
            "train": datasets.Dataset.from_list(QUESTIONS[:2]),
            "test": datasets.Dataset.from_list(QUESTIONS[2:]),
        }
    )
    splits.save_to_disk(str(tmp_path / "saved"))
    columns = {"prompt": "question", "reference": "answer", "id": "qid"}
    train = load_prompts(tmp_path / "saved", columns=columns, default_reward=MATH)
    test = load_prompts(tmp_path / "saved", split="test", columns=columns, default_reward=MATH)
    assert [r.id for r in train] == ["q1", "q2"]
    assert [r.id for r in test] == ["q3"]
    with pytest.raises(DataError, match=r"no split 'validation' .*it has: train, test"):
        load_prompts(tmp_path / "saved", split="validation", columns=columns, default_reward=MATH)


def test_load_dataset_directory_with_named_split_files(tmp_path: Path) -> None:
    # load_dataset names the splits after the files: train.jsonl -> "train", test.jsonl -> "test"
    folder = tmp_path / "files"
    folder.mkdir()
    for name, rows in (("train", QUESTIONS[:2]), ("test", QUESTIONS[2:])):
        (folder / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    data = _data(folder, columns={"prompt": "question", "reference": "answer", "id": "qid"})
    assert data.format == "auto"  # a directory without save_to_disk files is read as hf
    assert [r.id for r in prompts_from_config(data, data.path, "test")] == ["q3"]
    assert [r.id for r in prompts_from_config(data, data.path, "train")] == ["q1", "q2"]


def test_format_hf_reads_a_single_local_file_as_the_train_split(tmp_path: Path) -> None:
    path = _write_csv(tmp_path / "q.csv", QUESTIONS)
    rows = load_prompts(
        path,
        format="hf",
        columns={"prompt": "question", "reference": "answer"},
        default_reward=MATH,
    )
    # through datasets' CSV builder the answers are inferred as integers
    assert [r.reference for r in rows] == [2, 5, 9]


@pytest.mark.parametrize(
    ("name", "settings", "message"),
    [
        ("q.txt", {}, r"unknown file type '.txt'; expected .jsonl, .parquet or .csv"),
        ("absent.csv", {}, r"absent.csv: no such file or directory"),
        ("q.csv", {}, r"no column 'prompt' for the prompt; its columns: question, answer, qid"),
        (
            "q.csv",
            {"columns": {"prompt": "question", "reference": "gold"}},
            r"no column 'gold' for the reference \(data.columns.reference\)",
        ),
    ],
)
def test_unreadable_sources_name_the_fix(
    tmp_path: Path, name: str, settings: dict, message: str
) -> None:
    _write_csv(tmp_path / "q.csv", QUESTIONS)
    (tmp_path / "q.txt").write_text("What is 1+1?\n")
    data = _data(tmp_path / name, **settings)
    with pytest.raises(DataError, match=message):
        prompts_from_config(data, data.path, data.split)


def test_csv_with_more_cells_than_columns_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "q.csv"
    path.write_text("prompt,reference\nWhat is 1+1?,2\nWhat is 2+2?,4,extra\n")
    with pytest.raises(DataError, match=r"q.csv:3: more cells than the header's 2 columns"):
        load_prompts(path, default_reward=MATH)


def test_rows_without_a_reference_are_reported_once_with_their_numbers(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = [{"prompt": f"p{i}", "reference": str(i)} for i in range(10)]
    for index in (1, 3, 4, 6, 7, 8):  # empty cells: six rows without a gold
        rows[index]["reference"] = ""
    path = _write_csv(tmp_path / "q.csv", rows)
    loaded = load_prompts(path, default_reward=MATH)
    assert len(loaded) == 10  # still loaded: the server masks them, the user is told now
    err = capsys.readouterr().err
    assert err.count("warning:") == 1
    assert "6 of 10 rows have no 'reference' (rows 1, 3, 4, 6, 7 and 1 more)" in err


def test_no_warning_when_no_row_has_a_reference(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # rewards such as `length` or a reward model need no reference: nothing to report
    path = _write_csv(tmp_path / "q.csv", [{"prompt": "a"}, {"prompt": "b"}])
    load_prompts(path, default_reward={"name": "length"})
    assert capsys.readouterr().err == ""
