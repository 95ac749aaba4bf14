"""A test double of a judge endpoint (tests/support/misbehaving_backend.py), one per module,
for the judge's and the model graders' tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from misbehaving_backend import MisbehavingBackend


@pytest.fixture(scope="module")
def backend() -> Iterator[MisbehavingBackend]:
    double = MisbehavingBackend()
    yield double
    double.stop()
