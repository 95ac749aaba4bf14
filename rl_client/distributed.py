"""The processes of one training run: who this process is, and the few collectives the
trainer needs. Launched by `torchrun` (which sets RANK, WORLD_SIZE, LOCAL_RANK and the
rendezvous); without it the run is one process and every function here is a no-op.

CPU runs use the gloo backend, CUDA runs NCCL with one GPU per process (`LOCAL_RANK`).
The policy is sharded with FSDP2 (`fully_shard`) per transformer block, then at the root:
each block's parameters are gathered just before its forward and freed after, so a process
holds about 1/N of the weights, gradients and AdamW moments between blocks.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import Tensor
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

T = TypeVar("T")


@dataclass(frozen=True)
class World:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """The process that logs, prints and writes the files every process would write."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


SINGLE = World()


def world_from_env() -> World:
    """This process's place, from torchrun's environment (one process without it)."""
    if "WORLD_SIZE" not in os.environ:
        return SINGLE
    return World(
        rank=int(os.environ["RANK"]),
        world_size=int(os.environ["WORLD_SIZE"]),
        local_rank=int(os.environ.get("LOCAL_RANK", "0")),
    )


def init_world(device: torch.device) -> World:
    """Joins the process group torchrun set up (gloo on CPU, NCCL on CUDA). Idempotent."""
    world = world_from_env()
    if not world.distributed or dist.is_initialized():
        return world
    if device.type == "cuda":
        torch.cuda.set_device(world.local_rank)
        dist.init_process_group("nccl", device_id=torch.device("cuda", world.local_rank))
    else:
        dist.init_process_group("gloo")
    return world


def close_world() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def process_device(device: torch.device, world: World) -> torch.device:
    """A CUDA run puts each process on its own GPU (LOCAL_RANK); CPU is shared."""
    if device.type == "cuda" and world.distributed:
        return torch.device("cuda", world.local_rank)
    return device


def _collective_device(group: dist.ProcessGroup | None = None) -> torch.device:
    # NCCL reduces CUDA tensors only; gloo reduces CPU tensors.
    if dist.get_backend(group) == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_reduce(
    values: list[float], op: str = "sum", group: dist.ProcessGroup | None = None
) -> list[float]:
    """`values` reduced element-wise over every process ("sum", "max" or "min"); unchanged
    in a single process. One collective for the whole list. `group`: a process group of
    its own for a thread that reduces while the main thread runs FSDP's collectives
    (`new_group`)."""
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return list(values)
    ops = {"sum": dist.ReduceOp.SUM, "max": dist.ReduceOp.MAX, "min": dist.ReduceOp.MIN}
    tensor = torch.tensor(values, dtype=torch.float64, device=_collective_device(group))
    dist.all_reduce(tensor, op=ops[op], group=group)
    return tensor.cpu().tolist()


def new_group() -> dist.ProcessGroup | None:
    """A second group over every process (None in a single process): collectives issued
    from two threads must not share one group, or their order interleaves differently on
    each process and they hang. Always gloo (it reduces small counts, on the CPU): two NCCL
    communicators used at once from two threads, in an order that differs between processes,
    can hang on the GPU too (NCCL's user guide, "Using multiple NCCL communicators
    concurrently"). Every process must call it, in the same order."""
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return None
    return dist.new_group(backend="gloo")


def batch_total(tensor: Tensor) -> Tensor:
    """The sum over every process of a per-process partial sum (`tensor` itself, untouched,
    in a single process): how the advantage estimators' batch-wide statistics see the
    global batch."""
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return tensor
    total = tensor.detach().to(_collective_device(), copy=True)
    dist.all_reduce(total)
    return total.to(tensor.device)


def share(items: Sequence[T], world: World) -> list[T]:
    """This process's contiguous share of `items`: process r of N keeps
    items[r * n // N : (r + 1) * n // N], so the shares, in rank order, are `items`."""
    n = len(items)
    return list(
        items[world.rank * n // world.world_size : (world.rank + 1) * n // world.world_size]
    )


def all_gather_objects(value: Any) -> list[Any]:
    """Every process's `value`, in rank order ([value] in a single process)."""
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return [value]
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, value)
    return gathered


def broadcast_object(value: Any, src: int = 0) -> Any:
    """Rank `src`'s `value` on every process (`value` itself in a single process)."""
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def barrier() -> None:
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()


def loss_scale(world: World) -> float:
    """The factor on a globally normalised loss that undoes FSDP2's gradient averaging."""
    return float(world.world_size)


def full_state_dict(model: torch.nn.Module) -> dict[str, Tensor]:
    """The whole, unsharded state dict of an FSDP2 model, on every process (a collective:
    every process must call it). Parameter names are the unsharded model's."""
    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True))


def transformer_blocks(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The model's repeated blocks: the classes transformers marks as not to be split
    (`_no_split_modules`, e.g. LlamaDecoderLayer), found through a peft wrapper too."""
    names: set[str] = set()
    for module in model.modules():
        names.update(getattr(module, "_no_split_modules", None) or ())
    blocks = [m for m in model.modules() if type(m).__name__ in names]
    if not blocks:
        raise ValueError(
            f"{type(model).__name__}: no transformer blocks to shard (the model declares no "
            "_no_split_modules)"
        )
    return blocks


def shard_model(module: torch.nn.Module, *, bf16: bool = False) -> torch.nn.Module:
    """FSDP2 over every transformer block, then the root (embeddings, final norm, LM head).
    Needs the process group (`init_world`): a single process does not shard.
    `bf16`: parameters cast to bf16 for compute, gradients reduced in fp32 (CUDA runs with
    `train.bf16`); the sharded master weights and AdamW stay in the model's dtype.

    FSDP2 *averages* gradients over processes (gloo has no pre-scaled sum to turn that off):
    a loss divided by its global denominator (tokens or sequences of the whole batch) must be
    multiplied by `world_size` before backward, so the average is the global batch's
    gradient (`loss_scale`)."""
    policy = (
        MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
        if bf16
        else MixedPrecisionPolicy()
    )
    for block in transformer_blocks(module):
        fully_shard(block, mp_policy=policy)
    fully_shard(module, mp_policy=policy)
    return module


def shard_flat(module: torch.nn.Module) -> torch.nn.Module:
    """FSDP2 over a small module with no blocks (the value head), in full precision: its
    gradient is averaged over processes like the policy's (`loss_scale` covers both)."""
    fully_shard(module)
    return module
