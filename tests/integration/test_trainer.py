"""The reference trainer end to end: `leantrain train` resume equality, bad recipes, reports."""

from __future__ import annotations

import csv
import random
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from conftest import all_three_sections

from leantrain.cli import main


def write_corpus(path: Path, chars: int = 40_000) -> Path:
    """Seeded random words: every 32-byte block is distinct, so batches can be compared."""
    rng = random.Random(0)
    words = [
        "".join(rng.choice("abcdefghij") for _ in range(rng.randint(2, 8))) for _ in range(500)
    ]
    text = []
    while sum(map(len, text)) < chars:
        text.append(" ".join(rng.choice(words) for _ in range(12)) + "\n")
    path.write_text("".join(text))
    return path


def tiny_recipe(corpus: Path, out: Path, *, techniques: bool = True) -> dict[str, Any]:
    """A 4-block GPT-2 of width 32 on 32-byte blocks; PLD + seqlen warmup + random-LTD."""
    recipe: dict[str, Any] = {
        "task": "causal_lm",
        "seed": 7,
        "output_dir": str(out),
        "model": {
            "family": "gpt2",
            "config": {"n_layer": 4, "n_embd": 32, "n_head": 2, "n_positions": 64},
        },
        "data": {"train": str(corpus), "tokenizer": "byte", "seq_len": 32, "valid_subset": 8},
        "optim": {
            "lr": 3e-3,
            "warmup_steps": 1,
            "micro_batch_size": 4,
            "grad_accum": 2,
            "max_steps": 6,
        },
        "eval": {"interval": 3, "max_batches": 2},
        "checkpoint_interval": 2,
        "device": "cpu",
    }
    if techniques:
        recipe.update(all_three_sections(gamma=0.3, curriculum_steps=4, ltd_steps=4))
    return recipe


def write_recipe(path: Path, recipe: dict[str, Any]) -> Path:
    """Write `recipe` as YAML at `path`."""
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return path


def _leantrain(*args: str) -> subprocess.CompletedProcess[str]:
    """Run the `leantrain` command in a fresh process."""
    return subprocess.run(
        [sys.executable, "-m", "leantrain.cli", *args],
        capture_output=True,
        text=True,
        timeout=300,
    )


def _losses(run_dir: Path) -> list[tuple[str, str]]:
    """(step, loss) of every row of metrics.csv, as written (full precision text)."""
    with (run_dir / "metrics.csv").open(newline="") as f:
        return [(r["step"], r["loss"]) for r in csv.DictReader(f)]


def _full_and_resumed(tmp: Path, recipe: dict[str, Any]) -> dict[str, Path]:
    """An uninterrupted run, and one stopped at step 5 whose last checkpoint is then lost (as
    if killed between steps 4 and 6) and resumed from step 4 in a fresh process."""
    path = write_recipe(tmp / "recipe.yaml", recipe)
    full, killed = tmp / "full", tmp / "killed"
    done = _leantrain("train", str(path), "--output-dir", str(full), "--no-progress")
    assert done.returncode == 0, done.stderr
    stopped = _leantrain(
        "train", str(path), "--output-dir", str(killed), "--no-progress", "--stop-at", "5"
    )
    assert stopped.returncode == 0, stopped.stderr
    checkpoints = sorted(p.name for p in (killed / "checkpoints").iterdir())
    assert checkpoints == ["step_00000002", "step_00000004", "step_00000005"]
    assert len(_losses(killed)) == 5  # rows past the surviving checkpoint, to be dropped
    shutil.rmtree(killed / "checkpoints" / "step_00000005")
    resumed = _leantrain("train", str(path), "--output-dir", str(killed), "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed from" in resumed.stderr
    return {"full": full, "killed": killed}


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Full and killed-then-resumed runs of the tiny recipe with all three techniques."""
    tmp = tmp_path_factory.mktemp("trainer")
    corpus = write_corpus(tmp / "corpus.txt")
    return _full_and_resumed(tmp, tiny_recipe(corpus, tmp / "unused"))


def test_killed_and_resumed_run_matches_uninterrupted_bit_for_bit(runs: dict[str, Path]) -> None:
    full, resumed = _losses(runs["full"]), _losses(runs["killed"])
    assert [s for s, _ in full] == [str(i) for i in range(1, 7)]
    assert resumed == full
    a = torch.load(runs["full"] / "checkpoints/step_00000006/model.pt", weights_only=True)
    b = torch.load(runs["killed"] / "checkpoints/step_00000006/model.pt", weights_only=True)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_resume_with_the_curriculum_sampler_is_bit_for_bit(tmp_path: Path) -> None:
    """The Data Efficiency curriculum (its batch sampler owns the data order) instead of the
    legacy seqlen warmup: the sampler's state resumes too."""
    recipe = tiny_recipe(write_corpus(tmp_path / "corpus.txt"), tmp_path / "unused")
    legacy = recipe.pop("curriculum_learning")
    metric = {k: legacy[k] for k in ("min_difficulty", "max_difficulty", "schedule_type")}
    metric.update(schedule_config=legacy["schedule_config"], clustering_type="single_cluster")
    recipe["data_efficiency"]["data_sampling"] = {
        "enabled": True,
        "curriculum_learning": {"enabled": True, "curriculum_metrics": {"seqlen_truncate": metric}},
    }
    runs = _full_and_resumed(tmp_path, recipe)
    assert _losses(runs["killed"]) == _losses(runs["full"])
    with (runs["full"] / "metrics.csv").open(newline="") as f:
        lengths = [float(r["curriculum/difficulty"]) for r in csv.DictReader(f)]
    assert lengths[0] == 16 and lengths[-1] == 32


def test_run_logs_schedules_tokens_and_writes_plain_model(runs: dict[str, Path]) -> None:
    with (runs["full"] / "metrics.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    theta = [float(r["pld/theta"]) for r in rows]
    assert theta[0] == 1.0 and theta[-1] < theta[1] < 1.0  # θ(t) falls from 1
    lengths = [float(r["curriculum/difficulty"]) for r in rows]
    assert lengths[0] == 16 and lengths[-1] == 32
    reserved = [float(r["random_ltd/reserved_length"]) for r in rows]
    assert reserved[0] == 16 and reserved == sorted(reserved)
    tokens = [float(r["tokens"]) for r in rows]
    layer_tokens = [float(r["layer_tokens"]) for r in rows]
    assert tokens == sorted(tokens) and layer_tokens[-1] < 4 * tokens[-1]  # blocks skipped
    assert [r["step"] for r in rows if r["eval/loss"]] == ["3", "6"]
    assert any((runs["full"] / "tb").iterdir())
    config = yaml.safe_load((runs["full"] / "checkpoints/step_00000006/config.json").read_text())
    assert config["progressive_layer_drop"]["theta"] == 0.5 and config["optim"]["max_steps"] == 6
    from transformers import GPT2LMHeadModel

    plain = GPT2LMHeadModel.from_pretrained(runs["full"] / "model")  # plain keys, plain class
    assert type(plain.transformer.h[1]).__name__ == "GPT2Block"


def test_report_plots_and_tabulates_runs(
    runs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    png = tmp_path / "cmp.png"
    assert main(["report", str(runs["full"]), str(runs["killed"]), "--out", str(png)]) == 0
    out = capsys.readouterr().out
    assert "| full |" in out and "| killed |" in out and "layer_tokens 1.00x" in out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# -- bad recipes ------------------------------------------------------------------------------


def _bad(tmp_path: Path, edit: Any) -> Path:
    corpus = write_corpus(tmp_path / "corpus.txt", chars=4000)
    recipe = tiny_recipe(corpus, tmp_path / "out")
    edit(recipe)
    return write_recipe(tmp_path / "bad.yaml", recipe)


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (lambda r: r["optim"].update(lrr=1e-3), "optim.lrr: unknown key; did you mean 'lr'?"),
        (lambda r: r["optim"].update(max_steps="many"), "optim.max_steps: got 'many'"),
        (lambda r: r["data"].update(train="nowhere/corpus.txt"), "data.train: "),
        (lambda r: r.update(progresive_layer_drop={}), "did you mean 'progressive_layer_drop'"),
        (
            lambda r: r["progressive_layer_drop"].update(theta=2),
            "progressive_layer_drop.theta: got 2",
        ),
        (lambda r: r.update(task="translation"), "task: got 'translation'"),
        (lambda r: r["model"].update(pretrained="no/such/dir"), "model.pretrained: no/such/dir"),
    ],
)
def test_bad_recipe_exits_2_naming_key_and_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], edit: Any, expected: str
) -> None:
    path = _bad(tmp_path, edit)
    assert main(["train", str(path)]) == 2
    err = capsys.readouterr().err
    assert str(path) in err and expected in err
    assert not (tmp_path / "out").exists()  # nothing ran


def test_missing_data_file_names_the_resolved_path(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _bad(
        tmp_path, lambda r: r["data"].update(train="corpus_missing.txt", root=str(tmp_path))
    )
    assert main(["train", str(path)]) == 2
    assert str(tmp_path / "corpus_missing.txt") in capsys.readouterr().err


def test_bad_recipe_exit_status_from_the_command_line(tmp_path: Path) -> None:
    path = _bad(tmp_path, lambda r: r["eval"].update(every=5))
    result = _leantrain("train", str(path))
    assert result.returncode == 2
    assert "eval.every: unknown key" in result.stderr


def test_evaluating_more_often_does_not_change_training(tmp_path: Path) -> None:
    """Evaluation draws nothing from the RNGs training uses (dropout, random-LTD, PLD)."""
    from leantrain.trainer import recipe_from_dict, train

    corpus = write_corpus(tmp_path / "corpus.txt", chars=8000)
    losses = []
    for interval in (1, 6):
        recipe = tiny_recipe(corpus, tmp_path / f"every{interval}")
        recipe["eval"]["interval"] = interval
        recipe["checkpoint_interval"] = None
        train(recipe_from_dict(recipe), progress=False)
        losses.append([loss for _, loss in _losses(tmp_path / f"every{interval}")])
    assert losses[0] == losses[1]


def _eval_losses(run_dir: Path) -> list[tuple[int, float]]:
    """(step, eval loss) of every evaluated row of metrics.csv."""
    with (run_dir / "metrics.csv").open(newline="") as f:
        return [
            (int(r["step"]), float(r["eval/loss"])) for r in csv.DictReader(f) if r["eval/loss"]
        ]


def test_stop_at_loss_ends_at_the_first_evaluation_reaching_it_and_resumes(
    tmp_path: Path,
) -> None:
    """`eval.stop_at_loss` ends the run as at max_steps (model saved, no extra checkpoint,
    the schedule unchanged), and a run stopped before it and resumed stops at the same step."""
    from leantrain.trainer import recipe_from_dict, train

    corpus = write_corpus(tmp_path / "corpus.txt", chars=8000)
    recipe = tiny_recipe(corpus, tmp_path / "full", techniques=False)
    recipe["eval"]["interval"] = 1
    recipe["checkpoint_interval"] = None
    train(recipe_from_dict(recipe), progress=False)
    evals = _eval_losses(tmp_path / "full")
    target = evals[3][1]
    stop = next(step for step, loss in evals if loss <= target)
    assert 3 <= stop <= 4  # the tiny model's validation loss falls over the first steps

    recipe["eval"]["stop_at_loss"] = target
    recipe["output_dir"] = str(tmp_path / "stopped")
    final = train(recipe_from_dict(recipe), progress=False)
    assert final["step"] == stop and final["eval/loss"] <= target
    assert _losses(tmp_path / "stopped") == _losses(tmp_path / "full")[:stop]
    assert (tmp_path / "stopped" / "model" / "config.json").is_file()
    assert not (tmp_path / "stopped" / "checkpoints").exists()  # finished, nothing to resume

    recipe["output_dir"] = str(tmp_path / "resumed")
    train(recipe_from_dict(recipe), stop_at=2, progress=False)
    assert (tmp_path / "resumed" / "checkpoints" / "step_00000002").is_dir()
    final = train(recipe_from_dict(recipe), resume=True, progress=False)
    assert final["step"] == stop
    assert _losses(tmp_path / "resumed") == _losses(tmp_path / "stopped")
