"""The policy's weights as (checkpoint name, tensor) pairs, as an engine loads them.

Names are those of the Hugging Face checkpoint (`model.layers.0.self_attn.q_proj.weight`).
A LoRA policy (peft) is exported merged, W + (alpha / r) B A per adapted layer, computed
without touching the trained module: merging in place and unmerging afterwards would leave
rounding residue in the frozen base weights.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor


def export_weights(model: torch.nn.Module) -> Iterator[tuple[str, Tensor]]:
    """Detached tensors on the model's device in its dtype; tied weights appear under every
    name the state dict gives them (loaders skip the names they do not use)."""
    if not hasattr(model, "get_base_model"):
        for name, tensor in model.state_dict().items():
            yield name, tensor.detach()
        return
    yield from _merged_lora_weights(model)


def _merged_lora_weights(model: torch.nn.Module) -> Iterator[tuple[str, Tensor]]:
    from peft.tuners.lora import LoraLayer

    base = model.get_base_model()  # type: ignore[operator]
    adapter = model.active_adapter  # type: ignore[attr-defined]
    deltas: dict[str, Tensor] = {}
    for module_name, module in base.named_modules():
        if isinstance(module, LoraLayer) and adapter in module.lora_A:
            with torch.no_grad():
                deltas[f"{module_name}.weight"] = module.get_delta_weight(adapter)
    for name, tensor in base.state_dict().items():
        if "lora_" in name:
            continue
        name = name.replace(".base_layer.", ".")
        tensor = tensor.detach()
        if name in deltas:
            tensor = tensor + deltas[name].to(tensor.dtype)
        yield name, tensor


def weights_to_safetensors(model: torch.nn.Module) -> bytes:
    """The exported weights as one safetensors blob (CPU copies; shared tensors cloned, since
    safetensors refuses aliases)."""
    from safetensors.torch import save

    return save({name: tensor.cpu().clone().contiguous() for name, tensor in export_weights(model)})
