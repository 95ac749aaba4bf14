"""The Bradley-Terry trainer: the loss against hand-worked values, the pairs file's errors, and
a tiny reward model trained on a toy preference set, then served through the verifier."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import pytest
import torch
from server_process import ServerProcess
from tiny_models import one_torch_thread, random_lm

from rl_client.reward_model.loss import bradley_terry_loss
from rl_client.reward_model.pairs import PairsError, load_pairs
from rl_client.reward_model.train import TrainConfig, parse_args, train
from rm_encoding.encoding import conversation
from verifier_server.client import RewardClient
from verifier_server.types import Item, RewardSpec, Status
from verifier_server.verifiers.reward_model.model import RewardModel


def test_loss_matches_hand_worked_values() -> None:
    out = bradley_terry_loss(torch.tensor([2.0, 0.0]), torch.tensor([0.0, 0.0]))
    # -log sigmoid(2) = log(1 + e^-2) = 0.126928; -log sigmoid(0) = log 2 = 0.693147
    assert out.loss.item() == pytest.approx((math.log1p(math.exp(-2)) + math.log(2)) / 2)
    assert out.metrics["accuracy"] == 0.5  # the tie does not count as right
    assert out.metrics["margin"] == 1.0  # (2 + 0) / 2


def test_loss_gradient_pushes_chosen_up_and_rejected_down() -> None:
    chosen = torch.tensor([0.0], requires_grad=True)
    rejected = torch.tensor([0.0], requires_grad=True)
    bradley_terry_loss(chosen, rejected).loss.backward()
    # d/dc -log sigmoid(c - r) = -(1 - sigmoid(0)) = -0.5, and +0.5 for r
    assert chosen.grad.item() == pytest.approx(-0.5) and rejected.grad.item() == pytest.approx(0.5)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("not json", r"pairs.jsonl:2: not valid JSON"),
        ('["a"]', r"pairs.jsonl:2: not a JSON object"),
        ('{"prompt": "p", "chosen": "c"}', r"pairs.jsonl:2: 'rejected' must be a string"),
        ('{"prompt": 3, "chosen": "c", "rejected": "r"}', r"'prompt' must be a string or a list"),
        ('{"prompt": [{"role": "user"}], "chosen": "c", "rejected": "r"}', r"prompt\[0\] must"),
    ],
)
def test_bad_pairs_files_name_the_line_and_field(tmp_path: Path, line: str, message: str) -> None:
    path = tmp_path / "pairs.jsonl"
    path.write_text('{"prompt": "p", "chosen": "c", "rejected": "r"}\n' + line + "\n")
    with pytest.raises(PairsError, match=message):
        load_pairs(path)


def test_chat_prompts_become_the_conversation(tmp_path: Path) -> None:
    path = tmp_path / "pairs.jsonl"
    messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]
    path.write_text(json.dumps({"prompt": messages, "chosen": "hello", "rejected": "go"}) + "\n")
    (pair,) = load_pairs(path)
    assert pair.chosen == [*messages, {"role": "assistant", "content": "hello"}]
    assert pair.rejected[-1] == {"role": "assistant", "content": "go"}


def test_flags_are_validated_with_their_names() -> None:
    with pytest.raises(SystemExit):
        parse_args(["--data", "d", "--base", "b", "--out", "o", "--eval-fraction", "1.5"])
    cfg = parse_args(["--data", "d", "--base", "b", "--out", "o", "--batch-size", "4"])
    assert cfg.batch_size == 4 and cfg.dtype == "float32"


# ---- a toy preference task: the chosen completion praises, the rejected one complains

GOOD, BAD = ["good", "right", "clear", "fine"], ["bad", "wrong", "worse"]
_FILLER = "the a is it this that and or of to in for on with as answer response text"
FILLER = _FILLER.split()
PROMPTS = ["rate the answer", "what is the capital of france", "judge this reply"]


def toy_pairs(n: int, seed: int) -> list[dict[str, str]]:
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        words = rng.choices(FILLER, k=rng.randint(3, 8))
        position = rng.randint(0, len(words))
        chosen = [*words[:position], rng.choice(GOOD), *words[position:]]
        rejected = [*words[:position], rng.choice(BAD), *words[position:]]
        rows.append(
            {
                "prompt": rng.choice(PROMPTS),
                "chosen": " ".join(chosen),
                "rejected": " ".join(rejected),
            }
        )
    return rows


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict[str, str]]]:
    directory = tmp_path_factory.mktemp("toy")
    data = directory / "pairs.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in toy_pairs(200, seed=1)))
    out = directory / "rm"
    logs: list[str] = []
    with one_torch_thread():
        metrics = train(
            TrainConfig(
                data=data,
                base=random_lm(directory / "base"),
                out=out,
                epochs=2,
                lr=3e-3,
                batch_size=16,
                max_length=64,
                eval_fraction=0.2,
                device="cpu",
            ),
            log=logs.append,
        )
    assert metrics["eval_accuracy"] > 0.8, logs
    saved = json.loads((out / "training.json").read_text())
    assert saved["config"]["lr"] == 3e-3 and saved["metrics"] == metrics
    return out, toy_pairs(60, seed=99)  # held out: never seen in training


@pytest.mark.slow
def test_a_trained_model_ranks_held_out_pairs_well_above_chance(trained) -> None:
    out, held_out = trained
    model = RewardModel.load(out)
    chosen = model.score([conversation(r["prompt"], (), r["chosen"]) for r in held_out])
    rejected = model.score([conversation(r["prompt"], (), r["rejected"]) for r in held_out])
    right = sum(c.raw > r.raw for c, r in zip(chosen, rejected, strict=True))
    assert right / len(held_out) >= 0.85  # chance is 0.5


@pytest.mark.slow
@pytest.mark.integration
def test_the_trained_model_is_served_through_the_verifier(trained, tmp_path: Path) -> None:
    out, held_out = trained
    config = tmp_path / "server.yaml"
    model_settings = {"path": str(out), "max_batch_size": 64, "max_wait_ms": 50, "max_length": 64}
    config.write_text(
        json.dumps(
            {
                "server": {"workers": 1},
                "verifier_settings": {
                    "reward_model": {"models": {"toy": model_settings}, "torch_threads": 1}
                },
            }
        )
    )
    server = ServerProcess(["--config", str(config)])
    try:
        with RewardClient(server.address) as client:
            client.wait_ready()
            assert client.health("verifier.v1.VerifierService/reward_model/toy") == "SERVING"
            items = [
                Item(
                    id=f"{kind}{n}",
                    prompt=r["prompt"],
                    completion=r[kind],
                    reward=RewardSpec("reward_model"),
                )
                for n, r in enumerate(held_out)
                for kind in ("chosen", "rejected")
            ]
            results = {r.id: r for r in client.score(items)}
            sigmoid = client.score(
                [
                    Item(
                        id="s",
                        prompt=held_out[0]["prompt"],
                        completion=held_out[0]["chosen"],
                        reward=RewardSpec("reward_model", {"normalize": "sigmoid"}),
                    )
                ]
            )[0]
    finally:
        server.stop()
    assert all(r.status == Status.OK for r in results.values())
    right = sum(
        results[f"chosen{n}"].score > results[f"rejected{n}"].score for n in range(len(held_out))
    )
    assert right / len(held_out) >= 0.85
    # Served exactly as trained: the same scores as the model loaded in this process.
    local = RewardModel.load(out).score(
        [conversation(r["prompt"], (), r["chosen"]) for r in held_out]
    )
    served = [results[f"chosen{n}"].score for n in range(len(held_out))]
    assert served == pytest.approx([s.raw for s in local], abs=1e-4)
    assert max(r.details["batch_size"] for r in results.values()) > 1
    assert sigmoid.score == pytest.approx(1 / (1 + math.exp(-results["chosen0"].score)), abs=1e-4)
