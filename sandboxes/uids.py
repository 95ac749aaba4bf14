"""The outside uids (and gids) of sandbox slots: a configured range, checked against the user
namespace this process is in, and handed out two at a time.

Each slot takes a pair from the range: one for its zygote (root inside the slot's user
namespace) and one for its runs. A pair is claimed by binding an abstract Unix socket named
after it and held for as long as the slot lives, so every process of this network namespace
that uses the same range (the server's workers) gets a different pair, with nothing to clean
up after a crash: the kernel releases the name when the holder dies.

Guaranteed: a pair is never held by two live slots of one network namespace; every uid of
the range is mapped in this process's user namespace and none is 0 (root, the server's own:
slots need root). Not guaranteed: that no other program on the machine uses these uids (choose
a range no user or service has), or uniqueness across network namespaces (two containers
that share host uids need disjoint ranges).
"""

from __future__ import annotations

import errno
import socket
from dataclasses import dataclass
from pathlib import Path

from sandboxes.limits import SandboxError

HOST_BASE = 1_000_000_000  # far above any real user or system range on a host
# 65534 is nobody and 65535 is (uid16_t)-1; below them, the top of a 65,536-uid namespace is
# the part container images leave free (their users start low: 0-999 system, 1000+ people).
NAMESPACE_TOP = 65_534
ID_MAX = 2**32 - 2  # (uid_t)-1 means "no change" to the kernel


@dataclass(frozen=True, slots=True)
class UidRange:
    """Outside uids and gids [base, base + count), two per slot."""

    base: int
    count: int

    @property
    def pairs(self) -> int:
        return self.count // 2


@dataclass
class UidClaim:
    """A pair held by this process until `release`: (zygote uid, run uid)."""

    zygote: int
    run: int
    holder: socket.socket

    def release(self) -> None:
        self.holder.close()


def mapped(map_text: str) -> list[tuple[int, int]]:
    """/proc/self/uid_map -> [(first, end)] of the ids usable in this namespace."""
    extents = []
    for line in map_text.splitlines():
        if line.strip():
            inside, _, length = (int(field) for field in line.split())
            extents.append((inside, inside + length))
    return extents


def _covered(first: int, end: int, extents: list[tuple[int, int]]) -> bool:
    return any(low <= first and end <= high for low, high in extents)


def _show(extents: list[tuple[int, int]]) -> str:
    return ", ".join(f"{low}-{high - 1}" for low, high in extents) or "none"


def resolve(
    base: int | None,
    count: int,
    slots: int,
    *,
    uid_map: str | None = None,
    gid_map: str | None = None,
) -> UidRange:
    """The range to use, checked; `base` None picks the default: HOST_BASE where this
    namespace maps it (a host, or a namespace with a large map), else the top `count` ids
    below NAMESPACE_TOP (a 65,536-uid container). Raises SandboxError naming the key."""
    uids = mapped(uid_map if uid_map is not None else Path("/proc/self/uid_map").read_text())
    gids = mapped(gid_map if gid_map is not None else Path("/proc/self/gid_map").read_text())
    base_key, count_key = "uid_base", "uid_count"
    if count < 2 * slots:
        raise SandboxError(
            f"{count_key}={count} is too small for {slots} slot(s): each slot takes 2 ids "
            f"(its zygote's and its runs'); set it to at least {2 * slots}"
        )
    if base is None:
        for candidate in (HOST_BASE, NAMESPACE_TOP - count):
            if candidate > 0 and all(
                _covered(candidate, candidate + count, e) for e in (uids, gids)
            ):
                base = candidate
                break
        else:
            raise SandboxError(
                f"{base_key} is unset and no default fits: {count_key}={count} ids at "
                f"{HOST_BASE} or below {NAMESPACE_TOP} are not mapped in this user namespace "
                f"(uids {_show(uids)}; gids {_show(gids)}); set {base_key} to a free range "
                "inside them"
            )
    end = base + count
    if base < 1 or end - 1 > ID_MAX:
        raise SandboxError(f"{base_key}={base}: ids must lie in 1..{ID_MAX}")
    for kind, extents in (("uids", uids), ("gids", gids)):
        if not _covered(base, end, extents):
            raise SandboxError(
                f"{base_key}={base}, {count_key}={count}: ids {base}-{end - 1} are not all "
                f"mapped in this user namespace (mapped {kind}: {_show(extents)}); choose a "
                "range inside them"
            )
    return UidRange(base, count)


def claim(ids: UidRange) -> UidClaim:
    """Takes a free pair of the range. Raises SandboxError when every pair is held."""
    for pair in range(ids.pairs):
        holder = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            holder.bind(f"\0verifier-rl/uids/{ids.base}/{pair}")
        except OSError as exc:
            holder.close()
            if exc.errno == errno.EADDRINUSE:
                continue
            raise SandboxError(f"cannot claim sandbox uids: {exc.strerror}") from None
        first = ids.base + 2 * pair
        return UidClaim(first, first + 1, holder)
    raise SandboxError(
        f"every pair of the {ids.count} sandbox uids from {ids.base} is in use by live slots: "
        "raise uid_count"
    )
