"""`leantrain demo --quick` and `leantrain compare --quick`: every run trains, the equal-quality
table, headline, CSV, JSON and PNG are written, and a rerun reuses finished runs."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import yaml
from conftest import all_three_sections

from leantrain.cli import main
from leantrain.compare.arms import arm_recipe, recipe_techniques
from leantrain.demo import demo_raw


def test_demo_recipe_holds_all_three_and_its_baseline_none() -> None:
    raw = demo_raw()
    assert recipe_techniques(raw) == {"pld", "cl", "ltd"}
    base = arm_recipe(raw, "baseline")
    assert recipe_techniques(base) == set()
    assert {k: v for k, v in raw.items() if k in base} == base  # nothing else differs
    layers = raw["model"]["config"]["n_layer"]
    ltd = raw["data_efficiency"]["data_routing"]["random_ltd"]
    assert ltd["random_ltd_layer_id"] == list(range(1, layers - 1))  # first and last stay whole
    assert Path(raw["data"]["train"]).is_dir() and raw["data"]["glob"] == "*.py"
    assert raw["data"]["selection_fraction"] and "split" not in raw.get("eval", {})


def test_demo_quick(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--quick", "--output-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "leantrain vs baseline at equal validation loss, speed-up over its 2 budgets" in out
    assert "| leantrain | 4 |" in out and "| baseline | 2 |" in out
    assert (tmp_path / "frontiers.png").read_bytes()[:4] == b"\x89PNG"
    with (tmp_path / "compare.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert sorted((r["arm"], r["steps"]) for r in rows) == [
        ("baseline", "1"),  # half the smallest budget: a cheap point for the frontier
        ("baseline", "2"),
        ("baseline", "4"),
        ("leantrain", "2"),
        ("leantrain", "4"),
    ]
    by = {(r["arm"], r["steps"]): r for r in rows}
    for steps in ("2", "4"):  # the techniques spend less at the same budget
        for cost in ("layer_tokens", "flops"):
            assert float(by[("leantrain", steps)][cost]) < float(by[("baseline", steps)][cost])
        assert float(by[("baseline", steps)]["se"]) > 0
        assert by[("leantrain", steps)]["speedup_flops_status"] in (
            "interpolated",
            "extrapolated",
            "not reached",
        )
    data = json.loads((tmp_path / "compare.json").read_text())
    assert data["headline"].startswith("leantrain vs baseline")
    assert set(data["frontiers"]) == {"seconds", "layer_tokens", "flops"}
    # each run evaluated once, at its end, on the whole (quick: 6-sequence) split
    metrics = (tmp_path / "runs" / "leantrain" / "000004" / "metrics.csv").read_text()
    assert metrics.count("\n") == 1 + 4  # header + one row per step
    recipe = yaml.safe_load((tmp_path / "demo_recipe.yaml").read_text())
    assert recipe_techniques(recipe) == {"pld", "cl", "ltd"}


def _tiny_recipe(tmp_path: Path) -> Path:
    """A 4-block GPT-2 on 64-byte blocks of a small text folder, with all three techniques."""
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for i in range(20):
        (corpus / f"{i:02d}.txt").write_text(f"def f{i}(x):\n    return x * {i}\n" * 40)
    raw = {
        "task": "causal_lm",
        "model": {"family": "gpt2", "config": {"n_layer": 4, "n_embd": 32, "n_head": 2}},
        "data": {"train": str(corpus), "seq_len": 64, "valid_fraction": 0.1},
        "optim": {"max_steps": 8, "warmup_steps": 2, "micro_batch_size": 2},
        "device": "cpu",
        **all_three_sections(gamma=0.1, curriculum_steps=4, ltd_steps=8),
    }
    raw["curriculum_learning"].update(min_difficulty=32, max_difficulty=64)
    ltd = raw["data_efficiency"]["data_routing"]["random_ltd"]["random_ltd_schedule"]
    ltd.update(min_value=32, max_value=64)
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_compare_quick_reuses_finished_runs_and_takes_arm_subsets(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    recipe = _tiny_recipe(tmp_path)
    args = ["compare", str(recipe), "--quick", "--output-dir", str(tmp_path / "out")]
    assert main([*args, "--arms", "pld,cl+ltd", "--arm-budgets", "pld=3"]) == 0
    first = capsys.readouterr().out
    assert "reused" not in first and "| pld | 3 |" in first and "| cl+ltd | 4 |" in first
    assert "pld vs baseline at equal validation loss" in first  # no leantrain arm: the first
    assert main([*args, "--arms", "pld", "--arm-budgets", "pld=3"]) == 0
    again = capsys.readouterr().out
    assert again.count("reused") == 3  # baseline 2 and 4, pld 3
    assert main([*args, "--arms", "ltd+ltd"]) == 2  # a bad arm is a clear error
    assert "not an arm" in capsys.readouterr().err
