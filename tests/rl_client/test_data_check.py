"""`rl-client data check`: every gold scored against itself by a real sidecar server; each
problem row reported with its status, reason and field; exit codes 0, 1 and 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from rl_client.cli import main
from rl_client.data import PromptRow
from rl_client.data_check import gold_item, unchecked_reason
from verifier_server.types import RewardSpec

TAGGED = {"name": "string_check", "params": {"operation": "eq", "extract": "answer_tag"}}
ROWS = [
    {"id": "good", "prompt": "3+4?", "reference": "7"},
    {"id": "boxed", "prompt": "5+7?", "reference": "\\boxed{12}"},
    {"id": "unparseable", "prompt": "half?", "reference": "\\frac{"},
    {"id": "missing", "prompt": "2+2?", "reference": None},
    # A gold stored with its tags: an extracted answer never holds them, so nothing scores 1.
    {"id": "tagged", "prompt": "3+4?", "reference": "<answer>7</answer>", "reward": TAGGED},
    {"id": "plain", "prompt": "yes?", "reference": "yes", "reward": {"name": "string_check"}},
    {
        "id": "pattern",
        "prompt": "digits?",
        "reference": "[0-9]+",
        "reward": {"name": "string_check", "params": {"operation": "regex"}},
    },
]
NOT_CHECKED = "string_check with operation 'regex': its reference is not an answer"


def _config(tmp_path: Path, rows: list[dict], **data: object) -> Path:
    dataset = tmp_path / "rows.jsonl"
    dataset.write_text("".join(json.dumps(row) + "\n" for row in rows))
    config = tmp_path / "check.yaml"
    settings = {
        "model": {"path": "not-loaded"},
        "data": {"path": str(dataset), "reward": {"name": "math"}, **data},
        "reward": {"sidecar_workers": 1},
        "output": {"dir": str(tmp_path / "out"), "progress": False},
    }
    config.write_text(yaml.safe_dump(settings))
    return config


def test_gold_completions_are_written_the_way_the_verifier_extracts() -> None:
    def row(reference: object, name: str, **params: object) -> PromptRow:
        return PromptRow("r", (), RewardSpec(name, dict(params)), reference)

    assert gold_item(row("7", "math"), 0).completion == "\\boxed{7}"
    assert gold_item(row(0.5, "math"), 0).completion == "\\boxed{0.5}"
    assert gold_item(row(["\\boxed{3}", "3.0"], "math"), 0).completion == "\\boxed{3}"
    assert gold_item(row("7", "math", extract="answer_tag"), 0).completion == "<answer>7</answer>"
    fenced = gold_item(row("x", "string_check", extract="fenced"), 0).completion
    assert fenced == "```\nx\n```"
    assert unchecked_reason(RewardSpec("string_check", {"operation": "ne"})) is not None
    assert unchecked_reason(RewardSpec("code")) == "code: its reference is tests, not a solution"


@pytest.mark.integration
@pytest.mark.parametrize("lazy", [False, True], ids=["eager", "lazy"])
def test_reports_masked_and_below_top_rows_through_a_sidecar(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], lazy: bool
) -> None:
    # data.lazy: the same report, every row read a chunk at a time
    config = _config(tmp_path, ROWS, lazy=lazy)
    report_path = tmp_path / "report.json"
    assert main(["data", "check", "--config", str(config), "--report", str(report_path)]) == 1
    report = json.loads(report_path.read_text())
    assert (report["rows"], report["checked"]) == (7, 6)
    assert (report["masked"], report["below_top"]) == (2, 1)
    assert report["not_checked"] == {NOT_CHECKED: 1}
    problems = {p["id"]: p for p in report["problems"]}
    assert set(problems) == {"unparseable", "missing", "tagged"}
    for row_id, index in (("unparseable", 2), ("missing", 3)):
        masked = problems[row_id]
        assert masked["row"] == index
        assert masked["problem"] == "masked"
        assert masked["status"] == "INVALID_REQUEST"
        assert masked["reason"] == "invalid_reference"
        assert masked["field"] == "reference"
        assert masked["score"] is None
    assert "cannot parse the gold answer" in problems["unparseable"]["message"]
    assert "missing" in problems["missing"]["message"]
    tagged = problems["tagged"]
    assert (tagged["row"], tagged["problem"], tagged["status"]) == (4, "below_top", "OK")
    assert tagged["score"] == 0.0
    out = capsys.readouterr().out
    assert f"not checked: 1 rows ({NOT_CHECKED})" in out
    assert "2\tunparseable\tmasked\tINVALID_REQUEST\tinvalid_reference\treference\t-" in out
    assert "4\ttagged\tbelow_top\tOK\t" in out


@pytest.mark.integration
def test_clean_data_exits_0_and_writes_the_default_report(tmp_path: Path) -> None:
    config = _config(tmp_path, [ROWS[0], ROWS[1], ROWS[5]])
    assert main(["data", "check", "--config", str(config)]) == 0
    report = json.loads((tmp_path / "out" / "data_check.json").read_text())
    assert (report["checked"], report["problems"]) == (3, [])


def test_config_errors_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = _config(tmp_path, ROWS[:1])
    missing = str(tmp_path / "none.jsonl")
    assert main(["data", "check", "--config", str(config), f"data.path={missing}"]) == 2
    assert f"error: data.path: {missing}: no such file or directory" in capsys.readouterr().err
    assert main(["data", "check", "--config", str(config), "--eval", "data.eval_path=x"]) == 2
    assert "error: data.eval_path: x: no such file" in capsys.readouterr().err


def test_data_with_no_checkable_reward_exits_2_saying_why(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = [{"id": "a", "prompt": "p", "reference": {"tests": []}, "reward": {"name": "code"}}]
    assert main(["data", "check", "--config", str(_config(tmp_path, rows))]) == 2
    err = capsys.readouterr().err
    assert "no row has a reward whose gold can be scored against itself" in err
    assert "code: its reference is tests, not a solution" in err
