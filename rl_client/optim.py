"""AdamW with linear warm-up, then a constant or cosine learning rate; device choice."""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch


def lr_multiplier(
    step: int, *, warmup_steps: int, total_steps: int, schedule: str, min_lr_ratio: float
) -> float:
    """Factor on the peak LR before optimiser step `step` (0-based).

    Warm-up: (step + 1) / warmup_steps, so the first step already moves. Then 'constant': 1;
    'cosine': min + (1 - min) * (1 + cos(pi * progress)) / 2, progress from 0 to 1 over the
    remaining steps."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant":
        return 1.0
    if schedule != "cosine":
        raise KeyError(f"unknown schedule {schedule!r}; valid: constant, cosine")
    decay_steps = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / decay_steps)
    return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def build_optimizer(
    parameters: Iterable[torch.nn.Parameter],
    *,
    lr: float,
    weight_decay: float,
    betas: tuple[float, float] = (0.9, 0.999),
    warmup_steps: int,
    total_steps: int,
    schedule: str,
    min_lr_ratio: float,
) -> tuple[torch.optim.AdamW, torch.optim.lr_scheduler.LambdaLR]:
    # fused: one kernel for all parameters instead of a few per tensor (CPU and CUDA).
    optimizer = torch.optim.AdamW(
        [p for p in parameters if p.requires_grad],
        lr=lr,
        weight_decay=weight_decay,
        betas=betas,
        fused=True,
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda step: lr_multiplier(
            step,
            warmup_steps=warmup_steps,
            total_steps=total_steps,
            schedule=schedule,
            min_lr_ratio=min_lr_ratio,
        ),
    )
    return optimizer, scheduler


def resolve_device(name: str, threads: int | None = None) -> torch.device:
    """The device to train on; also applies the CPU thread count when one is set (on a busy
    2-core machine, two spinning OpenMP threads can be slower than one)."""
    if threads is not None:
        torch.set_num_threads(threads)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("train.device is 'cuda' but torch sees no GPU")
    return torch.device(name)


def autocast(device: torch.device, bf16: bool) -> torch.autocast:
    """bf16 autocast on GPU when asked; a disabled context on CPU."""
    return torch.autocast(
        device_type=device.type, dtype=torch.bfloat16, enabled=bf16 and device.type == "cuda"
    )
