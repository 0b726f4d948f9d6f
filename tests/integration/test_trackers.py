"""The optional experiment trackers of a recipe's `loggers` (issue 15): Weights & Biases in
offline mode and MLflow on a `file:` store receive every logged row; a tracker whose package is
missing, or a list without csv, is refused when the recipe loads, naming the key."""

from __future__ import annotations

import csv
import sys
from pathlib import Path
from typing import Any

import pytest
from test_trainer import tiny_recipe, write_corpus, write_recipe

from leantrain.cli import main
from leantrain.errors import ConfigError, LeantrainError
from leantrain.trainer import train
from leantrain.trainer.recipe import recipe_from_dict


@pytest.fixture
def recipe(tmp_path: Path) -> dict[str, Any]:
    """The tiny baseline recipe, 3 steps (evaluation at step 3)."""
    corpus = write_corpus(tmp_path / "corpus.txt", chars=8000)
    recipe = tiny_recipe(corpus, tmp_path / "run", techniques=False)
    recipe["optim"]["max_steps"] = 3
    return recipe


def _rows(run: Path) -> list[dict[str, str]]:
    with (run / "metrics.csv").open(newline="") as f:
        return list(csv.DictReader(f))


def test_loggers_must_keep_csv_and_name_known_trackers(recipe: dict[str, Any]) -> None:
    with pytest.raises(ConfigError, match=r"^loggers: .*'csv' is required"):
        recipe_from_dict({**recipe, "loggers": ["tensorboard"]})
    with pytest.raises(ConfigError, match=r"^loggers\.1: .*'neptune'"):
        recipe_from_dict({**recipe, "loggers": ["csv", "neptune"]})


@pytest.mark.parametrize(("name", "package"), [("wandb", "wandb"), ("mlflow", "mlflow-skinny")])
def test_a_tracker_without_its_package_is_refused_naming_what_to_install(
    recipe: dict[str, Any], monkeypatch: pytest.MonkeyPatch, name: str, package: str
) -> None:
    monkeypatch.setitem(sys.modules, name, None)  # as if not installed
    with pytest.raises(ConfigError, match=rf"^loggers: .*'{name}' needs the {package} package"):
        recipe_from_dict({**recipe, "loggers": ["csv", name]})


def test_wandb_offline_gets_every_logged_row(
    recipe: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("wandb", reason="the wandb package is not installed")
    for key, value in {
        "WANDB_MODE": "offline",
        "WANDB_DIR": str(tmp_path),
        "WANDB_SILENT": "true",
    }.items():
        monkeypatch.setenv(key, value)
    path = write_recipe(tmp_path / "r.yaml", {**recipe, "loggers": ["csv", "wandb"]})
    assert main(["train", str(path), "--no-progress"]) == 0
    (log,) = (tmp_path / "wandb").glob("offline-run-*/run-*.wandb")
    data = log.read_bytes()  # W&B's own record of the run: each value as its JSON text
    rows = _rows(tmp_path / "run")
    assert len(rows) == 3 and rows[-1]["eval/loss"]
    for row in rows:
        for key in ("loss", "grad_norm", "eval/loss"):
            if row[key]:
                assert f"{key}".encode() in data and row[key].encode() in data, (key, row)
    assert b"max_steps" in data  # the recipe as the run's config


def test_mlflow_on_a_file_store_gets_every_logged_row(
    recipe: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("mlflow", reason="the mlflow(-skinny) package is not installed")
    from mlflow.tracking import MlflowClient

    uri = (tmp_path / "mlruns").as_uri()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 keeps file stores behind it
    path = write_recipe(tmp_path / "r.yaml", {**recipe, "loggers": ["csv", "mlflow"]})
    assert main(["train", str(path), "--no-progress"]) == 0
    client = MlflowClient(uri)
    (run,) = client.search_runs([client.get_experiment_by_name("leantrain").experiment_id])
    assert run.info.run_name == "run" and run.info.status == "FINISHED"
    assert run.data.params["optim.max_steps"] == "3"
    history = client.get_metric_history(run.info.run_id, "train/loss")
    assert [(m.step, m.value) for m in history] == [
        (int(r["step"]), float(r["loss"])) for r in _rows(tmp_path / "run")
    ]


def test_an_mlflow_store_that_cannot_open_is_one_error_naming_the_key(
    recipe: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With mlflow-skinny and no MLFLOW_TRACKING_URI, MLflow's default (sqlite) store is
    unsupported: the run must fail at start with what to set, not with MLflow's traceback."""
    pytest.importorskip("mlflow", reason="the mlflow(-skinny) package is not installed")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "bogus://nowhere")
    with pytest.raises(LeantrainError, match=r"^loggers: mlflow cannot open its tracking store "):
        train(recipe_from_dict({**recipe, "loggers": ["csv", "mlflow"]}), progress=False)
