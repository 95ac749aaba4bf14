"""Checkpoints that resume exactly: weights, optimiser, scheduler, RNG states, data cursor.

Layout: `<output.dir>/checkpoints/step_000042/` with `policy/` (save_pretrained: full weights,
or LoRA adapters), the tokenizer, `trainer.pt` (optimiser, scheduler, value head, RNG states),
`state.json` (step, data cursor) and `config.yaml`. A checkpoint is written under a temporary
name and renamed when complete, so a run killed mid-save resumes from the previous one.
On resume, lines of metrics.jsonl and rollouts.jsonl past the checkpoint's step are dropped:
those steps run again.
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path
from typing import Any

import torch

STATE_FILE = "state.json"


def checkpoint_dir(output_dir: Path) -> Path:
    return output_dir / "checkpoints"


def latest_checkpoint(output_dir: Path) -> Path | None:
    """The newest complete checkpoint, if any."""
    root = checkpoint_dir(output_dir)
    if not root.exists():
        return None
    complete = sorted(p for p in root.glob("step_*") if (p / STATE_FILE).exists())
    return complete[-1] if complete else None


def rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"python": random.getstate(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(
    output_dir: Path,
    *,
    step: int,
    model: torch.nn.Module,
    tokenizer: Any,
    trainer_state: dict[str, Any],
    cursor: dict[str, int],
    config_yaml: str,
    keep: int,
) -> Path:
    root = checkpoint_dir(output_dir)
    final = root / f"step_{step:06d}"
    partial = root / f".partial_step_{step:06d}"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    model.save_pretrained(str(partial / "policy"))
    tokenizer.save_pretrained(str(partial / "policy"))
    torch.save({**trainer_state, "rng": rng_state()}, partial / "trainer.pt")
    (partial / "config.yaml").write_text(config_yaml)
    (partial / STATE_FILE).write_text(json.dumps({"step": step, "cursor": cursor}))
    shutil.rmtree(final, ignore_errors=True)
    partial.rename(final)
    for old in sorted(p for p in root.glob("step_*") if (p / STATE_FILE).exists())[:-keep]:
        shutil.rmtree(old)
    return final


def load_checkpoint(path: Path) -> tuple[int, dict[str, int], dict[str, Any]]:
    """(step, cursor state, trainer state incl. "rng"). Weights load via `path / 'policy'`."""
    state = json.loads((path / STATE_FILE).read_text())
    trainer_state = torch.load(path / "trainer.pt", weights_only=False)
    return state["step"], state["cursor"], trainer_state


def truncate_log(path: Path, last_step: int) -> None:
    """Keeps the JSONL lines whose "step" is <= last_step (the rest will be redone)."""
    if not path.exists():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line)["step"] <= last_step:
                kept.append(line)
        except json.JSONDecodeError:  # the half-written last line of a killed run
            continue
    path.write_text("".join(f"{line}\n" for line in kept))
