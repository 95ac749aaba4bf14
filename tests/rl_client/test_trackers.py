"""Experiment trackers on a tiny real run: each gets every step's metrics and the config,
in local files (TensorBoard events, an MLflow file store, an offline W&B run), and a resumed
run keeps logging into the same MLflow / W&B run."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from rl_helpers import train_settings

from rl_client.cli import main
from rl_client.trackers import MLFLOW_RUN_ID_FILE

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]


def _run(tmp_path: Path, tiny_model: Path, prompts: Path, trackers: list[str]) -> Path:
    output = tmp_path / "run"
    settings = train_settings(tiny_model, prompts, output)
    settings["output"]["trackers"] = trackers
    settings["reward"] = {"sidecar_workers": 1}
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(settings))
    assert main(["train", "--config", str(config)]) == 0  # steps 1-2
    assert main(["train", "--config", str(config), "train.steps=3"]) == 0  # resumes: step 3
    return output


def test_tensorboard_events_hold_every_step(
    tiny_model: Path, toy_prompts: Path, tmp_path: Path
) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    output = _run(tmp_path, tiny_model, toy_prompts, ["tensorboard"])
    events = EventAccumulator(str(output / "tb"))
    events.Reload()
    assert [e.step for e in events.Scalars("reward_mean")] == [1, 2, 3]
    assert "config/text_summary" in events.Tags()["tensors"]


def test_mlflow_and_wandb_write_local_runs(
    tiny_model: Path, toy_prompts: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    mlflow = pytest.importorskip("mlflow", reason="the mlflow tracker needs mlflow installed")
    pytest.importorskip("wandb", reason="the wandb tracker needs wandb installed")
    monkeypatch.delenv("WANDB_MODE", raising=False)  # the default is offline
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)  # the default is a file store

    output = _run(tmp_path, tiny_model, toy_prompts, ["mlflow", "wandb"])

    client = mlflow.MlflowClient(tracking_uri=(output / "mlruns").as_uri())
    run_id = (output / MLFLOW_RUN_ID_FILE).read_text()
    history = client.get_metric_history(run_id, "reward_mean")
    assert sorted(m.step for m in history) == [1, 2, 3]  # one run across the resume
    params = client.get_run(run_id).data.params
    assert params["rollout.group_size"] == "4" and params["train.lr"] == "0.001"

    # W&B writes one offline directory per process; both carry the same run id, so
    # `wandb sync` appends the resumed steps to the first run's.
    offline = sorted((output / "wandb").glob("offline-run-*"))
    assert len(offline) == 2
    assert len({path.name.rsplit("-", 1)[1] for path in offline}) == 1
    assert all(list(path.glob("run-*.wandb")) for path in offline)
