"""What passes down a worker's pipe: jobs from the parent, replies from the worker.

Plain frozen dataclasses, pickled by `multiprocessing.connection`. The parent sends an
`ItemsJob`, a `BulkJob`, a `Cancel` or `None` (exit); the worker answers with a `Reply`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from verifier_server.convert import ItemLimits
from verifier_server.types import Item, Result, RewardSpec

# --------------------------------------------------------------------------- parent to worker


@dataclass(frozen=True, slots=True)
class ItemsJob:
    """Items of one (verifier, params), scored one at a time: one ItemDone per item, or a
    JobStopped when the parent cancels the job or the worker retires in the middle of it."""

    verifier: str
    params: Any
    items: list[Item]
    deadline: float | None  # time.monotonic() (system-wide) past which items are not started


@dataclass(frozen=True, slots=True)
class BulkJob:
    """Serialized items of one linear-time verifier, scored in one go (see verifier_server.bulk):
    one BulkDone or BulkError for the whole job."""

    verifier: str
    params: Any
    spec: RewardSpec
    payload: bytes  # a serialized ScoreRequest holding exactly these items
    indices: list[int]  # their positions in the caller's request, for error fields
    item_limits: ItemLimits


@dataclass(frozen=True, slots=True)
class Cancel:
    """Every caller of the running ItemsJob has gone; stop it."""


# --------------------------------------------------------------------------- worker to parent


@dataclass(frozen=True, slots=True)
class Ready:
    pid: int


@dataclass(frozen=True, slots=True)
class ItemDone:
    index: int  # in the job's items
    result: Result
    ran: bool = True  # False: refused unstarted (its deadline had passed); costs say nothing


@dataclass(frozen=True, slots=True)
class BulkDone:
    response: bytes  # a serialized ScoreResponse, one result per item in order
    elapsed_s: float


@dataclass(frozen=True, slots=True)
class BulkError:
    message: str  # a server bug, reported for the job's items


@dataclass(frozen=True, slots=True)
class Phase:
    """The worker enters (True) or leaves (False) the completion phase of the item it runs
    (see verifier_server.execution.completion_phase)."""

    in_completion: bool


@dataclass(frozen=True, slots=True)
class JobStopped:
    """The worker stopped an ItemsJob before item `next_index` (cancelled, or it retires)."""

    next_index: int


@dataclass(frozen=True, slots=True)
class Retiring:
    """The worker exits after this message (its memory did not come back after an item);
    nothing it was given is lost: the parent re-queues what it had not started."""

    rss_mb: float


Reply = Ready | Phase | ItemDone | BulkDone | BulkError | JobStopped | Retiring
