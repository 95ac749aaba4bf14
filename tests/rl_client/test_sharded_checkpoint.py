"""Checkpoints of a policy sharded by FSDP2 over 2 real processes (gloo on loopback, a tiny
Llama): exact resume on 2 processes, resume on 1 process and from 1 process onto 2, a
process SIGKILLed mid-save, the export to a plain Hugging Face directory; and the pure parts
(per-process state across world sizes, optimiser state by name)."""

from __future__ import annotations

import random
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import AutoModelForCausalLM

from rl_client.async_collect import StepBatch
from rl_client.checkpoint import (
    CheckpointError,
    derived_seed,
    latest_checkpoint,
    load_checkpoint,
    policy_dir,
    prompts_ahead,
    resumed_cursor,
    resumed_rank_state,
    rewound_cursor,
    set_rng_state,
)
from rl_client.cli import main
from rl_client.data import PromptCursor
from rl_client.export import export_policy
from rl_client.models import load_tokenizer
from rl_client.sharded_checkpoint import named_optimizer_state
from tests.support.sharded_training import (
    PROBE,
    SEED,
    build_learner,
    full_state,
    launch,
    save,
    train_step,
)
from tests.support.tiny_models import one_torch_thread, random_lm

# Tests that start 2 real worker processes (gloo on loopback).
TWO_PROCESSES = pytest.mark.integration


@pytest.fixture(autouse=True)
def one_process(monkeypatch: pytest.MonkeyPatch) -> None:
    """The test process itself is never part of a torchrun world."""
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="module")
def llama(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return random_lm(tmp_path_factory.mktemp("llama"), seed=3)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, llama: Path) -> Path:
    """2 processes: 3 steps, checkpoints after steps 1 and 2, full states dumped."""
    output_dir = tmp_path_factory.mktemp("sharded")
    _check_ranks(launch("train", output_dir, llama))
    return output_dir


def _check_ranks(results: list[Any]) -> None:
    for rank, result in enumerate(results):
        assert result.returncode == 0, f"rank {rank} failed:\n{result.stdout[-3000:]}"


def _load(path: Path) -> dict[str, Any]:
    return torch.load(path, weights_only=False)


def assert_same_state(actual: dict[str, Any], expected: dict[str, Any]) -> None:
    """Bit-identical weights, AdamW moments and step counts, and learning rate."""
    assert actual["model"].keys() == expected["model"].keys()
    for name, tensor in expected["model"].items():
        assert torch.equal(actual["model"][name], tensor), name
    assert actual["optimizer"].keys() == expected["optimizer"].keys()
    for name, moments in expected["optimizer"].items():
        for key in ("exp_avg", "exp_avg_sq", "step"):
            assert torch.equal(actual["optimizer"][name][key], moments[key]), (name, key)
    assert actual["lr"] == expected["lr"]


@TWO_PROCESSES
def test_two_processes_resume_exactly(trained: Path, llama: Path) -> None:
    # Restarted from step 2's checkpoint: the same weights, moments and RNG streams as the
    # run that went on, and step 3 (a batch drawn from each process's restored stream)
    # lands on the same weights bit for bit.
    _check_ranks(launch("resume", trained, llama))
    for step in (2, 3):
        resumed, uninterrupted = (
            _load(trained / f"resumed_{step}.pt"),
            _load(trained / f"dump_{step}.pt"),
        )
        assert_same_state(resumed, uninterrupted)
        assert torch.equal(resumed["rng"], uninterrupted["rng"])
    # Step 3 moved the weights: the comparison above is not of two untouched copies.
    before, after = _load(trained / "dump_2.pt"), _load(trained / "dump_3.pt")
    assert not torch.equal(
        before["model"]["policy.lm_head.weight"], after["model"]["policy.lm_head.weight"]
    )


@TWO_PROCESSES
def test_one_process_resumes_a_two_process_checkpoint(trained: Path, llama: Path) -> None:
    # DCP reshards on load: one process gets the full weights and moments the 2 processes
    # held between them; its RNG is fresh (seeded from train.seed, the step and its rank).
    checkpoint = trained / "checkpoints" / "step_000002"
    assert latest_checkpoint(trained) == checkpoint
    assert policy_dir(checkpoint) is None
    with one_torch_thread():
        learner = build_learner(llama, sharded=False)
        step, cursor, rank_state = load_checkpoint(checkpoint, learner=learner, seed=SEED)
        assert (step, cursor) == (2, {"epoch": 0, "position": 4, "size": 10})
        assert rank_state == {"rng": {"seed": derived_seed(SEED, 2, 0)}, "rollout_buffer": []}
        assert_same_state(full_state(learner), _load(trained / "dump_2.pt"))


@TWO_PROCESSES
def test_export_loads_as_a_plain_model_with_the_trained_logits(
    trained: Path, tmp_path: Path
) -> None:
    # `rl-client export` here, without torchrun; and rank 0's export inside the 2-process
    # run (what `Run.save` does after the last step).
    out_dir = tmp_path / "exported"
    checkpoint = trained / "checkpoints" / "step_000002"
    assert main(["export", str(checkpoint), str(out_dir)]) == 0
    for exported in (out_dir, trained / "final"):
        assert (exported / "model.safetensors").exists()
        assert not (exported / "adapter_config.json").exists()
        with one_torch_thread(), torch.no_grad():
            model = AutoModelForCausalLM.from_pretrained(str(exported))
            logits = model(input_ids=PROBE).logits
        # The sharded model's own logits on the same input, on rank 0 after step 2.
        torch.testing.assert_close(logits, _load(trained / "logits_2.pt"), rtol=0, atol=1e-5)
        assert load_tokenizer(exported).chat_template is not None


@TWO_PROCESSES
def test_a_process_killed_mid_save_leaves_the_previous_checkpoint(
    llama: Path, tmp_path: Path
) -> None:
    results = launch("kill", tmp_path, llama)
    assert results[1].returncode == -9  # SIGKILL, after writing its shards of step 2
    assert results[0].returncode != 0  # its peer is gone: the barrier fails
    assert latest_checkpoint(tmp_path) == tmp_path / "checkpoints" / "step_000001"
    assert (tmp_path / "checkpoints" / ".partial_step_000002" / "sharded").is_dir()
    with one_torch_thread():  # and step 1's checkpoint loads
        learner = build_learner(llama, sharded=False)
        step, _, _ = load_checkpoint(latest_checkpoint(tmp_path), learner=learner, seed=SEED)
    assert step == 1


@TWO_PROCESSES
def test_two_processes_resume_a_one_process_checkpoint(llama: Path, tmp_path: Path) -> None:
    # Today's one-process layout (save_pretrained + trainer.pt) onto 2 processes: the
    # optimiser state by index becomes by name and each process keeps its shard.
    with one_torch_thread():
        torch.manual_seed(SEED)
        learner = build_learner(llama, sharded=False)
        train_step(learner)
        train_step(learner)
        checkpoint = save(learner, tmp_path, llama, 2)
        expected = full_state(learner)
    assert (checkpoint / "policy" / "model.safetensors").exists()
    _check_ranks(launch("resume", tmp_path, llama))
    resumed = _load(tmp_path / "resumed_2.pt")
    assert_same_state(resumed, expected)


def test_one_process_layout_round_trip_and_keep(llama: Path, tmp_path: Path) -> None:
    with one_torch_thread():
        learner = build_learner(llama, sharded=False)
        train_step(learner)
        (tmp_path / "checkpoints" / ".partial_step_000009").mkdir(parents=True)
        for step in (1, 2, 3):
            save(learner, tmp_path, llama, step, ahead=[f"batch of step {step + 1}"])
        assert not (tmp_path / "checkpoints" / ".partial_step_000009").exists()  # cleaned up
        (tmp_path / "checkpoints" / ".partial_step_000004").mkdir()  # a save that was killed
        checkpoint = latest_checkpoint(tmp_path)
        assert checkpoint == tmp_path / "checkpoints" / "step_000003"
        assert sorted(p.name for p in (tmp_path / "checkpoints").glob("step_*")) == [
            "step_000002",
            "step_000003",
        ]
        expected = full_state(learner)
        fresh = build_learner(checkpoint / "policy", sharded=False)
        step, _, rank_state = load_checkpoint(checkpoint, learner=fresh, seed=SEED)
    assert step == 3 and rank_state["rollout_buffer"] == ["batch of step 4"]
    assert_same_state(full_state(fresh), expected)


def test_export_of_a_one_process_checkpoint_is_its_policy(llama: Path, tmp_path: Path) -> None:
    with one_torch_thread():
        learner = build_learner(llama, sharded=False)
        train_step(learner)
        checkpoint = save(learner, tmp_path, llama, 1)
        out_dir = export_policy(checkpoint, tmp_path / "exported")
        exported = AutoModelForCausalLM.from_pretrained(str(out_dir)).state_dict()
    for name, tensor in learner.model.state_dict().items():
        assert torch.equal(exported[name], tensor), name


def test_export_of_a_lora_checkpoint_merges_the_adapters(llama: Path, tmp_path: Path) -> None:
    with one_torch_thread():
        learner = build_learner(llama, sharded=False, lora=True)
        policy = learner.model
        train_step(learner)  # LoRA's B starts at 0: move it
        checkpoint = save(learner, tmp_path, llama, 1, lora=True)
        assert (checkpoint / "policy" / "adapter_config.json").exists()
        out_dir = export_policy(checkpoint, tmp_path / "merged")
        with torch.no_grad():
            expected = policy(input_ids=PROBE).logits
            merged = AutoModelForCausalLM.from_pretrained(str(out_dir))
            base = AutoModelForCausalLM.from_pretrained(str(llama))
            logits, base_logits = merged(input_ids=PROBE).logits, base(input_ids=PROBE).logits
    assert not (out_dir / "adapter_config.json").exists()
    torch.testing.assert_close(logits, expected, rtol=0, atol=1e-5)
    assert not torch.allclose(base_logits, expected, atol=1e-4)  # the adapters did something


@TWO_PROCESSES
def test_a_sharded_lora_checkpoint_resumes_on_one_process_and_exports_merged(
    llama: Path, tmp_path: Path
) -> None:
    # FSDP2 over a peft model (frozen base, trainable adapters in the same blocks): the
    # checkpoint holds the AdamW moments of the adapters (and the value head) only.
    _check_ranks(launch("lora", tmp_path, llama))
    checkpoint = tmp_path / "checkpoints" / "step_000002"
    expected = _load(tmp_path / "dump_2.pt")
    assert len(expected["optimizer"]) == 4 + 2  # lora_A, lora_B of q_proj, v_proj; head
    with one_torch_thread():
        learner = build_learner(llama, sharded=False, lora=True)
        load_checkpoint(checkpoint, learner=learner, seed=SEED)
        assert_same_state(full_state(learner), expected)
        out_dir = export_policy(checkpoint, tmp_path / "merged")
        with torch.no_grad():
            logits = AutoModelForCausalLM.from_pretrained(str(out_dir))(input_ids=PROBE).logits
    assert not (out_dir / "adapter_config.json").exists()
    torch.testing.assert_close(logits, _load(tmp_path / "logits_2.pt"), rtol=0, atol=1e-5)


def test_export_of_a_missing_checkpoint_is_a_one_line_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["export", str(tmp_path / "nope"), str(tmp_path / "out")]) == 2
    assert "not a complete checkpoint (no state.json)" in capsys.readouterr().err


# ---- pure parts


def test_same_world_size_gets_each_process_its_own_state() -> None:
    saved = [{"rng": {"python": r}, "rollout_buffer": [f"rank {r}"]} for r in range(2)]
    state = resumed_rank_state(saved, rank=1, world_size=2, seed=0, step=5)
    assert state == {"rng": {"python": 1}, "rollout_buffer": ["rank 1"]}


def test_another_world_size_gets_fresh_streams_per_rank() -> None:
    saved = [{"rng": {"python": r}, "rollout_buffer": []} for r in range(2)]
    states = [resumed_rank_state(saved, rank=r, world_size=4, seed=9, step=5) for r in range(4)]
    seeds = [state["rng"]["seed"] for state in states]
    assert seeds == [derived_seed(9, 5, r) for r in range(4)]
    assert len(set(seeds)) == 4  # each process its own stream
    assert derived_seed(9, 5, 0) != derived_seed(9, 6, 0) != derived_seed(10, 5, 0)
    assert all(0 <= seed < 2**63 for seed in seeds)


def test_another_world_size_generates_the_async_batches_again() -> None:
    # 2 processes, 2 async batches generated ahead of step 5 (steps 6 and 7), 2 prompts a
    # step split 1 + 1: the cursor stands after the 4 prompts they took. One process drops
    # the batches and, from the rewound cursor, draws exactly those prompts again.
    cursor = PromptCursor(5, seed=1, shuffle=True)
    cursor.take(3)  # steps 1-5 took some prompts, into the second epoch below
    ahead = cursor.take(4)  # epoch 0's last 2, epoch 1's first 2
    saved_cursor = cursor.state_dict()
    assert saved_cursor["epoch"] == 1
    saved = [
        {"rng": {}, "rollout_buffer": [StepBatch(6, None, ["g"]), StepBatch(7, None, ["g"])]}
        for _ in range(2)
    ]
    assert resumed_rank_state(saved, rank=0, world_size=1, seed=0, step=5)["rollout_buffer"] == []
    assert prompts_ahead(saved) == 4
    cursor.load_state_dict(rewound_cursor(saved_cursor, prompts_ahead(saved)))
    assert cursor.take(4) == ahead


def test_unequal_async_buffers_resume_each_process_s_own_cursor() -> None:
    # 2 processes, 2 prompts a step (1 + 1): when step 2's checkpoint was taken, rank 0's
    # rollout thread had generated steps 3 and 4, rank 1's step 3 only; each process's
    # cursor stands after its own batches (state.json holds rank 0's).
    cursor = PromptCursor(16, seed=1, shuffle=True)
    cursor.take(4)  # steps 1 and 2
    after_step_2 = cursor.state_dict()
    cursor.take(2)
    after_step_3 = cursor.state_dict()
    cursor.take(2)
    after_step_4 = cursor.state_dict()
    saved = [
        {"rollout_buffer": [StepBatch(3, None, ["g"]), StepBatch(4, None, ["g"])]},
        {"rollout_buffer": [StepBatch(3, None, ["g"])]},
    ]
    saved[0]["cursor"], saved[1]["cursor"] = after_step_4, after_step_3
    # Rank 1 resumed from rank 0's cursor would draw step 5's prompt for step 4.
    resumed = [resumed_cursor(saved, after_step_4, rank=r, world_size=2) for r in range(2)]
    assert resumed == [after_step_4, after_step_3]
    # One process generates steps 3 and 4 again, from the cursor right after step 2 (rank
    # 1's moved back over step 3's 1 + 1 prompts; not rank 0's moved back over 3).
    assert resumed_cursor(saved, after_step_4, rank=0, world_size=1) == after_step_2
    # A one-process checkpoint's state holds no cursor of its own: state.json's stands
    # after its batches.
    one = [{"rollout_buffer": [StepBatch(3, None, ["g", "g"])]}]
    assert resumed_cursor(one, after_step_3, rank=0, world_size=1) == after_step_3
    assert resumed_cursor(one, after_step_3, rank=1, world_size=2) == after_step_2


def test_a_cursor_moves_back_within_and_across_epochs() -> None:
    assert rewound_cursor({"epoch": 2, "position": 5, "size": 10}, 3)["position"] == 2
    # 5 back from position 1 of epoch 2: epoch 2's first prompt, then epoch 1's last 4.
    assert rewound_cursor({"epoch": 2, "position": 1, "size": 10}, 5) == {
        "epoch": 1,
        "position": 6,
        "size": 10,
    }
    with pytest.raises(CheckpointError, match="cannot move the data cursor back 4"):
        rewound_cursor({"epoch": 0, "position": 3, "size": 10}, 4)


def test_a_seed_state_seeds_python_and_torch() -> None:
    set_rng_state({"seed": 123})
    drawn = (random.random(), torch.rand(2))
    random.seed(123)
    torch.manual_seed(123)
    assert drawn[0] == random.random() and torch.equal(drawn[1], torch.rand(2))


def test_optimizer_state_by_index_becomes_by_name() -> None:
    state = {
        "state": {0: {"step": 1}, 2: {"step": 3}},  # parameter 1 had no gradient yet
        "param_groups": [{"lr": 0.1, "params": [0, 1]}, {"lr": 0.2, "params": [2]}],
    }
    named = named_optimizer_state(state, ["a", "b", "c"])
    assert named == {
        "state": {"a": {"step": 1}, "c": {"step": 3}},
        "param_groups": [{"lr": 0.1, "params": ["a", "b"]}, {"lr": 0.2, "params": ["c"]}],
    }
    with pytest.raises(ValueError, match="holds 3 parameters, this learner trains 2"):
        named_optimizer_state(state, ["a", "b"])


@TWO_PROCESSES
def test_copied_checkpoint_dirs_stay_loadable(trained: Path, tmp_path: Path, llama: Path) -> None:
    # DCP's metadata names files relative to the checkpoint: a moved checkpoint still loads.
    moved = tmp_path / "checkpoints" / "step_000002"
    shutil.copytree(trained / "checkpoints" / "step_000002", moved)
    with one_torch_thread():
        learner = build_learner(llama, sharded=False)
        load_checkpoint(moved, learner=learner, seed=SEED)
        assert_same_state(full_state(learner), _load(trained / "dump_2.pt"))
