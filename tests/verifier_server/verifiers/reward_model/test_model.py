"""Loading and scoring a tiny random reward model through the real transformers code."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from tiny_models import one_torch_thread, random_reward_model, word_tokenizer

from rm_encoding.encoding import conversation, encode_batch
from verifier_server.verifiers.reward_model.model import RewardModel, _chunks


@pytest.fixture(scope="module", autouse=True)
def _one_thread() -> Iterator[None]:
    with one_torch_thread():
        yield


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return random_reward_model(tmp_path_factory.mktemp("rm"))


CONVERSATIONS = [
    conversation("what is the capital of france", (), "paris"),
    conversation("", (), "lyon is not the capital"),
    conversation(
        "x", [{"role": "system", "content": "judge"}, {"role": "user", "content": "rate"}], "fine"
    ),
    conversation("rate this", (), "good " * 40),
]


def test_the_chat_template_frames_prompt_and_completion() -> None:
    tokenizer = word_tokenizer()
    (encoded,) = encode_batch(tokenizer, [CONVERSATIONS[0]], max_length=100)
    text = tokenizer.decode(encoded.input_ids)
    assert text.startswith("<|user|> what is the capital of france")
    assert text.endswith("<|assistant|> paris")
    assert encoded.truncated_tokens == 0


def test_long_inputs_lose_their_start_not_their_end() -> None:
    tokenizer = word_tokenizer()
    (full,) = encode_batch(tokenizer, [CONVERSATIONS[3]], max_length=1000)
    (cut,) = encode_batch(tokenizer, [CONVERSATIONS[3]], max_length=10)
    assert cut.input_ids == full.input_ids[-10:]
    assert cut.truncated_tokens == len(full.input_ids) - 10


def test_batched_scores_equal_one_at_a_time(model_dir: Path) -> None:
    # Right padding must not move the token the head reads, whatever the batch mix.
    model = RewardModel.load(model_dir, max_length=64)
    together = [s.raw for s in model.score(CONVERSATIONS)]
    alone = [model.score([c])[0].raw for c in CONVERSATIONS]
    assert together == pytest.approx(alone, abs=1e-5)
    assert len(set(together)) == len(together)  # different inputs, different scores
    tight = RewardModel.load(model_dir, max_length=64, max_batch_tokens=40)
    assert [s.raw for s in tight.score(CONVERSATIONS)] == pytest.approx(alone, abs=1e-5)


def test_chunks_bound_padded_tokens() -> None:
    # Sorted lengths 3, 5, 9 with a budget of 12: [3, 5] (2 * 5 = 10 <= 12), then [9].
    assert _chunks([0, 1, 2], [3, 5, 9], 12) == [[0, 1], [2]]
    assert _chunks([0], [50], 12) == [[0]]  # too long alone still runs


def test_a_model_with_more_than_one_label_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="2 labels"):
        RewardModel.load(random_reward_model(tmp_path, num_labels=2))


def test_a_path_that_is_not_a_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="not a directory"):
        RewardModel.load(tmp_path / "nope")
