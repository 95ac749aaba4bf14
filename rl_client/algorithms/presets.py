"""Named algorithms as settings of the orthogonal knobs in `AlgorithmConfig`.

A preset fills in every knob it names; anything set in the config file or on the command
line wins over it. The values follow each paper's reference setting.
"""

from __future__ import annotations

from typing import Any

PRESETS: dict[str, dict[str, Any]] = {
    # DeepSeekMath (arXiv:2402.03300): group-normalised advantages, per-sequence mean,
    # k3 KL to the reference as a loss term with beta 0.04 (eq. 3-4). Differentiated, k3's
    # gradient is that of KL(ref || pi), the reverse direction: the paper's choice, kept.
    "grpo": {
        "advantage": "grpo",
        "clip_low": 0.2,
        "clip_high": 0.2,
        "loss_aggregation": "seq_mean_token_mean",
        "kl_coef": 0.04,
        "kl_estimator": "k3",
        "kl_placement": "loss",
    },
    # DAPO (arXiv:2503.14476): clip-higher, token-level loss, no KL, dynamic sampling and
    # soft overlong punishment (L_cache = 20% of the generation budget: 4096 of 20480).
    "dapo": {
        "advantage": "grpo",
        "clip_low": 0.2,
        "clip_high": 0.28,
        "loss_aggregation": "token_mean",
        "kl_coef": 0.0,
        "dynamic_sampling": True,
        "overlong_weight": 1.0,
        "overlong_cache_fraction": 0.2,
    },
    # Dr. GRPO (arXiv:2503.20783): no std division, constant length normaliser, no KL.
    "dr_grpo": {
        "advantage": "dr_grpo",
        "clip_low": 0.2,
        "clip_high": 0.2,
        "loss_aggregation": "seq_mean_token_sum_norm",
        "kl_coef": 0.0,
    },
    # RLOO (arXiv:2402.14740, sec. 3): leave-one-out baseline, k1 KL folded into the reward,
    # the whole completion one action: its log-probability is a token sum (a per-sequence
    # token mean would reintroduce the length bias of Dr. GRPO, sec. 3.1).
    "rloo": {
        "advantage": "rloo",
        "clip_low": 0.2,
        "clip_high": 0.2,
        "loss_aggregation": "seq_mean_token_sum",
        "kl_coef": 0.05,
        "kl_estimator": "k1",
        "kl_placement": "reward",
    },
    # REINFORCE++ (arXiv:2501.03262, sec. 3): the k1 KL per token in the reward, reward-to-go,
    # advantages whitened over the batch's tokens; the group baseline is REINFORCE++-baseline.
    "reinforce_pp": {
        "advantage": "reinforce_pp",
        "group_baseline": True,
        "reinforce_pp_form": "token",
        "clip_low": 0.2,
        "clip_high": 0.2,
        "loss_aggregation": "token_mean",
        "kl_coef": 0.01,
        "kl_estimator": "k1",
        "kl_placement": "reward",
    },
    # PPO for LMs (arXiv:2203.02155): a value head and GAE, per-token KL in the reward.
    "ppo": {
        "advantage": "gae",
        "gamma": 1.0,
        "gae_lambda": 0.95,
        "clip_low": 0.2,
        "clip_high": 0.2,
        "loss_aggregation": "token_mean",
        "kl_coef": 0.05,
        "kl_estimator": "k1",
        "kl_placement": "reward",
        "ppo_epochs": 2,
        "value_coef": 0.5,
        "value_clip": 0.2,
    },
    # Rejection-sampling fine-tuning (RAFT, arXiv:2304.06767; ReST-EM, arXiv:2312.06585):
    # best-of-N by the verifier, then the SFT loss on the winners.
    "rft": {
        "objective": "rft",
        "kl_coef": 0.0,
        "pass_threshold": 1.0,
        "rft_max_per_prompt": 1,
    },
    # Online iterated DPO (Xiong et al., arXiv:2312.11456; Guo et al., arXiv:2402.04792): the
    # policy's own samples ranked by the server, best against worst, DPO's sigmoid loss with
    # beta 0.1 against the initial model.
    "online_dpo": {
        "objective": "dpo",
        "kl_coef": 0.0,
        "dpo_beta": 0.1,
        "dpo_loss": "sigmoid",
        "dpo_pairs": "best_worst",
        "dpo_reference": "initial",
    },
}
