"""`rl-client eval`: n samples per prompt through the trainer's rollout engine, scored by the
reward server; reports pass@k, maj@k, accuracy and per-prompt results, with masked samples
counted per status and never scored as wrong."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from rl_client.config import TrainConfig
from rl_client.data import PromptRow
from rl_client.engines.factory import build_engine
from rl_client.engines.versioned import VersionedEngine
from rl_client.eval_metrics import SampleOutcome, prompt_report, summarize
from rl_client.models import load_tokenizer
from rl_client.optim import resolve_device
from rl_client.rewards import RewardService, status_counts
from rl_client.rollout import Group, RolloutPlan, sample
from rl_client.run import (
    check_reward_names,
    eval_rows,
    reward_service,
    rollout_plan,
    tokenize_prompts,
)
from rl_client.run_log import row_record
from verifier_server.types import Result


def evaluate(
    config: TrainConfig, *, model_path: str | None = None, limit: int | None = None
) -> dict[str, Any]:
    """Scores `model_path` (default `model.path`; a checkpoint's `policy/` dir works too, LoRA
    adapters included) on `data.eval_path` (default `data.path`), split `data.eval_split`
    (default `data.split`). Writes eval.json to `output.dir` and returns it."""
    path = model_path or config.model.path
    device = resolve_device(config.train.device, config.train.threads)
    torch.manual_seed(config.train.seed)
    rows = eval_rows(config)[:limit]
    tokenizer = load_tokenizer(path)
    prompt_ids = tokenize_prompts(tokenizer, rows, config.data.max_prompt_tokens)
    model = _load_model(path, device)
    engine = VersionedEngine(build_engine(config, model, tokenizer), 0)
    try:
        with reward_service(config.reward) as rewards:
            check_reward_names(rows, rewards.verifier_names())
            report, groups = score_samples(
                engine, rewards, rows, prompt_ids, config, progress=config.output.progress
            )
    finally:
        engine.close()
    report = {"model": path, **report}
    output = Path(config.output.dir)
    output.mkdir(parents=True, exist_ok=True)
    (output / "eval.json").write_text(json.dumps(report, indent=2))
    if config.eval.save_samples is not None:
        _save_samples(Path(config.eval.save_samples), groups, config.eval.pass_threshold)
    return report


def score_samples(
    engine: VersionedEngine,
    rewards: RewardService,
    rows: list[PromptRow],
    prompt_ids: list[list[int]],
    config: TrainConfig,
    *,
    progress: bool,
) -> tuple[dict[str, Any], list[Group]]:
    """`config.eval_samples` samples of each row from `engine`, scored: the summary (pass@k,
    maj@k, accuracy, counts per status) with `per_prompt`, and the scored groups."""
    settings = config.eval
    plan = rollout_plan(
        config.rollout.model_copy(update={"group_size": config.eval_samples}), overlong=None
    )
    groups = _sample_with_progress(engine, rewards, rows, prompt_ids, plan, progress)
    threshold = settings.pass_threshold
    prompts = [
        prompt_report(g.row.id, [_outcome(c.text, r, threshold) for c, r in _pairs(g)], settings.k)
        for g in groups
    ]
    report = {
        "samples_per_prompt": plan.sampling.n,
        **summarize(prompts, settings.k),
        **status_counts([r for g in groups for r in g.results]),
        "per_prompt": [p.as_json() for p in prompts],
    }
    return report, groups


def _sample_with_progress(
    engine: VersionedEngine,
    rewards: RewardService,
    rows: list[PromptRow],
    prompt_ids: list[list[int]],
    plan: RolloutPlan,
    progress: bool,
) -> list[Group]:
    """Generates one engine call's worth of prompts at a time, for the progress bar; each
    chunk's rewards are requested at once and collected at the end, so scoring still overlaps
    generation."""
    step = plan.chunk_prompts
    bar = tqdm(total=len(rows), desc="eval", unit="prompt", disable=not progress)
    pending = []
    with bar:
        for start in range(0, len(rows), step):
            chunk = slice(start, start + step)
            tag = f"eval{start}"
            pending.append(sample(engine, rewards, rows[chunk], prompt_ids[chunk], plan, tag=tag))
            bar.update(len(rows[chunk]))
    return [group for batch in pending for group in batch.finish()[0]]


def _load_model(path: str, device: torch.device) -> torch.nn.Module:
    if (Path(path) / "adapter_config.json").exists():  # a LoRA checkpoint: base + adapters
        from peft import AutoPeftModelForCausalLM

        return AutoPeftModelForCausalLM.from_pretrained(path).to(device).eval()
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path).to(device).eval()


def _pairs(group: Group) -> list[tuple[Any, Result]]:
    return list(zip(group.completions, group.results, strict=True))


def _outcome(completion: str, result: Result, threshold: float) -> SampleOutcome:
    """Majority voting compares the verifier's extracted answer when it reports one (the math
    verifier's `details.extracted_answer`), else the stripped completion."""
    extracted = result.details.get("extracted_answer")
    answer = extracted if isinstance(extracted, str) else completion.strip()
    if not result.ok:
        return SampleOutcome(answer, None, None, result.status.name)
    return SampleOutcome(answer, result.score, result.score >= threshold, result.status.name)


def _save_samples(path: Path, groups: list[Group], threshold: float) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as f:
        for group in groups:
            for index, (completion, result) in enumerate(_pairs(group)):
                record = {
                    **row_record(group.row),
                    "sample": index,
                    "completion": completion.text,
                    "score": result.score if result.ok else None,
                    "correct": result.score >= threshold if result.ok else None,
                    "status": result.status.name,
                    "reason": result.reason,
                }
                f.write(json.dumps(record) + "\n")


def report_table(report: dict[str, Any], ks: list[int]) -> str:
    """The summary as aligned `name  value` lines, for the terminal."""
    names = ["prompts", "samples_per_prompt", "verified_samples", "masked_samples"]
    names += ["accuracy", "reward_mean"]
    for k in ks:
        names += [f"pass@{k}", f"maj@{k}", f"prompts_with_{k}_verified"]
    names += sorted(name for name in report if name.startswith("masked_") and name not in names)
    width = max(len(name) for name in names)
    lines = []
    for name in names:
        value = report[name]
        shown = "-" if value is None else f"{value:.4f}" if isinstance(value, float) else value
        lines.append(f"{name.ljust(width)}  {shown}")
    return "\n".join(lines)
