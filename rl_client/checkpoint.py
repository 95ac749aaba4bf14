"""Checkpoints that resume exactly: weights, optimiser, scheduler, RNG states, data cursor.

Layout: `<output.dir>/checkpoints/step_000042/` with `state.json` (step, data cursor, world
size) and `config.yaml`, and then, by how many processes saved it:

- one process: `policy/` (save_pretrained: full weights, or LoRA adapters, and the
  tokenizer) and `trainer.pt` (optimiser, scheduler, value head, RNG states, async batches);
- N processes (torchrun, FSDP2): `sharded/` (torch.distributed.checkpoint: the policy, the
  value head and the AdamW moments, each process writing its own shards), `trainer.pt` (the
  scheduler, rank 0), `rank_00000.pt` .. (each process's RNG states, async batches and data
  cursor) and `tokenizer/`. The sharded specifics live in `sharded_checkpoint.py`.

Every process writes into `.partial_step_000042/`; after a barrier rank 0 renames it, so a run
killed mid-save (any process) resumes from the previous checkpoint. Either layout resumes on
any number of processes (`load_checkpoint`). On resume, lines of metrics.jsonl and
rollouts.jsonl past the checkpoint's step are dropped: those steps run again.
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path
from typing import Any, Protocol

import torch

from rl_client.distributed import barrier, world_from_env

STATE_FILE = "state.json"
TRAINER_FILE = "trainer.pt"
SHARDED_DIR = "sharded"
PARTIAL_PREFIX = ".partial_"


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be resumed as asked; the message says what to do."""


class Trainable(Protocol):
    """What a checkpoint saves of the learner and restores in place (`Learner` is one)."""

    model: torch.nn.Module  # the policy, FSDP2-sharded under torchrun
    value_head: torch.nn.Linear | None
    optimizer: torch.optim.Optimizer
    scheduler: Any  # torch.optim.lr_scheduler.LRScheduler

    def state_dict(self) -> dict[str, Any]:
        """One process: optimiser, scheduler and value head (a checkpoint's trainer.pt)."""
        ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


def checkpoint_dir(output_dir: Path) -> Path:
    return output_dir / "checkpoints"


def complete_checkpoints(output_dir: Path) -> list[Path]:
    """The complete checkpoints, oldest first (a partial one is never named step_*)."""
    root = checkpoint_dir(output_dir)
    if not root.exists():
        return []
    return sorted(p for p in root.glob("step_*") if (p / STATE_FILE).exists())


def latest_checkpoint(output_dir: Path) -> Path | None:
    """The newest complete checkpoint, if any."""
    complete = complete_checkpoints(output_dir)
    return complete[-1] if complete else None


def is_sharded(path: Path) -> bool:
    """Saved by several processes through torch.distributed.checkpoint."""
    return (path / SHARDED_DIR).is_dir()


def policy_dir(path: Path) -> Path | None:
    """The Hugging Face directory a one-process checkpoint holds its weights (or adapters)
    in, for `load_policy`; None for a sharded checkpoint, whose weights `load_checkpoint`
    loads in place into the policy built from `model.path`."""
    return None if is_sharded(path) else path / "policy"


def rng_state(*, all_gpus: bool = True) -> dict[str, Any]:
    """Python's and torch's RNG states, and CUDA's: of every GPU, or (`all_gpus=False`, a
    process of a torchrun run, which owns one GPU) of the current one only, without
    creating a CUDA context on the others."""
    state: dict[str, Any] = {"python": random.getstate(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        if all_gpus:
            state["cuda"] = torch.cuda.get_rng_state_all()
        else:
            state["cuda_current"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restores `rng_state()`'s streams, or seeds them all from `{"seed": n}` (a resume on
    another number of processes, where the saved per-process streams do not carry over)."""
    if "seed" in state:
        random.seed(state["seed"])
        torch.manual_seed(state["seed"])  # the CUDA generators too
        return
    random.setstate(state["python"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    if "cuda_current" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda_current"])


def derived_seed(seed: int, step: int, rank: int) -> int:
    """A process's fresh RNG seed after a resume on another number of processes: the same
    for the same (train.seed, step, rank), different across ranks and steps."""
    # str seeding hashes with SHA-512, so every process (and every run) agrees.
    return random.Random(f"{seed}:{step}:{rank}").getrandbits(63)


def resumed_rank_state(
    saved: list[dict[str, Any]], *, rank: int, world_size: int, seed: int, step: int
) -> dict[str, Any]:
    """This process's {"rng", "rollout_buffer"} from the per-process states a checkpoint
    holds (one per process that saved it). The same number of processes resumes each
    process's own streams and batches. Another number gets fresh streams (`derived_seed`)
    and no async batches: those were split by the old ranks, and their prompts are
    generated again (`load_checkpoint` moves the cursor back over them)."""
    if len(saved) == world_size:
        own = saved[rank]
        return {"rng": own["rng"], "rollout_buffer": own.get("rollout_buffer", [])}
    return {"rng": {"seed": derived_seed(seed, step, rank)}, "rollout_buffer": []}


def prompts_ahead(saved: list[dict[str, Any]]) -> int:
    """How many prompts the async batches generated ahead took from the data cursor, over
    every process that saved them: each group is one prompt (every group a batch generated
    is kept in it, dynamic sampling's filtered ones too), and the processes' shares of a
    step's prompts add up to the step's draw from the one cursor they all advance."""
    return sum(len(batch.groups) for state in saved for batch in state.get("rollout_buffer", []))


def resumed_cursor(
    saved: list[dict[str, Any]], main_cursor: dict[str, int], *, rank: int, world_size: int
) -> dict[str, int]:
    """This process's data cursor state from the per-process states a checkpoint holds.

    In async mode each process's rollout thread may have generated a different number of
    batches ahead when the checkpoint was taken (rank 0 steps 3 and 4, rank 1 step 3 only),
    and each process's cursor stands right after its own batches: the processes draw the
    same counts and keep their shares, so their cursors differ by the steps one is ahead.
    The same number of processes resumes each its own cursor with its own batches. Another
    number generates every batch again, from the cursor right after the checkpoint's step:
    the cursor of the process with the fewest batches, moved back over the draws of those
    batches' steps (which every process holds). `main_cursor` (state.json's) stands in for
    a state without one: a one-process checkpoint's, whose batches it stands after."""
    cursors = [state.get("cursor", main_cursor) for state in saved]
    if len(saved) == world_size:
        return cursors[rank]
    fewest = min(range(len(saved)), key=lambda r: len(saved[r].get("rollout_buffer", [])))
    steps = {batch.step for batch in saved[fewest].get("rollout_buffer", [])}
    common = [
        {"rollout_buffer": [b for b in state.get("rollout_buffer", []) if b.step in steps]}
        for state in saved
    ]
    ahead = prompts_ahead(common)
    return rewound_cursor(cursors[fewest], ahead) if ahead else cursors[fewest]


def rewound_cursor(cursor: dict[str, int], count: int) -> dict[str, int]:
    """The data cursor's state `count` prompts earlier (back across epochs): from there the
    cursor draws those prompts again, in the same order."""
    epoch, position, size = cursor["epoch"], cursor["position"], cursor["size"]
    while count > position:
        if epoch == 0:
            raise CheckpointError(
                f"cannot move the data cursor back {count} prompts past the start of the "
                f"data ({cursor}): the checkpoint's async batches do not match its cursor"
            )
        count -= position
        epoch, position = epoch - 1, size
    return {**cursor, "epoch": epoch, "position": position - count}


def save_checkpoint(
    output_dir: Path,
    *,
    step: int,
    learner: Trainable,
    tokenizer: Any,
    rollout_buffer: list[Any],
    cursor: dict[str, int],
    config_yaml: str,
    keep: int,
) -> Path:
    """Writes step `step`'s checkpoint and deletes all but the newest `keep`. Under torchrun
    every process must call it (the sharded save is collective); `config_yaml` is rank 0's,
    `rollout_buffer` (async batches generated ahead) and `cursor` (standing right after
    them) each process's own (state.json holds rank 0's cursor)."""
    world = world_from_env()
    root = checkpoint_dir(output_dir)
    final = root / f"step_{step:06d}"
    partial = root / f"{PARTIAL_PREFIX}step_{step:06d}"
    if world.is_main:
        for stale in root.glob(f"{PARTIAL_PREFIX}*"):  # the leftovers of a killed save
            shutil.rmtree(stale)
        partial.mkdir(parents=True)
    barrier()
    if world.distributed:
        from rl_client.sharded_checkpoint import save_sharded

        save_sharded(partial, learner, tokenizer, rollout_buffer, cursor)
    else:
        learner.model.save_pretrained(str(partial / "policy"))
        tokenizer.save_pretrained(str(partial / "policy"))
        state = {**learner.state_dict(), "rollout_buffer": rollout_buffer, "rng": rng_state()}
        torch.save(state, partial / TRAINER_FILE)
    if world.is_main:
        (partial / "config.yaml").write_text(config_yaml)
        state_json = {"step": step, "cursor": cursor, "world_size": world.world_size}
        (partial / STATE_FILE).write_text(json.dumps(state_json))
    barrier()  # every process's files are written: the checkpoint is complete
    if world.is_main:
        shutil.rmtree(final, ignore_errors=True)
        partial.rename(final)
        for old in complete_checkpoints(output_dir)[:-keep]:
            shutil.rmtree(old)
    barrier()  # no process goes on (or resumes) before the rename
    return final


def load_checkpoint(
    path: Path, *, learner: Trainable, seed: int
) -> tuple[int, dict[str, int], dict[str, Any]]:
    """Restores the learner in place (sharded weights, optimiser, scheduler, value head; a
    one-process checkpoint's weights come through `policy_dir` and `load_policy`) and
    returns (step, cursor state, this process's {"rng", "rollout_buffer"}). Works on any
    number of processes: see `resumed_rank_state` and `resumed_cursor`. `seed` is `train.seed`."""
    state = json.loads((path / STATE_FILE).read_text())
    step, world = state["step"], world_from_env()
    if is_sharded(path) or world.distributed:
        from rl_client.sharded_checkpoint import load_into, saved_rank_states

        load_into(path, learner)
        saved = saved_rank_states(path)
    else:
        trainer_state = torch.load(path / TRAINER_FILE, weights_only=False)
        learner.load_state_dict(trainer_state)
        saved = [trainer_state]
    rank_state = resumed_rank_state(
        saved, rank=world.rank, world_size=world.world_size, seed=seed, step=step
    )
    cursor = resumed_cursor(saved, state["cursor"], rank=world.rank, world_size=world.world_size)
    if len(saved) != world.world_size and prompts_ahead(saved) and world.is_main:
        print(
            f"{path.name} was saved by {len(saved)} processes, this run has "
            f"{world.world_size}: its async batches generated ahead are generated again"
        )
    return step, cursor, rank_state


def truncate_log(path: Path, last_step: int) -> None:
    """Keeps the JSONL lines whose "step" is <= last_step (the rest will be redone)."""
    if not path.exists():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line)["step"] <= last_step:
                kept.append(line)
        except json.JSONDecodeError:  # the half-written last line of a killed run
            continue
    path.write_text("".join(f"{line}\n" for line in kept))
