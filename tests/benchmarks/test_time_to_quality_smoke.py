"""`benchmarks/time_to_quality.py --scale smoke`: all three workloads on the real data, on a CPU,
writing the reports a GPU run writes (summaries, PNGs, per-run logs) and nothing large."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import torch

from leantrain.trainer.recipe import DATA_ROOT_ENV

PNG = b"\x89PNG\r\n\x1a\n"


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


@pytest.mark.slow
@pytest.mark.shared_data
def test_smoke_scale_runs_every_workload_and_reports(
    shared_data: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    load_script: Callable[[str], ModuleType],
) -> None:
    monkeypatch.setenv(DATA_ROOT_ENV, str(shared_data))  # the script sets it; restored after
    out, work = tmp_path / "results", tmp_path / "work"
    argv = ["--scale", "smoke", "--device", "cpu", "--out", str(out), "--work-dir", str(work)]
    threads = torch.get_num_threads()
    try:
        assert load_script("time_to_quality").main([*argv, "--data-root", str(shared_data)]) == 0
    finally:
        torch.set_num_threads(threads)
    printed = capsys.readouterr().out

    summaries = {}
    for workload in ("gpt", "bert", "vit"):
        folder = out / workload
        summary = json.loads((folder / "summary.json").read_text())
        summaries[workload] = summary
        text = (folder / "summary.md").read_text()
        assert (folder / "report.png").read_bytes()[:8] == PNG
        assert summary["device"] == "cpu" and summary["scale"] == "smoke"
        assert summary["commit"] and "--scale smoke" in summary["command"]
        for key in ("date", "torch", "commit", "command"):
            assert f"- {key}: " in text
        assert _finite(summary["target"]) and f"{summary['target']:.4f}" in text
        base, technique = summary["runs"]
        for run in (base, technique):
            assert all(_finite(run[k]) and run[k] > 0 for k in ("wall_s", "tokens", "layer_tokens"))
            assert _finite(run["final_eval_loss"]) and _finite(run["best_eval_loss"])
            logs = folder / "runs" / run["run"]
            assert (logs / "metrics.csv").is_file() and any((logs / "tb").iterdir())
            assert (logs / "recipe.json").is_file()
        assert base["wall_s_to_target"] == pytest.approx(base["wall_s"])  # its own final loss
        reached = technique["wall_s_to_target"]
        assert (reached is None) == ("did not reach the target" in text)
        assert reached is None or 0 < reached <= technique["wall_s"]
        assert text.split("\n\n", 1)[1][:60] in printed  # printed too

    assert summaries["vit"]["runs"][0]["eval/accuracy"] >= 0.0
    glue = summaries["bert"]["glue"]
    assert sorted(glue) == ["baseline", "pld"]
    for variant in glue.values():
        assert sorted(variant) == ["cola", "mrpc", "rte", "sst2", "stsb"]
        assert all(_finite(v) for metrics in variant.values() for v in metrics.values())
    bert = (out / "bert" / "summary.md").read_text()
    assert "| PLD (published) | 69.3 | 86.6/84.3 | 90.0/89.6 | 55.8 | 91.6 |" in bert
    assert printed.rstrip().endswith("![loss curves](report.png)")  # the tables come last

    # checkpoints and models stay in the work folder; the results hold small files only
    assert (work / "bert" / "pld" / "model" / "config.json").is_file()
    files = [p for p in out.rglob("*") if p.is_file()]
    assert not [p for p in files if p.suffix in (".safetensors", ".pt", ".bin")]
    assert sum(p.stat().st_size for p in files) < 5 * 2**20
