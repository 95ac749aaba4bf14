"""What a worker's death costs the job it was running.

Only the item that was running (for a bulk job, the job) pays, and how depends on why the
worker died: killed for its time limit, TIMEOUT; killed or crashed while the completion alone
was being scored (see verifier_server.execution.completion_phase), OK with score 0; any other
death, VERIFIER_ERROR "worker_died". What it had not started goes back to the queue.
"""

from __future__ import annotations

import signal
from dataclasses import dataclass, replace

from verifier_server.types import Status
from verifier_server.workers.jobs import Queued, QueuedBulk, QueuedItems
from verifier_server.workers.link import WorkerLink

# Deaths a completion can cause in C code (a parser's stack overflow, an abort); a SIGKILL
# from outside (an operator, the OOM killer) is not counted as the completion's doing.
_CRASHES = frozenset({signal.SIGSEGV, signal.SIGBUS, signal.SIGABRT, signal.SIGFPE, signal.SIGILL})


@dataclass(frozen=True, slots=True)
class DeathToll:
    settled: int  # items of the job that got their result here
    requeue: Queued | None  # what goes back to the front of the queue


def settle_death(worker: WorkerLink, job: Queued) -> DeathToll:
    """A worker died while running `job`: sets the results of the items it cost."""
    if worker.retiring and not worker.timed_out:
        # It said Retiring after its last item and runs nothing now (killed before it could
        # exit, say): what it had not answered goes back, nothing fails.
        return DeathToll(0, job if isinstance(job, QueuedBulk) else job.rest(worker.index))
    if isinstance(job, QueuedBulk) and not worker.timed_out and not job.retried:
        # A bulk job's items are all "running": a worker killed from outside would cost up to
        # 512 of them. Linear-time verifiers do not kill workers, so try once more.
        return DeathToll(0, replace(job, retried=True))
    if isinstance(job, QueuedBulk):
        start, stop = 0, job.n_items
        what = "the bulk job"
    else:
        start, stop = worker.index, worker.index + 1
        what = "this item"
    code = worker.process.exitcode  # None while the forkserver has not told it
    crashed = -(code or 0) in _CRASHES
    if isinstance(job, QueuedItems) and worker.in_completion and (worker.timed_out or crashed):
        # The reference was already checked: the completion alone stopped the worker.
        if worker.timed_out:
            reason = "answer_too_complex"
            why = f"the answer ran past the {job.timeout_s:g} s limit; its worker was killed"
        else:
            reason = "answer_crashed_verifier"
            why = f"the answer crashed its worker (exit code {code})"
        job.score_zero(start, reason, why)
    elif worker.timed_out:
        why = f"{what} exceeded its {job.timeout_s:g} s limit; its worker was killed"
        job.fail(start, stop, Status.TIMEOUT, "timeout", why)
    else:
        how = "" if code is None else f" with code {code}"
        job.fail(
            start,
            stop,
            Status.VERIFIER_ERROR,
            "worker_died",
            f"worker exited{how} while scoring {what}",
        )
    rest = job.rest(stop) if isinstance(job, QueuedItems) and stop < job.n_items else None
    return DeathToll(stop - start, rest)
