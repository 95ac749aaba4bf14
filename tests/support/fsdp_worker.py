"""One side of the multi-process equivalence tests (tests/rl_client/test_distributed.py):
the trainer's update (`trainer.policy_update`, with the real sharding of `run._learner`)
over a fixed, hand-made global batch, two steps per config. Run alone it is the 1-process
reference; under torchrun each process keeps its contiguous share of the groups
(`distributed.share`), filters them as the collector does, and updates.

    python fsdp_worker.py MODEL_DIR OUT_FILE [CONFIG ...]

Writes (main process) {config: {"weights": [full state dict before step 1, after step 1,
after step 2], "metrics": [step 1, step 2], "max_grad_norm": ...}} to OUT_FILE with
torch.save.
"""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

import torch
from rl_helpers import scored_group, train_settings

from rl_client.config import TrainConfig, build_config
from rl_client.distributed import close_world, full_state_dict, init_world, share
from rl_client.group_filter import DynamicSampling, filter_groups
from rl_client.learner import Learner
from rl_client.models import load_policy
from rl_client.rollout import Group
from rl_client.rounds import LEARN
from rl_client.run import _learner
from rl_client.trainer import policy_update

# The batch-wide knobs: the loss normaliser (token_mean), the reference's pass, REINFORCE++'s
# batch whitening, the critic's pass and whitening; clipping that bites (max_grad_norm) and
# two passes (ppo_epochs) in all; micro-batches of 3 rows, so the processes' counts differ.
CONFIGS: dict[str, list[str]] = {
    "grpo_token_mean": [
        "algorithm.preset=grpo",
        "algorithm.loss_aggregation=token_mean",
        "algorithm.kl_coef=0.1",
    ],
    "reinforce_pp_token": [
        "algorithm.preset=reinforce_pp",
        "algorithm.reinforce_pp_form=token",
        "algorithm.kl_coef=0.0",
    ],
    "reinforce_pp_sequence_dynamic": [
        "algorithm.preset=reinforce_pp",
        "algorithm.reinforce_pp_form=sequence",
        "algorithm.kl_coef=0.0",
        "algorithm.dynamic_sampling=true",
    ],
    "ppo": ["algorithm.preset=ppo"],
    # LoRA: only the adapters train; the reference is the base with adapters disabled.
    "grpo_lora": [
        "algorithm.preset=grpo",
        "algorithm.kl_coef=0.1",
        "model.lora_r=4",
        "train.max_grad_norm=0.001",  # the adapters' gradient is smaller
    ],
    # The rounds (rounds.py): SFT on winners, DPO on pairs against the initial model; in
    # step 1 process 0 of 2 has no pair.
    "rft": ["algorithm.preset=rft", "algorithm.rft_max_per_prompt=2"],
    "online_dpo": ["algorithm.preset=online_dpo"],
}
COMMON = [
    "train.steps=2",
    "train.max_grad_norm=0.01",
    "train.micro_batch_size=3",
    "train.device=cpu",
    "algorithm.ppo_epochs=2",
    "rollout.prompts_per_step=4",
]


def global_batch(step: int) -> list[Group]:
    """Four groups of four. Step 1: group 1 fully masked (dropped) and group 0's rewards
    equal (no signal: filtered under dynamic sampling), so process 0 of 2 keeps fewer groups
    than process 1, or none. Step 2: four full groups of unequal lengths."""
    masked: list[float | None] = [None, None, None, None]
    if step == 1:
        scores = [[1.0, 1.0, 1.0, 1.0], masked, [0.0, 1.0, 0.0, 1.0], [1.0, 0.0, None, 0.0]]
    else:
        scores = [
            [0.0, 1.0, 1.0, 0.0],
            [1.0, 0.0, 0.0, 0.0],
            [0.0, 0.0, 1.0, 0.5],
            [1.0] * 3 + [0.0],
        ]
    groups = []
    for g, group_scores in enumerate(scores):
        prompt = [5 + g, 6 + step, 7]
        # 1 to 3 tokens, then EOS (id 2)
        completions = [
            [*[10 + g + m, 11 + step + m, 12 + m][: 1 + (g + m) % 3], 2] for m in range(4)
        ]
        groups.append(scored_group(prompt, completions, group_scores))
    return groups


def run_config(model_dir: Path, name: str, overrides: list[str]) -> dict:
    settings = train_settings(model_dir, model_dir / "unused.jsonl", model_dir / "unused")
    config = build_config(TrainConfig, settings, COMMON + overrides)
    device = torch.device("cpu")
    world = init_world(device)
    torch.manual_seed(config.train.seed)
    learner = _learner(config, load_policy(config.model, device), device, world)
    algo = config.algorithm
    dynamic = DynamicSampling(algo.dynamic_sampling_signal, 0.0) if algo.dynamic_sampling else None
    weights, metrics = [_full_weights(learner)], []
    # What rounds.py reads of a Run.
    run = SimpleNamespace(config=config, learner=learner, engine=SimpleNamespace(pad_token_id=0))
    for step in (1, 2):
        kept, _ = filter_groups(share(global_batch(step), world), dynamic=dynamic)
        if algo.objective == "policy_gradient":
            metrics.append(policy_update(learner, kept, algo, pad_token_id=0))
        else:
            metrics.append(LEARN[algo.objective](run, kept, global_batch(step)))
        weights.append(_full_weights(learner))
    return {
        "weights": weights,
        "metrics": metrics,
        "rank": world.rank,
        "max_grad_norm": config.train.max_grad_norm,
    }


def _full_weights(learner: Learner) -> dict[str, torch.Tensor]:
    """The policy's (and value head's) whole weights, whether sharded or not."""
    state = full_state_dict(learner.model)
    if learner.value_head is not None:
        state |= {f"value_head.{k}": v for k, v in full_state_dict(learner.value_head).items()}
    return {k: v.detach().clone() for k, v in state.items()}


def main() -> None:
    torch.set_num_threads(1)
    model_dir, out = Path(sys.argv[1]), Path(sys.argv[2])
    names = sys.argv[3:] or list(CONFIGS)
    results = {name: run_config(model_dir, name, CONFIGS[name]) for name in names}
    if all(result["rank"] == 0 for result in results.values()):
        torch.save(results, out)
    close_world()


if __name__ == "__main__":
    main()
