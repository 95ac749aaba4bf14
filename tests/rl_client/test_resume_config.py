"""A resumed run refuses config changes that break exact resume (naming each key) unless
--allow-config-change, which prints them; resume-safe keys change freely."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from rl_helpers import train_settings

from rl_client.checkpoint import STATE_FILE
from rl_client.cli import main
from rl_client.config import TrainConfig, build_config, dump_config
from rl_client.preflight import config_changes

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]


def _steps(output: Path) -> list[int]:
    lines = (output / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line)["step"] for line in lines]


def test_changed_config_is_refused_then_allowed(
    tiny_model: Path, toy_prompts: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    output = tmp_path / "run"
    settings = train_settings(tiny_model, toy_prompts, output)
    settings["reward"] = {"sidecar_workers": 1}
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(settings))
    train = ["train", "--config", str(config)]
    assert main(train) == 0  # 2 steps, checkpoint step_000002
    capsys.readouterr()

    assert main([*train, "train.lr=0.002", "rollout.group_size=2", "train.steps=3"]) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"error: output.dir {output} holds a checkpoint whose config differs in keys that "
        "break exact resume:",
        "error:   step_000002: rollout.group_size: 4 -> 2",
        "error:   step_000002: train.lr: 0.001 -> 0.002",
        "error: rerun with --allow-config-change to resume anyway, or start a fresh run "
        "(another output.dir, or output.resume=false)",
    ]
    assert _steps(output) == [1, 2]  # nothing ran, nothing was cut

    # Resume-safe: more steps under a constant schedule, another save cadence.
    assert main([*train, "train.steps=3", "output.save_every=1"]) == 0
    assert "warning" not in capsys.readouterr().err
    assert _steps(output) == [1, 2, 3]

    assert main([*train, "train.steps=4", "train.lr=0.002", "--allow-config-change"]) == 0
    warnings = [line for line in capsys.readouterr().err.splitlines() if "warning" in line]
    assert warnings == [
        "warning: config changed since step_000003: train.lr: 0.001 -> 0.002 "
        "(--allow-config-change)"
    ]
    assert _steps(output) == [1, 2, 3, 4]


def _saved_run(tmp_path: Path, raw: dict) -> None:
    checkpoint = tmp_path / "run" / "checkpoints" / "step_000001"
    checkpoint.mkdir(parents=True)
    (checkpoint / STATE_FILE).write_text(json.dumps({"step": 1, "cursor": {}}))
    (checkpoint / "config.yaml").write_text(dump_config(build_config(TrainConfig, raw)))


@pytest.mark.parametrize(
    ("schedule", "expected"),
    [
        ("constant", []),
        # cosine decays over train.steps: more steps change the planned learning rates
        ("cosine", ["step_000001: train.steps: 2 -> 5"]),
    ],
)
def test_more_steps_are_safe_only_under_a_constant_schedule(
    tmp_path: Path, schedule: str, expected: list[str]
) -> None:
    raw = train_settings(Path("m"), Path("d.jsonl"), tmp_path / "run")
    raw["train"]["schedule"] = schedule
    _saved_run(tmp_path, raw)
    raw["train"]["steps"] = 5
    raw["output"]["trackers"] = ["tensorboard"]  # always safe
    raw["reward"] = {"address": "10.0.0.1:50051"}  # always safe
    raw["data"]["lazy"] = True  # the same rows in the same order
    assert config_changes(build_config(TrainConfig, raw)) == expected


def test_fresh_runs_and_resume_false_compare_nothing(tmp_path: Path) -> None:
    raw = train_settings(Path("m"), Path("d.jsonl"), tmp_path / "run")
    assert config_changes(build_config(TrainConfig, raw)) == []  # no checkpoint
    _saved_run(tmp_path, raw)
    raw["train"]["lr"] = 0.5
    raw["output"]["resume"] = False
    assert config_changes(build_config(TrainConfig, raw)) == []
