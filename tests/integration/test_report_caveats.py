"""`leantrain report` puts a caveat beside a ratio whose runs differ in more than their
techniques (issue 15): their recorded recipes (technique sections aside), host or device."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from test_trainer import tiny_recipe, write_corpus, write_recipe

from leantrain.cli import main
from leantrain.trainer.recipe import recipe_from_dict
from leantrain.trainer.report import caveats

_METRICS = "step,wall_s,tokens,layer_tokens,loss\n1,2.0,64,256,5.0\n"


def _run(folder: Path, recipe: dict[str, Any] | None, **where: Any) -> Path:
    """A run folder holding a metrics.csv and, unless `recipe` is None, a run.json."""
    folder.mkdir()
    (folder / "metrics.csv").write_text(_METRICS)
    if recipe is not None:
        (folder / "run.json").write_text(json.dumps({"recipe": recipe, **where}))
    return folder


def _recipe(tmp_path: Path, **optim: Any) -> dict[str, Any]:
    """The tiny recipe, resolved as a run records it."""
    recipe = tiny_recipe(write_corpus(tmp_path / "corpus.txt", chars=100), tmp_path / "out")
    recipe["optim"].update(optim)
    return recipe_from_dict(recipe).to_dict()


HERE = {"host": "a", "device": "cpu", "world_size": 1, "torch": "2.13.0"}


def test_runs_that_differ_only_in_techniques_get_no_caveat(tmp_path: Path) -> None:
    base = _recipe(tmp_path)
    other = {**_recipe(tmp_path), "output_dir": "elsewhere", "checkpoint_interval": 5}
    other["progressive_layer_drop"] = {"enabled": True, "theta": 0.3, "gamma": 0.1}
    other.pop("data_efficiency")
    dirs = [_run(tmp_path / "base", base, **HERE), _run(tmp_path / "pld", other, **HERE)]
    assert caveats(dirs, ["base", "pld"]) == {}


def test_a_caveat_names_each_differing_key_and_where_the_runs_ran(tmp_path: Path) -> None:
    """A report showed a 0.6x wall-clock ratio for runs with different LR schedules, one of
    them on a busier machine, as if the technique alone had earned it."""
    base = _recipe(tmp_path)
    other = _recipe(tmp_path, lr=1e-3, decay="linear")
    other["seed"] = 8
    elsewhere = {**HERE, "host": "b", "device": "cuda NVIDIA H200"}
    dirs = [_run(tmp_path / "base", base, **HERE), _run(tmp_path / "x", other, **elsewhere)]
    (note,) = caveats(dirs, ["base", "x"]).values()
    assert note == (
        "differs in more than the techniques: optim.decay (cosine vs linear); "
        "optim.lr (0.003 vs 0.001); seed (7 vs 8); host (a vs b); "
        "device (cpu vs cuda NVIDIA H200)"
    )


def test_runs_without_a_record_get_a_note_saying_so(tmp_path: Path) -> None:
    base = _run(tmp_path / "base", _recipe(tmp_path), **HERE)
    old = _run(tmp_path / "old", None)  # an older run: its recipe only in a checkpoint
    (old / "checkpoints/step_00000001").mkdir(parents=True)
    (old / "checkpoints/step_00000001/config.json").write_text(json.dumps(_recipe(tmp_path)))
    (old / "checkpoints/step_00000001/manifest.json").write_text('{"files": {}}')
    bare = _run(tmp_path / "bare", None)
    notes = caveats([base, old, bare], ["base", "old", "bare"])
    assert notes["old"] == (
        "where a run ran is not recorded (no run.json): wall-clock ratios assume the same "
        "machine and load"
    )
    assert notes["bare"].startswith(f"no recipe recorded in {bare} (no run.json, no checkpoint)")


def test_report_prints_the_caveat_beside_the_ratio(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Two real runs of the tiny recipe, the second with another LR: the caveat comes from the
    run.json each run wrote."""
    recipe = tiny_recipe(write_corpus(tmp_path / "corpus.txt", chars=8000), tmp_path / "a")
    for name, lr in (("a", "3e-3"), ("b", "1e-3")):
        path = write_recipe(tmp_path / "r.yaml", recipe)
        argv = ["train", str(path), "--no-progress", "--max-steps", "1"]
        assert main([*argv, "--output-dir", str(tmp_path / name), "--set", f"optim.lr={lr}"]) == 0
    capsys.readouterr()
    assert (
        main(["report", str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(tmp_path / "r.png")])
        == 0
    )
    lines = capsys.readouterr().out.splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("b vs a: "))
    assert (
        lines[at + 1] == "  caveat: differs in more than the techniques: optim.lr (0.003 vs 0.001)"
    )
