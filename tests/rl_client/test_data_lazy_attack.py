"""`data.lazy` against awkward files: wherever the eager reader succeeds the lazy one gives the
same rows, and wherever it fails both fail with a DataError naming the file (and the line
where there is one). A JSONL file edited in place while open is an error, never another row."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from rl_helpers import train_settings, write_prompts

from rl_client import run
from rl_client.config import TrainConfig, build_config
from rl_client.data_sources import DataError, JsonlRows, open_rows, read_rows
from rl_client.evaluate import evaluate
from rl_client.trainer import train

ROW = {"prompt": "a", "reference": 1}
JSONL_CASES = {
    "crlf": b'{"prompt": "a"}\r\n{"prompt": "b"}\r\n',
    "bom": b'\xef\xbb\xbf{"prompt": "a"}\n{"prompt": "b"}\n',
    "no final newline": b'{"prompt": "a"}\n\n{"prompt": "b"}',
    # json.dumps(ensure_ascii=False) writes U+2028 and NEL raw: inside a string, not a break
    "line separator in a string": json.dumps(
        {"prompt": "x\u2028y\x85z"}, ensure_ascii=False
    ).encode()
    + b'\n{"prompt": "b"}\n',
    "long line": json.dumps({"prompt": "x" * 3_000_000}).encode() + b"\n",
}
# case -> (file name, content, the error both readers give)
ERRORS = {
    "latin-1": ("d.jsonl", b'{"prompt": "a"}\n{"prompt": "caf\xe9"}\n', r"d\.jsonl:2: not UTF-8"),
    "utf-16": ("d.jsonl", '{"prompt": "a"}\n'.encode("utf-16"), r"d\.jsonl:1: not UTF-8"),
    "lone CR line ends": (
        "d.jsonl",
        b'{"prompt": "a"}\r{"prompt": "b"}\r',
        r"d\.jsonl:1: not valid JSON",
    ),
    "CSV: more cells than the header": (
        "d.csv",
        b"prompt,reference\na,1\nb,2,3\n",
        r"d\.csv(:3: |: .*line 3)",
    ),
    "CSV: latin-1": ("d.csv", b"prompt\ncaf\xe9\n", r"(?i)d\.csv: cannot be read as csv: .*utf-8"),
    "CSV: a repeated column": (
        "d.csv",
        b"prompt,prompt\na,1\n",
        r"d\.csv: the header names \['prompt'\]",
    ),
}
CSV_CASES = {
    # only an empty cell is missing: 'NA', 'None', 'null', 'nan' are answers like any other
    "NA-like strings": b"prompt,reference\na,NA\nb,None\nc,null\nd,nan\ne,\nf,#N/A\n",
    "byte-order mark": b"\xef\xbb\xbfprompt,reference\na,1\n",
    "quoted newline": b'prompt,reference\n"two\nlines",x\nb,"1,2"\n',
    "crlf": b"prompt,reference\r\na,1\r\n",
}


def _both(path: Path) -> tuple[list, list]:
    return read_rows(path), list(open_rows(path))


@pytest.mark.parametrize("case", sorted(JSONL_CASES))
def test_jsonl_lazy_rows_are_the_eager_rows(case: str, tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_bytes(JSONL_CASES[case])
    eager, lazy = _both(path)
    assert eager and lazy == eager


def test_a_line_separator_inside_a_string_is_not_a_line_break(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_bytes(JSONL_CASES["line separator in a string"])
    assert [row["prompt"] for row in read_rows(path)] == ["x\u2028y\x85z", "b"]


@pytest.mark.parametrize("case", sorted(ERRORS))
def test_a_malformed_file_is_a_data_error_naming_it_in_both(case: str, tmp_path: Path) -> None:
    name, content, message = ERRORS[case]
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(DataError, match=message):
        read_rows(path)
    with pytest.raises(DataError, match=message):
        list(open_rows(path))


@pytest.mark.parametrize("content", [b"", b"\n  \n\r\n"])
def test_an_empty_jsonl_file_has_no_rows_in_both(content: bytes, tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_bytes(content)
    assert _both(path) == ([], [])


@pytest.mark.parametrize("case", sorted(CSV_CASES))
def test_csv_lazy_rows_are_the_eager_rows(case: str, tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    path.write_bytes(CSV_CASES[case])
    eager, lazy = _both(path)
    assert eager and lazy == eager
    assert all(set(row) == {"prompt", "reference"} for row in eager)


def test_a_single_file_read_as_format_hf_is_typed_as_datasets_types_it(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    path.write_bytes(b"prompt,reference\na,007\nb,\n")
    eager = read_rows(path, format="hf")
    assert eager == [{"prompt": "a", "reference": 7}, {"prompt": "b", "reference": None}]
    assert list(open_rows(path, format="hf")) == eager


def test_csv_na_like_strings_stay_strings(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    path.write_bytes(CSV_CASES["NA-like strings"])
    expected = ["NA", "None", "null", "nan", None, "#N/A"]
    assert [row["reference"] for row in open_rows(path)] == expected


def _indexed(tmp_path: Path, rows: list[dict]) -> tuple[Path, JsonlRows]:
    path = tmp_path / "d.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    os.utime(path, ns=(0, 0))  # an old mtime, so any later write changes it
    return path, JsonlRows(path)


def test_a_jsonl_file_rewritten_in_place_is_an_error_not_other_rows(tmp_path: Path) -> None:
    # The same layout with other values: offsets still land on whole lines, so without the
    # check the run would silently train on the new rows under the old indices.
    path, rows = _indexed(tmp_path, [{"prompt": "p0"}, {"prompt": "p1"}])
    assert rows[1] == {"prompt": "p1"}
    path.write_text(path.read_text().replace("p", "q"))
    with pytest.raises(DataError, match=r"d\.jsonl: changed since it was opened"):
        rows[1]


def test_a_truncated_jsonl_file_is_an_error_not_a_parse_error(tmp_path: Path) -> None:
    path, rows = _indexed(tmp_path, [ROW] * 10)
    with path.open("r+") as f:
        f.truncate(30)
    with pytest.raises(DataError, match=r"d\.jsonl: changed since it was opened"):
        rows[5]


def test_a_jsonl_file_replaced_or_deleted_keeps_the_rows_it_was_opened_with(
    tmp_path: Path,
) -> None:
    # The descriptor holds the indexed file: a new file renamed over it, or an unlink, is
    # not seen until the next start.
    path, rows = _indexed(tmp_path, [{"prompt": "p0"}, {"prompt": "p1"}])
    fresh = tmp_path / "fresh.jsonl"
    fresh.write_text('{"prompt": "other"}\n')
    fresh.replace(path)
    assert rows[1] == {"prompt": "p1"}
    path.unlink()
    assert rows[0] == {"prompt": "p0"}


def test_a_symlinked_jsonl_file_reads_its_target(tmp_path: Path) -> None:
    target, _ = _indexed(tmp_path, [ROW, {"prompt": "b"}])
    link = tmp_path / "link.jsonl"
    link.symlink_to(target)
    assert list(open_rows(link)) == read_rows(target)


def test_a_pipe_is_read_eagerly_and_refused_lazily_with_a_data_error() -> None:
    # e.g. data.path: <(zcat rows.jsonl.gz): there are no offsets to come back to
    paths = []
    for _ in range(2):
        read_end, write_end = os.pipe()
        os.write(write_end, b'{"prompt": "a"}\n')
        os.close(write_end)
        paths.append(Path(f"/dev/fd/{read_end}"))
    try:
        assert read_rows(paths[0], format="jsonl") == [{"prompt": "a"}]
        with pytest.raises(DataError, match=r"/dev/fd/\d+: not a regular file"):
            open_rows(paths[1], format="jsonl")
    finally:
        for path in paths:
            os.close(int(path.name))


def test_the_line_in_an_error_counts_blank_lines(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text('{"prompt": "a"}\n\n\n{"prompt": "b"}\n\n{"prompt": broken\n')
    rows = JsonlRows(path)
    assert rows[1] == {"prompt": "b"}
    with pytest.raises(DataError, match=r"d\.jsonl:6: not valid JSON"):
        rows[2]


def test_many_opens_leave_no_descriptor_open(tmp_path: Path) -> None:
    path, _ = _indexed(tmp_path, [ROW])
    before = len(os.listdir("/proc/self/fd"))
    for _ in range(500):
        assert open_rows(path)[0] == ROW
    assert len(os.listdir("/proc/self/fd")) <= before


@pytest.mark.integration
def test_an_unknown_reward_past_the_checked_rows_is_counted_as_masked(
    tiny_model: Path, tmp_path: Path, server, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Only the first rows' reward names are checked at start; a later typo masks that row's
    # items, and the step's metrics count them.
    monkeypatch.setattr(run, "LAZY_CHECKED_ROWS", 2)
    rows = [{"prompt": f"p{i}", "reference": "a"} for i in range(4)]
    for row in rows[2:]:
        row["reward"] = {"name": "string_chekc"}
    settings = train_settings(tiny_model, write_prompts(tmp_path / "d.jsonl", rows), tmp_path)
    settings["data"] |= {"lazy": True, "shuffle": False, "reward": {"name": "string_check"}}
    metrics = train(build_config(TrainConfig, settings, [f"reward.address={server.address}"]))
    assert "masked_INVALID_REQUEST" not in metrics[0]
    assert metrics[1]["masked_INVALID_REQUEST"] == 2 * 4  # two prompts, group_size 4


@pytest.mark.integration
def test_async_rollouts_draw_lazy_rows_as_eager_ones(
    tiny_model: Path, toy_prompts: Path, tmp_path: Path, server
) -> None:
    # The rollout thread reads and tokenises the rows it draws while the learner trains.
    runs = []
    for lazy in (False, True):
        output = tmp_path / f"run_{lazy}"
        settings = train_settings(tiny_model, toy_prompts, output)
        settings["data"]["lazy"] = lazy
        settings["rollout"]["mode"] = "async"
        settings["train"]["steps"] = 4
        config = build_config(TrainConfig, settings, [f"reward.address={server.address}"])
        train(config)
        rollouts = (output / "rollouts.jsonl").read_text().splitlines()
        runs.append(sorted((r["step"], r["prompt_id"]) for r in map(json.loads, rollouts)))
    assert runs[0] and runs[0] == runs[1]


@pytest.mark.integration
def test_eval_of_lazy_data_is_the_eval_of_eager_data(
    tiny_model: Path, toy_prompts: Path, tmp_path: Path, server
) -> None:
    reports = []
    for lazy in (False, True):
        settings = train_settings(tiny_model, toy_prompts, tmp_path / f"eval_{lazy}")
        settings["data"]["lazy"] = lazy
        config = build_config(TrainConfig, settings, [f"reward.address={server.address}"])
        reports.append(evaluate(config, limit=6))
    assert reports[0]["prompts"] == 6 and reports[0] == reports[1]


@pytest.mark.integration
@pytest.mark.timeout(300)
def test_a_bad_row_drawn_by_the_async_rollout_thread_stops_the_run_naming_it(
    tiny_model: Path, tmp_path: Path, server
) -> None:
    # Drawn ahead, off the main thread: the error must reach train(), not hang or be lost.
    rows = [{"id": f"r{i}", "prompt": f"p{i}", "reference": "a"} for i in range(6)]
    path = tmp_path / "d.jsonl"
    lines = [json.dumps(row) for row in rows]
    path.write_text("\n".join([*lines[:4], '{"prompt": broken', *lines[5:]]) + "\n")
    settings = train_settings(tiny_model, path, tmp_path / "run")
    settings["data"] |= {"lazy": True, "shuffle": False, "reward": {"name": "string_check"}}
    settings["rollout"] |= {"mode": "async"}
    settings["train"] |= {"steps": 4}
    config = build_config(TrainConfig, settings, [f"reward.address={server.address}"])
    with pytest.raises(DataError, match=r"d\.jsonl:5: not valid JSON"):
        train(config)
