"""`rl-client train|sft|eval|data check|export|rm|demo`. Config keys: `rl-client train --help`."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from rl_client.checkpoint import CheckpointError
from rl_client.config import ConfigError, SFTConfig, TrainConfig, load_config
from rl_client.data import DataError
from rl_client.preflight import (
    PreflightError,
    check_data,
    check_sft,
    check_train,
    config_changes,
)
from rl_client.rewards import SidecarError
from verifier_server.client import RewardClientError


def config_keys(cls: type[BaseModel], prefix: str = "") -> list[str]:
    """'section.key (default): description' for every field, for --help."""
    lines = []
    for name, field in cls.model_fields.items():
        key = f"{prefix}{name}"
        annotation: Any = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            lines += config_keys(annotation, f"{key}.")
            continue
        default = (
            "required"
            if field.is_required()
            else repr(field.get_default(call_default_factory=True))
        )
        lines.append(f"  {key} ({default}): {field.description or ''}")
    return lines


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rl-client", description="Online RL trainer with rewards from verifier-server."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    for name, cls, text, example in (
        (
            "train",
            TrainConfig,
            "RL training (resumes from the latest checkpoint in output.dir): policy gradient "
            "(algorithm.preset grpo, dapo, dr_grpo, rloo, reinforce_pp, ppo), rejection-sampling "
            "fine-tuning (rft) or online iterated DPO (online_dpo). On several processes: "
            "torchrun --nproc_per_node N -m rl_client train --config FILE (FSDP2; "
            "rollout.prompts_per_step a multiple of N; README: Training on several processes)",
            "rollout.group_size=8 algorithm.preset=online_dpo",
        ),
        (
            "sft",
            SFTConfig,
            "supervised warm start: loss on the response tokens only",
            "train.lr=1e-4 train.packing=true",
        ),
        (
            "eval",
            TrainConfig,
            "sample and score a model on data.eval_path (or data.path)",
            "rollout.group_size=4 data.eval_path=held_out.jsonl",
        ),
    ):
        sub = _config_command(commands, name, cls, text, example)
        if name == "train":
            sub.add_argument(
                "--allow-config-change",
                action="store_true",
                help="resume even where the config differs from the checkpoint's in keys that "
                "break exact resume (the changes are printed)",
            )
        if name == "eval":
            sub.add_argument("--model", metavar="DIR", help="model to score (default model.path)")
            sub.add_argument("--limit", type=int, help="only the first N prompts")
            sub.add_argument(
                "--n-samples", type=int, metavar="N", help="samples per prompt (eval.n_samples)"
            )
            sub.add_argument(
                "--k", metavar="K[,K...]", help="k of pass@k and maj@k, e.g. 1,4,8 (eval.k)"
            )
            sub.add_argument(
                "--save-samples",
                metavar="FILE",
                help="write every sample as JSONL (eval.save_samples)",
            )
    data = commands.add_parser("data", help="check a dataset before training (data check)")
    data_commands = data.add_subparsers(dest="data_command", required=True)
    check_text = (
        "score every row's gold against itself through the reward server (the sidecar, or "
        "reward.address); report rows that would be masked or whose gold scores below 1. "
        "Exit 0: clean, 1: problems found, 2: config or data errors"
    )
    check = _config_command(data_commands, "check", TrainConfig, check_text, "data.split=test")
    check.add_argument(
        "--eval", action="store_true", help="check data.eval_path / data.eval_split instead"
    )
    check.add_argument(
        "--report", metavar="FILE", help="JSON report (default: output.dir/data_check.json)"
    )
    export = commands.add_parser(
        "export",
        help="write a checkpoint's policy as a plain Hugging Face model directory",
        description="Writes CHECKPOINT_DIR's policy (a one-process or a sharded checkpoint; "
        "no torchrun needed) to OUT_DIR as config.json, safetensors weights and the "
        "tokenizer, loadable by AutoModelForCausalLM.from_pretrained. LoRA adapters are "
        "merged into the base weights; the value head is left out. The base model is "
        "model.path of the checkpoint's config.yaml.",
    )
    export.add_argument(
        "checkpoint", metavar="CHECKPOINT_DIR", help="e.g. run/checkpoints/step_000100"
    )
    export.add_argument("out_dir", metavar="OUT_DIR", help="replaced if it exists")
    # Listed for --help only: main() hands `rm`'s own flags (--help too) to its parser untouched.
    commands.add_parser(
        "rm", help="train a Bradley-Terry reward model from preference pairs (rl-client rm --help)"
    )
    demo = commands.add_parser(
        "demo", help="what `make run` does: tiny model, SFT warm start, GRPO on the toy task"
    )
    demo.add_argument("--dir", default="runs/demo", help="where to put everything")
    demo.add_argument(
        "--steps", type=int, default=None, help="steps or rounds (default: the demo's)"
    )
    demo.add_argument(
        "--preset",
        choices=("grpo", "rft", "online_dpo"),
        default="grpo",
        help="what trains after the warm start: GRPO (100 steps), rejection-sampling "
        "fine-tuning or online DPO (30 rounds each)",
    )
    return parser


def _config_command(
    commands: Any, name: str, cls: type[BaseModel], text: str, example: str
) -> argparse.ArgumentParser:
    """A subcommand that reads a config: --config, --debug, KEY=VALUE overrides, and every
    config key in its --help."""
    sub: argparse.ArgumentParser = commands.add_parser(
        name,
        help=text,
        description=text,
        epilog="config keys (YAML sections):\n" + "\n".join(config_keys(cls)),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub.add_argument("--config", metavar="FILE", help="YAML config file")
    sub.add_argument(
        "--debug", action="store_true", help="show tracebacks instead of one-line errors"
    )
    sub.add_argument(
        "overrides", nargs="*", metavar="KEY=VALUE", help=f"key=value overrides, e.g. {example}"
    )
    return sub


def eval_flags(args: argparse.Namespace) -> list[str]:
    """`rl-client eval`'s flags as the config overrides they stand for."""
    overrides = []
    if args.n_samples is not None:
        overrides.append(f"eval.n_samples={args.n_samples}")
    if args.k is not None:
        overrides.append(f"eval.k=[{args.k}]")
    if args.save_samples is not None:
        overrides.append(f"eval.save_samples={json.dumps(args.save_samples)}")
    return overrides


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["rm"]:
        from rl_client.reward_model.train import main as train_reward_model

        return train_reward_model(argv[1:])
    args = build_parser().parse_args(argv)
    try:
        return _run(args)
    except (CheckpointError, ConfigError, DataError, PreflightError) as exc:
        if getattr(args, "debug", False):
            raise
        print("\n".join(f"error: {line}" for line in str(exc).splitlines()), file=sys.stderr)
        return 2
    except (RewardClientError, SidecarError) as exc:  # the reward server is unusable
        if getattr(args, "debug", False):
            raise
        print(f"error: reward server: {exc}", file=sys.stderr)
        return 1


def _run(args: argparse.Namespace) -> int:
    if args.command == "demo":
        from rl_client.demo import run_demo

        return run_demo(args.dir, steps=args.steps, preset=args.preset)
    if args.command == "sft":
        from rl_client.sft import run_sft

        sft_config = load_config(SFTConfig, args.config, args.overrides)
        check_sft(sft_config)
        run_sft(sft_config)
        return 0
    if args.command == "eval":
        from rl_client.evaluate import evaluate, report_table

        config = load_config(TrainConfig, args.config, [*args.overrides, *eval_flags(args)])
        check_train(config, model_path=args.model, eval_run=True)
        report = evaluate(config, model_path=args.model, limit=args.limit)
        print(report_table(report, config.eval.k))
        print(f"wrote {config.output.dir}/eval.json")
        return 0
    if args.command == "data":
        return _data_check(args)
    if args.command == "export":
        from rl_client.export import export_policy

        print(f"wrote {export_policy(Path(args.checkpoint), Path(args.out_dir))}")
        return 0
    from rl_client.trainer import train

    config = load_config(TrainConfig, args.config, args.overrides)

    check_train(config, eval_run=False)
    check_resume(config, allow_changes=args.allow_config_change)
    train(config)
    return 0


def _data_check(args: argparse.Namespace) -> int:
    from rl_client.data_check import data_check, report_table

    config = load_config(TrainConfig, args.config, args.overrides)
    check_data(config, eval_data=args.eval)
    report = data_check(config, eval_data=args.eval)
    path = Path(args.report or Path(config.output.dir) / "data_check.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2))
    print(report_table(report))
    print(f"wrote {path}")
    return 1 if report["problems"] else 0


def check_resume(config: TrainConfig, *, allow_changes: bool) -> None:
    """Refuses to resume a checkpoint whose config differs in keys that break exact resume,
    or, allowed, prints each change."""
    changes = config_changes(config)
    if changes and not allow_changes:
        raise PreflightError(
            f"output.dir {config.output.dir} holds a checkpoint whose config differs in keys "
            "that break exact resume:\n"
            + "\n".join(f"  {change}" for change in changes)
            + "\nrerun with --allow-config-change to resume anyway, or start a fresh run "
            "(another output.dir, or output.resume=false)"
        )
    for change in changes:
        print(f"warning: config changed since {change} (--allow-config-change)", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
