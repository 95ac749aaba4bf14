"""Reward hacks found by attacking the code verifier after issue 12, one row per route that
once scored a non-solution, or made an item's status non-OK (masked: a free pass), from the
completion alone. Each now ends with status OK and score 0 (or the honest score)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from verifier_server.types import Item, Result, Status
from verifier_server.verifiers.code import CodeParams, CodeVerifier

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def verifier() -> Iterator[CodeVerifier]:
    verifier = CodeVerifier()
    verifier.warm_up()
    yield verifier
    verifier.pool().close()


def score_raw(verifier: CodeVerifier, completion: str, reference: dict, **params: object) -> Result:
    items = [Item(id="x", completion=completion, reference=reference)]
    return verifier.score(items, CodeParams(extract="raw", **params))[0]


ADD_STDIO = {"language": "cpp", "tests": [{"stdin": "1 2\n", "stdout": "3\n"}]}
# A 70 MB binary: it compiled, and writing it into each test run's 64 MB /work failed the
# run's setup (ENOSPC), a sandbox error: STATUS_VERIFIER_ERROR, so the item was masked.
HUGE_BINARY = (
    "#include <cstdio>\nchar big[70 << 20] = {1};\n"
    'int main() { int a, b; scanf("%d %d", &a, &b); printf("%d\\n", a + b + big[a * 1000]); }\n'
)


def test_a_binary_too_large_for_the_runs_is_a_compile_error(verifier: CodeVerifier) -> None:
    result = score_raw(verifier, HUGE_BINARY, ADD_STDIO)
    assert (result.status, result.score, result.reason) == (Status.OK, 0.0, "compile_error")
    assert result.details["compile_outcome"] == "output_limit"
