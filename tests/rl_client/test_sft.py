"""SFT: packing keeps labels and restarts positions; the loss covers only the response."""

from __future__ import annotations

from pathlib import Path

from rl_client.config import SFTConfig, build_config
from rl_client.models import load_tokenizer
from rl_client.sft import IGNORE, pack, sft_examples


def test_packing_keeps_labels_and_restarts_positions() -> None:
    examples = [
        ([1, 2, 3], [IGNORE, 2, 3]),
        ([4, 5], [IGNORE, 5]),
        ([6, 7, 8], [IGNORE, IGNORE, 8]),
    ]
    rows = pack(examples, max_len=5)
    assert rows == [
        ([1, 2, 3, 4, 5], [IGNORE, 2, 3, IGNORE, 5], [0, 1, 2, 0, 1]),
        ([6, 7, 8], [IGNORE, IGNORE, 8], [0, 1, 2]),
    ]


def test_sft_labels_cover_only_the_response_and_eos(tiny_model: Path, tmp_path: Path) -> None:
    data = tmp_path / "sft.jsonl"
    data.write_text('{"prompt": "What is 2+2?", "completion": "\\\\boxed{4}"}\n')
    config = build_config(
        SFTConfig,
        {"model": {"path": str(tiny_model)}, "data": {"path": str(data)}, "output_dir": "o"},
    )
    tokenizer = load_tokenizer(tiny_model)
    [(ids, labels)] = sft_examples(config, tokenizer)
    answer = tokenizer("\\boxed{4}", add_special_tokens=False)["input_ids"]
    response = [*answer, tokenizer.eos_token_id]
    assert labels[-len(response) :] == response
    assert set(labels[: -len(response)]) == {IGNORE}
    assert ids[-len(response) :] == response
    prompt_text = tokenizer.decode(ids[: -len(response)])
    assert prompt_text.endswith("What is 2+2?<|im_end|>\n<|im_start|>assistant\n")
