"""Optional experiment trackers behind the `MetricsLogger` interface: Weights & Biases and
MLflow, each used only when the recipe's `loggers` names it and its package is installed.

Both are configured the way their own tools are, through their environment variables
(`WANDB_PROJECT`, `WANDB_MODE=offline`, `WANDB_DIR`; `MLFLOW_TRACKING_URI`,
`MLFLOW_EXPERIMENT_NAME`); W&B's files go in the run folder unless `WANDB_DIR` says otherwise.
Each start of a run, a resume included, is a new tracker run named after the run folder, with
the resolved recipe as its config; the steps continue where the checkpoint left off.
"""

from __future__ import annotations

import importlib.util
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from leantrain.errors import LeantrainError
from leantrain.trainer.loggers import MetricsLogger, scalar_name
from leantrain.trainer.runinfo import dotted_keys

__all__ = ["TRACKER_PACKAGES", "MLflowLogger", "WandbLogger", "missing_package"]

#: Tracker name in `loggers` -> the package it needs (and the pip name to install).
TRACKER_PACKAGES = {"wandb": ("wandb", "wandb"), "mlflow": ("mlflow", "mlflow-skinny")}


def missing_package(name: str) -> str | None:
    """What to install for tracker `name`, or None when it is installed (or needs nothing)."""
    if name not in TRACKER_PACKAGES:
        return None
    module, pip_name = TRACKER_PACKAGES[name]
    return None if importlib.util.find_spec(module) is not None else pip_name


class WandbLogger(MetricsLogger):
    """A Weights & Biases run (offline with `WANDB_MODE=offline`)."""

    def __init__(self, out: Path, config: Mapping[str, Any]) -> None:
        """Start a W&B run named after the run folder `out`, with `config` (the recipe)."""
        import wandb

        project = os.environ.get("WANDB_PROJECT", "leantrain")
        folder = os.environ.get("WANDB_DIR", str(out))
        self.run = wandb.init(project=project, name=out.name, dir=folder, config=dict(config))

    def write(self, step: int, row: Mapping[str, float]) -> None:
        """Every value but the step, at `step`, named as in TensorBoard (`scalar_name`)."""
        self.run.log({scalar_name(k): v for k, v in row.items() if k != "step"}, step=step)

    def close(self) -> None:
        """Finish the run (an offline run's files are then complete)."""
        self.run.finish()


class MLflowLogger(MetricsLogger):
    """An MLflow run in `MLFLOW_EXPERIMENT_NAME` (default "leantrain") at the tracking URI of
    `MLFLOW_TRACKING_URI` (a `file:` folder works offline)."""

    def __init__(self, out: Path, config: Mapping[str, Any]) -> None:
        """Start an MLflow run named after the run folder `out`, with the recipe `config` as
        its parameters (dotted keys)."""
        import mlflow
        from mlflow.entities import Param
        from mlflow.exceptions import MlflowException
        from mlflow.tracking import MlflowClient

        name = os.environ.get("MLFLOW_EXPERIMENT_NAME", "leantrain")
        try:
            self.client = MlflowClient()
            found = self.client.get_experiment_by_name(name)
            experiment = found.experiment_id if found else self.client.create_experiment(name)
        except MlflowException as err:
            raise LeantrainError(
                f"loggers: mlflow cannot open its tracking store {mlflow.get_tracking_uri()!r} "
                f"({str(err).strip()[:200]}); set MLFLOW_TRACKING_URI to a tracking server, or "
                "to a file: folder with MLFLOW_ALLOW_FILE_STORE=true"
            ) from err
        self.run_id = self.client.create_run(experiment, run_name=out.name).info.run_id
        params = [Param(k, str(v)[:6000]) for k, v in dotted_keys(config).items()]
        for start in range(0, len(params), 100):  # MLflow takes at most 100 params per batch
            self.client.log_batch(self.run_id, params=params[start : start + 100])

    def write(self, step: int, row: Mapping[str, float]) -> None:
        """Every value but the step, at `step`, named as in TensorBoard (`scalar_name`)."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [
            Metric(scalar_name(k), float(v), now, step) for k, v in row.items() if k != "step"
        ]
        self.client.log_batch(self.run_id, metrics=metrics)

    def close(self) -> None:
        """Mark the run finished."""
        self.client.set_terminated(self.run_id)
