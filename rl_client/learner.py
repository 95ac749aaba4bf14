"""The learner: logprobs under the current policy, the reference and value passes, and the
update (micro-batches with gradient accumulation, mu passes, AdamW, clipping, schedule).

One optimiser step per pass over the batch. Since the weights do not move within the first
pass, the "recomputed" behaviour logprobs are taken from that pass's own forward (detached):
no extra forward pass, and the ratio is exactly 1 on the first pass as PPO expects.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from rl_client.algorithms.kl import kl_estimate
from rl_client.algorithms.losses import (
    LossOutput,
    Normalizer,
    aggregate,
    ppo_clip_loss,
    truncated_importance_weights,
    value_loss,
)
from rl_client.batch import Batch
from rl_client.config import AlgorithmConfig, TrainSettings
from rl_client.optim import autocast, build_optimizer


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
        value_head: torch.nn.Linear | None = None,
    ) -> None:
        self.model = model
        self.algo = algo
        self.settings = train
        self.temperature = temperature  # the sampler's: logits are divided by it here too
        self.seq_len_norm = seq_len_norm
        self.device = device
        self.reference = reference
        self.value_head = value_head
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

    def _micro_batches(self, size: int, rows_per_unit: int = 1) -> Iterator[slice]:
        """Slices of at most micro_batch_size rows (at least one unit) holding whole units."""
        step = max(rows_per_unit, self.settings.micro_batch_size // rows_per_unit * rows_per_unit)
        for start in range(0, size, step):
            yield slice(start, min(start + step, size))

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
    def prepare(self, batch: Batch) -> None:
        """Fills `ref_logprobs` (when the KL coefficient is > 0) and `old_values` (gae)."""
        if not self.has_reference and self.value_head is None:
            return
        ref, old_values = [], []
        for rows in self._micro_batches(batch.size):
            if self.has_reference:
                ref.append(self._reference_logprobs(batch, rows))
            if self.value_head is not None:
                old_values.append(self.forward(self.model, batch, rows, values=True).values)
        if ref:
            batch.ref_logprobs = torch.cat(ref).cpu() * batch.completion_mask
        if old_values:
            batch.old_values = torch.cat(old_values).cpu() * batch.completion_mask

    def _reference_logprobs(self, batch: Batch, rows: slice) -> Tensor:
        if self.uses_adapter_reference:  # LoRA: the reference is the base without adapters
            with self.model.disable_adapter():  # type: ignore[operator]
                return self.forward(self.model, batch, rows, values=False).logprobs
        assert self.reference is not None, "a reference model was not loaded"
        return self.forward(self.reference, batch, rows, values=False).logprobs

    # ---- the update

    def update(self, batch: Batch) -> dict[str, float]:
        """mu passes over the batch, one optimiser step each. Returns the step's metrics."""
        algo = self.algo
        assert batch.advantages is not None
        norm = Normalizer.of(batch.loss_mask, self.seq_len_norm)
        behavior = batch.sampler_logprobs.clone() if algo.behavior_logprobs == "sampler" else None
        recomputed = torch.zeros_like(batch.sampler_logprobs)
        sums: dict[str, float] = defaultdict(float)
        weights: dict[str, float] = defaultdict(float)

        def record(name: str, value: float, weight: float) -> None:
            sums[name] += value * weight
            weights[name] += weight

        for epoch in range(algo.ppo_epochs):
            self.optimizer.zero_grad(set_to_none=True)
            for rows in self._micro_batches(batch.size):
                mask = batch.loss_mask[rows].to(self.device)
                tokens = float(mask.sum())
                out = self.forward(
                    self.model,
                    batch,
                    rows,
                    values=self.value_head is not None,
                    entropy_grad=algo.entropy_coef > 0,
                )
                if epoch == 0:
                    recomputed[rows] = out.logprobs.detach().cpu()
                    record("entropy", _masked_mean(out.entropy.detach(), mask), tokens)
                old = (behavior if behavior is not None else recomputed)[rows].to(self.device)
                tis = None
                if behavior is None and algo.tis_cap is not None:
                    tis = truncated_importance_weights(
                        old, batch.sampler_logprobs[rows].to(self.device), algo.tis_cap
                    )
                    if epoch == 0:
                        record("tis_weight_mean", _masked_mean(tis, mask), tokens)
                        truncated = (tis >= algo.tis_cap).float()
                        record("tis_truncated_fraction", _masked_mean(truncated, mask), tokens)
                policy = ppo_clip_loss(
                    out.logprobs,
                    old,
                    batch.advantages[rows].to(self.device),
                    mask,
                    clip_low=algo.clip_low,
                    clip_high=algo.clip_high,
                    dual_clip=algo.dual_clip,
                    aggregation=algo.loss_aggregation,
                    norm=norm,
                    token_weights=tis,
                )
                loss = policy.loss
                record("policy_loss", policy.loss.item(), 1.0)
                if algo.entropy_coef > 0:  # PPO's c2 * S (arXiv:1707.06347, eq. 9)
                    entropy = aggregate(algo.loss_aggregation, out.entropy, mask, norm)
                    loss = loss - algo.entropy_coef * entropy
                for name, value in policy.metrics.items():
                    record(name, value, tokens)
                if batch.ref_logprobs is not None:
                    kl = kl_estimate(
                        algo.kl_estimator, out.logprobs, batch.ref_logprobs[rows].to(self.device)
                    )
                    if epoch == 0:
                        record("kl", _masked_mean(kl.detach(), mask), tokens)
                    if algo.kl_placement == "loss":
                        kl_loss = aggregate(algo.loss_aggregation, kl, mask, norm)
                        loss = loss + algo.kl_coef * kl_loss
                if out.values is not None:
                    assert batch.old_values is not None and batch.returns is not None
                    values = value_loss(
                        out.values,
                        batch.old_values[rows].to(self.device),
                        batch.returns[rows].to(self.device),
                        mask,
                        clip=algo.value_clip,
                        aggregation=algo.loss_aggregation,
                        norm=norm,
                    )
                    loss = loss + algo.value_coef * values.loss
                    record("value_loss", values.loss.item(), 1.0)
                    for name, value in values.metrics.items():
                        record(name, value, tokens)
                loss.backward()
                record("loss", loss.item(), 1.0)
            record("grad_norm", self._step(), 1.0)
        record("lr", self.scheduler.get_last_lr()[0], 1.0)
        self.scheduler.step()
        # Sampler vs trainer logprobs of the same tokens (before the update): numerics of the
        # engine, plus the policy lag in async mode.
        drift = (recomputed - batch.sampler_logprobs).abs() * batch.completion_mask
        record("logprob_drift", _masked_mean(drift, batch.completion_mask), 1.0)
        record("logprob_drift_max", float(drift.max()), 1.0)
        metrics = {name: sums[name] / weights[name] for name in sums if weights[name] > 0}
        # Losses are summed over micro-batches (each already carries its share of the batch
        # denominator) and averaged over passes.
        for name in ("loss", "policy_loss", "value_loss"):
            if name in sums:
                metrics[name] = sums[name] / algo.ppo_epochs
        return metrics

    def fit(
        self,
        batch: Batch,
        loss_of: Callable[[ForwardOutput, slice], LossOutput],
        *,
        rows_per_unit: int = 1,
    ) -> dict[str, float]:
        """mu passes over the batch, one optimiser step each, for the losses that need no
        advantages (rft's SFT loss, DPO's): `loss_of(out, rows)` is the micro-batch's share
        of the batch loss. Micro-batches hold whole units of `rows_per_unit` rows (a DPO
        pair). The loss metrics are the first pass's: the policy of the round's start on its
        fresh samples."""
        sums: dict[str, float] = defaultdict(float)
        weights: dict[str, float] = defaultdict(float)
        for epoch in range(self.algo.ppo_epochs):
            self.optimizer.zero_grad(set_to_none=True)
            for rows in self._micro_batches(batch.size, rows_per_unit):
                result = loss_of(self.forward(self.model, batch, rows, values=False), rows)
                result.loss.backward()
                sums["loss"] += result.loss.item()  # each carries its share of the batch's
                if epoch == 0:
                    units = (rows.stop - rows.start) / rows_per_unit
                    for name, value in result.metrics.items():
                        sums[name] += value * units
                        weights[name] += units
            sums["grad_norm"] += self._step()
        metrics = {name: sums[name] / weights[name] for name in weights}
        metrics["loss"] = sums["loss"] / self.algo.ppo_epochs
        metrics["grad_norm"] = sums["grad_norm"] / self.algo.ppo_epochs
        metrics["lr"] = self.scheduler.get_last_lr()[0]
        self.scheduler.step()
        return metrics

    @torch.no_grad()
    def start_logprobs(self, batch: Batch, *, initial: bool) -> Tensor:
        """[N, T] logprobs of the batch before any update: under the initial model (the
        frozen reference, or the base without adapters), or under the policy as it is."""
        parts = []
        for rows in self._micro_batches(batch.size):
            if initial:
                parts.append(self._reference_logprobs(batch, rows))
            else:
                parts.append(self.forward(self.model, batch, rows, values=False).logprobs)
        return torch.cat(parts).cpu()

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


def _masked_mean(values: Tensor, mask: Tensor) -> float:
    return float((values * mask).sum() / mask.sum().clamp(min=1))
