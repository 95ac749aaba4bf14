"""Checks run by the command line before a run writes or loads anything.

Each problem is one line that names the config key and says how to fix it; all problems are
reported together (exit code 2). What is checked: model paths (a local directory with a
config.json, or a hub name where the hub may be reached), data paths, the device, that each
`reward.address` answers its health check, the sidecar's config file, the packages the
config needs (vllm, peft, the trackers'), and on resume that the config still fits the
checkpoint.

Resume safety: a checkpoint resumes exactly (same prompts, same losses) only if the knobs
that shape the computation are unchanged. `config_changes` lists the keys that differ from
the checkpoint's saved config.yaml, less `RESUME_SAFE_KEYS`; the command line refuses them
unless `--allow-config-change`.
"""

from __future__ import annotations

import importlib.util
import os
import re
from pathlib import Path

import torch
import yaml

from rl_client.checkpoint import latest_checkpoint
from rl_client.config import SFTConfig, TrainConfig, flatten
from rl_client.distributed import World, all_gather_objects, world_from_env
from rl_client.trackers import missing_packages
from verifier_server.client import RewardClient


class PreflightError(Exception):
    """One line per problem, each naming its config key and the fix."""


# Keys that can change between a checkpoint and its resumption without changing what the run
# computes: where and how often it reports and saves, and where the servers are. A key names
# itself and everything under it.
RESUME_SAFE_KEYS = (
    "output.dir",  # a run directory moved as a whole
    "output.save_every",
    "output.keep_checkpoints",
    "output.resume",
    "output.progress",
    "output.log_rollouts",
    "output.trackers",
    "output.tensorboard",  # the key before output.trackers, in older checkpoints
    "output.wandb",
    "output.mlflow",
    "data.eval_path",
    "data.eval_split",
    "data.lazy",  # the same rows in the same order, read when drawn
    "eval",  # rl-client eval's settings
    "reward.address",
    "reward.sidecar_workers",
    "reward.timeout_s",
    "rollout.vllm.sync_timeout_s",
    "rollout.remote.base_url",
    "rollout.remote.urls",
    "rollout.remote.api_key_env",
    "rollout.remote.request_timeout_s",
    "rollout.remote.sync_timeout_s",
    "train.threads",
)
# train.steps is safe only with a constant schedule: cosine decays over the total steps, so
# more steps would change the learning rate of the steps already planned.
STEPS_KEY = "train.steps"

DATASET = "a dataset file or directory"
# org/name on the Hugging Face hub (a relative path that exists is taken as a path first).
_HUB_NAME = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def check_train(config: TrainConfig, *, model_path: str | None = None, eval_run: bool) -> None:
    """Everything `rl-client train` / `rl-client eval` needs, before anything starts.
    `model_path`: eval's --model, which replaces model.path as the model to load."""
    problems = [
        _model_problem("--model" if model_path else "model.path", model_path or config.model.path),
        _device_problem("train.device", config.train.device),
        _output_problem("output.dir", config.output.dir),
    ]
    problems += _data_problems(config, eval_run=eval_run)
    reward = config.reward
    problems.append(_sidecar_problem(config))
    if config.rollout.engine == "vllm" and importlib.util.find_spec("vllm") is None:
        problems.append(
            "rollout.engine: 'vllm' needs the vllm package; install it, or set rollout.engine=hf"
        )
    problems.append(_lora_problem(config.model.lora_r))
    problems += world_problems(config, world_from_env())
    trackers = [] if eval_run else config.output.trackers  # eval reports to no tracker
    for tracker, package in missing_packages(trackers).items():
        problems.append(
            f"output.trackers: {tracker!r} needs the {package} package; install it "
            f"(pip install {package}), or remove {tracker} from output.trackers"
        )
    if not any(problems):  # no point dialling servers for a run that cannot start anyway
        problems += _reward_problems(reward.address)
    _raise(problems)


def check_world(config: TrainConfig, world: World) -> None:
    """Raises naming the config key when this run cannot run on `world`'s processes, or
    (on every process at once) when the processes resolved different configs."""
    _raise([*world_problems(config, world), config_mismatch(config, world)])


def config_mismatch(config: TrainConfig, world: World) -> str | None:
    """The keys whose values differ between the processes of a torchrun launch (a node
    that read an edited copy of the config, or other overrides): with another ppo_epochs
    or micro-batch plan their collectives would not pair up and hang; with another lr or
    prompts_per_step they would train apart silently. A collective: every process calls it
    and all get the same answer."""
    if not world.distributed:
        return None
    configs = all_gather_objects(flatten(config.model_dump(mode="json")))
    keys = sorted(set().union(*configs))
    differing = [k for k in keys if any(c.get(k) != configs[0].get(k) for c in configs)]
    if not differing:
        return None
    listed = "; ".join(
        f"{key}: " + ", ".join(f"rank {r} {c.get(key)!r}" for r, c in enumerate(configs))
        for key in differing
    )
    return f"the processes were given different configs ({listed}); launch every one alike"


def world_problems(config: TrainConfig, world: World) -> list[str | None]:
    """What a run on several processes (torchrun) cannot do."""
    if not world.distributed:
        return []
    n = world.world_size
    prompts = config.rollout.prompts_per_step
    return [
        f"rollout.prompts_per_step: {prompts} groups do not split evenly over {n} processes; "
        f"make it a multiple of {n}"
        if prompts % n
        else None,
    ]


def check_data(config: TrainConfig, *, eval_data: bool) -> None:
    """What `rl-client data check` needs: the dataset it reads (`eval_data`: data.eval_path,
    else data.path), the sidecar's config, and each reward.address answering."""
    problems = [*_data_problems(config, eval_run=eval_data), _sidecar_problem(config)]
    if not any(problems):
        problems += _reward_problems(config.reward.address)
    _raise(problems)


def _data_problems(config: TrainConfig, *, eval_run: bool) -> list[str | None]:
    """The dataset paths a run reads: rl-client eval's (data.eval_path, else data.path), or
    training's data.path plus data.eval_path when the periodic eval (eval.every) reads it."""
    data = config.data
    if data.format == "hf":  # load_dataset also takes hub and builder names: not checked
        return []
    if eval_run and data.eval_path is not None:
        return [_path_problem("data.eval_path", data.eval_path, DATASET)]
    problems = [_path_problem("data.path", data.path, DATASET)]
    if not eval_run and config.eval.every > 0 and data.eval_path is not None:
        problems.append(_path_problem("data.eval_path", data.eval_path, DATASET))
    return problems


def _sidecar_problem(config: TrainConfig) -> str | None:
    sidecar_config = config.reward.sidecar_config
    if sidecar_config is None:
        return None
    return _path_problem("reward.sidecar_config", sidecar_config, "a server config")


def check_sft(config: SFTConfig) -> None:
    """Everything `rl-client sft` needs, before anything starts."""
    _raise(
        [
            _model_problem("model.path", config.model.path),
            _path_problem("data.path", config.data.path, DATASET),
            _device_problem("train.device", config.train.device),
            _output_problem("output.dir", config.output.dir),
            _lora_problem(config.model.lora_r),
        ]
    )


def config_changes(config: TrainConfig) -> list[str]:
    """'key: saved -> new' for each key that differs from the latest checkpoint's config and
    is not resume-safe; [] for a fresh run (or output.resume=false)."""
    if not config.output.resume:
        return []
    checkpoint = latest_checkpoint(Path(config.output.dir))
    if checkpoint is None:
        return []
    saved = flatten(yaml.safe_load((checkpoint / "config.yaml").read_text()))
    new = flatten(config.model_dump(mode="json"))
    constant = saved.get("train.schedule") == new["train.schedule"] == "constant"
    changes = []
    # Keys on one side only come from a code change (a field added or renamed), not from the
    # user: they are not counted.
    for key in sorted(saved.keys() & new.keys()):
        if saved[key] == new[key] or _is_safe(key) or (key == STEPS_KEY and constant):
            continue
        changes.append(f"{key}: {saved[key]!r} -> {new[key]!r}")
    return [f"{checkpoint.name}: {change}" for change in changes]


def _is_safe(key: str) -> bool:
    return any(key == safe or key.startswith(f"{safe}.") for safe in RESUME_SAFE_KEYS)


def _raise(problems: list[str | None]) -> None:
    found = [p for p in problems if p is not None]
    if found:
        raise PreflightError("\n".join(found))


def _model_problem(key: str, path: str) -> str | None:
    local = Path(path).expanduser()
    if local.is_dir():
        # adapter_config.json: a LoRA checkpoint's policy/ dir, which eval's --model takes
        if (local / "config.json").exists() or (local / "adapter_config.json").exists():
            return None
        return f"{key}: {path} has no config.json; point it at a directory saved by save_pretrained"
    if local.exists():
        return f"{key}: {path} is a file; point it at a model directory (with config.json)"
    if _HUB_NAME.match(path) and not _hub_offline():
        return None  # a hub name: transformers downloads it (or finds it in its cache)
    return (
        f"{key}: {path}: no such directory; set it to a local model directory with config.json"
        + (" (HF_HUB_OFFLINE is set, so hub names are not fetched)" if _hub_offline() else "")
    )


def _hub_offline() -> bool:
    return any(
        os.environ.get(name, "").lower() in ("1", "true", "yes")
        for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    )


def _path_problem(key: str, path: str, what: str) -> str | None:
    if Path(path).expanduser().exists():
        return None
    return f"{key}: {path}: no such file or directory; set it to {what}"


def _device_problem(key: str, device: str) -> str | None:
    if device == "cuda" and not torch.cuda.is_available():
        return f"{key}: 'cuda' but torch sees no GPU; set {key}=cpu (or auto)"
    return None


def _lora_problem(lora_r: int) -> str | None:
    if lora_r > 0 and importlib.util.find_spec("peft") is None:
        return "model.lora_r: LoRA needs the peft package; install it, or set model.lora_r=0"
    return None


def _output_problem(key: str, path: str) -> str | None:
    local = Path(path).expanduser()
    if local.exists() and not local.is_dir():
        return f"{key}: {path} is a file; set it to a directory (created if missing)"
    return None


def _reward_problems(address: str | list[str] | None) -> list[str | None]:
    """Each configured replica must answer SERVING; None (a sidecar) is started later."""
    if address is None:
        return []
    addresses = [address] if isinstance(address, str) else address
    problems: list[str | None] = []
    for one in addresses:
        status = _health(one)
        if status != "SERVING":
            problems.append(
                f"reward.address: {one} answers {status}; start verifier-server there, fix the "
                "address, or leave reward.address unset to start a sidecar server"
            )
    return problems


def _health(address: str) -> str:
    with RewardClient(address) as client:
        return str(client.health())
