"""`leantrain demo --quick`: both runs train, the comparison table prints, the PNG is written."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from leantrain.cli import main
from leantrain.demo import demo_recipe


def test_demo_recipes_differ_only_in_the_techniques(tmp_path: Path) -> None:
    base = demo_recipe(tmp_path, steps=100, leantrain=False)
    lean = demo_recipe(tmp_path, steps=100, leantrain=True)
    assert base.model_dump() == lean.model_dump()
    assert not (base.config.pld_enabled or base.config.seqlen_warmup_enabled)
    assert not base.config.random_ltd_enabled
    assert lean.config.pld_enabled and lean.config.seqlen_warmup_enabled
    assert lean.config.random_ltd.random_ltd_layer_id == [1, 2]  # the middle blocks
    assert Path(base.data.train or "").is_dir() and base.data.glob == "*.py"


def test_demo_quick(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--quick", "--output-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "| baseline |" in out and "| leantrain |" in out
    assert "leantrain vs baseline: wall_s" in out and "layer_tokens" in out
    assert (tmp_path / "report.png").read_bytes()[:4] == b"\x89PNG"
    rows = {}
    for name in ("baseline", "leantrain"):
        with (tmp_path / name / "metrics.csv").open(newline="") as f:
            rows[name] = list(csv.DictReader(f))
        assert len(rows[name]) == 4 and rows[name][-1]["eval/loss"]
    # the techniques spend fewer tokens and layer-tokens than the baseline
    assert float(rows["leantrain"][-1]["tokens"]) < float(rows["baseline"][-1]["tokens"])
    assert float(rows["leantrain"][-1]["layer_tokens"]) < float(
        rows["baseline"][-1]["layer_tokens"]
    )
