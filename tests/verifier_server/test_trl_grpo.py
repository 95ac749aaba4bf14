"""TRL's own GRPOTrainer, a few steps on a tiny local model, with `trl_reward` against a real
server: the rewards TRL logs are the server's scores, and an item the server could not
verify reaches TRL as None (NaN in its logs), not as 0.0."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from server_process import ServerProcess
from tiny_models import one_torch_thread, random_lm

from verifier_server.client import RewardClient
from verifier_server.integrations import trl_reward
from verifier_server.types import Item, RewardSpec, Status

pytestmark = [pytest.mark.integration, pytest.mark.slow]

NAME = "verifier_string_check"
SPEC = RewardSpec("string_check", {"operation": "contains"})


def test_grpo_trainer_logs_the_servers_scores_and_nan_for_unverified_items(
    server: ServerProcess, tmp_path: Path
) -> None:
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    model = random_lm(tmp_path / "model")
    # "the" is a reference string_check can use; None is not (INVALID_REQUEST for its items).
    answers = {"the capital of france is": "the", "what is a good answer": None}
    dataset = Dataset.from_dict({"prompt": list(answers), "answer": list(answers.values())})
    config = GRPOConfig(
        output_dir=str(tmp_path / "out"),
        per_device_train_batch_size=4,
        num_generations=2,
        max_completion_length=6,
        max_steps=2,
        learning_rate=1e-3,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        seed=0,
    )
    reward = trl_reward(SPEC, address=server.address, reference_column="answer")
    with one_torch_thread():
        trainer = GRPOTrainer(
            model=str(model), reward_funcs=reward, args=config, train_dataset=dataset
        )
        trainer.train()

    prompts = list(trainer._logs["prompt"])
    completions = list(trainer._logs["completion"])
    logged = list(trainer._logs["rewards"][NAME])
    assert len(completions) == len(logged) == 4  # the last step's generation batch
    items = [
        Item(id=str(n), completion=c, reward=SPEC, prompt=p, reference=answers[p])
        for n, (p, c) in enumerate(zip(prompts, completions, strict=True))
    ]
    with RewardClient(server.address) as client:
        results = client.score(items)
    for result, value in zip(results, logged, strict=True):
        if result.status == Status.OK:
            assert value == result.score
        else:
            assert result.status == Status.INVALID_REQUEST and math.isnan(value)
    assert sum(math.isnan(v) for v in logged) == 2  # both completions of the None prompt
    # The step's logged mean is over the verified items only (NaN-aware), and the status
    # shares reached TRL's metrics.
    last = [entry for entry in trainer.state.log_history if f"rewards/{NAME}/mean" in entry][-1]
    verified = [v for v in logged if not math.isnan(v)]
    assert last[f"rewards/{NAME}/mean"] == pytest.approx(sum(verified) / len(verified))
    assert last[f"{NAME}/status_invalid_request"] == pytest.approx(0.5)
    assert last[f"{NAME}/status_ok"] == pytest.approx(0.5)
