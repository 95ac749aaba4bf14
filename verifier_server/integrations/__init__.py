"""Adapters that plug the server into RL trainers; none of them imports torch or the trainer.

- `trl_reward(spec, address=...)`: a TRL `GRPOTrainer` reward function
  (verifier_server.integrations.trl).
- `compute_score_async` / `compute_score` / `compute_score_batch`: verl's custom reward
  function; the async one gathers a batch's calls into one request
  (verifier_server.integrations.verl).
- `reward_func(queries, prompts, labels)`: OpenRLHF's file-mode `--remote_rm_url`
  (verifier_server.integrations.openrlhf); the HTTP front end serves its URL mode.

Items the server could not verify (any status but OK) are never passed off as a score of 0.0
where the trainer can tell: TRL gets None; verl and OpenRLHF, which cannot mask, get 0.0 with
`verified` = 0.0 beside it in their logs.
"""

from verifier_server.integrations.openrlhf import reward_func
from verifier_server.integrations.trl import trl_reward
from verifier_server.integrations.verl import (
    compute_score,
    compute_score_async,
    compute_score_batch,
)

__all__ = [
    "compute_score",
    "compute_score_async",
    "compute_score_batch",
    "reward_func",
    "trl_reward",
]
