"""The code verifier with its sandbox slots started: one per test module (slots take a while)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from verifier_server.verifiers.code.verifier import CodeVerifier


@pytest.fixture(scope="module")
def verifier() -> Iterator[CodeVerifier]:
    verifier = CodeVerifier()
    verifier.warm_up()
    yield verifier
    verifier.pool().close()
