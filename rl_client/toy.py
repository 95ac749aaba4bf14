"""A tiny model, a character-level tokenizer and a toy task, all built locally (no hub).

Used by `make run`, the end-to-end tests and the benchmark. The model is a 2-layer Qwen2-style
decoder (hidden 64, head_dim 64: the smallest shape vLLM's kernels accept). The tokenizer maps
each byte to one token and carries a ChatML chat template. The task:
single-digit arithmetic ("What is 3+4?"), answered as `\\boxed{7}`.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{{ message['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
SPECIAL_TOKENS = ["<|pad|>", "<|im_start|>", "<|im_end|>"]
SYSTEM_PROMPT = "Answer with the result in \\boxed{}."


def build_tokenizer(directory: str | Path) -> Any:
    """A byte-level BPE tokenizer with no merges (one token per byte: character-level for
    ASCII) and a ChatML chat template, saved to `directory`. Byte-level BPE is what Qwen2's
    tokenizer class expects, so `AutoTokenizer` loads it back unchanged."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {token: index for index, token in enumerate([*SPECIAL_TOKENS, *alphabet])}
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.add_special_tokens(SPECIAL_TOKENS)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, pad_token="<|pad|>", eos_token="<|im_end|>"
    )
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(str(directory))
    return fast


def build_model(
    directory: str | Path, *, hidden_size: int = 64, layers: int = 2, seed: int = 0
) -> Path:
    """A randomly initialised Qwen2-style causal LM and its tokenizer, saved to `directory`."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    directory = Path(directory)
    tokenizer = build_tokenizer(directory)
    config = Qwen2Config(
        vocab_size=(len(tokenizer) // 64 + 2) * 64,  # room for tokens AutoTokenizer adds
        hidden_size=hidden_size,
        intermediate_size=hidden_size * 4,
        num_hidden_layers=layers,
        num_attention_heads=hidden_size // 64 or 1,
        num_key_value_heads=hidden_size // 64 or 1,
        head_dim=64,
        max_position_embeddings=512,
        tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=None,
    )
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.save_pretrained(str(directory))
    return directory


def arithmetic_problems(count: int, *, seed: int, ops: str = "+-") -> list[tuple[str, int]]:
    """`count` ("3+4", 7) pairs with single-digit operands, drawn with a seeded RNG."""
    rng = random.Random(seed)
    problems = []
    for _ in range(count):
        a, b, op = rng.randint(0, 9), rng.randint(0, 9), rng.choice(ops)
        problems.append((f"{a}{op}{b}", a + b if op == "+" else a - b))
    return problems


def question(expression: str) -> str:
    return f"What is {expression}?"


def answer(value: int) -> str:
    return f"\\boxed{{{value}}}"


def write_rl_prompts(
    path: str | Path,
    count: int,
    *,
    seed: int,
    reward: dict[str, Any],
    reference: Callable[[int], str] = str,
    ops: str = "+-",
) -> Path:
    """A JSONL prompt set: the question, `reference(value)` and the reward spec per row."""
    path = Path(path)
    with path.open("w") as f:
        for index, (expression, value) in enumerate(arithmetic_problems(count, seed=seed, ops=ops)):
            row = {"id": f"q{index}", "prompt": question(expression), "reference": reference(value)}
            row["reward"] = reward
            f.write(json.dumps(row) + "\n")
    return path


def write_sft_data(
    path: str | Path, count: int, *, seed: int, correct_fraction: float, ops: str = "+-"
) -> Path:
    """A JSONL SFT set in the task's answer format. Only `correct_fraction` of the rows show
    the answer; the rest answer `\\boxed{?}` ("don't know"). The warm-started model then knows
    the format and, for some of its samples, the sum; RL has to learn to stop saying "?"."""
    rng = random.Random(seed + 1)
    path = Path(path)
    with path.open("w") as f:
        for expression, value in arithmetic_problems(count, seed=seed, ops=ops):
            shown = str(value) if rng.random() < correct_fraction else "?"
            row = {"prompt": question(expression), "completion": f"\\boxed{{{shown}}}"}
            f.write(json.dumps(row) + "\n")
    return path
