"""One process of a small FSDP2 training run on CPU (gloo), for the sharded checkpoint tests:
a tiny Llama sharded per block, a sharded value head, the real `Learner`'s AdamW and
schedule, and batches drawn from the process's own torch RNG (so an exact resume needs each
process's RNG back). `launch` starts N such processes as torchrun would (RANK, WORLD_SIZE,
MASTER_ADDR/PORT) and waits for them.

    python -m tests.support.sharded_training SCENARIO OUTPUT_DIR MODEL_DIR

- train:  steps 1-3, checkpoints after 1 and 2; `dump_2.pt`/`dump_3.pt` hold the full
          weights and optimiser state after steps 2 and 3, `logits_2.pt` the policy's logits;
          rank 0 exports step 2's checkpoint to `final/` while the process group is up.
- resume: loads the latest checkpoint, dumps `resumed_2.pt`, runs step 3, dumps `resumed_3.pt`.
- kill:   checkpoint after step 1; during step 2's save the last rank SIGKILLs itself.
- lora:   as train (without the export), the policy with LoRA adapters on q_proj, v_proj.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import yaml
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict
from torch.distributed.fsdp import fully_shard
from transformers import AutoModelForCausalLM

import rl_client.sharded_checkpoint as sharded_checkpoint
from rl_client.checkpoint import (
    latest_checkpoint,
    load_checkpoint,
    policy_dir,
    save_checkpoint,
    set_rng_state,
)
from rl_client.config import AlgorithmConfig, ModelConfig, TrainSettings
from rl_client.distributed import shard_model, world_from_env
from rl_client.export import export_policy
from rl_client.learner import Learner
from rl_client.models import load_policy, load_tokenizer
from rl_client.sharded_checkpoint import learner_modules

SEED = 7
MODULE = (sys.executable, "-m", "tests.support.sharded_training")
PROBE = torch.tensor([[4, 9, 12, 30, 5, 17]])  # the input whose logits the export must match


def model_config(model_dir: Path, *, lora: bool) -> dict[str, Any]:
    """The `model` section a checkpoint's config.yaml holds."""
    if not lora:
        return {"path": str(model_dir)}
    return {"path": str(model_dir), "lora_r": 4, "lora_target_modules": ["q_proj", "v_proj"]}


def build_learner(model_dir: Path, *, sharded: bool, lora: bool = False) -> Learner:
    if lora:
        model = load_policy(ModelConfig(**model_config(model_dir, lora=True)), torch.device("cpu"))
    else:
        model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)
    head = torch.nn.Linear(model.config.hidden_size, 1)
    if sharded:
        shard_model(model)
        fully_shard(head)  # its gradients are averaged like the policy's
    settings = TrainSettings(lr=1e-2, steps=10, warmup_steps=2, seed=SEED)
    return Learner(
        model,
        algo=AlgorithmConfig(),
        train=settings,
        temperature=1.0,
        seq_len_norm=8.0,
        device=torch.device("cpu"),
        value_head=head,
    )


def train_step(learner: Learner) -> None:
    """One AdamW step on a batch drawn from this process's torch RNG."""
    ids = torch.randint(4, 40, (2, 8))
    out = learner.model(input_ids=ids, labels=ids, output_hidden_states=True)
    value = learner.value_head(out.hidden_states[-1]).pow(2).mean()
    (out.loss + value).backward()
    learner.optimizer.step()
    learner.scheduler.step()
    learner.optimizer.zero_grad(set_to_none=True)


def full_state(learner: Learner) -> dict[str, Any]:
    """Every tensor whole (gathered on rank 0 under torchrun): weights, moments, lr."""
    modules = learner_modules(learner.model, learner.value_head)
    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    model, optimizer = get_state_dict(modules, learner.optimizer, options=options)
    return {
        "model": model,
        "optimizer": optimizer.get("state"),  # empty off rank 0
        "lr": learner.scheduler.get_last_lr(),
        "rng": torch.rand(3),  # the next draws of this process's stream
    }


def dump(learner: Learner, path: Path) -> None:
    state = full_state(learner)  # collective: every process
    if world_from_env().is_main:
        torch.save(state, path)


def save(
    learner: Learner,
    output_dir: Path,
    model_dir: Path,
    step: int,
    *,
    lora: bool = False,
    keep: int = 2,
    ahead: Sequence[Any] = (),
) -> Path:
    """Step `step`'s checkpoint, 2 prompts a step; `ahead`: async batches generated ahead."""
    return save_checkpoint(
        output_dir,
        step=step,
        learner=learner,
        tokenizer=load_tokenizer(model_dir),
        rollout_buffer=list(ahead),
        cursor={"epoch": 0, "position": 2 * step, "size": 10},
        config_yaml=yaml.safe_dump({"model": model_config(model_dir, lora=lora)}),
        keep=keep,
    )


def resume(learner: Learner, output_dir: Path) -> int:
    checkpoint = latest_checkpoint(output_dir)
    assert checkpoint is not None
    step, _, rank_state = load_checkpoint(checkpoint, learner=learner, seed=SEED)
    set_rng_state(rank_state["rng"])
    return step


def main(scenario: str, output_dir: Path, model_dir: Path) -> None:
    torch.set_num_threads(1)
    world = world_from_env()
    dist.init_process_group("gloo", timeout=timedelta(seconds=30))
    torch.manual_seed(SEED + world.rank)
    if scenario == "resume":
        checkpoint = latest_checkpoint(output_dir)
        assert checkpoint is not None
        weights = policy_dir(checkpoint) or model_dir  # a one-process checkpoint's own weights
        learner = build_learner(weights, sharded=True)
        step = resume(learner, output_dir)
        dump(learner, output_dir / f"resumed_{step}.pt")
        train_step(learner)
        dump(learner, output_dir / f"resumed_{step + 1}.pt")
    else:
        lora = scenario == "lora"
        learner = build_learner(model_dir, sharded=True, lora=lora)
        for step in (1, 2, 3):
            train_step(learner)
            if scenario == "kill" and step == 2 and world.rank == world.world_size - 1:
                # Dies once its shards are written, before its own file and the barrier.
                def die(**_: Any) -> dict[str, Any]:
                    os.kill(os.getpid(), signal.SIGKILL)
                    raise AssertionError("unreachable")

                sharded_checkpoint.rng_state = die  # type: ignore[assignment]
            if step < 3:
                save(learner, output_dir, model_dir, step, lora=lora)
            if step == 2:
                with torch.no_grad():
                    logits = learner.model(input_ids=PROBE).logits
                if world.is_main:
                    torch.save(logits, output_dir / "logits_2.pt")
            if step >= 2:
                dump(learner, output_dir / f"dump_{step}.pt")
        if scenario == "train" and world.is_main:  # as `Run.save` does after the last step
            export_policy(output_dir / "checkpoints" / "step_000002", output_dir / "final")
    dist.destroy_process_group()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def launch(
    scenario: str, output_dir: Path, model_dir: Path, *, world_size: int = 2, timeout_s: float = 120
) -> list[subprocess.CompletedProcess[str]]:
    """Runs `scenario` on `world_size` local processes; their exit codes and output."""
    port = str(free_port())
    procs = []
    for rank in range(world_size):
        env = {
            **os.environ,
            "RANK": str(rank),
            "LOCAL_RANK": str(rank),
            "WORLD_SIZE": str(world_size),
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": port,
            "OMP_NUM_THREADS": "1",
        }
        procs.append(
            subprocess.Popen(
                [*MODULE, scenario, str(output_dir), str(model_dir)],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
        )
    results = []
    for proc in procs:
        try:
            out, _ = proc.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
        results.append(subprocess.CompletedProcess(proc.args, proc.returncode, out, ""))
    return results


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]))
