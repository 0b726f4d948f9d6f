"""The run folder never loses or mixes data: its lock, refusing to replace a run by accident,
per-process temp folders, atomic re-saves, complete checkpoints only, a log that keeps the rows
its checkpoint covers, and a stop at the first non-finite step. Each test names the failure it
guards against (issue 13); `test_run_dir_faults.py` holds the kill loop and the full disk."""

from __future__ import annotations

import contextlib
import csv
import json
import math
import os
import shutil
import signal
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import fork_context, start_cli
from test_trainer import tiny_recipe, write_corpus, write_recipe

from leantrain.cli import main
from leantrain.errors import LeantrainError
from leantrain.files import HOST
from leantrain.trainer import recipe_from_dict, train
from leantrain.trainer.checkpoint import latest_checkpoint, save_checkpoint


@pytest.fixture
def recipe(tmp_path: Path) -> dict[str, Any]:
    """The tiny GPT-2 recipe without techniques, 6 steps, checkpoints every 2, into run/."""
    corpus = write_corpus(tmp_path / "corpus.txt", chars=8000)
    return tiny_recipe(corpus, tmp_path / "run", techniques=False)


def _steps(run: Path) -> list[str]:
    with (run / "metrics.csv").open(newline="") as f:
        return [r["step"] for r in csv.DictReader(f)]


def _files(run: Path) -> dict[Path, int]:
    """Each file of a run (its lock aside) and when it was last written."""
    return {p.relative_to(run): p.stat().st_mtime_ns for p in run.rglob("*") if p.name != ".lock"}


def _checkpoints(run: Path) -> list[str]:
    return sorted(p.name for p in (run / "checkpoints").iterdir())


# -- one run per folder ------------------------------------------------------------------------


def test_a_second_run_on_a_locked_folder_fails_at_once_naming_the_holder(
    recipe: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Two runs on one folder shared their temp folders and overwrote each other's checkpoints."""
    from leantrain.trainer.rundir import RunLock

    run = tmp_path / "run"
    run.mkdir()
    path = write_recipe(tmp_path / "r.yaml", recipe)
    lock = RunLock(run)  # held as another process would hold it
    try:
        assert main(["train", str(path), "--no-progress"]) == 2
    finally:
        lock.release()
    err = capsys.readouterr().err
    assert f"is in use by process {os.getpid()} on " in err and str(run) in err
    assert sorted(p.name for p in run.iterdir()) == [".lock"]  # it wrote nothing


def test_the_lock_of_a_killed_run_is_taken_over(recipe: dict[str, Any], tmp_path: Path) -> None:
    """A run killed while holding the lock must not block the folder; the next run says whose
    lock it took over."""
    path = write_recipe(tmp_path / "r.yaml", recipe)
    log = tmp_path / "killed.log"
    killed = start_cli("train", str(path), log=log, die_at="leantrain.trainer.loop:build_task_data")
    killed.join(120)
    assert killed.exitcode == -signal.SIGKILL, log.read_text()
    done = start_cli("train", str(path), "--no-progress", log=tmp_path / "next.log")
    done.join(300)
    assert done.exitcode == 0, (tmp_path / "next.log").read_text()[-3000:]
    text = (tmp_path / "next.log").read_text()
    assert f"taking over the lock of process {killed.pid} on " in text
    assert _steps(tmp_path / "run") == [str(i) for i in range(1, 7)]


def _save_in_child(run: str, writer: int, start: Any) -> None:
    """Save step 2 of a model whose every weight is `writer` (a slow save: 12 MiB, paused), once
    both writers are at the `start` barrier."""
    os.environ["LEANTRAIN_TEST_CHECKPOINT_PAUSE"] = "0.2"
    torch.set_num_threads(1)
    model = torch.nn.Linear(1024, 1024)
    optimizer = torch.optim.Adam(model.parameters())
    model(torch.ones(1, 1024)).sum().backward()
    optimizer.step()  # the optimizer has state to save
    torch.nn.init.constant_(model.weight, float(writer))
    state = {"writer": writer}
    start.wait(60)
    save_checkpoint(run, 2, model=model, optimizer=optimizer, rank_state=state, config=state)


def test_concurrent_saves_of_one_step_never_mix(tmp_path: Path) -> None:
    """Two processes saving one step shared the temp folder `.tmp_step_N`: one deleted the
    other's files, or a checkpoint held files of both."""
    context = fork_context()
    start = context.Barrier(2)
    writers = [
        context.Process(target=_save_in_child, args=(str(tmp_path), w, start)) for w in (1, 2)
    ]
    for process in writers:
        process.start()
    for process in writers:
        process.join(120)
    assert [p.exitcode for p in writers] == [0, 0]
    folder = tmp_path / "checkpoints" / "step_00000002"
    writer = torch.load(folder / "rank_0.pt", weights_only=False)["writer"]
    assert json.loads((folder / "config.json").read_text())["writer"] == writer
    weights = torch.load(folder / "model.pt", weights_only=True)["weight"]
    assert bool((weights == writer).all())
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == ["step_00000002"]


# -- never replaced by accident ----------------------------------------------------------------


def test_a_folder_holding_a_run_is_refused_without_resume_or_overwrite(
    recipe: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A run started without --resume silently deleted the checkpoints and metrics there."""
    run = tmp_path / "run"
    path = write_recipe(tmp_path / "r.yaml", recipe)
    assert main(["train", str(path), "--no-progress", "--stop-at", "4"]) == 0
    before = _files(run)
    capsys.readouterr()
    assert main(["train", str(path), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert f"output_dir: {run} is not empty" in err and "--resume" in err and "--overwrite" in err
    assert _files(run) == before  # nothing touched
    assert main(["train", str(path), "--resume", "--overwrite"]) == 2
    assert "choose one" in capsys.readouterr().err

    assert main(["train", str(path), "--no-progress", "--overwrite", "--stop-at", "2"]) == 0
    assert _checkpoints(run) == ["step_00000002"]  # the old run's step 4 is gone
    assert _steps(run) == ["1", "2"]


def test_help_names_the_overwrite_flag(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    assert "--overwrite" in capsys.readouterr().out


# -- checkpoints: complete or absent -----------------------------------------------------------


def test_a_half_deleted_checkpoint_is_skipped(
    recipe: dict[str, Any], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """`latest_checkpoint` took a half-deleted `step_N/` as newest, and every later resume
    failed with an unrelated error while a complete older checkpoint sat ignored."""
    run = tmp_path / "run"
    train(recipe_from_dict(recipe), stop_at=4, progress=False)
    (run / "checkpoints" / "step_00000004" / "optimizer.pt").unlink()
    assert latest_checkpoint(run) == run / "checkpoints" / "step_00000002"
    assert "step_00000004: skipped, an incomplete checkpoint (optimizer.pt is missing)" in (
        caplog.text
    )
    final = train(recipe_from_dict(recipe), resume=True, progress=False)
    assert final["step"] == 6
    assert _steps(run) == [str(i) for i in range(1, 7)]


def test_a_truncated_checkpoint_file_is_skipped(recipe: dict[str, Any], tmp_path: Path) -> None:
    run = tmp_path / "run"
    train(recipe_from_dict(recipe), stop_at=4, progress=False)
    model = run / "checkpoints" / "step_00000004" / "model.pt"
    os.truncate(model, model.stat().st_size // 2)
    assert latest_checkpoint(run) == run / "checkpoints" / "step_00000002"


class _Killed(BaseException):
    """Stands for a SIGKILL in the middle of a deletion."""


def test_a_kill_while_resaving_a_step_leaves_it_complete(
    recipe: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Re-saving a step deleted the old folder before renaming the new one in: a kill during
    the deletion left a half-deleted `step_N/` that every later resume tripped over."""
    run = tmp_path / "run"
    train(recipe_from_dict(recipe), stop_at=4, progress=False)
    rmtree = shutil.rmtree

    def dies_halfway(path: Any, *args: Any, **kwargs: Any) -> None:
        if (Path(path) / "model.pt").is_file():  # a checkpoint folder being deleted
            (Path(path) / "model.pt").unlink()
            raise _Killed
        rmtree(path, *args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(shutil, "rmtree", dies_halfway)
        with contextlib.suppress(_Killed):  # at step 4 again: saves step 4 once more
            train(recipe_from_dict(recipe), resume=True, stop_at=4, progress=False)
    assert latest_checkpoint(run) == run / "checkpoints" / "step_00000004"
    assert train(recipe_from_dict(recipe), resume=True, progress=False)["step"] == 6


def test_a_checkpoint_moved_aside_by_a_killed_resave_is_put_back(
    recipe: dict[str, Any], tmp_path: Path
) -> None:
    """A kill between the two renames of a re-save leaves the step's old copy hidden aside;
    the next run puts it back rather than falling back to an older checkpoint."""
    run = tmp_path / "run"
    train(recipe_from_dict(recipe), stop_at=4, progress=False)
    gone = start_cli("--help", log=tmp_path / "gone.log")  # a process that no longer runs
    gone.join(60)
    step_4 = run / "checkpoints" / "step_00000004"
    step_4.rename(step_4.with_name(f".step_00000004.old-{HOST}-{gone.pid}"))
    final = train(recipe_from_dict(recipe), resume=True, stop_at=5, progress=False)
    assert final["step"] == 5 and _steps(run) == ["1", "2", "3", "4", "5"]
    assert _checkpoints(run) == ["step_00000002", "step_00000004", "step_00000005"]


# -- the metrics log ---------------------------------------------------------------------------


def test_a_kill_while_opening_the_log_on_resume_keeps_its_rows(
    recipe: dict[str, Any], tmp_path: Path
) -> None:
    """metrics.csv was reopened with "w" on resume and its kept rows held in a buffer: a kill
    before the first flush left it empty, the history lost for good."""
    run = tmp_path / "run"
    path = write_recipe(tmp_path / "r.yaml", recipe)
    train(recipe_from_dict(recipe), stop_at=5, progress=False)
    shutil.rmtree(run / "checkpoints" / "step_00000005")  # as if killed before saving it
    log = tmp_path / "child.log"
    killed = start_cli(
        "train",
        str(path),
        "--resume",
        log=log,
        die_at="torch.utils.tensorboard:SummaryWriter.__init__",  # just after the CSV opens
    )
    killed.join(300)
    assert killed.exitcode == -signal.SIGKILL, log.read_text()[-3000:]
    assert _steps(run) == ["1", "2", "3", "4"]  # the rows checkpoint 4 covers; 5 is cut
    train(recipe_from_dict(recipe), resume=True, progress=False)
    assert _steps(run) == [str(i) for i in range(1, 7)]


# -- non-finite values -------------------------------------------------------------------------


def test_a_non_finite_loss_stops_the_run_at_that_step(
    recipe: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A NaN loss went unnoticed: the run exited 0, saved NaN weights, and its summary dropped
    the loss, so `leantrain report` showed "-" as if nothing had been logged."""
    import leantrain.trainer.loop as loop

    build = loop.build_model
    forwards = [0]

    def poisoned(*args: Any) -> torch.nn.Module:
        model = build(*args)

        def nan_from_step_3(module: torch.nn.Module, inputs: Any, out: torch.Tensor) -> Any:
            if model.training:
                forwards[0] += 1
                if forwards[0] > 4:  # 2 micro-batches per step: step 3 on
                    return out * float("nan")
            return None

        model.get_output_embeddings().register_forward_hook(nan_from_step_3)
        return model

    run = tmp_path / "run"
    with monkeypatch.context() as patch:
        patch.setattr(loop, "build_model", poisoned)
        with pytest.raises(LeantrainError, match=r"^step 3: loss nan, grad_norm nan; training"):
            train(recipe_from_dict(recipe), progress=False)
    assert _checkpoints(run) == ["step_00000002"]  # nothing saved after the last good step
    saved = torch.load(run / "checkpoints/step_00000002/model.pt", weights_only=True)
    assert all(bool(t.isfinite().all()) for t in saved.values())
    with (run / "metrics.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["step"] for r in rows] == ["1", "2", "3"] and rows[-1]["loss"] == "nan"
    assert train(recipe_from_dict(recipe), resume=True, progress=False)["step"] == 6


def test_summaries_print_nan_instead_of_dropping_it(
    recipe: dict[str, Any],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """An eval loss of NaN (a masked-LM batch with no masked token) vanished from the printed
    summary, and `leantrain report` showed NaN as "-", like a value never logged."""
    import leantrain.trainer.loop as loop

    monkeypatch.setattr(loop, "evaluate", lambda *args, **kwargs: {"eval/loss": math.nan})
    path = write_recipe(tmp_path / "r.yaml", recipe)
    assert main(["train", str(path), "--no-progress", "--max-steps", "3"]) == 0
    summary = capsys.readouterr().out.strip().splitlines()[-1]
    assert '"eval/loss": NaN' in summary
    assert main(["report", str(tmp_path / "run"), "--out", str(tmp_path / "r.png")]) == 0
    header, _, row = capsys.readouterr().out.splitlines()[:3]
    cells = dict(zip(header.split("|"), row.split("|"), strict=True))
    assert cells[" eval/loss "] == " nan "
