"""`benchmarks/vs_deepspeed.py` on CPU: our side is timed, DeepSpeed's cells say why they are not.

The script runs in a subprocess, as a user runs it, on one tiny shape for one step.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "benchmarks" / "vs_deepspeed.py"


@pytest.mark.slow
def test_vs_deepspeed_cpu_smoke(tmp_path: Path) -> None:
    rows_path = tmp_path / "rows.json"
    cmd = [sys.executable, str(SCRIPT), "--device", "cpu", "--shapes", "gpt2-cpu"]
    cmd += ["--steps", "1", "--repeats", "1", "--warmup", "0", "--threads", "1"]
    cmd += ["--json", str(rows_path)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-4000:]

    # the per-technique table is printed last: limits, DeepSpeed's ratio, ours
    lines = proc.stdout.strip().splitlines()
    header, _, *techniques = lines[-4:]
    assert header.startswith("| shape | technique | FLOP limit (ours / DS) | time limit")
    assert [line.split(" | ")[1] for line in techniques] == ["PLD", "random-LTD"]
    for line in techniques:
        assert "skipped: needs CUDA" in line.split(" | ")[4]  # the DeepSpeed ratio column
    assert any(line.startswith("| shape | B x S | variant | leantrain ms") for line in lines)

    rows = json.loads(rows_path.read_text())
    by_variant = {row["variant"]: row for row in rows}
    assert set(by_variant) == {"baseline", "all blocks skipped", "PLD", "random-LTD"}
    for row in rows:
        for key in ("ours_ms", "ours_ratio"):
            assert math.isfinite(row[key]) and row[key] > 0, (row["variant"], key, row[key])
        assert row["ds_status"] == "skipped: needs CUDA"
        assert row["ds_ms"] is None and row["ds_ratio"] is None and row["ours_over_ds"] is None
    assert by_variant["baseline"]["ours_ratio"] == 1.0
    pld, ltd = by_variant["PLD"], by_variant["random-LTD"]
    assert pld["theta"] == 0.5
    assert pld["keep_fraction"] == pytest.approx(1 - 0.5 * 13 / 24)  # ours, L = 12
    assert pld["ds_keep_fraction"] == pytest.approx(1 - 0.5 * 11 / 24)  # DeepSpeedExamples' rule
    assert ltd["reserved"] == 32  # half of seq 64
    for row in (pld, ltd):
        assert 0 < row["flop_limit"] < 1 and math.isfinite(row["time_limit"])
