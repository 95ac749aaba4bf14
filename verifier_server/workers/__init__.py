"""A process pool for CPU-bound verifiers with a hard time limit per item.

Guarantees:
- Workers are forked from a forkserver that `start()` creates before any gRPC server or
  channel exists (gRPC forbids forking after); replacements come from the same forkserver.
- Items run one at a time per worker. An item that overruns its `timeout_s` is SIGKILLed with
  its worker and gets STATUS_TIMEOUT; the rest of its chunk is re-queued on other workers and
  the worker is replaced. No signal-based timeouts: they cannot stop C code.
- A kill for time during the verifier's `completion_phase()` (see verifier_server.execution;
  the reference was already checked) is the completion's doing: that item is OK with score 0
  and reason `answer_too_complex`, never a status a trainer would mask; so is a crash there
  (SIGSEGV, SIGBUS, SIGABRT, SIGFPE, SIGILL: `answer_crashed_verifier`).
- A worker that dies for any other reason (killed from outside, segfault, out of memory)
  costs only the item it was running (STATUS_VERIFIER_ERROR "worker_died"); the pool goes on.
- Items whose caller's deadline passed before they started come back STATUS_OVERLOADED, and
  chunks whose callers are all gone are dropped unstarted.
- Workers ignore SIGINT and die with their parent (PR_SET_PDEATHSIG), so none outlive it.

Not guaranteed: memory isolation beyond `memory_mb` (RLIMIT_AS per worker), fairness beyond
turns between callers (jobs, not items: first-in first-out within a caller), or any isolation
of untrusted *code*: that is the job of `sandboxes`.

In the order a job passes through them:
- pool.py: WorkerPool, the parent side: submit, assign to a worker, replies, deaths
- admission.py: the backlog by caller and the learned cost of an item
- jobs.py, fair_queue.py: a job while it waits and runs; the queue, fair between callers
- messages.py: what goes down a worker's pipe (ItemsJob, BulkJob, Cancel) and comes back
- link.py: the parent's end of one worker (its process, pipe, reader and writer threads)
- process.py: the worker process's loop (verifier_server.execution scores each item)
- deaths.py, health.py: what a worker's death costs its job; capacity and respawn backoff
"""

from verifier_server.workers.jobs import BulkFailed
from verifier_server.workers.messages import BulkJob
from verifier_server.workers.pool import WorkerPool

__all__ = ["BulkFailed", "BulkJob", "WorkerPool"]
