"""Train a Bradley-Terry reward model for the `reward_model` verifier.

    python -m rl_client.reward_model.train --data pairs.jsonl --base BASE_DIR --out OUT_DIR

BASE_DIR is a local transformers model directory: a causal LM (its LM head is replaced by a
new one-output score head) or a reward model to train further. Each pair's chosen and
rejected conversations are encoded exactly as the verifier encodes what it serves
(rm_encoding.encoding); the loss is -log sigmoid(r_chosen - r_rejected).
OUT_DIR receives the model, its tokenizer and `training.json` (this run's config and
metrics), ready for `verifier_settings.reward_model.models.<name>.path`.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal, get_args

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from rl_client.reward_model.loss import LossOutput, bradley_terry_loss
from rl_client.reward_model.pairs import Pair, load_pairs, split
from rm_encoding.encoding import encode_batch
from rm_encoding.padding import ensure_pad_token, pad_batch


class TrainConfig(BaseModel):
    """One training run. Each field's docstring is its --help text."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    data: Path
    """JSONL of {"prompt", "chosen", "rejected"}; prompt may be a list of chat messages."""
    base: Path
    """Local model directory to start from (a causal LM or a reward model)."""
    out: Path
    """Directory to save the trained reward model to."""
    epochs: int = Field(default=1, ge=1)
    """Passes over the training pairs."""
    lr: float = Field(default=1e-5, gt=0)
    """AdamW learning rate (constant)."""
    batch_size: int = Field(default=8, ge=1)
    """Pairs per optimizer step (2x this many sequences per forward pass)."""
    max_length: int = Field(default=1024, ge=2)
    """Tokens per conversation; longer ones lose their start, as when served."""
    weight_decay: float = Field(default=0.0, ge=0)
    """AdamW weight decay."""
    max_grad_norm: float = Field(default=1.0, gt=0)
    """Gradient clipping by global norm."""
    eval_fraction: float = Field(default=0.1, ge=0, lt=1)
    """Share of pairs held out to measure accuracy on; 0 for none."""
    seed: int = 0
    """Seeds the split, the shuffling and torch."""
    device: str = Field(default="auto", pattern=r"^(cpu|auto|cuda(:\d+)?)$")
    """cpu, cuda, cuda:N, or auto (cuda when available)."""
    dtype: Literal["float32", "bfloat16"] = "float32"
    """Training dtype."""
    log_every: int = Field(default=10, ge=1)
    """Print training metrics every this many steps."""


def train(cfg: TrainConfig, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Runs the whole training; returns the final metrics (also saved in training.json)."""
    # 1. data
    train_pairs, eval_pairs = split(load_pairs(cfg.data), cfg.eval_fraction, cfg.seed)
    log(f"{len(train_pairs)} training pairs, {len(eval_pairs)} held out")
    # 2. model
    torch.manual_seed(cfg.seed)
    device = (
        ("cuda" if torch.cuda.is_available() else "cpu") if cfg.device == "auto" else cfg.device
    )
    tokenizer = AutoTokenizer.from_pretrained(cfg.base, local_files_only=True)
    model = AutoModelForSequenceClassification.from_pretrained(
        cfg.base, num_labels=1, dtype=getattr(torch, cfg.dtype), local_files_only=True
    )
    ensure_pad_token(model, tokenizer)
    model.to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    # 3. optimise
    rng, step, metrics = random.Random(cfg.seed), 0, {}
    for epoch in range(1, cfg.epochs + 1):
        model.train()
        order = train_pairs[:]
        rng.shuffle(order)
        for start in range(0, len(order), cfg.batch_size):
            out = pair_loss(model, tokenizer, order[start : start + cfg.batch_size], cfg, device)
            optimizer.zero_grad()
            out.loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
            optimizer.step()
            step += 1
            if step % cfg.log_every == 0:
                log(f"epoch {epoch} step {step} " + _format(out.metrics))
        # 4. evaluate
        metrics = {"epoch": epoch, "step": step, **_prefixed("train", out.metrics)}
        if eval_pairs:
            metrics.update(_prefixed("eval", evaluate(model, tokenizer, eval_pairs, cfg, device)))
        log(f"epoch {epoch} done: " + _format(metrics))
    # 5. save
    model.config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(cfg.out)
    tokenizer.save_pretrained(cfg.out)
    record = {"config": cfg.model_dump(mode="json"), "metrics": metrics}
    (Path(cfg.out) / "training.json").write_text(json.dumps(record, indent=2))
    log(f"saved to {cfg.out}")
    return metrics


def pair_loss(
    model: Any, tokenizer: Any, pairs: Sequence[Pair], cfg: TrainConfig, device: str
) -> LossOutput:
    """Scores chosen and rejected conversations in one forward pass; the BT loss over them."""
    encoded = encode_batch(
        tokenizer, [p.chosen for p in pairs] + [p.rejected for p in pairs], cfg.max_length
    )
    input_ids, attention_mask = pad_batch(
        [e.input_ids for e in encoded], model.config.pad_token_id, device
    )
    rewards = model(input_ids=input_ids, attention_mask=attention_mask).logits[:, 0].float()  # [2B]
    return bradley_terry_loss(rewards[: len(pairs)], rewards[len(pairs) :])


@torch.no_grad()
def evaluate(
    model: Any, tokenizer: Any, pairs: Sequence[Pair], cfg: TrainConfig, device: str
) -> dict[str, float]:
    """Loss, accuracy and margin over `pairs`, weighted by batch size."""
    model.eval()
    totals: dict[str, float] = {}
    for start in range(0, len(pairs), cfg.batch_size):
        batch = pairs[start : start + cfg.batch_size]
        for key, value in pair_loss(model, tokenizer, batch, cfg, device).metrics.items():
            totals[key] = totals.get(key, 0.0) + value * len(batch)
    return {key: value / len(pairs) for key, value in totals.items()}


def _prefixed(prefix: str, metrics: dict[str, float]) -> dict[str, float]:
    return {f"{prefix}_{key}": value for key, value in metrics.items()}


def _format(metrics: dict[str, Any]) -> str:
    return " ".join(
        f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in metrics.items()
    )


def parse_args(argv: Sequence[str] | None = None, prog: str = "rl-client rm") -> TrainConfig:
    """The command line -> TrainConfig, validated; each flag's help is the field's docstring."""
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Train a Bradley-Terry reward model from (prompt, chosen, rejected) pairs.",
    )
    for name, info in TrainConfig.model_fields.items():
        flag = "--" + name.replace("_", "-")
        if info.is_required():
            parser.add_argument(flag, type=Path, required=True, help=info.description)
            continue
        choices = get_args(info.annotation) or None
        parser.add_argument(
            flag,
            type=str if choices else info.annotation,
            choices=choices,
            default=info.default,
            help=f"{info.description} (default: {info.default})",
        )
    args = parser.parse_args(argv)
    try:
        return TrainConfig.model_validate(vars(args))
    except ValidationError as exc:
        parser.error(
            "; ".join(f"--{str(e['loc'][0]).replace('_', '-')}: {e['msg']}" for e in exc.errors())
        )


def main(argv: Sequence[str] | None = None, prog: str = "rl-client rm") -> int:
    """`rl-client rm FLAGS` (also `python -m rl_client.reward_model.train FLAGS`)."""
    cfg = parse_args(argv, prog)
    print(cfg.model_dump_json(indent=2))  # the resolved config, as training.json records it
    train(cfg)
    return 0


if __name__ == "__main__":
    sys.exit(main(prog="python -m rl_client.reward_model.train"))
