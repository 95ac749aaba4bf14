"""Loading the policy (optionally with LoRA adapters), the frozen reference, the value head."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from rl_client.config import ModelConfig

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def load_tokenizer(path: str | Path) -> Any:
    tokenizer = AutoTokenizer.from_pretrained(str(path))
    if tokenizer.chat_template is None:
        raise ValueError(f"{path}: the tokenizer has no chat template")
    if tokenizer.eos_token_id is None:
        raise ValueError(f"{path}: the tokenizer has no EOS token")
    return tokenizer


def load_policy(
    config: ModelConfig, device: torch.device, *, checkpoint: Path | None = None
) -> torch.nn.Module:
    """The trainable policy: from `config.path`, or from a checkpoint's `policy/` dir (full
    weights, or LoRA adapters on top of `config.path`)."""
    dtype = DTYPES[config.dtype]
    full_weights = checkpoint is not None and config.lora_r == 0
    source = str(checkpoint) if full_weights else config.path
    model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype)
    if config.lora_r > 0:
        from peft import LoraConfig, PeftModel, get_peft_model

        if checkpoint is not None:
            model = PeftModel.from_pretrained(model, str(checkpoint), is_trainable=True)
        else:
            lora = LoraConfig(
                r=config.lora_r,
                lora_alpha=config.lora_alpha,
                lora_dropout=config.lora_dropout,
                target_modules=list(config.lora_target_modules),
                task_type="CAUSAL_LM",
            )
            model = get_peft_model(model, lora)
    if config.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        if config.lora_r > 0:
            model.enable_input_require_grads()
    return model.to(device).train()


def load_reference(config: ModelConfig, device: torch.device) -> torch.nn.Module:
    """The frozen reference: the initial weights at `config.path`."""
    model = AutoModelForCausalLM.from_pretrained(config.path, dtype=DTYPES[config.dtype])
    model.requires_grad_(False)
    return model.to(device).eval()


def hidden_size(model: torch.nn.Module) -> int:
    return int(model.config.hidden_size)


def new_value_head(model: torch.nn.Module, device: torch.device) -> torch.nn.Linear:
    """V(s_t) from the last hidden state; zero-initialised so the first values are 0."""
    head = torch.nn.Linear(hidden_size(model), 1)
    torch.nn.init.zeros_(head.weight)
    torch.nn.init.zeros_(head.bias)
    return head.to(device)
