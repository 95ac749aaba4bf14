"""The learner: logprobs under the current policy, the reference and value passes, and the
update (micro-batches with gradient accumulation, mu passes, AdamW, clipping, schedule).

One optimiser step per pass over the batch. Since the weights do not move within the first
pass, the "recomputed" behaviour logprobs are taken from that pass's own forward (detached):
no extra forward pass, and the ratio is exactly 1 on the first pass as PPO expects.

Several processes (torchrun, `rl_client.distributed`): each holds its own groups of the
global batch and FSDP2-sharded models. The loss normalisers are the global batch's, the loss
is scaled by the world size (FSDP averages gradients), every process runs as many forwards
and backwards as the busiest one (zero-weight filler micro-batches: FSDP's collectives hang
otherwise) and the metrics are reduced over processes.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from rl_client.algorithms.estimators import Advantages
from rl_client.algorithms.losses import LossOutput, Normalizer, masked_mean
from rl_client.algorithms.objective import LossInputs, total_loss
from rl_client.batch import Batch, filler_batch
from rl_client.config import AlgorithmConfig, TrainSettings
from rl_client.distributed import (
    SINGLE,
    World,
    all_gather_objects,
    all_reduce,
    batch_total,
    loss_scale,
)
from rl_client.optim import autocast, build_optimizer


@dataclass(frozen=True)
class Prepared:
    """What the learner measures on a batch before the update: [N, T], 0 off the
    completion tokens."""

    ref_logprobs: Tensor | None  # the frozen reference's (kl_coef > 0)
    old_values: Tensor | None  # the value head's (gae)


# Each micro-batch's loss carries its share of the batch denominator: these add up over
# micro-batches (and are averaged over passes) instead of being token means.
SUMMED_METRICS = ("loss", "policy_loss", "value_loss")


@dataclass
class StepMetrics:
    """The metrics of one update: token diagnostics as means weighted by each micro-batch's
    loss tokens, the loss terms summed over micro-batches and averaged over passes, the
    rest (grad_norm, lr, drift) plain means."""

    sums: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    weights: dict[str, float] = field(default_factory=lambda: defaultdict(float))

    def add(self, values: dict[str, float], tokens: float = 1.0) -> None:
        for name, value in values.items():
            weight = 1.0 if name in SUMMED_METRICS else tokens
            self.sums[name] += value * weight
            self.weights[name] += weight

    @classmethod
    def merged(cls, parts: list[StepMetrics]) -> StepMetrics:
        """The metrics of every process as one: sums and weights added (the loss terms are
        each process's share of the global loss; grad_norm and lr are the same on all)."""
        merged = cls()
        for part in parts:
            for name, value in part.sums.items():
                merged.sums[name] += value
                merged.weights[name] += part.weights[name]
        return merged

    def means(self, passes: int) -> dict[str, float]:
        means = {n: self.sums[n] / self.weights[n] for n in self.sums if self.weights[n] > 0}
        for name in SUMMED_METRICS:
            if name in self.sums:
                means[name] = self.sums[name] / passes
        return means


@dataclass
class ForwardOutput:
    logprobs: Tensor  # [n, T] of the batch's completion tokens (with grad when training)
    entropy: Tensor  # [n, T] of the full next-token distribution (with grad if asked)
    values: Tensor | None  # [n, T] when a value head is attached


class Learner:
    def __init__(
        self,
        model: torch.nn.Module,
        *,
        algo: AlgorithmConfig,
        train: TrainSettings,
        temperature: float,
        seq_len_norm: float,
        device: torch.device,
        reference: torch.nn.Module | None = None,
        value_head: torch.nn.Module | None = None,
        world: World = SINGLE,
    ) -> None:
        """`model`, `reference` and `value_head` are FSDP2-sharded when `world` has several
        processes (`rl_client.distributed.shard_model`)."""
        self.model = model
        self.algo = algo
        self.settings = train
        self.temperature = temperature  # the sampler's: logits are divided by it here too
        self.seq_len_norm = seq_len_norm
        self.device = device
        self.reference = reference
        self.value_head = value_head
        self.world = world
        self.loss_scale = loss_scale(world)  # 1.0 in one process
        self._filler = filler_batch()  # the input of a filler micro-batch
        self.uses_adapter_reference = reference is None and hasattr(model, "disable_adapter")
        parameters = list(model.parameters()) + (
            list(value_head.parameters()) if value_head is not None else []
        )
        self.parameters = [p for p in parameters if p.requires_grad]
        self.optimizer, self.scheduler = build_optimizer(
            self.parameters,
            lr=train.lr,
            weight_decay=train.weight_decay,
            betas=train.betas,
            warmup_steps=train.warmup_steps,
            total_steps=train.steps,
            schedule=train.schedule,
            min_lr_ratio=train.min_lr_ratio,
        )

    @property
    def has_reference(self) -> bool:
        return self.algo.kl_coef > 0

    # ---- forward passes

    def _micro_batches(self, size: int, rows_per_unit: int = 1) -> list[slice | None]:
        """Slices of at most micro_batch_size rows (at least one unit) holding whole units.
        Several processes: then None (a filler) up to the most any process has, since every
        FSDP forward and backward is a collective all processes must join."""
        step = max(rows_per_unit, self.settings.micro_batch_size // rows_per_unit * rows_per_unit)
        slices: list[slice | None] = [
            slice(start, min(start + step, size)) for start in range(0, size, step)
        ]
        if self.world.distributed:
            most = int(all_reduce([float(len(slices))], "max")[0])
            slices += [None] * (most - len(slices))
        return slices

    def _rows(self, batch: Batch, rows: slice | None) -> tuple[Batch, slice]:
        """The micro-batch to run: `rows` of `batch`, or the filler's one row."""
        return (batch, rows) if rows is not None else (self._filler, slice(0, 1))

    def _filler_backward(self) -> None:
        """A backward that moves nothing but joins FSDP's gradient reduction: 0 x a forward
        through every sharded module (the value head too)."""
        out = self.forward(
            self.model, self._filler, slice(0, 1), values=self.value_head is not None
        )
        loss = out.logprobs.sum() * 0.0
        if out.values is not None:
            loss = loss + out.values.sum() * 0.0
        loss.backward()

    def forward(
        self,
        model: torch.nn.Module,
        batch: Batch,
        rows: slice,
        *,
        values: bool,
        entropy_grad: bool = False,
    ) -> ForwardOutput:
        width = batch.prompt_width
        input_ids = batch.input_ids[rows].to(self.device)
        length = input_ids.shape[1] - width  # T
        with autocast(self.device, self.settings.bf16):
            out = model(
                input_ids=input_ids,
                attention_mask=batch.attention_mask[rows].to(self.device),
                position_ids=batch.position_ids[rows].to(self.device),
                output_hidden_states=values,
                use_cache=False,
                logits_to_keep=length + 1,  # no LM head over the prompt
            )
        # The logits at position t predict token t + 1: completion tokens are predicted by
        # positions P - 1 .. P + T - 2, the first T of the T + 1 kept.
        logits = out.logits[:, :-1].float() / self.temperature  # [n, T, V]
        targets = input_ids[:, width:]
        log_probs = torch.log_softmax(logits, dim=-1)
        logprobs = log_probs.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
        with torch.set_grad_enabled(entropy_grad and torch.is_grad_enabled()):
            entropy = -(log_probs.exp() * log_probs).sum(dim=-1)
        value = None
        if values:
            assert self.value_head is not None
            hidden = out.hidden_states[-1][:, width - 1 : -1].float()
            value = self.value_head(hidden).squeeze(-1)
        return ForwardOutput(logprobs, entropy, value)

    @torch.no_grad()
    def prepare(self, batch: Batch) -> Prepared:
        """The reference's logprobs (when the KL coefficient is > 0) and the value head's
        estimates (gae), both before the update."""
        ref: list[Tensor] = []
        old_values: list[Tensor] = []
        if self.has_reference or self.value_head is not None:
            for rows in self._micro_batches(batch.size):
                part, part_rows = self._rows(batch, rows)
                if self.has_reference:
                    logprobs = self._reference_logprobs(part, part_rows)
                    if rows is not None:
                        ref.append(logprobs)
                if self.value_head is not None:
                    values = self.forward(self.model, part, part_rows, values=True).values
                    assert values is not None
                    if rows is not None:
                        old_values.append(values)
        return Prepared(
            ref_logprobs=_rows_of(ref, batch) if self.has_reference else None,
            old_values=_rows_of(old_values, batch) if self.value_head is not None else None,
        )

    @torch.no_grad()
    def start_logprobs(self, batch: Batch, *, initial: bool) -> Tensor:
        """[N, T] logprobs of the batch before any update: under the initial model (the
        frozen reference, or the base without adapters), or under the policy as it is."""
        parts = []
        for rows in self._micro_batches(batch.size):
            part, part_rows = self._rows(batch, rows)
            if initial:
                logprobs = self._reference_logprobs(part, part_rows)
            else:
                logprobs = self.forward(self.model, part, part_rows, values=False).logprobs
            if rows is not None:
                parts.append(logprobs)
        return torch.cat(parts).cpu() if parts else torch.zeros_like(batch.sampler_logprobs)

    def _reference_logprobs(self, batch: Batch, rows: slice) -> Tensor:
        if self.uses_adapter_reference:  # LoRA: the reference is the base without adapters
            with self.model.disable_adapter():  # type: ignore[operator]
                return self.forward(self.model, batch, rows, values=False).logprobs
        assert self.reference is not None, "a reference model was not loaded"
        return self.forward(self.reference, batch, rows, values=False).logprobs

    # ---- the update

    def update(self, batch: Batch, prepared: Prepared, advantages: Advantages) -> dict[str, float]:
        """mu passes over the batch, one optimiser step each. Returns the step's metrics."""
        algo = self.algo
        # The global batch's counts (this process's in one process).
        norm = Normalizer.of(batch.loss_mask, self.seq_len_norm, batch_total)
        behavior = batch.sampler_logprobs.clone() if algo.behavior_logprobs == "sampler" else None
        recomputed = torch.zeros_like(batch.sampler_logprobs)
        metrics = StepMetrics()
        for epoch in range(algo.ppo_epochs):
            self.optimizer.zero_grad(set_to_none=True)
            for rows in self._micro_batches(batch.size):
                if rows is None:
                    self._filler_backward()
                    continue
                out = self.forward(
                    self.model,
                    batch,
                    rows,
                    values=self.value_head is not None,
                    entropy_grad=algo.entropy_coef > 0,
                )
                if epoch == 0:
                    recomputed[rows] = out.logprobs.detach().cpu()
                old = behavior if behavior is not None else recomputed
                inputs = self._loss_inputs(batch, prepared, advantages, rows, out, old)
                result = total_loss(inputs, algo, norm, diagnostics=epoch == 0)
                (result.loss * self.loss_scale).backward()
                metrics.add(result.metrics, tokens=float(inputs.mask.sum()))
            metrics.add({"grad_norm": self._step()})
        metrics = self._across_processes(metrics)
        metrics.add({"lr": self.scheduler.get_last_lr()[0]})
        self.scheduler.step()
        metrics.add(self._drift(recomputed, batch))
        return metrics.means(passes=algo.ppo_epochs)

    def _across_processes(self, metrics: StepMetrics) -> StepMetrics:
        return (
            StepMetrics.merged(all_gather_objects(metrics)) if self.world.distributed else metrics
        )

    def _drift(self, recomputed: Tensor, batch: Batch) -> dict[str, float]:
        """Sampler vs trainer logprobs of the same tokens (before the update): numerics of
        the engine, plus the policy lag in async mode. Over the global batch."""
        mask = batch.completion_mask
        drift = (recomputed - batch.sampler_logprobs).abs() * mask
        if not self.world.distributed:
            return {
                "logprob_drift": masked_mean(drift, mask),
                "logprob_drift_max": float(drift.max()),
            }
        total, tokens = all_reduce([float(drift.sum()), float(mask.sum())])
        (most,) = all_reduce([float(drift.max()) if drift.numel() else 0.0], "max")
        return {"logprob_drift": total / max(tokens, 1.0), "logprob_drift_max": most}

    def fit(
        self,
        batch: Batch,
        loss_of: Callable[[ForwardOutput, slice], LossOutput],
        *,
        rows_per_unit: int = 1,
    ) -> dict[str, float]:
        """mu passes over the batch, one optimiser step each, for the losses that need no
        advantages (rft's SFT loss, DPO's): `loss_of(out, rows)` is the micro-batch's share
        of the (global) batch loss. Micro-batches hold whole units of `rows_per_unit` rows (a DPO
        pair). The loss's diagnostics are the first pass's: the policy of the round's start
        on its fresh samples, weighted by units."""
        metrics = StepMetrics()
        for epoch in range(self.algo.ppo_epochs):
            self.optimizer.zero_grad(set_to_none=True)
            for rows in self._micro_batches(batch.size, rows_per_unit):
                if rows is None:
                    self._filler_backward()
                    continue
                result = loss_of(self.forward(self.model, batch, rows, values=False), rows)
                (result.loss * self.loss_scale).backward()
                diagnostics = result.metrics if epoch == 0 else {}
                units = (rows.stop - rows.start) / rows_per_unit
                metrics.add({"loss": result.loss.item(), **diagnostics}, tokens=units)
            metrics.add({"grad_norm": self._step()})
        metrics = self._across_processes(metrics)
        metrics.add({"lr": self.scheduler.get_last_lr()[0]})
        self.scheduler.step()
        return metrics.means(passes=self.algo.ppo_epochs)

    def _loss_inputs(
        self,
        batch: Batch,
        prepared: Prepared,
        advantages: Advantages,
        rows: slice,
        out: ForwardOutput,
        old: Tensor,
    ) -> LossInputs:
        """The micro-batch `rows` of everything the loss reads, on the learner's device."""

        def take(tensor: Tensor) -> Tensor:
            return tensor[rows].to(self.device)

        proximal = self.algo.behavior_logprobs != "sampler"  # old = the learner's own
        return LossInputs(
            logprobs=out.logprobs,
            old_logprobs=take(old),
            advantages=take(advantages.advantages),
            mask=take(batch.loss_mask),
            entropy=out.entropy,
            sampler_logprobs=take(batch.sampler_logprobs) if proximal else None,
            ref_logprobs=take(prepared.ref_logprobs) if prepared.ref_logprobs is not None else None,
            values=out.values,
            old_values=take(prepared.old_values) if prepared.old_values is not None else None,
            returns=take(advantages.returns) if advantages.returns is not None else None,
        )

    def _step(self) -> float:
        limit = self.settings.max_grad_norm
        grad_norm = torch.nn.utils.clip_grad_norm_(
            self.parameters, limit if limit is not None else float("inf")
        )
        self.optimizer.step()
        return float(grad_norm)

    # ---- checkpoint state

    def state_dict(self) -> dict[str, Any]:
        state = {"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict()}
        if self.value_head is not None:
            state["value_head"] = self.value_head.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.value_head is not None:
            self.value_head.load_state_dict(state["value_head"])


def _rows_of(parts: list[Tensor], batch: Batch) -> Tensor:
    """[N, T] from the micro-batches' parts, 0 off the completion tokens (zeros when this
    process holds no rows)."""
    if not parts:
        return torch.zeros_like(batch.completion_mask)
    return torch.cat(parts).cpu() * batch.completion_mask
