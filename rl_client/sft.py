"""`rl-client sft`: a supervised warm start. The prompt goes through the chat template; the
loss covers only the response tokens (and the EOS after them).

With `packing`, examples are concatenated into rows of `max_seq_len` tokens. Attention is not
blocked between packed examples (plain causal attention), so a later example can see an
earlier one; position ids restart at each example.
"""

from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Any

import torch

from rl_client.config import SFTConfig, dump_config
from rl_client.data import DataError, read_rows, render_prompt, to_messages
from rl_client.models import load_policy, load_tokenizer
from rl_client.optim import autocast, build_optimizer, resolve_device

IGNORE = -100


def sft_examples(config: SFTConfig, tokenizer: Any) -> list[tuple[list[int], list[int]]]:
    """(input_ids, labels) per row; labels are IGNORE on the prompt."""
    data = config.data
    examples = []
    for index, row in enumerate(read_rows(data.path)):
        where = f"{data.path}: row {index}"
        if data.prompt_key not in row or not isinstance(row.get(data.completion_key), str):
            raise DataError(
                f"{where}: needs {data.prompt_key!r} and a string {data.completion_key!r}"
            )
        messages = to_messages(row[data.prompt_key], data.system_prompt, f"{where}: prompt")
        prompt = tokenizer(render_prompt(tokenizer, messages), add_special_tokens=False)
        answer = tokenizer(row[data.completion_key], add_special_tokens=False)
        prompt_ids = prompt["input_ids"]
        answer_ids = [*answer["input_ids"], tokenizer.eos_token_id]
        ids = (prompt_ids + answer_ids)[: config.train.max_seq_len]
        labels = ([IGNORE] * len(prompt_ids) + answer_ids)[: config.train.max_seq_len]
        examples.append((ids, labels))
    if not examples:
        raise DataError(f"{data.path}: no rows")
    return examples


def pack(
    examples: list[tuple[list[int], list[int]]], max_len: int
) -> list[tuple[list[int], list[int], list[int]]]:
    """Greedy packing into rows of at most max_len: (ids, labels, position_ids)."""
    rows: list[tuple[list[int], list[int], list[int]]] = []
    ids: list[int] = []
    labels: list[int] = []
    positions: list[int] = []
    for example_ids, example_labels in examples:
        if ids and len(ids) + len(example_ids) > max_len:
            rows.append((ids, labels, positions))
            ids, labels, positions = [], [], []
        ids += example_ids
        labels += example_labels
        positions += list(range(len(example_ids)))
    if ids:
        rows.append((ids, labels, positions))
    return rows


def collate(
    rows: list[tuple[list[int], list[int], list[int]]], pad_id: int
) -> dict[str, torch.Tensor]:
    width = max(len(r[0]) for r in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE, dtype=torch.long)
    positions = torch.zeros((len(rows), width), dtype=torch.long)
    attention = torch.zeros((len(rows), width), dtype=torch.long)
    for i, (ids, row_labels, row_positions) in enumerate(rows):
        input_ids[i, : len(ids)] = torch.tensor(ids)
        labels[i, : len(ids)] = torch.tensor(row_labels)
        positions[i, : len(ids)] = torch.tensor(row_positions)
        attention[i, : len(ids)] = 1
    return {
        "input_ids": input_ids,
        "labels": labels,
        "position_ids": positions,
        "attention_mask": attention,
    }


def run_sft(config: SFTConfig) -> list[float]:
    """Trains and saves model + tokenizer to `output.dir`; returns the loss per step."""
    print(dump_config(config))
    settings = config.train
    device = resolve_device(settings.device, settings.threads)
    random.seed(settings.seed)
    torch.manual_seed(settings.seed)
    tokenizer = load_tokenizer(config.model.path)
    examples = sft_examples(config, tokenizer)
    if settings.packing:
        rows = pack(examples, settings.max_seq_len)
    else:
        rows = [(ids, labels, list(range(len(ids)))) for ids, labels in examples]
    model = load_policy(config.model, device)
    optimizer, scheduler = build_optimizer(
        model.parameters(),
        lr=settings.lr,
        weight_decay=settings.weight_decay,
        warmup_steps=settings.warmup_steps,
        total_steps=settings.steps,
        schedule=settings.schedule,
        min_lr_ratio=settings.min_lr_ratio,
    )
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    rng = random.Random(settings.seed)
    order: list[int] = []
    losses = []
    began = time.perf_counter()
    for step in range(1, settings.steps + 1):
        if len(order) < settings.batch_size:
            order += rng.sample(range(len(rows)), len(rows))
        picked, order = order[: settings.batch_size], order[settings.batch_size :]
        batch = {k: v.to(device) for k, v in collate([rows[i] for i in picked], pad_id).items()}
        with autocast(device, settings.bf16):
            loss = model(**batch).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if settings.max_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), settings.max_grad_norm)
        optimizer.step()
        scheduler.step()
        losses.append(loss.item())
        if step % max(1, settings.steps // 10) == 0 or step == settings.steps:
            print(f"sft step {step}/{settings.steps}  loss {loss.item():.4f}")
    output = Path(config.output.dir)
    if config.model.lora_r > 0:  # save a plain model the RL run can load as its base
        model = model.merge_and_unload()  # type: ignore[operator]
    model.save_pretrained(str(output))
    tokenizer.save_pretrained(str(output))
    (output / "sft_config.yaml").write_text(dump_config(config))
    print(f"saved to {output} ({time.perf_counter() - began:.1f} s)")
    return losses
