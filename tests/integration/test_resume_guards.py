"""Resuming with a recipe the checkpoint does not match is refused with a message naming what
changed, instead of running something other than what the saved config says (issue 13)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
from test_trainer import tiny_recipe, write_corpus, write_recipe

from leantrain.cli import main


def _stopped_run(tmp: Path, recipe: dict[str, Any]) -> tuple[Path, Path]:
    """(recipe file, run folder) of `recipe` stopped at step 2 with a checkpoint."""
    path = write_recipe(tmp / "recipe.yaml", recipe)
    run = Path(recipe["output_dir"])
    assert main(["train", str(path), "--no-progress", "--stop-at", "2"]) == 0
    return path, run


@pytest.fixture(scope="module")
def pld_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The tiny GPT-2 with PLD only (the shuffled sampler draws the order), at step 2."""
    tmp = tmp_path_factory.mktemp("pld")
    recipe = tiny_recipe(
        write_corpus(tmp / "corpus.txt", chars=8000), tmp / "run", techniques=False
    )
    recipe["progressive_layer_drop"] = {"enabled": True, "theta": 0.5, "gamma": 0.3}
    return _stopped_run(tmp, recipe)


@pytest.fixture(scope="module")
def curriculum_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The tiny GPT-2 whose batch order the curriculum sampler draws, at step 2."""
    tmp = tmp_path_factory.mktemp("curriculum")
    recipe = tiny_recipe(
        write_corpus(tmp / "corpus.txt", chars=8000), tmp / "run", techniques=False
    )
    metric = {
        "min_difficulty": 16,
        "max_difficulty": 32,
        "schedule_type": "fixed_linear",
        "schedule_config": {"total_curriculum_step": 4, "difficulty_step": 8},
        "clustering_type": "single_cluster",
    }
    recipe["data_efficiency"] = {
        "enabled": True,
        "data_sampling": {
            "enabled": True,
            "curriculum_learning": {
                "enabled": True,
                "curriculum_metrics": {"seqlen_truncate": metric},
            },
        },
    }
    return _stopped_run(tmp, recipe)


def _resume(run: tuple[Path, Path], tmp_path: Path, *overrides: str) -> int:
    """Resume a copy of `run` with `--set` overrides; leantrain's exit status."""
    path, folder = run
    copy = tmp_path / "run"
    shutil.copytree(folder, copy)
    sets = [arg for o in overrides for arg in ("--set", o)]
    return main(["train", str(path), "--resume", "--no-progress", "--output-dir", str(copy), *sets])


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("progressive_layer_drop.theta=0.7", "progressive_layer_drop.theta 0.5 was saved, the config has 0.7"),
        ("progressive_layer_drop.gamma=0.1", "progressive_layer_drop.gamma 0.3 was saved, the config has 0.1"),
        ("optim.micro_batch_size=2", "micro_batch_size 4 was saved, this run has 2"),
        ("optim.grad_accum=1", "gradient_accumulation_steps 2 was saved, this run has 1"),
        ("model.config.n_embd=64", "the recipe's model differs from the checkpoint's"),
    ],
)  # fmt: skip
def test_resuming_with_another_schedule_batch_or_model_is_refused(
    pld_run: tuple[Path, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    override: str,
    expected: str,
) -> None:
    """PLD kept the checkpoint's θ̄ and γ while the saved config showed the new ones; another
    batch shape silently skipped samples; another model shape ended in a raw torch error."""
    capsys.readouterr()
    assert _resume(pld_run, tmp_path, override) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert len(errors) == 1 and expected in errors[0], errors


def test_the_changed_model_keys_are_named(
    pld_run: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    assert _resume(pld_run, tmp_path, "model.config.n_layer=3") == 2
    err = capsys.readouterr().err
    assert "transformer.h.3.ln_1.weight not in the model" in err
    assert "the recipe changed model.config.n_layer 4 -> 3" in err


@pytest.mark.parametrize("override", ["optim.micro_batch_size=2", "optim.grad_accum=1"])
def test_the_curriculum_sampler_refuses_another_batch_shape_too(
    curriculum_run: tuple[Path, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    override: str,
) -> None:
    capsys.readouterr()
    assert _resume(curriculum_run, tmp_path, override) == 2
    assert "saved for a different batch" in capsys.readouterr().err


def test_an_unchanged_recipe_resumes(pld_run: tuple[Path, Path], tmp_path: Path) -> None:
    assert _resume(pld_run, tmp_path) == 0
