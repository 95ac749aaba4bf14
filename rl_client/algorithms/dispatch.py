"""One lookup for every knob's dispatch dict: an unknown name fails listing the valid ones."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TypeVar

T = TypeVar("T")


def lookup(table: Mapping[str, T], name: str, knob: str) -> T:
    """`table[name]`, or a KeyError that names the knob and lists the valid keys."""
    try:
        return table[name]
    except KeyError:
        valid = ", ".join(sorted(table))
        raise KeyError(f"unknown {knob} {name!r}; valid: {valid}") from None
