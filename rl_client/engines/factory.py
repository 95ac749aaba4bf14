"""The rollout engine a training config asks for."""

from __future__ import annotations

from typing import Any

import torch

from rl_client.config import TrainConfig
from rl_client.distributed import SINGLE, World
from rl_client.engines.base import RolloutEngine
from rl_client.engines.hf import HFEngine


def build_engine(
    config: TrainConfig, model: torch.nn.Module, tokenizer: Any, *, world: World = SINGLE
) -> RolloutEngine:
    """An engine sampling from `model`'s current weights (a vLLM engine starts from
    `model.path` and is sent the weights at once: a resumed or LoRA policy differs).
    `world`: this process's place under torchrun; the remote engine dispatches from its rank
    and lets rank 0 alone write and reload the weights."""
    rollout = config.rollout
    if rollout.engine == "hf":
        return HFEngine(
            model, tokenizer, batch_size=rollout.batch_size, copy_model=rollout.mode == "async"
        )
    engine: RolloutEngine
    if rollout.engine == "vllm":
        from rl_client.engines.vllm_local import VLLMEngine

        settings = rollout.vllm
        engine = VLLMEngine(
            config.model.path,
            tokenizer,
            dtype=config.model.dtype if settings.dtype == "auto" else settings.dtype,
            seed=config.train.seed,
            max_model_len=settings.max_model_len,
            kv_cache_mb=settings.kv_cache_mb,
            gpu_memory_utilization=settings.gpu_memory_utilization,
            enforce_eager=settings.enforce_eager,
            sleep_mode=settings.sleep_mode,
            sync_timeout_s=settings.sync_timeout_s,
        )
    else:
        from rl_client.engines.vllm_remote import RemoteVLLMEngine

        assert rollout.remote is not None  # the config checks it
        engine = RemoteVLLMEngine.from_settings(
            rollout.remote, tokenizer, rank=world.rank, leader=world.is_main
        )
    try:
        engine.sync_weights(model)
    except BaseException:
        engine.close()
        raise
    return engine
