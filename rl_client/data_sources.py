"""Reading a dataset's rows as plain dicts, whatever it is stored as.

JSONL, Parquet and CSV files are read directly (exact JSON values, errors with line numbers);
a directory written by `datasets`' `save_to_disk` (a Dataset, or a DatasetDict of splits) and
anything `datasets.load_dataset` reads (a directory of split files such as `train.jsonl` /
`test.csv`, a single file, a hub name where the hub is reachable) go through Hugging Face
`datasets`, imported only then: it is heavy. What the rows mean is `data.py`'s job.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any, Literal

Format = Literal["auto", "jsonl", "parquet", "csv", "hf_disk", "hf"]
FILE_SUFFIXES = {".jsonl": "jsonl", ".json": "jsonl", ".parquet": "parquet", ".csv": "csv"}
# load_dataset's builder for a single local file of each format
_BUILDERS = {"jsonl": "json", "parquet": "parquet", "csv": "csv"}


class DataError(Exception):
    """A dataset cannot be read, or a row is malformed (the message names the row and the
    setting to change)."""


def read_rows(
    path: str | Path, *, format: Format = "auto", split: str = "train"
) -> list[dict[str, Any]]:
    """The rows of `path` (`split` picks one split of a dataset that has several)."""
    kind = resolve_format(path, format)
    if kind == "jsonl":
        return _read_jsonl(Path(path))
    if kind == "parquet":
        import pyarrow.parquet as pq

        return pq.read_table(path).to_pylist()
    if kind == "csv":
        return _read_csv(Path(path))
    if kind == "hf_disk":
        return _read_saved(Path(path), split)
    return _read_load_dataset(str(path), split)


def resolve_format(path: str | Path, format: Format) -> str:
    """'auto' -> the format the path's suffix or contents name; an explicit format is kept."""
    local = Path(path)
    if format not in ("auto", "hf") and not local.exists():
        raise DataError(f"{path}: no such file or directory")
    if format != "auto":
        return format
    if local.is_dir():
        saved = (local / "dataset_dict.json").exists() or (local / "state.json").exists()
        return "hf_disk" if saved else "hf"
    if not local.exists():
        raise DataError(
            f"{path}: no such file or directory (for a Hugging Face hub dataset set "
            "data.format: hf)"
        )
    if local.suffix not in FILE_SUFFIXES:
        raise DataError(
            f"{path}: unknown file type {local.suffix!r}; expected .jsonl, .parquet or .csv, "
            "a `save_to_disk` directory, or set data.format (jsonl, parquet, csv, hf_disk, hf)"
        )
    return FILE_SUFFIXES[local.suffix]


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
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


def _read_csv(path: Path) -> list[dict[str, Any]]:
    """Cells are strings; an empty cell is a missing value (None), as pandas and `datasets`
    read it, so an empty reference is reported as missing rather than compared to ''."""
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        if not reader.fieldnames:
            raise DataError(f"{path}: no header row (CSV needs column names on line 1)")
        rows = []
        for row in reader:
            if None in row:  # more cells than the header has names
                raise DataError(
                    f"{path}:{reader.line_num}: more cells than the header's "
                    f"{len(reader.fieldnames)} columns"
                )
            rows.append({key: (value if value != "" else None) for key, value in row.items()})
    return rows


def _read_saved(path: Path, split: str) -> list[dict[str, Any]]:
    import datasets

    loaded = datasets.load_from_disk(str(path))
    if isinstance(loaded, datasets.DatasetDict):
        return _pick_split(loaded, split, path).to_list()
    return loaded.to_list()


def _read_load_dataset(path: str, split: str) -> list[dict[str, Any]]:
    import datasets

    local = Path(path)
    if local.is_file():
        kind = resolve_format(local, "auto")
        loaded = datasets.load_dataset(_BUILDERS[kind], data_files={"train": str(local)})
    else:
        loaded = datasets.load_dataset(path)
    return _pick_split(loaded, split, path).to_list()


def _pick_split(splits: Any, split: str, path: str | Path) -> Any:
    if split not in splits:
        raise DataError(
            f"{path}: no split {split!r} (data.split / data.eval_split); it has: "
            f"{', '.join(splits)}"
        )
    return splits[split]
