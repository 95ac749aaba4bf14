"""Experiment trackers behind one interface: TensorBoard, Weights & Biases, MLflow.

`RunLog` hands every tracker the resolved config once and each step's numeric metrics; the
trackers never see rollouts. W&B and MLflow are imported only when named in
`output.trackers`, and default to local storage (W&B offline under dir/wandb, MLflow in a
`file:` store under dir/mlruns), so a run without network access still tracks. A resumed run
continues the same W&B / MLflow run: the W&B id is derived from the output dir, the MLflow run
id is kept in dir/mlflow_run_id.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from rl_client.config import MlflowSettings, OutputConfig, WandbSettings, flatten


class Tracker(Protocol):
    def log_metrics(self, metrics: dict[str, float], step: int) -> None: ...

    def close(self) -> None: ...


class TensorBoardTracker:
    def __init__(self, output_dir: Path, config: dict[str, Any], first_step: int) -> None:
        from torch.utils.tensorboard import SummaryWriter

        # purge_step: a resumed run overwrites the events of the steps it runs again.
        self.writer = SummaryWriter(str(output_dir / "tb"), purge_step=first_step + 1)
        if first_step == 0:
            self.writer.add_text("config", f"```\n{_flat_yaml(config)}\n```", 0)

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        for name, value in metrics.items():
            self.writer.add_scalar(name, value, step)

    def close(self) -> None:
        self.writer.close()


class WandbTracker:
    def __init__(self, output_dir: Path, config: dict[str, Any], settings: WandbSettings) -> None:
        import wandb

        directory = output_dir.resolve()
        self.run = wandb.init(
            project=settings.project,
            entity=settings.entity,
            name=directory.name,
            # The same output dir resumes the same W&B run.
            id=hashlib.sha1(str(directory).encode()).hexdigest()[:16],
            resume="allow",
            dir=str(directory),
            mode=settings.mode or os.environ.get("WANDB_MODE") or "offline",
            config=config,
        )

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        self.run.log(metrics, step=step)

    def close(self) -> None:
        self.run.finish()


MLFLOW_RUN_ID_FILE = "mlflow_run_id"


class MlflowTracker:
    def __init__(self, output_dir: Path, config: dict[str, Any], settings: MlflowSettings) -> None:
        import mlflow

        directory = output_dir.resolve()
        uri = settings.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
        if uri is None:
            uri = (directory / "mlruns").as_uri()
            # MLflow >= 3.x refuses a file store unless opted in; the local default needs no
            # database (mlflow-skinny has none).
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        self.client = mlflow.MlflowClient(tracking_uri=uri)
        id_file = directory / MLFLOW_RUN_ID_FILE
        if id_file.exists():  # a resumed run logs into the run it started
            self.run_id = id_file.read_text().strip()
            return
        experiment = self.client.get_experiment_by_name(settings.experiment)
        experiment_id = (
            experiment.experiment_id
            if experiment is not None
            else self.client.create_experiment(settings.experiment)
        )
        self.run_id = self.client.create_run(experiment_id, run_name=directory.name).info.run_id
        id_file.write_text(self.run_id)
        self.client.log_dict(self.run_id, config, "config.json")
        # Params are searchable in the UI; MLflow caps a value at 6000 characters.
        flat = flatten(config)
        for key, value in flat.items():
            self.client.log_param(self.run_id, key, str(value)[:6000])

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        timestamp = int(time.time() * 1000)
        batch = [Metric(name, float(value), timestamp, step) for name, value in metrics.items()]
        self.client.log_batch(self.run_id, metrics=batch)

    def close(self) -> None:
        self.client.set_terminated(self.run_id)


def build_trackers(
    output: OutputConfig, config: dict[str, Any], *, first_step: int
) -> list[Tracker]:
    """The trackers `output.trackers` names, each already holding the config."""
    directory = Path(output.dir)
    trackers: list[Tracker] = []
    for name in output.trackers:
        if name == "tensorboard":
            trackers.append(TensorBoardTracker(directory, config, first_step))
        elif name == "wandb":
            trackers.append(WandbTracker(directory, config, output.wandb))
        else:
            trackers.append(MlflowTracker(directory, config, output.mlflow))
    return trackers


def missing_packages(trackers: Sequence[str]) -> dict[str, str]:
    """{tracker: the package to install} for the named trackers whose package is absent."""
    import importlib.util

    needed = {"wandb": "wandb", "mlflow": "mlflow"}
    return {
        name: needed[name]
        for name in trackers
        if name in needed and importlib.util.find_spec(needed[name]) is None
    }


def _flat_yaml(config: dict[str, Any]) -> str:
    return "\n".join(f"{key}: {value}" for key, value in flatten(config).items())
