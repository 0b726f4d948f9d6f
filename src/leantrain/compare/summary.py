"""What a comparison says: frontiers, speed-ups, the headline, table, CSV, JSON and the PNG.

Pure functions of the runs' results (`runner.RunResult`), except the writers.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from leantrain.compare.arms import BASELINE, LEANTRAIN
from leantrain.compare.frontier import Point, SpeedUp, Status, pareto_frontier, speedup
from leantrain.compare.runner import COSTS, RunResult
from leantrain.files import atomic_write_json, temp_path

__all__ = [
    "Analysis",
    "analyse",
    "format_table",
    "headline",
    "plot_frontiers",
    "write_csv",
    "write_json",
]


#: Cost axes in the order tables show them.
_ORDER = ("layer_tokens", "flops", "seconds")


def _point(r: RunResult, cost: str) -> Point:
    se = r.se if math.isfinite(r.se) else 0.0
    return Point(r.cost(cost), r.loss, se, f"{r.arm}@{r.steps}")


@dataclass(frozen=True)
class Analysis:
    """Frontiers per (cost, arm) and the speed-up of every non-baseline run per cost."""

    results: list[RunResult]
    arms: list[str]
    frontiers: dict[str, dict[str, list[Point]]]
    #: (arm, steps) -> cost -> speed-up against the baseline frontier
    speedups: dict[tuple[str, int], dict[str, SpeedUp]]
    z: float


def analyse(results: Sequence[RunResult], arms: Sequence[str], *, z: float = 1.0) -> Analysis:
    """Build every frontier and speed-up (z: interval half-width in standard errors)."""
    frontiers = {
        cost: {
            arm: pareto_frontier(_point(r, cost) for r in results if r.arm == arm) for arm in arms
        }
        for cost in COSTS
    }
    speedups: dict[tuple[str, int], dict[str, SpeedUp]] = {}
    for r in results:
        if r.arm != BASELINE:
            speedups[(r.arm, r.steps)] = {
                cost: speedup(frontiers[cost][BASELINE], _point(r, cost), z=z) for cost in COSTS
            }
    return Analysis(list(results), list(arms), frontiers, speedups, z)


def _range(values: Sequence[SpeedUp]) -> str:
    """'1.52-1.71x' over the interpolated points, then each other point said as what it is."""
    inside = [s.value for s in values if s.status is Status.INTERPOLATED]
    parts = []
    if inside:
        lo, hi = min(inside), max(inside)
        parts.append(f"{lo:.2f}x" if lo == hi else f"{lo:.2f}-{hi:.2f}x")
    for s in values:
        if s.status is Status.NOT_REACHED:
            parts.append(f"> {s.value:.2f}x (beyond the baseline's best loss)")
        elif s.status is Status.EXTRAPOLATED:
            bound = "< " if s.bound == "upper" else "~"
            parts.append(f"{bound}{s.value:.2f}x (extrapolated)")
    return ", ".join(parts) or "n/a"


def headline(analysis: Analysis, arm: str | None = None) -> str:
    """One line: the arm's equal-quality speed-ups on each cost and where it is ahead."""
    if arm is None:
        others = [a for a in analysis.arms if a != BASELINE]
        arm = LEANTRAIN if LEANTRAIN in others else others[0]
    mine = [v for k, v in sorted(analysis.speedups.items()) if k[0] == arm]
    ahead = sum(v["flops"].ahead for v in mine)
    parts = "; ".join(f"{COSTS[c]} {_range([v[c] for v in mine])}" for c in _ORDER)
    return (
        f"{arm} vs {BASELINE} at equal validation loss, speed-up over its {len(mine)} budgets: "
        f"{parts}; below the baseline's FLOP frontier at {ahead} of {len(mine)} budgets"
    )


def _fmt_cost(value: float, cost: str) -> str:
    if cost == "seconds":
        return f"{value:.1f}"
    if cost == "flops":
        return f"{value / 1e12:.3f}T"
    return f"{value / 1e6:.2f}M"


def format_table(analysis: Analysis) -> str:
    """A Markdown table: every run, its costs, loss ± SE, and its speed-ups with intervals."""
    header = ["arm", "steps", "eval loss ± SE", "train s", "layer-tokens", "FLOPs"]
    header += [f"speed-up ({COSTS[c]})" for c in _ORDER]
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for r in sorted(analysis.results, key=lambda r: (analysis.arms.index(r.arm), r.steps)):
        s = analysis.speedups.get((r.arm, r.steps))
        cells = [
            r.arm,
            str(r.steps),
            f"{r.loss:.4f} ± {r.se:.4f}" if math.isfinite(r.se) else f"{r.loss:.4f}",
            *(_fmt_cost(r.cost(c), c) for c in ("seconds", "layer_tokens", "flops")),
            *(s[c].describe() if s else "-" for c in _ORDER),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _rows(analysis: Analysis) -> list[dict[str, Any]]:
    rows = []
    for r in analysis.results:
        row: dict[str, Any] = asdict(r)
        for cost, s in analysis.speedups.get((r.arm, r.steps), {}).items():
            row.update(
                {
                    f"speedup_{cost}": s.value,
                    f"speedup_{cost}_low": s.low,
                    f"speedup_{cost}_high": s.high,
                    f"speedup_{cost}_status": str(s.status),
                    f"speedup_{cost}_bound": s.bound,
                }
            )
        rows.append(row)
    return rows


def write_csv(analysis: Analysis, path: Path) -> Path:
    """One row per run: costs, loss, SE, and each speed-up with interval and status."""
    rows = _rows(analysis)
    fields = list(dict.fromkeys(k for r in rows for k in r))
    tmp = temp_path(path)
    with tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields, restval="")
        writer.writeheader()
        writer.writerows(rows)
    tmp.replace(path)
    return path


def write_json(analysis: Analysis, path: Path, meta: dict[str, Any]) -> Path:
    """Everything: metadata, runs with speed-ups, frontiers (per cost and arm), headline."""

    def clean(x: Any) -> Any:
        if isinstance(x, float):
            return x if math.isfinite(x) else None
        if isinstance(x, dict):
            return {k: clean(v) for k, v in x.items()}
        if isinstance(x, list | tuple):
            return [clean(v) for v in x]
        return x

    data = {
        **meta,
        "headline": headline(analysis),
        "z": analysis.z,
        "runs": _rows(analysis),
        "frontiers": {
            cost: {arm: [asdict(p) for p in pts] for arm, pts in per_arm.items()}
            for cost, per_arm in analysis.frontiers.items()
        },
    }
    atomic_write_json(path, clean(data))
    return path


def plot_frontiers(analysis: Analysis, path: Path, title: str) -> Path:
    """Loss against each cost (log axis): every run with its SE, each arm's frontier as a line;
    runs off their arm's frontier are hollow."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    costs = _ORDER
    fig, axes = plt.subplots(1, len(costs), figsize=(5.2 * len(costs), 4.4), sharey=True)
    for ax, cost in zip(axes, costs, strict=True):
        for i, arm in enumerate(analysis.arms):
            color = "black" if arm == BASELINE else f"C{i}"
            front = analysis.frontiers[cost][arm]
            on = {p.label for p in front}
            pts = [_point(r, cost) for r in analysis.results if r.arm == arm]
            ax.plot([p.cost for p in front], [p.loss for p in front], "-", color=color, label=arm)
            for p in pts:
                ax.errorbar(
                    p.cost,
                    p.loss,
                    yerr=p.se,
                    fmt="o",
                    color=color,
                    mfc=color if p.label in on else "white",
                    capsize=3,
                )
        ax.set_xscale("log")
        ax.set_xlabel(COSTS[cost])
        ax.grid(alpha=0.3, which="both")
    axes[0].set_ylabel("validation loss (whole split) ± SE")
    axes[0].legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
