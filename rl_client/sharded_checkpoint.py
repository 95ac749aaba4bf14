"""The learner's state in a checkpoint saved by several processes, through
torch.distributed.checkpoint (DCP).

- Weights and AdamW moments are FSDP2's DTensor shards: `get_state_dict` names them by
  parameter ('policy.model.layers.0.mlp.up_proj.weight', 'value_head.weight'), each process
  writes its own shards into `sharded/`, and rank 0 writes DCP's metadata. Replicated
  tensors (a value head that is not sharded) are written once: they must be equal on every
  process, as gradient averaging keeps them.
- Loading reshards: DCP reads each process's slice of every tensor whatever the number of
  processes that saved it, one process included (it then holds plain full tensors).
- A one-process checkpoint (`trainer.pt` with an optimiser state keyed by parameter index)
  resumes on N processes: the index becomes the parameter's name and every process keeps its
  shard of the full tensors (`StateDictOptions(full_state_dict=True)`).
- The scheduler is the same on every process (rank 0 writes it); RNG states, async
  batches and data cursors are each process's own (`rank_00000.pt` ..).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_state_dict,
    set_model_state_dict,
    set_state_dict,
)

from rl_client.checkpoint import (
    SHARDED_DIR,
    STATE_FILE,
    TRAINER_FILE,
    Trainable,
    is_sharded,
    rng_state,
)
from rl_client.distributed import world_from_env

TOKENIZER_DIR = "tokenizer"


def rank_file(rank: int) -> str:
    return f"rank_{rank:05d}.pt"


def learner_modules(policy: torch.nn.Module, value_head: torch.nn.Module | None) -> torch.nn.Module:
    """The policy and the value head as one module tree, so that both (and the optimiser
    state over both) are keyed by name: 'policy.…' and 'value_head.…'."""
    parts = {"policy": policy}
    if value_head is not None:
        parts["value_head"] = value_head
    return torch.nn.ModuleDict(parts)


def save_sharded(
    path: Path,
    learner: Trainable,
    tokenizer: Any,
    rollout_buffer: list[Any],
    cursor: dict[str, int],
) -> None:
    """Every process: its shards of the weights and moments, its RNG states, async batches
    and data cursor (`checkpoint.resumed_cursor`); rank 0: the scheduler and the tokenizer.
    Collective."""
    world = world_from_env()
    modules = learner_modules(learner.model, learner.value_head)
    model_state, optimizer_state = get_state_dict(modules, learner.optimizer)
    dcp.save({"model": model_state, "optimizer": optimizer_state}, checkpoint_id=path / SHARDED_DIR)
    own = {"rng": rng_state(all_gpus=False), "rollout_buffer": rollout_buffer, "cursor": cursor}
    torch.save(own, path / rank_file(world.rank))
    if world.is_main:
        torch.save({"scheduler": learner.scheduler.state_dict()}, path / TRAINER_FILE)
        tokenizer.save_pretrained(str(path / TOKENIZER_DIR))


def load_into(path: Path, learner: Trainable) -> None:
    """Restores the learner in place from a checkpoint of any layout, on any number of
    processes (collective under torchrun)."""
    modules = learner_modules(learner.model, learner.value_head)
    trainer_state = torch.load(path / TRAINER_FILE, weights_only=False)
    if is_sharded(path):
        model_state, optimizer_state = get_state_dict(modules, learner.optimizer)
        state = {"model": model_state, "optimizer": optimizer_state}
        dcp.load(state, checkpoint_id=path / SHARDED_DIR, no_dist=not dist.is_initialized())
        set_state_dict(
            modules,
            learner.optimizer,
            model_state_dict=state["model"],
            optim_state_dict=state["optimizer"],
        )
    else:  # one process saved it; the policy's weights came through load_policy
        value_head = {f"value_head.{k}": v for k, v in trainer_state.get("value_head", {}).items()}
        names = [name for name, p in modules.named_parameters() if p.requires_grad]
        set_state_dict(
            modules,
            learner.optimizer,
            model_state_dict=value_head,
            optim_state_dict=named_optimizer_state(trainer_state["optimizer"], names),
            options=StateDictOptions(full_state_dict=True, strict=False),
        )
    learner.scheduler.load_state_dict(trainer_state["scheduler"])


def named_optimizer_state(state: dict[str, Any], names: list[str]) -> dict[str, Any]:
    """`Optimizer.state_dict()` (parameters by index, in the optimiser's order) keyed by
    parameter name instead, as `set_state_dict` takes it. `names`: the trainable
    parameters' names in the optimiser's order."""
    indices = [i for group in state["param_groups"] for i in group["params"]]
    if len(indices) != len(names):
        raise ValueError(
            f"the checkpoint's optimiser holds {len(indices)} parameters, this learner "
            f"trains {len(names)}: it was saved for another model or LoRA setting"
        )
    name_of = dict(zip(indices, names, strict=True))
    return {
        "state": {name_of[i]: moments for i, moments in state["state"].items()},
        "param_groups": [
            {**group, "params": [name_of[i] for i in group["params"]]}
            for group in state["param_groups"]
        ],
    }


def saved_rank_states(path: Path) -> list[dict[str, Any]]:
    """The per-process states (RNG, async batches) of every process that saved `path`."""
    if not is_sharded(path):
        return [torch.load(path / TRAINER_FILE, weights_only=False)]
    world_size = json.loads((path / STATE_FILE).read_text())["world_size"]
    return [torch.load(path / rank_file(r), weights_only=False) for r in range(world_size)]


def load_policy_weights(path: Path, policy: torch.nn.Module) -> None:
    """The policy's full weights from a sharded checkpoint into a plain (unsharded) model
    built like the trained one, in this process alone (no collective: rank 0 exporting at
    the end of a run, or `rl-client export` without torchrun)."""
    modules = learner_modules(policy, None)
    state = {"model": get_model_state_dict(modules)}
    dcp.load(state, checkpoint_id=path / SHARDED_DIR, no_dist=True)
    set_model_state_dict(modules, state["model"])
