"""What a run reports: metrics.jsonl (one object per step), rollouts.jsonl (every completion
with its prompt, reference, score and status), the experiment trackers (TensorBoard, W&B,
MLflow), a progress bar, and at the end a summary table and the reward curve."""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rl_client.agentic.loop import episode_metrics
from rl_client.data import PromptRow
from rl_client.rewards import status_counts
from rl_client.rollout import Group
from rl_client.trackers import Tracker

# Printed in this order in the summary; all appear in metrics.jsonl.
SUMMARY_FIELDS = (
    "reward_mean",
    "reward_std",
    "masked_items",
    "dropped_groups",
    "filtered_groups",
    "kl",
    "clip_fraction",
    "entropy",
    "response_len_mean",
    "truncated_fraction",
    "time_generate_s",
    "time_reward_s",
    "time_train_s",
    "time_step_s",
)


class RunLog:
    def __init__(
        self,
        output_dir: Path,
        *,
        total_steps: int,
        first_step: int,
        trackers: Sequence[Tracker],
        progress: bool,
        log_rollouts: bool,
        write: bool = True,
    ) -> None:
        """`write=False`: the history only, no file or tracker (a process other than the
        main one of a run on several)."""
        self.write = write
        self.metrics_path = output_dir / "metrics.jsonl"
        self.rollouts_path = output_dir / "rollouts.jsonl"
        self.log_rollouts = log_rollouts
        self.history: list[dict[str, Any]] = []
        self.trackers = list(trackers)
        self.bar = None
        if progress:
            from tqdm import tqdm

            self.bar = tqdm(total=total_steps, initial=first_step, desc="rl", unit="step")

    def step(self, metrics: dict[str, Any], groups: Sequence[Group]) -> None:
        self.history.append(metrics)
        if not self.write:
            return
        with self.metrics_path.open("a") as f:
            f.write(json.dumps(metrics) + "\n")
        if self.log_rollouts:
            self._write_rollouts(metrics["step"], groups)
        # Trackers get numbers only (flags as 0/1); null metrics (no update this step) stay out.
        scalars = {
            name: float(value)
            for name, value in metrics.items()
            if isinstance(value, int | float) and name != "step"
        }
        for tracker in self.trackers:
            tracker.log_metrics(scalars, metrics["step"])
        if self.bar is not None:
            self.bar.set_postfix(
                reward=f"{metrics['reward_mean']:.3f}", s=f"{metrics['time_step_s']:.2f}"
            )
            self.bar.update(1)

    def _write_rollouts(self, step: int, groups: Sequence[Group]) -> None:
        with self.rollouts_path.open("a") as f:
            for group in groups:
                for completion, result in zip(group.completions, group.results, strict=True):
                    record = {
                        "step": step,
                        **row_record(group.row),
                        "completion": completion.text,
                        "tokens": len(completion.token_ids),
                        "truncated": completion.truncated,
                        "status": result.status.name,
                        "score": result.score if result.ok else None,
                        "reason": result.reason,
                    }
                    f.write(json.dumps(record) + "\n")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        for tracker in self.trackers:
            tracker.close()


def row_record(row: PromptRow) -> dict[str, Any]:
    """The prompt's part of a logged sample: its id, chat messages and reference."""
    return {
        "prompt_id": row.id,
        "prompt": [{"role": m.role, "content": m.content} for m in row.messages],
        "reference": row.reference,
    }


def summary_table(history: Sequence[dict[str, Any]], window: int = 5) -> str:
    """First `window` steps vs last `window` steps, for each summary field."""
    if not history:
        return "no steps run"
    first, last = history[:window], history[-window:]
    rows = [("metric", f"first {len(first)}", f"last {len(last)}")]
    for name in SUMMARY_FIELDS:
        rows.append((name, _format(_mean(first, name)), _format(_mean(last, name))))
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    lines = [
        f"{r[0].ljust(widths[0])}  {r[1].rjust(widths[1])}  {r[2].rjust(widths[2])}" for r in rows
    ]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)


def reward_curve(history: Sequence[dict[str, Any]], *, rows: int = 20, width: int = 50) -> str:
    """The reward mean per step as a text bar chart, steps binned into at most `rows` lines."""
    values = [(m["step"], m["reward_mean"]) for m in history if m.get("reward_mean") is not None]
    if not values:
        return "no rewards"
    low = min(0.0, min(v for _, v in values))
    high = max(1.0, max(v for _, v in values))
    per_row = math.ceil(len(values) / rows)
    lines = [f"reward_mean per step (bar: {low:g} .. {high:g})"]
    for start in range(0, len(values), per_row):
        chunk = values[start : start + per_row]
        mean = sum(v for _, v in chunk) / len(chunk)
        bar = "#" * round((mean - low) / (high - low) * width)
        steps = f"{chunk[0][0]}-{chunk[-1][0]}" if len(chunk) > 1 else f"{chunk[0][0]}"
        lines.append(f"{steps:>9} {mean:7.3f} |{bar}")
    return "\n".join(lines)


def _mean(history: Sequence[dict[str, Any]], name: str) -> float | None:
    values = [m[name] for m in history if isinstance(m.get(name), int | float)]
    return sum(values) / len(values) if values else None


def _format(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


def rollout_metrics(groups: Sequence[Group]) -> dict[str, Any]:
    """Reward statistics over the verified items only; masked items are counted."""
    results = [r for g in groups for r in g.results]
    completions = [c for g in groups for c in g.completions]
    scores = [r.score for r in results if r.ok]
    metrics: dict[str, Any] = {
        "reward_mean": statistics.fmean(scores) if scores else None,
        "reward_std": statistics.pstdev(scores) if scores else None,
        "masked_items": len(results) - len(scores),
        **status_counts(results),
        "response_len_mean": statistics.fmean(len(c.token_ids) for c in completions),
        "truncated_fraction": sum(c.truncated for c in completions) / len(completions),
        **episode_metrics(completions),
    }
    components: dict[str, list[float]] = {}
    for result in results:
        if result.ok:
            for name, value in result.components.items():
                components.setdefault(name, []).append(value)
    for name, values in sorted(components.items()):
        if all(math.isfinite(v) for v in values):
            metrics[f"reward_{name}_mean"] = statistics.fmean(values)
    return metrics
