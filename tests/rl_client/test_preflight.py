"""`rl-client train|eval|sft` fail before writing or loading anything: exit code 2, one line
per problem naming its key and the fix, no traceback unless --debug, no output dir created."""

from __future__ import annotations

import socket
import sys
from pathlib import Path

import pytest
import torch
import yaml
from rl_helpers import train_settings

from rl_client.cli import main
from rl_client.preflight import PreflightError


def _write(tmp_path: Path, settings: dict) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(settings))
    return path


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def settings(tiny_model: Path, toy_prompts: Path, tmp_path: Path) -> dict:
    return train_settings(tiny_model, toy_prompts, tmp_path / "run")


# (override, the error line); {tmp} is the test's directory, which holds an empty dir.
# Every case runs with no GPU, no wandb or peft package and the hub offline.
CASES = [
    (
        "model.path={tmp}/no-model",
        "model.path: {tmp}/no-model: no such directory; set it to a local model directory "
        "with config.json (HF_HUB_OFFLINE is set, so hub names are not fetched)",
    ),
    (
        "model.path={tmp}/empty",
        "model.path: {tmp}/empty has no config.json; point it at a directory saved by "
        "save_pretrained",
    ),
    (
        "model.path=Qwen/NoSuchModel",
        "model.path: Qwen/NoSuchModel: no such directory; set it to a local model directory "
        "with config.json (HF_HUB_OFFLINE is set, so hub names are not fetched)",
    ),
    (
        "data.path={tmp}/none.jsonl",
        "data.path: {tmp}/none.jsonl: no such file or directory; set it to a dataset file or "
        "directory",
    ),
    (
        "train.device=cuda",
        "train.device: 'cuda' but torch sees no GPU; set train.device=cpu (or auto)",
    ),
    (
        "reward.sidecar_config=server.yaml",
        "reward.sidecar_config: server.yaml: no such file or directory; set it to a server config",
    ),
    (
        "output.trackers=[tensorboard, wandb]",
        "output.trackers: 'wandb' needs the wandb package; install it (pip install wandb), "
        "or remove wandb from output.trackers",
    ),
    (
        "model.lora_r=8",
        "model.lora_r: LoRA needs the peft package; install it, or set model.lora_r=0",
    ),
    (
        "reward.address=127.0.0.1:{port}",
        "reward.address: 127.0.0.1:{port} answers UNAVAILABLE; start verifier-server there, "
        "fix the address, or leave reward.address unset to start a sidecar server",
    ),
]


@pytest.mark.parametrize(("override", "expected"), CASES, ids=[c[0].split("=")[0] for c in CASES])
def test_train_fails_fast_naming_the_key(
    settings: dict,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    override: str,
    expected: str,
) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for package in ("wandb", "peft"):  # find_spec then reports it absent
        monkeypatch.setitem(sys.modules, package, None)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    (tmp_path / "empty").mkdir()
    port = _free_port()  # nothing listens there
    config = _write(tmp_path, settings)
    argv = ["train", "--config", str(config), override.format(tmp=tmp_path, port=port)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.splitlines() == [f"error: {expected.format(tmp=tmp_path, port=port)}"], err
    assert "Traceback" not in err
    assert not (tmp_path / "run").exists()


def test_eval_checks_its_own_model_and_eval_path(
    settings: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _write(tmp_path, settings)
    argv = ["eval", "--config", str(config), "--model", str(tmp_path / "ckpt")]
    assert main([*argv, f"data.eval_path={tmp_path / 'held_out.jsonl'}"]) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"error: --model: {tmp_path / 'ckpt'}: no such directory; set it to a local model "
        "directory with config.json",
        f"error: data.eval_path: {tmp_path / 'held_out.jsonl'}: no such file or directory; "
        "set it to a dataset file or directory",
    ]
    assert not (tmp_path / "run").exists()


def test_output_dir_that_is_a_file(
    settings: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    taken = tmp_path / "taken"
    taken.write_text("x")
    config = _write(tmp_path, settings)
    assert main(["train", "--config", str(config), f"output.dir={taken}"]) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"error: output.dir: {taken} is a file; set it to a directory (created if missing)"
    ]


def test_every_problem_is_reported_on_its_own_line(
    settings: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _write(tmp_path, settings)
    argv = ["train", "--config", str(config), "model.path=/no/model", "data.path=/no/data.jsonl"]
    assert main(argv) == 2
    lines = capsys.readouterr().err.splitlines()
    assert [line.split(":")[1].strip() for line in lines] == ["model.path", "data.path"]


def test_debug_shows_the_traceback(settings: dict, tmp_path: Path) -> None:
    config = _write(tmp_path, settings)
    with pytest.raises(PreflightError, match=r"model\.path: /no/model: no such directory"):
        main(["train", "--debug", "--config", str(config), "model.path=/no/model"])


def test_sft_checks_its_paths(
    tiny_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sft = {
        "model": {"path": str(tmp_path / "base")},
        "data": {"path": str(tmp_path / "sft.jsonl")},
        "output": {"dir": str(tmp_path / "sft")},
    }
    assert main(["sft", "--config", str(_write(tmp_path, sft))]) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"error: model.path: {tmp_path / 'base'}: no such directory; set it to a local model "
        "directory with config.json",
        f"error: data.path: {tmp_path / 'sft.jsonl'}: no such file or directory; set it to a "
        "dataset file or directory",
    ]
    assert not (tmp_path / "sft").exists()


def test_sft_help_lists_sft_keys_not_train_keys(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["sft", "--help"])
    text = capsys.readouterr().out
    assert "output.dir (required):" in text and "train.packing (False):" in text
    assert "rollout." not in text and "algorithm." not in text and "output_dir" not in text


def test_sft_output_dir_still_works_with_a_warning(tiny_model: Path, tmp_path: Path) -> None:
    from rl_client.config import SFTConfig, build_config

    raw = {"model": {"path": str(tiny_model)}, "data": {"path": "d.jsonl"}, "output_dir": "o"}
    with pytest.warns(FutureWarning, match="output_dir is deprecated; write it as output.dir"):
        config = build_config(SFTConfig, raw)
    assert config.output.dir == "o"


def test_a_lora_checkpoint_passes_as_evals_model(settings: dict, tmp_path: Path) -> None:
    from rl_client.config import TrainConfig, build_config
    from rl_client.preflight import check_train

    adapters = tmp_path / "checkpoints" / "step_000002" / "policy"
    adapters.mkdir(parents=True)
    (adapters / "adapter_config.json").write_text("{}")  # no config.json: base + adapters
    config = build_config(TrainConfig, settings)
    check_train(config, model_path=str(adapters), eval_run=True)
    with pytest.raises(PreflightError, match=r"has no config\.json"):
        check_train(config, model_path=str(adapters.parent), eval_run=True)


def test_periodic_eval_checks_the_eval_path(
    settings: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    held_out = tmp_path / "held_out.jsonl"
    argv = ["train", "--config", str(_write(tmp_path, settings)), "eval.every=2"]
    assert main([*argv, f"data.eval_path={held_out}"]) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"error: data.eval_path: {held_out}: no such file or directory; set it to a dataset "
        "file or directory"
    ]
    assert not (tmp_path / "run").exists()
