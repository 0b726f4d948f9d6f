"""The run folder under faults (issue 13's proof): a tiny run killed with SIGKILL again and
again, in the middle of checkpoint writes and re-saves too, ends bit for bit where an
uninterrupted run ends, with its whole metrics history; two runs started together on one folder
cannot both run; a full disk is an error naming the file, and the checkpoint before it loads."""

from __future__ import annotations

import csv
import json
import os
import random
import re
import signal
import textwrap
import time
from collections.abc import Callable
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import can_mount_tmpfs, run_on_tmpfs, start_cli
from safetensors.torch import load_file
from test_trainer import tiny_recipe, write_corpus, write_recipe

import leantrain
from leantrain.trainer.checkpoint import PAUSE_ENV, checkpoint_problem, latest_checkpoint

SRC = str(Path(leantrain.__file__).parents[1])  # the leantrain under test, for subprocesses
STEPS = 12
#: Seconds the checkpoint writer pauses after each file and between the renames of a re-save,
#: so that kills land inside them.
PAUSE = "0.08"
#: Columns that measure time, the only ones that may differ between two runs.
TIMING = ("wall_s", "tokens_per_s")


@pytest.fixture(scope="module")
def recipe(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny GPT-2 with all three techniques: 12 steps, a checkpoint every 2."""
    tmp = tmp_path_factory.mktemp("faults")
    recipe = tiny_recipe(write_corpus(tmp / "corpus.txt", chars=12_000), tmp / "unused")
    recipe["optim"]["max_steps"] = STEPS
    recipe["eval"]["interval"] = 4
    return write_recipe(tmp / "recipe.yaml", recipe)


@pytest.fixture(scope="module")
def reference(recipe: Path) -> Callable[[], Path]:
    """An uninterrupted run, started at once; call to wait for it and get its folder."""
    run = recipe.parent / "reference"
    process = start_cli("train", str(recipe), "--output-dir", str(run), "--no-progress",
                        log=recipe.parent / "reference.log")  # fmt: skip

    def wait() -> Path:
        process.join(600)
        assert process.exitcode == 0, (recipe.parent / "reference.log").read_text()[-3000:]
        return run

    return wait


def _rows(run: Path) -> list[dict[str, str]]:
    with (run / "metrics.csv").open(newline="") as f:
        return [{k: v for k, v in r.items() if k not in TIMING} for r in csv.DictReader(f)]


def _same_tensors(a: Any, b: Any) -> bool:
    """Equal nested states, tensors compared bit for bit."""
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict):
        return (
            isinstance(b, dict)
            and a.keys() == b.keys()
            and all(_same_tensors(a[k], b[k]) for k in a)
        )
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(_same_tensors(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def assert_same_run(run: Path, reference: Path) -> None:
    """The same metrics (timings aside) and bit-identical final weights and optimizer state."""
    assert _rows(run) == _rows(reference)
    assert _same_tensors(
        load_file(run / "model" / "model.safetensors"),
        load_file(reference / "model" / "model.safetensors"),
    )
    last = f"checkpoints/step_{STEPS:08d}/optimizer.pt"
    assert _same_tensors(
        torch.load(run / last, weights_only=False), torch.load(reference / last, weights_only=False)
    )


def _check_after_kill(run: Path) -> int:
    """What a kill may leave: the newest checkpoint complete, a log covering it with whole
    rows only. Returns that checkpoint's step (0: none yet)."""
    latest = latest_checkpoint(run)
    step = int(latest.name.removeprefix("step_")) if latest is not None else 0
    if latest is not None:
        assert checkpoint_problem(latest) is None
    if (run / "metrics.csv").is_file():
        data = (run / "metrics.csv").read_bytes()
        steps = [int(r["step"]) for r in _rows(run)]
        assert steps[:step] == list(range(1, step + 1)), steps  # the history it covers
        assert data.endswith(b"\r\n") or not steps  # no half row
    return step


def _wait_for(process: BaseProcess, seen: Callable[[], bool], timeout: float = 120) -> bool:
    """Poll until `seen()` (True) or the process ends (False)."""
    deadline = time.monotonic() + timeout
    while process.is_alive() and time.monotonic() < deadline:
        if seen():
            return True
        time.sleep(0.003)
    return False


def _hidden(run: Path, kind: str, after: int = -1) -> Callable[[], bool]:
    """Whether a temp folder of `kind` (tmp: a write, old: a re-save's swap) of a step past
    `after` is in place (`.step_N.<kind>-<host>-<pid>`, or `.tmp_step_N` as leantrain 0.1 named
    it, so that the loop runs against that version too)."""
    root = run / "checkpoints"

    def seen() -> bool:
        names = [p.name for p in root.iterdir()] if root.is_dir() else []
        found = [re.fullmatch(rf"\.(?:{kind}_)?step_(\d{{8}})(?:\.{kind}-.*)?", n) for n in names]
        return any(m is not None and int(m[1]) > after for m in found)

    return seen


def _logged_past(run: Path, step: int) -> Callable[[], bool]:
    """Whether the run has logged a step past `step` (it is training)."""
    path = run / "metrics.csv"
    return lambda: path.is_file() and path.read_bytes().count(b"\n") > step + 1


@pytest.mark.slow
@pytest.mark.skipif(os.name != "posix", reason="SIGKILL and forkserver are POSIX")
def test_a_run_killed_again_and_again_ends_bit_identical(
    recipe: Path, reference: Callable[[], Path], tmp_path: Path
) -> None:
    seed = int(os.environ.get("LEANTRAIN_KILL_SEED", time.time_ns() % 10_000))
    rng = random.Random(seed)
    run = tmp_path / "killed"
    plan = ["anywhere", "mid-write", "mid-resave", "mid-write", "anywhere", "mid-resave"]
    history: list[str] = []
    started = time.monotonic()
    for i, kind in enumerate(plan):
        step = _check_after_kill(run) if i else 0
        argv = ["train", str(recipe), "--output-dir", str(run), "--no-progress"]
        if i:
            argv.append("--resume")
        if kind == "mid-resave":
            if not 0 < step < STEPS:
                kind = "mid-write"  # nothing to save again yet
            else:
                argv += ["--stop-at", str(step)]  # at that step already: saves it once more
        log = tmp_path / f"round{i}.log"
        process = start_cli(*argv, log=log, env={PAUSE_ENV: PAUSE})
        if kind == "anywhere":  # at a random moment of training
            hit = _wait_for(process, _logged_past(run, step))
            process.join(rng.uniform(0, 1.5))
        elif kind == "mid-write":  # inside a checkpoint write, one checkpoint on
            hit = _wait_for(process, _hidden(run, "tmp", after=min(step + 2, STEPS - 2)))
            time.sleep(rng.uniform(0, 4 * float(PAUSE)))
        else:  # between the renames of a re-save
            hit = _wait_for(process, _hidden(run, "old"))
        if process.is_alive():
            os.kill(process.pid, signal.SIGKILL)
        process.join(60)
        if process.exitcode not in (0, -signal.SIGKILL):
            pytest.fail(f"round {i} ({kind}, seed {seed}): {log.read_text()[-3000:]}")
        history.append(
            f"{kind}@{step}:{'killed' if process.exitcode else 'ended'}{'' if hit else '?'}"
        )
    _check_after_kill(run)
    log = tmp_path / "last.log"
    last = start_cli("train", str(recipe), "--output-dir", str(run), "--resume", log=log)
    last.join(600)
    assert last.exitcode == 0, log.read_text()[-3000:]
    print(f"kill loop (seed {seed}, {time.monotonic() - started:.1f} s): {' '.join(history)}")
    # kills that landed where they were aimed (a round can finish before its kill arrives; on a
    # loaded machine only a few land, so the bar is two, one of them inside a checkpoint write)
    kills = [h for h in history if h.endswith(":killed")]
    assert len(kills) >= 2 and any(h.startswith(("mid-resave", "mid-write")) for h in kills)
    assert_same_run(run, reference())
    assert [p.name for p in (run / "checkpoints").iterdir() if p.name.startswith(".")] == []


@pytest.mark.slow
@pytest.mark.skipif(os.name != "posix", reason="flock and forkserver are POSIX")
def test_two_runs_started_together_on_one_folder_cannot_both_run(
    recipe: Path, reference: Callable[[], Path], tmp_path: Path
) -> None:
    """Two processes on one folder deleted each other's temp folders, mixed an optimizer.pt
    from both runs, and one exited 0 while the other overwrote all its checkpoints."""
    run = tmp_path / "run"
    argv = ["train", str(recipe), "--output-dir", str(run), "--no-progress"]
    pair = [start_cli(*argv, log=tmp_path / f"{n}.log", env={PAUSE_ENV: PAUSE}) for n in "ab"]
    for process in pair:
        process.join(600)
    codes = {process.pid: process.exitcode for process in pair}
    assert sorted(codes.values()) == [0, 2], codes
    winner = next(pid for pid, code in codes.items() if code == 0)
    loser = next(n for n, p in zip("ab", pair, strict=True) if p.exitcode == 2)
    assert f"is in use by process {winner} on " in (tmp_path / f"{loser}.log").read_text()
    assert_same_run(run, reference())


DISK_SCRIPT = textwrap.dedent(
    """
    import json, sys, torch
    from pathlib import Path
    from leantrain.cli import main
    from leantrain.trainer import load_recipe
    from leantrain.trainer.checkpoint import latest_checkpoint, load_checkpoint
    from leantrain.trainer.data import build_task_data
    from leantrain.trainer.model import build_model

    recipe_file, run = sys.argv[1], Path(sys.argv[2])
    torch.set_num_threads(1)
    code = main(["train", recipe_file, "--output-dir", str(run), "--no-progress"])
    latest = latest_checkpoint(run)
    recipe = load_recipe(recipe_file, [f"output_dir={run}"])
    model = build_model(recipe, build_task_data(recipe))
    state = load_checkpoint(latest, model=model, optimizer=torch.optim.AdamW(model.parameters()))
    print(json.dumps({"code": code, "latest": latest.name, "step": state["step"],
                      "csv": (run / "metrics.csv").read_text()}))
    """
)


@pytest.mark.slow
@pytest.mark.skipif(not can_mount_tmpfs(), reason="cannot mount a tmpfs (needs `unshare -rm`)")
def test_a_full_disk_names_the_file_and_keeps_the_last_checkpoint(tmp_path: Path) -> None:
    """On a full disk torch raised a RuntimeError naming neither the file nor the cause."""
    corpus = write_corpus(tmp_path / "corpus.txt", chars=8000)
    recipe = write_recipe(
        tmp_path / "r.yaml", tiny_recipe(corpus, tmp_path / "x", techniques=False)
    )
    disk = tmp_path / "disk"
    disk.mkdir()
    (tmp_path / "script.py").write_text(DISK_SCRIPT)
    # 1.5 MiB: the checkpoint of step 2 (0.8 MiB) fits, the one of step 4 does not
    env = {"PYTHONPATH": SRC, "OMP_NUM_THREADS": "1"}
    done = run_on_tmpfs(disk, "1536k", tmp_path / "script.py", str(recipe), f"{disk}/run", env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    errors = [line for line in done.stderr.splitlines() if "error:" in line]
    assert result["code"] == 2 and len(errors) == 1, done.stderr[-3000:]
    assert f"{disk}/run/checkpoints/" in errors[0]
    assert "cannot write: No space left on device" in errors[0]
    assert result["latest"] == "step_00000002" and result["step"] == 2  # loads
    rows = result["csv"].splitlines()[1:]
    assert [r.split(",")[0] for r in rows][:2] == ["1", "2"] and result["csv"].endswith("\n")
