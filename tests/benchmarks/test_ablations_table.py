"""`benchmarks/ablations.py`'s table: per arm, speed-ups per budget and whether it pays."""

from __future__ import annotations

import math
from collections.abc import Callable
from types import ModuleType

from leantrain.compare.runner import RunResult
from leantrain.compare.summary import analyse


def _run(arm: str, steps: int, cost: float, loss: float) -> RunResult:
    return RunResult(arm, steps, cost, cost, cost, cost, loss, 0.01, "")


def test_table_says_which_arm_pays(load_script: Callable[[str], ModuleType]) -> None:
    script = load_script("ablations")
    base = [_run("baseline", s, s, 3 - 0.5 * math.log(s)) for s in (100, 200, 400)]
    good = [_run("pld", s, s / 2, 3 - 0.5 * math.log(s) + 0.05) for s in (100, 200, 400)]
    bad = [_run("cl", s, s, 3 - 0.5 * math.log(s) + 0.1) for s in (100, 200, 400)]
    mixed = [_run("ltd", 100, 100, 0.3), _run("ltd", 200, 200, 0.5)]  # ahead, then behind
    table = script.ablation_table(
        analyse([*base, *good, *bad, *mixed], ["baseline", "pld", "cl", "ltd"])
    )
    rows = {line.split(" | ")[0].strip("| "): line for line in table.splitlines()[2:]}
    assert rows["pld"].endswith("| yes |") and "1.81x / 1.81x" in rows["pld"]
    assert rows["cl"].endswith("| no |") and "0.82x" in rows["cl"]
    assert rows["ltd"].endswith("| at 1 of 2 budgets |") and "2.21x / 0.74x" in rows["ltd"]
    assert "~" in rows["pld"]  # the cheapest pld point lies below the baseline's cheapest
