"""Reading a dataset's rows as plain dicts, whatever it is stored as.

JSONL, Parquet and CSV files are read directly (exact JSON values, errors with line numbers);
a directory written by `datasets`' `save_to_disk` (a Dataset, or a DatasetDict of splits) and
anything `datasets.load_dataset` reads (a directory of split files such as `train.jsonl` /
`test.csv`, a single file, a hub name where the hub is reachable) go through Hugging Face
`datasets`, imported only then: it is heavy. What the rows mean is `data.py`'s job.

`open_rows` is the lazy counterpart of `read_rows` (`data.lazy`, for datasets larger than
memory): a row is read from disk when it is indexed. JSONL through an index of line offsets
(24 bytes a row; values exact as JSON; the file must not be edited in place while open),
everything else through `datasets`' memory-mapped Arrow tables (Parquet and CSV are converted
once into its cache). Random access keeps the seeded shuffle and exact resume of the eager
path, which a sequential stream could not.
"""

from __future__ import annotations

import csv
import json
import os
import stat
from abc import abstractmethod
from array import array
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO, Literal, TextIO, TypeVar, overload

Format = Literal["auto", "jsonl", "parquet", "csv", "hf_disk", "hf"]
FILE_SUFFIXES = {".jsonl": "jsonl", ".json": "jsonl", ".parquet": "parquet", ".csv": "csv"}
# load_dataset's builder for a single local file of each format
_BUILDERS = {"jsonl": "json", "parquet": "parquet", "csv": "csv"}
# UTF-8 that drops a leading byte-order mark (spreadsheet exports write one), as pandas does
CSV_ENCODING = "utf-8-sig"


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
    with path.open("rb") as f:
        return [_json_row(line, f"{path}:{number}") for number, _, line in _jsonl_lines(f)]


def _jsonl_lines(f: BinaryIO) -> Iterator[tuple[int, int, bytes]]:
    """(line number, byte offset, bytes) of each non-blank line. Lines end at b"\n" only, as
    JSONL defines them (U+2028 or a lone \r inside a JSON string is not a line break), and are
    decoded by `json.loads` one at a time, so the eager and lazy readers agree on every row."""
    offset = 0
    for number, line in enumerate(f, start=1):
        if line.strip():
            yield number, offset, line
        offset += len(line)


def _json_row(line: str | bytes, where: str) -> dict[str, Any]:
    """One JSONL line as a row; errors name `where` (file:line)."""
    try:
        row = json.loads(line)
    except json.JSONDecodeError as exc:
        raise DataError(f"{where}: not valid JSON: {exc.msg}") from None
    except UnicodeDecodeError as exc:
        raise DataError(f"{where}: not UTF-8: {exc.reason}") from None
    if not isinstance(row, dict):
        raise DataError(f"{where}: a row must be a JSON object")
    return row


def _read_csv(path: Path) -> list[dict[str, Any]]:
    """Cells are strings; an empty cell is a missing value (None), as pandas and `datasets`
    read it, so an empty reference is reported as missing rather than compared to ''."""
    with _csv_text(path) as f:
        reader = csv.DictReader(f)
        _check_header(path, reader.fieldnames)
        assert reader.fieldnames is not None
        rows = []
        for row in reader:
            if None in row:  # more cells than the header has names
                raise DataError(
                    f"{path}:{reader.line_num}: more cells than the header's "
                    f"{len(reader.fieldnames)} columns"
                )
            rows.append({key: (value if value != "" else None) for key, value in row.items()})
    return rows


@contextmanager
def _csv_text(path: Path) -> Iterator[TextIO]:
    """The CSV file opened as text; bytes that are not UTF-8 are a DataError."""
    try:
        with path.open(newline="", encoding=CSV_ENCODING) as f:
            yield f
    except UnicodeDecodeError as exc:  # decoded a block at a time: no line to name
        raise DataError(f"{path}: cannot be read as csv: not UTF-8 ({exc.reason})") from None


def _read_saved(path: Path, split: str) -> list[dict[str, Any]]:
    import datasets

    loaded = datasets.load_from_disk(str(path))
    if isinstance(loaded, datasets.DatasetDict):
        return _pick_split(loaded, split, path).to_list()
    return loaded.to_list()


def _read_load_dataset(path: str, split: str) -> list[dict[str, Any]]:
    return _pick_split(_load_dataset(path), split, path).to_list()


def _load_dataset(path: str) -> Any:
    """`datasets.load_dataset`'s splits of `path` (a single local file: its one split, train;
    its types are those `datasets` infers, e.g. CSV numbers as numbers)."""
    import datasets

    local = Path(path)
    if local.is_file():
        kind = resolve_format(local, "auto")
        return datasets.load_dataset(_BUILDERS[kind], data_files={"train": str(local)})
    return datasets.load_dataset(path)


def _pick_split(splits: Any, split: str, path: str | Path) -> Any:
    if split not in splits:
        raise DataError(
            f"{path}: no split {split!r} (data.split / data.eval_split); it has: "
            f"{', '.join(splits)}"
        )
    return splits[split]


def open_rows(
    path: str | Path, *, format: Format = "auto", split: str = "train"
) -> Sequence[dict[str, Any]]:
    """The rows of `path` as a sequence that reads row i from disk when indexed."""
    kind = resolve_format(path, format)
    if kind == "jsonl":
        return JsonlRows(Path(path))
    import datasets

    if kind == "hf_disk":
        loaded = datasets.load_from_disk(str(path))
        table = (
            _pick_split(loaded, split, path) if isinstance(loaded, datasets.DatasetDict) else loaded
        )
        return ArrowRows(table)
    if kind in ("parquet", "csv"):
        # CSV cells as strings, as the eager reader gives them (no type guessing per column).
        # Only an empty cell is missing, not pandas' 'NA', 'None', 'null', 'nan'...
        csv_options: dict[str, Any] = {}
        if kind == "csv":
            header = _csv_header(Path(path))
            features = datasets.Features({name: datasets.Value("string") for name in header})
            csv_options = {"features": features, "keep_default_na": False, "na_values": [""]}
        try:
            loaded = datasets.load_dataset(
                _BUILDERS[kind], data_files={"train": str(path)}, **csv_options
            )
        except datasets.exceptions.DatasetGenerationError as exc:
            raise DataError(
                f"{path}: cannot be read as {kind}: {str(exc.__cause__).strip()}"
            ) from exc
        return ArrowRows(loaded["train"])
    return ArrowRows(_pick_split(_load_dataset(str(path)), split, path))


def _csv_header(path: Path) -> list[str]:
    with _csv_text(path) as f:
        header = next(csv.reader(f), None)
    _check_header(path, header)
    assert header is not None
    return header


def _check_header(path: Path, header: Sequence[str] | None) -> None:
    if not header:
        raise DataError(f"{path}: no header row (CSV needs column names on line 1)")
    repeated = sorted({name for name in header if header.count(name) > 1})
    if repeated:
        raise DataError(f"{path}: the header names {repeated} more than once")


T = TypeVar("T")


class LazySequence(Sequence[T]):
    """A sequence whose items are made one at a time (`_read`) when indexed; slices and
    negative indices handled here once."""

    @abstractmethod
    def __len__(self) -> int: ...

    @abstractmethod
    def _read(self, index: int) -> T: ...

    @overload
    def __getitem__(self, index: int) -> T: ...
    @overload
    def __getitem__(self, index: slice) -> list[T]: ...
    def __getitem__(self, index: int | slice) -> T | list[T]:
        if isinstance(index, slice):
            return [self._read(i) for i in range(*index.indices(len(self)))]
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(index)
        return self._read(index)


class JsonlRows(LazySequence[dict[str, Any]]):
    """A JSONL file's non-blank lines, parsed when indexed. Reads are positional (pread), so
    threads can share it. The file is indexed and read through one descriptor; a file edited
    in place afterwards (its size or mtime changed) is an error, never another row."""

    def __init__(self, path: Path) -> None:
        self.path = path
        fd = os.open(path, os.O_RDONLY)
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise DataError(
                f"{path}: not a regular file (a pipe?); data.lazy reads rows by their offsets: "
                "write the rows to a file, or set data.lazy: false"
            )
        self._fd = fd
        self._starts = array("q")
        self._ends = array("q")
        self._lines = array("q")  # 1-based line numbers, for errors
        with os.fdopen(os.dup(self._fd), "rb") as f:
            for number, start, line in _jsonl_lines(f):
                self._starts.append(start)
                self._ends.append(start + len(line))
                self._lines.append(number)
        self._version = _version(self._fd)

    def __len__(self) -> int:
        return len(self._starts)

    def _read(self, index: int) -> dict[str, Any]:
        if _version(self._fd) != self._version:
            raise DataError(
                f"{self.path}: changed since it was opened (data.lazy reads rows from the "
                "file while training: replace it with a new file, not in place, or restart)"
            )
        start, end = self._starts[index], self._ends[index]
        raw = os.pread(self._fd, end - start, start)
        return _json_row(raw, f"{self.path}:{self._lines[index]}")

    def __del__(self) -> None:
        fd = getattr(self, "_fd", None)
        if fd is not None:
            os.close(fd)


def _version(fd: int) -> tuple[int, int]:
    info = os.fstat(fd)  # not `stat`: that is the module this file imports
    return info.st_size, info.st_mtime_ns


class ArrowRows(LazySequence[dict[str, Any]]):
    """A `datasets.Dataset` (memory-mapped Arrow) read a row at a time."""

    def __init__(self, table: Any) -> None:
        self._table = table

    def __len__(self) -> int:
        return len(self._table)

    def _read(self, index: int) -> dict[str, Any]:
        return dict(self._table[index])
