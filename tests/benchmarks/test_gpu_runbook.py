"""The GPU runbook's deadline logic, on fake stages (shell commands) that need no GPU."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest
import yaml

from leantrain.compare.arms import parse_arms, recipe_techniques

REPO = Path(__file__).parents[2]


@pytest.fixture
def rb(load_script: Callable[[str], ModuleType]) -> ModuleType:
    module = load_script("gpu_runbook")
    module.RESERVE_S = 0.2
    return module


def _summary(out: Path) -> dict:
    return json.loads((out / "summary.json").read_text())


def _statuses(out: Path) -> dict[str, str]:
    return {s["name"]: s["status"] for s in _summary(out)["stages"]}


def _gone(pid: int) -> bool:
    """Whether process `pid` ends (or is a zombie awaiting its reaper) within 5 s."""
    for _ in range(50):
        try:
            if Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z":
                return True
        except FileNotFoundError:
            return True
        time.sleep(0.1)
    return False


def test_stages_run_in_order_and_each_sees_the_summary_so_far(
    rb: ModuleType, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    stages = [
        rb.Stage("first", 1, "echo one > {dir}/a.txt", "writes a file"),
        rb.Stage("second", 1, f"cp {out}/summary.json {{dir}}/seen.json", "reads the summary"),
        rb.Stage("third", 1, "echo $WHO", "stage env", env={"WHO": "third-env"}),
    ]
    results = rb.run_plan(stages, out=out, work=out, deadline_s=30)
    assert [r.status for r in results] == ["done"] * 3
    assert rb.exit_code(results) == 0
    seen = json.loads((out / "second" / "seen.json").read_text())
    assert [s["status"] for s in seen["stages"]] == ["done", "not started", "not started"]
    assert "third-env" in (out / "third.log").read_text()
    with tarfile.open(out / "results.tgz") as tar:
        names = set(tar.getnames())
    assert {"first/a.txt", "first.log", "second/seen.json", "third.log"} <= names
    assert "results.tgz" not in names and "summary.json" not in names
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temp files left


def test_a_stage_whose_estimate_does_not_fit_is_skipped_and_later_ones_still_run(
    rb: ModuleType, tmp_path: Path
) -> None:
    stages = [
        rb.Stage("big", 100, "touch {dir}/ran", "too long for the deadline"),
        rb.Stage("small", 1, "touch {dir}/ran", "fits"),
    ]
    results = rb.run_plan(stages, out=tmp_path, work=tmp_path, deadline_s=10)
    assert _statuses(tmp_path) == {"big": "skipped", "small": "done"}
    assert "estimate 100 s >" in results[0].note
    assert not (tmp_path / "big" / "ran").exists() and (tmp_path / "small" / "ran").exists()
    assert rb.exit_code(results) == 3


def test_a_stage_running_past_the_deadline_is_killed_with_its_children_and_keeps_its_files(
    rb: ModuleType, tmp_path: Path
) -> None:
    stages = [
        rb.Stage(
            "slow",
            1,
            "echo partial > {dir}/part.txt; sleep 60 & echo $! > {dir}/child; wait",
            "outlives the deadline",
        ),
        rb.Stage("after", 1, "true", "no time left"),
    ]
    began = time.monotonic()
    results = rb.run_plan(stages, out=tmp_path / "out", work=tmp_path / "work", deadline_s=2)
    assert time.monotonic() - began < 30  # not the 60 s of the sleep
    assert [r.status for r in results] == ["timed out", "skipped"]
    assert rb.exit_code(results) == 1
    child = int((tmp_path / "work" / "slow" / "child").read_text())
    assert _gone(child)  # the whole process group was killed, not only the stage's shell
    with tarfile.open(tmp_path / "out" / "results.tgz") as tar:
        assert tar.extractfile("slow/part.txt").read() == b"partial\n"  # type: ignore[union-attr]


def test_a_failing_stage_is_reported_and_the_plan_goes_on(rb: ModuleType, tmp_path: Path) -> None:
    stages = [rb.Stage("bad", 1, "exit 7", "fails"), rb.Stage("good", 1, "true", "runs")]
    results = rb.run_plan(stages, out=tmp_path, work=tmp_path, deadline_s=20)
    assert _statuses(tmp_path) == {"bad": "failed (exit 7)", "good": "done"}
    assert rb.exit_code(results) == 1
    md = (tmp_path / "summary.md").read_text()
    assert "| bad | failed (exit 7) |" in md and "exit 1" in md


def test_sigterm_ends_the_stage_and_leaves_the_summary(tmp_path: Path) -> None:
    """The runbook killed from outside (a slot's hard limit) still says what it finished."""
    out = tmp_path / "out"
    code = (
        "import sys; sys.path.insert(0, 'benchmarks'); import gpu_runbook as rb; "
        "rb.PLANS['gpt'] = [rb.Stage('quick', 1, 'true', 'done first'), "
        "rb.Stage('long', 1, 'sleep 60', 'interrupted')]; "
        f"raise SystemExit(rb.main(['--out', {str(out)!r}, '--deadline-s', '100']))"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=REPO)
    for _ in range(100):
        if (out / "long.log").exists():
            break
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 1
    assert _statuses(out) == {"quick": "done", "long": "interrupted"}


def test_only_picks_stages_and_rejects_unknown_names(rb: ModuleType, tmp_path: Path) -> None:
    rb.PLANS["fake"] = [rb.Stage("a", 1, "true", ""), rb.Stage("b", 1, "true", "")]
    assert rb.main(["--plan", "fake", "--only", "b", "--out", str(tmp_path)]) == 0
    assert _statuses(tmp_path) == {"b": "done"}
    with pytest.raises(SystemExit) as err:
        rb.main(["--plan", "fake", "--only", "c", "--out", str(tmp_path)])
    assert err.value.code == 2


def test_the_real_plans_name_scripts_shapes_and_arms_that_exist(
    rb: ModuleType, load_script: Callable[[str], ModuleType]
) -> None:
    shapes = {s: load_script(s).SHAPES for s in ("layerdrop", "tokendrop", "vs_deepspeed")}
    for plan in rb.PLANS.values():
        assert len({s.name for s in plan}) == len(plan)
        for stage in plan:
            words = stage.command.split()
            scripts = [w for w in words if w.startswith("benchmarks/")]
            assert all((REPO / w).is_file() for w in scripts), stage.name
            if "--shapes" in words:
                script = Path(scripts[0]).stem
                assert words[words.index("--shapes") + 1] in shapes[script], stage.name
    assert sum(s.estimate_s for s in rb.PLANS["bert"]) < 520
    assert "gpu" in load_script("bert_pld").SCALES
    words = rb.GPT_FRONTIER.split()
    recipe = REPO / words[words.index("compare") + 1]
    raw = yaml.safe_load(recipe.read_text())
    arms = parse_arms(words[words.index("--arms") + 1], recipe_techniques(raw))
    assert arms == ["baseline", "cl+ltd", "leantrain"]
