"""The loops that learn from the server's scores without a policy gradient: rejection-sampling
fine-tuning (`algorithm.objective: rft`, RAFT arXiv:2304.06767 / ReST-EM arXiv:2312.06585)
and online iterated DPO (`algorithm.objective: dpo`, Xiong et al. arXiv:2312.11456; Guo et
al. arXiv:2402.04792). One round is one step of the run (same engine, reward service, data
cursor, checkpoints and logs as the policy-gradient step in `trainer.py`):

1. rollout    sample G completions for each of B prompts with the current policy
2. score      rewards from verifier_server; items that could not be verified are masked
3. select     rft: the verified winners (reward >= pass_threshold), at most k per prompt;
              dpo: chosen/rejected pairs among each group's verified members
4. reference  dpo: the reference's sequence logprobs of every pair (the policy at the start
              of the round, or the initial model)
5. update     mu passes over the selection, one optimiser step each: the SFT loss (token
              mean NLL of the winners) or the DPO / IPO loss
6. sync       the engine samples from the new weights
7. log        kept fraction or pairs, pass rate, reward, DPO margin and accuracy

Both rollout modes apply. On several processes (torchrun) each selects from its own groups
and the counts that scale a loss or skip a round (winners, pairs) are the global batch's.

In async mode a round's samples come from a policy at most `rollout.max_staleness` rounds
old; neither loss has an importance ratio to correct, since SFT on verified winners and DPO
on ranked pairs do not need on-policy samples (the DPO reference is taken at update time
either way). The learner's logprobs are the model's own
(temperature 1) whatever the sampling temperature: the SFT and DPO losses are of pi itself.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from rl_client.algorithms.dpo import dpo_loss, sequence_logprobs
from rl_client.algorithms.losses import LossOutput, Normalizer
from rl_client.algorithms.selection import PairIndex, preference_pairs, rejection_sampling_keep
from rl_client.algorithms.sft import sft_loss
from rl_client.batch import Batch, build_batch, filler_batch
from rl_client.config import AlgorithmConfig
from rl_client.distributed import all_reduce, batch_total
from rl_client.learner import ForwardOutput
from rl_client.periodic_eval import periodic_eval
from rl_client.rollout import Group
from rl_client.run import Run
from rl_client.run_log import rollout_metrics


def round_step(run: Run, step: int) -> dict[str, Any]:
    """One round of rft or dpo (`algorithm.objective`); returns its metrics."""
    began = time.perf_counter()
    # 1. rollout, 2. score: sync mode generates the round's groups now, async mode hands
    # over those generated while the last round trained; fully masked groups are dropped.
    # Several processes: each holds its share of the groups (`mine`); `rollout` is the global
    # batch.
    mine = run.collector.collect(step)
    rollout = mine.across_processes(run.world)
    train_began = time.perf_counter()
    # 3. select, 4. reference, 5. update
    learned = LEARN[run.config.algorithm.objective](run, mine.kept, rollout.sampled)
    # 6. sync: the engine samples from the weights of this round from now on
    sync_began = time.perf_counter()
    run.sync_weights(step)
    sync_s = time.perf_counter() - sync_began
    # 7. log
    metrics = {
        "step": step,
        **rollout_metrics(rollout.sampled),
        "pass_rate": pass_rate(rollout.sampled, run.config.algorithm.pass_threshold),
        "dropped_groups": rollout.stats.dropped_groups,
        "filtered_groups": rollout.stats.filtered_groups,
        "gen_rounds": rollout.rounds,
        **learned,
        "update_skipped": learned["lr"] is None,
        **rollout.lag_metrics(step),
        "regenerated_groups": rollout.regenerated_groups,
        "data_epoch": run.cursor.epoch,
        "time_generate_s": rollout.timings.generate_s,
        "time_reward_s": rollout.timings.reward_wait_s,
        "time_rollout_wait_s": rollout.wait_s,
        "time_train_s": sync_began - train_began,
        "time_sync_s": sync_s,
        "time_step_s": time.perf_counter() - began,
        # 8. periodic eval of the policy just trained (eval.every), outside time_step_s; by
        # the main process only, which logs it
        **periodic_eval(run, step),
    }
    run.log.step(metrics, rollout.sampled)
    return metrics


def rft_learn(run: Run, kept: Sequence[Group], sampled: Sequence[Group]) -> dict[str, Any]:
    """3. the verified winners; 5. the SFT loss on them, a token mean over all their tokens.
    A round with no winner skips the update (never crashes). `kept`: this process's groups,
    `sampled`: the global batch's."""
    algo = run.config.algorithm
    winners = rejection_sampling_winners(kept, algo)
    kept_items, train_groups = _totals(
        sum(len(group.completions) for group in winners), len(winners)
    )
    sampled_items = sum(len(group.completions) for group in sampled)
    metrics: dict[str, Any] = {
        "kept_items": kept_items,
        "kept_fraction": kept_items / sampled_items if sampled_items else 0.0,
        "train_groups": train_groups,
        "sft_loss": None,
        "grad_norm": None,
        "lr": None,
    }
    if train_groups:
        batch = _batch(run, winners)
        norm = Normalizer.of(batch.loss_mask, 1.0, batch_total)

        def loss_of(out: ForwardOutput, rows: slice) -> LossOutput:
            return sft_loss(out.logprobs, batch.loss_mask[rows].to(out.logprobs), norm)

        update = run.learner.fit(batch, loss_of)
        metrics |= {"sft_loss": update.pop("loss"), **update}
    return metrics


def dpo_learn(run: Run, kept: Sequence[Group], sampled: Sequence[Group]) -> dict[str, Any]:
    """3. the preference pairs, each a 2-member group (chosen, rejected); 4. their reference
    sequence logprobs, before any update of the round; 5. the DPO / IPO loss. Rows 2i and
    2i + 1 are pair i and never split across micro-batches. The loss is the mean over the
    global batch's pairs."""
    algo = run.config.algorithm
    pairs, pair_groups = dpo_pairs(kept, algo)
    num_pairs, pair_groups = _totals(len(pairs), pair_groups)
    metrics: dict[str, Any] = {
        "pairs": num_pairs,
        "pair_groups": pair_groups,
        **dict.fromkeys(("dpo_loss", "dpo_margin", "dpo_accuracy", "grad_norm", "lr")),
    }
    if not num_pairs:
        return metrics
    batch = _batch(run, pairs)
    initial = algo.dpo_reference == "initial"
    reference = sequence_logprobs(
        run.learner.start_logprobs(batch, initial=initial), batch.loss_mask
    )

    def loss_of(out: ForwardOutput, rows: slice) -> LossOutput:
        logprobs = sequence_logprobs(out.logprobs, batch.loss_mask[rows].to(out.logprobs))
        ref = reference[rows].to(logprobs)
        return dpo_loss(
            logprobs[0::2],
            logprobs[1::2],
            ref[0::2],
            ref[1::2],
            beta=algo.dpo_beta,
            variant=algo.dpo_loss,
            num_pairs=num_pairs,
        )

    update = run.learner.fit(batch, loss_of, rows_per_unit=2)
    return metrics | {"dpo_loss": update.pop("loss"), **update}


LEARN: dict[str, Callable[[Run, Sequence[Group], Sequence[Group]], dict[str, Any]]] = {
    "rft": rft_learn,
    "dpo": dpo_learn,
}


def _batch(run: Run, groups: Sequence[Group]) -> Batch:
    """The groups' batch; a process with none of the global batch's joins with no rows."""
    if not groups:
        return filler_batch(0)
    mask_truncated = run.config.algorithm.mask_truncated
    return build_batch(groups, pad_token_id=run.engine.pad_token_id, mask_truncated=mask_truncated)


def _totals(*counts: int) -> list[int]:
    """`counts` summed over every process (themselves in one process)."""
    return [int(total) for total in all_reduce([float(count) for count in counts])]


def reward_table(groups: Sequence[Group]) -> tuple[Tensor, Tensor]:
    """(rewards, valid) [B, G] of scored groups, G the largest group; NaN and not valid where
    an item was not verified or a group is shorter."""
    width = max(len(group.results) for group in groups)
    rewards = torch.full((len(groups), width), torch.nan)
    valid = torch.zeros((len(groups), width), dtype=torch.bool)
    for index, group in enumerate(groups):
        size = len(group.results)
        rewards[index, :size] = torch.tensor(group.rewards)
        valid[index, :size] = torch.tensor(group.valid)
    return rewards, valid


def pass_rate(groups: Sequence[Group], threshold: float) -> float | None:
    """Share of the verified completions whose reward is >= threshold; None: none verified."""
    scores = [r.score for group in groups for r in group.results if r.ok]
    return sum(score >= threshold for score in scores) / len(scores) if scores else None


def rejection_sampling_winners(groups: Sequence[Group], algo: AlgorithmConfig) -> list[Group]:
    """Each group cut down to its winners (groups with none left out)."""
    if not groups:
        return []
    rewards, valid = reward_table(groups)
    keep = rejection_sampling_keep(
        rewards, valid, threshold=algo.pass_threshold, max_per_prompt=algo.rft_max_per_prompt
    )
    winners = []
    for group, kept in zip(groups, keep.tolist(), strict=True):
        members = [i for i, k in enumerate(kept) if k]
        if members:
            winners.append(_members(group, members))
    return winners


def dpo_pairs(groups: Sequence[Group], algo: AlgorithmConfig) -> tuple[list[Group], int]:
    """One (chosen, rejected) group per preference pair, pair by pair, and how many of the
    groups gave at least one pair."""
    if not groups:
        return [], 0
    rewards, valid = reward_table(groups)
    index: PairIndex = preference_pairs(
        rewards, valid, mode=algo.dpo_pairs, min_margin=algo.dpo_min_margin
    )
    pairs = [
        _members(groups[g], [c, r])
        for g, c, r in zip(
            index.group.tolist(), index.chosen.tolist(), index.rejected.tolist(), strict=True
        )
    ]
    return pairs, len(set(index.group.tolist()))


def _members(group: Group, members: list[int]) -> Group:
    return Group(
        group.row,
        group.prompt_ids,
        [group.completions[i] for i in members],
        [group.results[i] for i in members],
        policy_version=group.policy_version,
    )
