"""A pool of real sandbox slots shared by the sandbox tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from sandboxes import SandboxPool


@pytest.fixture(scope="session")
def pool() -> Iterator[SandboxPool]:
    with SandboxPool(slots=2) as pool:
        pool.start()
        yield pool
