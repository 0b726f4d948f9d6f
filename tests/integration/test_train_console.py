"""What `leantrain train` tells its user: the start-up summary, a line per evaluation as it
happens, and one line (not `{}`) when a resumed run has nothing left to do (issue 15)."""

from __future__ import annotations

import csv
import logging
from pathlib import Path

import pytest
from conftest import make_gpt2
from test_trainer import tiny_recipe, write_corpus, write_recipe

import leantrain
from leantrain.cli import main
from leantrain.trainer.console import eval_line
from leantrain.trainer.data import build_task_data
from leantrain.trainer.model import build_model
from leantrain.trainer.recipe import recipe_from_dict

LOOP = "leantrain.trainer.loop"


def _messages(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == LOOP]


def test_train_prints_a_summary_then_each_evaluation(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    """The trainer printed only a JSON line at the end: nothing said what was being trained,
    on what, with which techniques, or how evaluation went while it ran."""
    corpus = write_corpus(tmp_path / "corpus.txt", chars=8000)
    recipe = tiny_recipe(corpus, tmp_path / "run")
    caplog.set_level(logging.INFO)
    assert main(["train", str(write_recipe(tmp_path / "r.yaml", recipe)), "--no-progress"]) == 0
    summary, *evals = [m for m in _messages(caplog) if m.startswith(("training ", "step "))]

    built = recipe_from_dict(recipe)
    data = build_task_data(built)
    params = sum(p.numel() for p in build_model(built, data).parameters())
    assert summary.startswith(f"training {tmp_path / 'run'}: causal_lm, from step 0 to step 6")
    for expected in (
        f"model: gpt2 (GPT2LMHeadModel), {params:,} parameters, 4 blocks in transformer.h",
        f"data: {len(data.train):,} train samples, 8 validation samples",
        "batch: 4 × 2 accumulation × 1 rank = 8 samples per step; lr 0.003 "
        "(1 warmup step, then cosine decay)",
        "device: cpu, world size 1, fp32",
        "technique: PLD: θ̄=0.5 γ=0.3",
        "technique: random-LTD: blocks [1, 2] of transformer.h",
        "technique: curriculum: ",
    ):
        assert f"\n  {expected}" in summary, (expected, summary)

    with (tmp_path / "run" / "metrics.csv").open(newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["eval/loss"]]
    assert [e.split(":")[0] for e in evals] == ["step 3", "step 6"]
    for line, row in zip(evals, rows, strict=True):
        loss, se = float(row["eval/loss"]), float(row["eval/loss_se"])
        assert line.startswith(f"step {row['step']}: eval/loss {loss:.4f} ± {se:.4f}, ")
        assert line.endswith(f"{float(row['wall_s']):.1f} s")
    capsys.readouterr()


def test_a_baseline_summary_says_no_technique(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    corpus = write_corpus(tmp_path / "corpus.txt", chars=8000)
    recipe = tiny_recipe(corpus, tmp_path / "run", techniques=False)
    caplog.set_level(logging.INFO)
    path = write_recipe(tmp_path / "r.yaml", recipe)
    assert main(["train", str(path), "--no-progress", "--max-steps", "1"]) == 0
    (summary,) = [m for m in _messages(caplog) if m.startswith("training ")]
    assert summary.splitlines()[-1] == "  technique: none (a baseline run)"


def test_resuming_a_finished_run_says_there_is_nothing_to_do(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    """Resuming a run already at optim.max_steps printed `{}` and nothing else."""
    corpus = write_corpus(tmp_path / "corpus.txt", chars=8000)
    recipe = tiny_recipe(corpus, tmp_path / "run", techniques=False)
    path = write_recipe(tmp_path / "r.yaml", recipe)
    assert main(["train", str(path), "--no-progress", "--max-steps", "2"]) == 0
    capsys.readouterr()
    caplog.clear()
    caplog.set_level(logging.INFO)
    assert main(["train", str(path), "--no-progress", "--max-steps", "2", "--resume"]) == 0
    assert capsys.readouterr().out == ""
    assert _messages(caplog)[-1] == (
        f"nothing to do: {tmp_path / 'run'} is at step 2 and optim.max_steps is 2; raise "
        "--max-steps to train further"
    )
    assert not any(m.startswith("training ") for m in _messages(caplog))


def test_an_eval_line_shows_each_metric_of_the_task() -> None:
    row = {"loss": 0.5, "eval/loss": 0.61234, "eval/loss_se": 0.0123, "eval/accuracy": 0.719}
    assert eval_line(40, row, 12.34) == (
        "step 40: eval/loss 0.6123 ± 0.0123, accuracy 0.7190, 12.3 s"
    )


def test_a_baseline_recipe_is_named_once_not_warned_about(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    """A recipe without technique sections is a baseline by design (`leantrain compare` runs
    one per budget): the summary says so, and prepare's "no technique is enabled" warning,
    meant for API users who forgot their sections, is not printed. The API still warns."""
    corpus = write_corpus(tmp_path / "corpus.txt", chars=8000)
    recipe = tiny_recipe(corpus, tmp_path / "run", techniques=False)
    caplog.set_level(logging.INFO)
    assert main(["train", str(write_recipe(tmp_path / "r.yaml", recipe)), "--no-progress"]) == 0
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    summary = next(m for m in _messages(caplog) if m.startswith("training "))
    assert "\n  technique: none (a baseline run)" in summary
    capsys.readouterr()

    caplog.clear()
    leantrain.prepare(make_gpt2(), {})
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("no technique is enabled" in m for m in warned), warned
