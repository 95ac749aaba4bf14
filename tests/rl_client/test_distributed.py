"""Training on several processes (torchrun, FSDP2 on gloo, 2 real processes on loopback):
the update of 2 processes x B/2 groups equals 1 process x B groups, weights and metrics,
for the batch-wide statistics too, when the processes keep unequal numbers of groups, and
for the rft / DPO rounds;
`torchrun -m rl_client train` runs end to end with one log; and the pure pieces
(shares, batch totals, merged metrics) against hand-worked values."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import yaml
from fsdp_worker import CONFIGS
from launch_torchrun import torchrun
from rl_helpers import train_settings
from sharded_training import free_port
from torch.distributed.tensor import DTensor

from rl_client import toy
from rl_client.algorithms.advantages import AdvantageOptions, reinforce_pp_advantages, whiten
from rl_client.algorithms.losses import Normalizer
from rl_client.batch import filler_batch
from rl_client.config import TrainConfig, build_config
from rl_client.distributed import SINGLE, World, batch_total, share, world_from_env
from rl_client.learner import StepMetrics
from rl_client.models import load_policy
from rl_client.preflight import world_problems
from rl_client.run import _learner

ROOT = Path(__file__).resolve().parents[2]
WORKER = ROOT / "tests" / "support" / "fsdp_worker.py"


def _env() -> dict[str, str]:
    """The worktree's code first (a script's own folder heads sys.path, not the cwd)."""
    path = os.pathsep.join([str(ROOT), str(ROOT / "tests" / "support")])
    return {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1"}


def _torchrun(*args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    return torchrun(args, env=_env(), cwd=ROOT, timeout=timeout)


# ---- the update: 2 processes == 1 process


# Two launches (each under a minute on a busy 2-core machine): the policy gradient's
# configs, and the rounds'.
FAMILIES = {
    "policy_gradient": [name for name in CONFIGS if name not in ("rft", "online_dpo")],
    "rounds": ["rft", "online_dpo"],
}


@pytest.fixture(scope="module")
def toy_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return toy.build_model(tmp_path_factory.mktemp("fsdp") / "model", seed=0)


@pytest.mark.integration
@pytest.mark.timeout(600)
@pytest.mark.parametrize("family", list(FAMILIES))
def test_two_processes_update_like_one(family: str, toy_model_dir: Path, tmp_path: Path) -> None:
    # fsdp_worker's batch: step 1 leaves process 0 of 2 one group (or none, under dynamic
    # sampling or DPO) and process 1 two; micro-batches of 3 rows give them unequal counts;
    # two passes and a clip that bites. Float sums in another order differ by ~1e-7; a step
    # moves the weights by ~2e-3.
    names = FAMILIES[family]
    one, two = tmp_path / "one.pt", tmp_path / "two.pt"
    alone = subprocess.run(
        [sys.executable, str(WORKER), str(toy_model_dir), str(one), *names],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert alone.returncode == 0, alone.stderr[-3000:]
    pair = _torchrun(str(WORKER), str(toy_model_dir), str(two), *names, timeout=300)
    assert pair.returncode == 0, pair.stderr[-3000:]
    for name in names:
        _assert_same_update(torch.load(one)[name], torch.load(two)[name], name)


def _assert_same_update(one: dict, two: dict, name: str) -> None:
    for step in range(2):
        a, b = one["weights"][step + 1], two["weights"][step + 1]
        assert a.keys() == b.keys()
        for key in a:
            torch.testing.assert_close(b[key], a[key], rtol=0, atol=2e-6, msg=f"{name} {key}")
        before = one["weights"][step]
        moved = max(float((a[k] - before[k]).abs().max()) for k in before)
        assert moved > 1e-3, name  # the step trained: not equal by standing still
        # The metrics are the global batch's, logged once: equal to the one process's.
        ours, reference = two["metrics"][step], one["metrics"][step]
        assert ours.keys() == reference.keys(), name
        for metric, value in reference.items():
            assert ours[metric] == pytest.approx(value, rel=1e-5, abs=1e-6), (name, metric)
    assert one["metrics"][0]["grad_norm"] > one["max_grad_norm"], name  # the clip bit


# ---- end to end: torchrun -m rl_client train


@pytest.mark.integration
@pytest.mark.timeout(600)
@pytest.mark.parametrize("mode", ["sync", "async"])
def test_torchrun_trains_with_one_log_and_one_sidecar(
    tiny_model: Path, toy_prompts: Path, tmp_path: Path, mode: str
) -> None:
    # Dynamic sampling: each round's kept count is global, so both processes go back for
    # the same fresh prompts; in async mode it is reduced from the rollout thread on a
    # process group of its own while the trainer's collectives run. A checkpoint every step:
    # in async mode step 1's weight sync lets each rollout thread start step 2 (on_stale
    # 'wait', max_staleness 0) just as its trainer pauses it to save; process 0 writes the
    # log first, so its thread tends to start while process 1's is already held, and the
    # pause must still stop both after the same step (else process 0's thread waits in its
    # reduction for process 1's, and both trainers in the save: a hang). The periodic eval,
    # by process 0 alone, pauses them all the same way, on the step of a save too.
    output = tmp_path / "run"
    settings = train_settings(tiny_model, toy_prompts, output)
    settings["rollout"].update({"prompts_per_step": 4, "mode": mode})
    settings["rollout"].update({"on_stale": "wait", "max_staleness": 0})
    settings["output"]["save_every"] = 1
    settings["eval"] = {"every": 1, "limit": 2, "n_samples": 2}
    settings["data"]["shuffle"] = False  # the cursor's order is the file's
    settings["algorithm"].update({"preset": "dapo", "max_gen_rounds": 2})
    settings["train"].update({"device": "cpu", "threads": 1})
    settings["reward"] = {"sidecar_workers": 1}
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(settings))
    done = _torchrun("-m", "rl_client", "train", "--config", str(config), timeout=500)
    assert done.returncode == 0, done.stderr[-3000:]
    metrics = [json.loads(line) for line in (output / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == [1, 2]  # written once, by process 0
    for step in metrics:
        assert step["eval/time_s"] > 0  # evaluated by process 0, in its log
        generated = step["gen_rounds"]
        assert 1 <= generated <= 2
        assert step["train_groups"] + step["filtered_groups"] + step["dropped_groups"] >= 4
        assert step["dynamic_sampling_exhausted"] == (step["train_groups"] < 4)
    rollouts = [json.loads(line) for line in (output / "rollouts.jsonl").read_text().splitlines()]
    # Every completion of both processes, each once: G=4 per group sampled; together the
    # processes drew the file's rows in order, none twice (one cursor, contiguous shares).
    sampled_groups = sum(
        m["train_groups"] + m["filtered_groups"] + m["dropped_groups"] for m in metrics
    )
    assert len(rollouts) == 4 * sampled_groups
    drawn = sorted(int(r["prompt_id"][1:]) for r in rollouts[::4])
    assert drawn == list(range(sampled_groups))  # 16 rows: no step goes past the first epoch
    assert done.stdout.count("reward_mean per step") == 1  # the summary: process 0 only
    assert (output / "config.yaml").exists()
    first = output / "checkpoints" / "step_000001"
    ranks = sorted(first.glob("rank_*.pt"))
    assert len(ranks) == 2 and (output / "checkpoints" / "step_000002").is_dir()
    # Both processes saved the same async batches (rank 0's cursor stands after them).
    buffered = [
        [b.step for b in torch.load(r, weights_only=False)["rollout_buffer"]] for r in ranks
    ]
    assert buffered[0] == buffered[1]


@pytest.mark.integration
@pytest.mark.timeout(300)
def test_processes_given_different_configs_stop_at_start_naming_the_key(
    tiny_model: Path, toy_prompts: Path, tmp_path: Path
) -> None:
    # Each process reads its own config file, as each node of a multi-node launch does, and
    # process 1's has another lr: unchecked, the two would each step their own shards with
    # their own lr (another ppo_epochs would leave their collectives unpaired: a hang). Both
    # stop before loading anything, naming the key and every process's value.
    settings = train_settings(tiny_model, toy_prompts, tmp_path / "run")
    settings["rollout"]["prompts_per_step"] = 4
    settings["train"].update({"device": "cpu", "threads": 1})
    port, procs = str(free_port()), []
    for rank, lr in enumerate([1e-3, 2e-3]):
        settings["train"]["lr"] = lr
        config = tmp_path / f"config_{rank}.yaml"
        config.write_text(yaml.safe_dump(settings))
        ranks = {"RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": "2"}
        env = {**_env(), **ranks, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port}
        command = [sys.executable, "-m", "rl_client", "train", "--config", str(config)]
        procs.append(
            subprocess.Popen(command, env=env, cwd=ROOT, stderr=subprocess.PIPE, text=True)
        )
    try:
        errors = [proc.communicate(timeout=200)[1] for proc in procs]
    finally:
        for proc in procs:
            proc.kill()
    assert [proc.returncode for proc in procs] == [2, 2], errors
    for error in errors:
        assert "different configs (train.lr: rank 0 0.001, rank 1 0.002)" in error
    assert not (tmp_path / "run" / "checkpoints").exists()


@pytest.mark.integration
@pytest.mark.timeout(150)
def test_a_hung_launch_is_killed_with_its_workers(tmp_path: Path) -> None:
    # The tests' torchrun helper: a launch past its timeout leaves no worker running (a
    # plain subprocess timeout kills torchrun alone, and a hang's workers lived on).
    script = tmp_path / "hang.py"
    script.write_text(
        "import os, pathlib, sys, time\n"
        "pathlib.Path(sys.argv[1], os.environ['RANK']).write_text(str(os.getpid()))\n"
        "time.sleep(600)\n"
    )
    with pytest.raises(subprocess.TimeoutExpired):
        torchrun([str(script), str(tmp_path)], env=_env(), cwd=ROOT, timeout=30)
    for rank in ("0", "1"):
        status = Path(f"/proc/{(tmp_path / rank).read_text()}/status")
        # Gone, or a zombie waiting for the init process to reap it: nothing runs.
        assert not status.exists() or "State:\tZ" in status.read_text()


# ---- one process: nothing of the above


def test_one_process_shards_nothing_and_scales_nothing(tiny_model: Path, tmp_path: Path) -> None:
    settings = train_settings(tiny_model, tmp_path / "p.jsonl", tmp_path / "run")
    config = build_config(
        TrainConfig,
        settings,
        ["algorithm.preset=ppo", "algorithm.kl_coef=0.05", "train.device=cpu"],
    )
    device = torch.device("cpu")
    learner = _learner(config, load_policy(config.model, device), device, SINGLE)
    assert not dist.is_initialized()  # no process group: fully_shard was never called
    assert learner.value_head is not None and learner.reference is not None
    for module in (learner.model, learner.reference, learner.value_head):
        assert not any(isinstance(p, DTensor) for p in module.parameters())
    assert learner.loss_scale == 1.0
    assert learner._micro_batches(7) == [slice(0, 4), slice(4, 7)]  # no filler (None)
    assert world_from_env() == SINGLE  # no torchrun environment here


# ---- the pure pieces


def test_share_is_contiguous_and_covers_the_items_in_rank_order() -> None:
    items = list(range(7))
    shares = [share(items, World(rank=r, world_size=3)) for r in range(3)]
    # r * 7 // 3: 0, 2, 4, 7
    assert shares == [[0, 1], [2, 3], [4, 5, 6]]
    assert share(items, SINGLE) == items
    assert share([1], World(rank=0, world_size=2)) == []  # a process may hold nothing


def test_batch_total_is_the_tensor_itself_in_one_process() -> None:
    value = torch.tensor(3.5)
    assert batch_total(value) is value


def _halves_total(other: torch.Tensor):
    """A stand-in for two processes: this half's partial sum plus the other half's."""

    def total(partial: torch.Tensor) -> torch.Tensor:
        return partial + other

    return total


def test_whiten_over_two_halves_is_whiten_of_the_whole() -> None:
    values = torch.tensor([[1.0, 3.0], [5.0, 7.0]])
    mask = torch.tensor([[1.0, 1.0], [1.0, 0.0]])
    # whole: masked 1, 3, 5: mean 3, population var (4 + 0 + 4) / 3 = 8/3
    expected = torch.tensor([[-2.0, 0.0], [2.0, 0.0]]) / (8 / 3) ** 0.5
    torch.testing.assert_close(whiten(values, mask), expected, atol=1e-6, rtol=0)
    # Row 0 is here, row 1 elsewhere: each total is asked in order (count, sum, squares).
    elsewhere = iter([torch.tensor(1.0), torch.tensor(5.0), torch.tensor(4.0)])

    def total(partial: torch.Tensor) -> torch.Tensor:
        return partial + next(elsewhere)

    mine = whiten(values[:1], mask[:1], batch_total=total)
    torch.testing.assert_close(mine, expected[:1], atol=1e-6, rtol=0)


def test_reinforce_pp_batch_std_over_two_halves() -> None:
    # Without the group baseline: centered on the batch mean, divided by the batch std.
    # Whole batch (two groups of two): 0, 1, 1, 2 -> mean 1, centered -1, 0, 0, 1,
    # unbiased std sqrt(2 / 3).
    rewards = torch.tensor([[0.0, 1.0], [1.0, 2.0]])
    valid = torch.ones(2, 2, dtype=torch.bool)
    whole = reinforce_pp_advantages(rewards, valid, AdvantageOptions(group_baseline=False))
    expected = torch.tensor([[-1.0, 0.0], [0.0, 1.0]]) / (2 / 3) ** 0.5
    torch.testing.assert_close(whole, expected, atol=1e-5, rtol=0)
    # Group 0 here; group 1's partial sums, in the order asked: count 2, rewards 1 + 2 = 3,
    # count 2 again, centered (1 - 1) + (2 - 1) = 1, squares about the mean 0: 0 + 1.
    elsewhere = iter(torch.tensor(v) for v in (2.0, 3.0, 2.0, 1.0, 1.0))
    options = AdvantageOptions(group_baseline=False, batch_total=lambda p: p + next(elsewhere))
    mine = reinforce_pp_advantages(rewards[:1], valid[:1], options)
    torch.testing.assert_close(mine, expected[:1], atol=1e-5, rtol=0)


def test_normalizer_counts_the_global_batch() -> None:
    mask = torch.tensor([[1.0, 1.0, 0.0], [0.0, 0.0, 0.0]])  # 2 tokens, 1 sequence here
    local = Normalizer.of(mask, 8.0)
    assert (local.num_tokens, local.num_seqs) == (2.0, 1.0)
    spread = Normalizer.of(mask, 8.0, batch_total=lambda p: p + 5)  # the others: 5 and 5
    assert (spread.num_tokens, spread.num_seqs, spread.seq_len_norm) == (7.0, 6.0, 8.0)
    # A process with no rows still divides by the global counts (never by its own 0).
    empty = filler_batch(0)
    assert Normalizer.of(empty.loss_mask, 1.0, batch_total=lambda p: p + 3).num_tokens == 3.0


def test_merged_step_metrics_are_the_global_batch_s() -> None:
    first, second = StepMetrics(), StepMetrics()
    # Process 0: one micro-batch of 2 loss tokens; process 1: one of 6.
    first.add({"loss": 0.25, "entropy": 1.0}, tokens=2.0)
    second.add({"loss": 0.5, "entropy": 3.0}, tokens=6.0)
    for metrics in (first, second):
        metrics.add({"grad_norm": 2.0})  # the global norm, the same on every process
    means = StepMetrics.merged([first, second]).means(passes=1)
    assert means["loss"] == pytest.approx(0.75)  # shares of the global loss add up
    assert means["entropy"] == pytest.approx((2 * 1.0 + 6 * 3.0) / 8)  # token-weighted
    assert means["grad_norm"] == pytest.approx(2.0)


def test_filler_batch_trains_nothing() -> None:
    filler = filler_batch(1)
    assert filler.size == 1 and float(filler.loss_mask.sum()) == 0.0
    assert bool(filler.attention_mask.all())  # a row attending to nothing would give NaN
    assert filler_batch(0).size == 0


def test_world_problems_name_the_key(tiny_model: Path, tmp_path: Path) -> None:
    settings = train_settings(tiny_model, tmp_path / "p.jsonl", tmp_path / "run")
    overrides = ["rollout.prompts_per_step=3", "rollout.engine=vllm_remote"]
    overrides += [
        "rollout.remote.base_url=http://127.0.0.1:1",
        f"rollout.remote.weights_dir={tmp_path}",
    ]
    config = build_config(TrainConfig, settings, overrides)
    problems = [p for p in world_problems(config, World(rank=0, world_size=2)) if p]
    assert problems[0].startswith("rollout.prompts_per_step: 3 groups do not split evenly")
    assert len(problems) == 1  # remote servers are shared: rank 0 alone pushes the weights
    assert world_problems(config, SINGLE) == []
