"""A checkpoint's policy as a plain Hugging Face directory (config.json, safetensors,
tokenizer) that `AutoModelForCausalLM.from_pretrained` loads without peft or torch.distributed:
what `rl-client export` writes, and `<output.dir>/final/` at the end of every run.

The model is rebuilt from the checkpoint's `config.yaml` (`model.path`, LoRA settings) and
takes the checkpoint's weights: a sharded checkpoint's are read whole into this one process
(no torchrun needed), a one-process checkpoint's from its `policy/`. LoRA adapters are merged
into the base weights. The value head (PPO's critic) is not part of the export.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import torch
import yaml

from rl_client.checkpoint import STATE_FILE, CheckpointError, is_sharded, policy_dir
from rl_client.config import ModelConfig
from rl_client.models import load_policy, load_tokenizer


def export_policy(checkpoint: Path, out_dir: Path) -> Path:
    """Writes `checkpoint`'s policy to `out_dir` (replaced if it exists); returns `out_dir`."""
    if not (checkpoint / STATE_FILE).exists():
        raise CheckpointError(f"{checkpoint}: not a complete checkpoint (no {STATE_FILE})")
    saved = yaml.safe_load((checkpoint / "config.yaml").read_text())
    config = ModelConfig.model_validate({**saved["model"], "gradient_checkpointing": False})
    model = load_policy(config, torch.device("cpu"), checkpoint=policy_dir(checkpoint))
    if is_sharded(checkpoint):
        from rl_client.sharded_checkpoint import TOKENIZER_DIR, load_policy_weights

        load_policy_weights(checkpoint, model)
        tokenizer_dir = checkpoint / TOKENIZER_DIR
    else:
        tokenizer_dir = checkpoint / "policy"
    if config.lora_r > 0:
        model = model.merge_and_unload()  # type: ignore[operator]
    shutil.rmtree(out_dir, ignore_errors=True)
    model.save_pretrained(str(out_dir))
    load_tokenizer(tokenizer_dir).save_pretrained(str(out_dir))
    return out_dir
