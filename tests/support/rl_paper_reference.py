"""Independent implementations of the estimators, losses and aggregations, written from the
papers' equations as plain loops over Python lists and 0-d tensors (autograd flows through
them). Nothing here imports rl_client; the test_reference_* files compare ours against these.

Conventions shared with the code under test, stated once: `valid` False means "not verified";
a row's policy tokens are the positions where its mask is 1, in order; V = 0 after the last.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def policy_positions(mask_row: Tensor) -> list[int]:
    return [t for t in range(mask_row.shape[0]) if float(mask_row[t]) > 0]


# ---- outcome advantages, one group at a time


def grpo(rewards: list[float], valid: list[bool], eps: float) -> list[float]:
    """DeepSeekMath eq. 3 (outcome supervision): (r_i - mean(r)) / std(r) over the group;
    std with Bessel's correction, + eps; no spread -> 0."""
    scores = [r for r, ok in zip(rewards, valid, strict=True) if ok]
    n = len(scores)
    if n < 2:
        return [0.0] * len(rewards)
    mean = sum(scores) / n
    std = math.sqrt(sum((s - mean) ** 2 for s in scores) / (n - 1))
    if std == 0:
        return [0.0] * len(rewards)
    return [(r - mean) / (std + eps) if ok else 0.0 for r, ok in zip(rewards, valid, strict=True)]


def dr_grpo(rewards: list[float], valid: list[bool]) -> list[float]:
    """Dr. GRPO sec. 3.2: r_i - mean(r), no std."""
    scores = [r for r, ok in zip(rewards, valid, strict=True) if ok]
    if len(scores) < 2:
        return [0.0] * len(rewards)
    mean = sum(scores) / len(scores)
    return [r - mean if ok else 0.0 for r, ok in zip(rewards, valid, strict=True)]


def rloo(rewards: list[float], valid: list[bool]) -> list[float]:
    """RLOO (Ahmadian et al. 2024): r_i - 1/(k-1) sum_{j != i} r_j."""
    members = [i for i, ok in enumerate(valid) if ok]
    if len(members) < 2:
        return [0.0] * len(rewards)
    out = [0.0] * len(rewards)
    for i in members:
        others = [rewards[j] for j in members if j != i]
        out[i] = rewards[i] - sum(others) / len(others)
    return out


def reinforce_pp_sequence(
    groups: list[list[float]], valid: list[list[bool]], group_baseline: bool, eps: float
) -> list[list[float]]:
    """REINFORCE++ with one reward per sequence: (A - mean) / std over the batch (std with
    Bessel's correction), A = r - group mean (the -baseline variant) or r."""
    if group_baseline:
        centered = [dr_grpo(g, v) for g, v in zip(groups, valid, strict=True)]
    else:
        centered = [list(g) for g in groups]
    cells = [
        c
        for row, v in zip(centered, valid, strict=True)
        for c, ok in zip(row, v, strict=True)
        if ok
    ]
    n = len(cells)
    if n < 2:
        return [[0.0] * len(g) for g in groups]
    mean = sum(cells) / n
    std = math.sqrt(sum((c - mean) ** 2 for c in cells) / (n - 1))
    if std == 0:
        return [[0.0] * len(g) for g in groups]
    return [
        [(c - mean) / (std + eps) if ok else 0.0 for c, ok in zip(row, v, strict=True)]
        for row, v in zip(centered, valid, strict=True)
    ]


# ---- token-level estimators, one row at a time


def gae_row(rewards: list[float], values: list[float], gamma: float, lam: float) -> list[float]:
    """GAE eq. 16 over one episode's policy steps, as the explicit sum
    A_j = sum_{k >= j} (gamma lam)^(k - j) delta_k, delta_k = r_k + gamma V_{k+1} - V_k."""
    n = len(rewards)
    deltas = [
        rewards[j] + gamma * (values[j + 1] if j + 1 < n else 0.0) - values[j] for j in range(n)
    ]
    return [sum((gamma * lam) ** (k - j) * deltas[k] for k in range(j, n)) for j in range(n)]


def reward_to_go_row(rewards: list[float], gamma: float) -> list[float]:
    """sum_{k >= j} gamma^(k - j) r_k."""
    return [
        sum(gamma ** (k - j) * rewards[k] for k in range(j, len(rewards)))
        for j in range(len(rewards))
    ]


def whiten_cells(cells: list[float], eps: float) -> list[float]:
    """(x - mean) / (population std + eps)."""
    n = len(cells)
    mean = sum(cells) / n
    std = math.sqrt(sum((c - mean) ** 2 for c in cells) / n)
    return [(c - mean) / (std + eps) for c in cells]


# ---- losses: per-token terms and their aggregation (0-d tensors, autograd flows)


def ppo_token_loss(
    logprob: Tensor,
    old: float,
    advantage: float,
    clip_low: float,
    clip_high: float,
    dual_clip: float | None,
) -> Tensor:
    """-min(rho A, clip(rho, 1 - eps_low, 1 + eps_high) A) (PPO eq. 7; DAPO eq. 10); with
    dual clip c and A < 0: -max(min(...), c A) (Dual-clip PPO, arXiv:1912.09729)."""
    rho = torch.exp(logprob - old)
    clipped = torch.clamp(rho, 1 - clip_low, 1 + clip_high)
    objective = torch.minimum(rho * advantage, clipped * advantage)
    if dual_clip is not None and advantage < 0:
        objective = torch.maximum(objective, torch.tensor(dual_clip * advantage, dtype=rho.dtype))
    return -objective


def aggregate(mode: str, losses: list[list[Tensor | None]], constant: float) -> Tensor:
    """`losses[i][t]` is None off the mask. Rows with no token are not sequences."""
    rows = [[x for x in row if x is not None] for row in losses]
    rows = [row for row in rows if row]
    if mode == "token_mean":
        return sum(x for row in rows for x in row) / sum(len(row) for row in rows)
    if mode == "seq_mean_token_mean":
        return sum(sum(row) / len(row) for row in rows) / len(rows)
    if mode == "seq_mean_token_sum":
        return sum(sum(row) for row in rows) / len(rows)
    if mode == "seq_mean_token_sum_norm":
        return sum(sum(row) / constant for row in rows) / len(rows)
    raise ValueError(mode)


def value_token_loss(value: Tensor, old: float, ret: float, clip: float | None) -> Tensor:
    """1/2 (V - R)^2, or PPO's clipped form 1/2 max((V - R)^2, (V_clip - R)^2) with
    V_clip = old + clip(V - old, -c, c)."""
    plain = (value - ret) ** 2
    if clip is None:
        return 0.5 * plain
    clipped_value = old + torch.clamp(value - old, -clip, clip)
    return 0.5 * torch.maximum(plain, (clipped_value - ret) ** 2)


# ---- KL estimators (Schulman, "Approximating KL Divergence"), x ~ pi, r = ref(x) / pi(x)


def k1(logprob: Tensor, ref: float) -> Tensor:
    return -(ref - logprob)


def k2(logprob: Tensor, ref: float) -> Tensor:
    return (ref - logprob) ** 2 / 2


def k3(logprob: Tensor, ref: float) -> Tensor:
    log_r = ref - logprob
    return torch.exp(log_r) - 1 - log_r


# ---- preference losses over sequence log-probabilities (floats), one pair at a time


def dpo_pair(pi_w: float, pi_l: float, ref_w: float, ref_l: float, beta: float) -> float:
    """DPO eq. 7: -log sigma(beta log(pi(y_w)/ref(y_w)) - beta log(pi(y_l)/ref(y_l))),
    with the logistic function written out."""
    z = beta * (pi_w - ref_w) - beta * (pi_l - ref_l)
    return -math.log(1.0 / (1.0 + math.exp(-z)))


def dpo_pair_grad_chosen(
    pi_w: float, pi_l: float, ref_w: float, ref_l: float, beta: float
) -> float:
    """DPO sec. 4, the gradient: -beta sigma(r_l - r_w) d log pi(y_w), r = beta log(pi/ref)."""
    r_w, r_l = beta * (pi_w - ref_w), beta * (pi_l - ref_l)
    return -beta / (1.0 + math.exp(-(r_l - r_w)))


def ipo_pair(pi_w: float, pi_l: float, ref_w: float, ref_l: float, tau: float) -> float:
    """IPO eq. 17: (h_pi(y_w, y_l) - 1/(2 tau))^2 with
    h_pi = log(pi(y_w) ref(y_l) / (pi(y_l) ref(y_w)))."""
    h = math.log(math.exp(pi_w) * math.exp(ref_l) / (math.exp(pi_l) * math.exp(ref_w)))
    return (h - 1.0 / (2.0 * tau)) ** 2


# ---- selection from one scored group (None: could not be verified)


def best_of_n(rewards: list[float | None], threshold: float, k: int) -> list[int]:
    """Indices kept by rejection sampling: verified, >= threshold, the k best (ties: lower
    index first), in index order."""
    eligible = [i for i, r in enumerate(rewards) if r is not None and r >= threshold]
    ranked = sorted(eligible, key=lambda i: (-rewards[i], i))  # type: ignore[operator]
    return sorted(ranked[:k])


def pairs_all(rewards: list[float | None], margin: float) -> list[tuple[int, int]]:
    return [
        (i, j)
        for i, ri in enumerate(rewards)
        for j, rj in enumerate(rewards)
        if ri is not None and rj is not None and ri - rj > 0 and ri - rj >= margin
    ]


def pair_best_worst(rewards: list[float | None], margin: float) -> list[tuple[int, int]]:
    verified = [i for i, r in enumerate(rewards) if r is not None]
    if not verified:
        return []
    best = min(verified, key=lambda i: (-rewards[i], i))  # type: ignore[operator]
    worst = min(verified, key=lambda i: (rewards[i], i))  # type: ignore[operator]
    gap = rewards[best] - rewards[worst]  # type: ignore[operator]
    return [(best, worst)] if gap > 0 and gap >= margin else []
