"""Fixtures: a tiny random Qwen2-style model and tokenizer built locally, and prompt files."""

from __future__ import annotations

from pathlib import Path

import pytest

from rl_client import toy


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A randomly initialised 2-layer model saved to disk (loaded back by the real code)."""
    return toy.build_model(tmp_path_factory.mktemp("tiny"), seed=0)


@pytest.fixture
def toy_prompts(tmp_path: Path) -> Path:
    return toy.write_rl_prompts(
        tmp_path / "prompts.jsonl",
        16,
        seed=0,
        reward={"name": "string_check", "params": {"operation": "contains"}},
        reference=toy.answer,
    )
