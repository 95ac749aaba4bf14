"""`rl-client`: help lists every config key, bad input exits 2 naming the key, sft and eval
run through the command line."""

from __future__ import annotations

import json
from pathlib import Path

import datasets
import pytest
import yaml

from rl_client import toy
from rl_client.cli import main


def test_help_lists_config_keys(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = capsys.readouterr().out
    assert "rollout.group_size (8): G: completions sampled per prompt." in text
    assert "algorithm.clip_high (0.2):" in text
    assert "model.path (required):" in text


def test_bad_override_exits_2_naming_the_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(
        yaml.safe_dump(
            {"model": {"path": "m"}, "data": {"path": "d.jsonl"}, "output": {"dir": "o"}}
        )
    )
    assert main(["train", "--config", str(config), "rollout.temprature=0.5"]) == 2
    assert "rollout.temprature: unknown key; did you mean temperature?" in capsys.readouterr().err


def test_missing_dataset_exits_2(
    tmp_path: Path, tiny_model: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "c.yaml"
    settings = {
        "model": {"path": str(tiny_model)},
        "data": {"path": str(tmp_path / "none.jsonl")},
        "output": {"dir": str(tmp_path / "o")},
    }
    config.write_text(yaml.safe_dump(settings))
    assert main(["eval", "--config", str(config)]) == 2
    assert "none.jsonl: no such file" in capsys.readouterr().err


@pytest.mark.integration
def test_sft_then_eval_from_the_command_line(
    tmp_path: Path, tiny_model: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sft_data = toy.write_sft_data(tmp_path / "sft.jsonl", 64, seed=0, correct_fraction=1.0)
    sft_config = tmp_path / "sft.yaml"
    sft_config.write_text(
        yaml.safe_dump(
            {
                "model": {"path": str(tiny_model)},
                "data": {"path": str(sft_data)},
                "train": {
                    "steps": 30,
                    "batch_size": 8,
                    "lr": 3e-3,
                    "packing": True,
                    "max_seq_len": 128,
                },
                "output_dir": str(tmp_path / "sft"),
            }
        )
    )
    assert main(["sft", "--config", str(sft_config)]) == 0
    assert (tmp_path / "sft" / "config.json").exists()
    assert (tmp_path / "sft" / "tokenizer_config.json").exists()

    prompts = toy.write_rl_prompts(
        tmp_path / "p.jsonl",
        4,
        seed=0,
        reward={"name": "string_check", "params": {"operation": "contains"}},
        reference=toy.answer,
    )
    # the held-out prompts: a `datasets` DatasetDict saved to disk, its "test" split renamed
    rows = [json.loads(line) for line in prompts.read_text().splitlines()]
    held_out = [{"question": r["prompt"], "gold": r["reference"], "id": r["id"]} for r in rows]
    datasets.DatasetDict(
        {
            "train": datasets.Dataset.from_list(held_out[:1]),
            "test": datasets.Dataset.from_list(held_out),
        }
    ).save_to_disk(str(tmp_path / "held_out"))
    eval_config = tmp_path / "eval.yaml"
    eval_config.write_text(
        yaml.safe_dump(
            {
                "model": {"path": str(tmp_path / "sft")},
                "data": {
                    "path": str(prompts),
                    "eval_path": str(tmp_path / "held_out"),
                    "eval_split": "test",
                    "columns": {"prompt": "question", "reference": "gold"},
                    "reward": {"name": "string_check", "params": {"operation": "contains"}},
                },
                # batch_size 4 with 4 samples: one prompt per engine call, three calls
                "rollout": {"group_size": 2, "max_new_tokens": 12, "batch_size": 4},
                "reward": {"sidecar_workers": 1},
                "output": {"dir": str(tmp_path / "eval")},
            }
        )
    )
    capsys.readouterr()
    samples_file = tmp_path / "samples.jsonl"
    flags = [
        "--limit",
        "3",
        "--n-samples",
        "4",
        "--k",
        "1,2,4",
        "--save-samples",
        str(samples_file),
    ]
    assert main(["eval", "--config", str(eval_config), *flags]) == 0
    report = json.loads((tmp_path / "eval" / "eval.json").read_text())
    assert report["prompts"] == 3 and report["samples_per_prompt"] == 4
    assert report["masked_samples"] == 0 and report["verified_samples"] == 12
    per_prompt = report["per_prompt"]
    assert [p["id"] for p in per_prompt] == ["q0", "q1", "q2"]
    samples = [json.loads(line) for line in samples_file.read_text().splitlines()]
    assert len(samples) == 12
    for sample in samples:
        row = rows[int(sample["prompt_id"][1:])]
        assert sample["prompt"] == [{"role": "user", "content": row["prompt"]}]
        assert sample["reference"] == row["reference"]
        assert sample["status"] == "OK" and sample["score"] in (0.0, 1.0)
        assert sample["correct"] == (sample["score"] == 1.0)
    # the report agrees with the saved samples: pass@1 is the mean per-prompt accuracy, and
    # pass@4 (all four samples) is the fraction of prompts with a correct one
    correct = [sum(s["correct"] for s in samples if s["prompt_id"] == p["id"]) for p in per_prompt]
    assert [p["correct"] for p in per_prompt] == correct
    assert report["pass@1"] == pytest.approx(sum(c / 4 for c in correct) / 3)
    assert report["pass@4"] == pytest.approx(sum(c > 0 for c in correct) / 3)
    assert report["accuracy"] == pytest.approx(sum(correct) / 12)
    table = dict(line.split(maxsplit=1) for line in capsys.readouterr().out.splitlines())
    assert table["pass@2"] == f"{report['pass@2']:.4f}"
    assert table["maj@4"] == f"{report['maj@4']:.4f}"
    assert table["masked_samples"] == "0"


def test_sidecar_that_cannot_start_is_reported(
    tmp_path: Path, tiny_model: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    prompts = toy.write_rl_prompts(tmp_path / "p.jsonl", 2, seed=0, reward={"name": "math"})
    bad_server_config = tmp_path / "server.yaml"
    bad_server_config.write_text("server: {workers: 0}\n")
    config = tmp_path / "c.yaml"
    settings = {
        "model": {"path": str(tiny_model)},
        "data": {"path": str(prompts)},
        "reward": {"sidecar_config": str(bad_server_config)},
        "output": {"dir": str(tmp_path / "o")},
    }
    config.write_text(yaml.safe_dump(settings))
    assert main(["train", "--config", str(config)]) == 1
    assert "error: reward server: the server did not start" in capsys.readouterr().err


def test_rm_trains_a_reward_model_with_its_own_flags(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tiny_models import random_lm

    with pytest.raises(SystemExit) as exit_info:
        main(["rm", "--help"])  # rm's own parser answers, not rl-client's
    assert exit_info.value.code == 0
    assert "usage: rl-client rm" in capsys.readouterr().out

    pairs = tmp_path / "pairs.jsonl"
    rows = [{"prompt": "rate it", "chosen": "good answer", "rejected": "bad answer"}] * 8
    pairs.write_text("".join(json.dumps(row) + "\n" for row in rows))
    out = tmp_path / "rm"
    flags = ["--data", str(pairs), "--base", str(random_lm(tmp_path / "base")), "--out", str(out)]
    assert main(["rm", *flags, "--batch-size", "4", "--device", "cpu"]) == 0
    saved = json.loads((out / "training.json").read_text())
    assert saved["config"]["batch_size"] == 4 and "eval_accuracy" in saved["metrics"]

    with pytest.raises(SystemExit) as exit_info:
        main(["rm", *flags, "--eval-fraction", "2"])
    assert exit_info.value.code == 2 and "--eval-fraction" in capsys.readouterr().err
