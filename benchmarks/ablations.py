"""Ablations of the main job: each technique alone, each pair and all three, at equal quality.

Runs `leantrain compare` on the demo's recipe (`leantrain.demo.demo_raw`) with the arms
baseline, pld, cl, ltd, cl+ltd, pld+cl, pld+ltd and leantrain (all three), every arm at the
demo's budgets (`leantrain.demo.arm_budgets`) with its own complete schedule and scored on the
whole validation split; each
arm gets its own frontier in `frontiers.png`. Then prints, per arm, its speed-up range on each
cost against the baseline's frontier and whether it pays at this scale (every budget below the
baseline's frontier in FLOPs), as a Markdown table for `benchmarks/RESULTS.md`.

    python benchmarks/ablations.py                      # ~35 min on 2 quiet CPU cores
    python benchmarks/ablations.py --output-dir runs/demo   # reuse the demo's runs

Finished runs in the output folder are reused (`leantrain compare` semantics).
"""

from __future__ import annotations

import argparse
import subprocess
from pathlib import Path

from leantrain.compare.arms import BASELINE, budgets_from
from leantrain.compare.cli import compare
from leantrain.compare.frontier import SpeedUp, Status
from leantrain.compare.runner import COSTS
from leantrain.compare.summary import Analysis
from leantrain.demo import BUDGETS, arm_budgets, demo_raw

ARMS = [BASELINE, "pld", "cl", "ltd", "cl+ltd", "pld+cl", "pld+ltd", "leantrain"]
REPO = Path(__file__).resolve().parents[1]


def pays(speedups: list[SpeedUp]) -> str:
    """'yes' when every budget is below the baseline frontier, 'no' when none is, else how many."""
    ahead = sum(s.ahead for s in speedups)
    if ahead == len(speedups):
        return "yes"
    return "no" if ahead == 0 else f"at {ahead} of {len(speedups)} budgets"


def _span(speedups: list[SpeedUp]) -> str:
    """Each budget's speed-up, e.g. '1.21x / 1.35x / not reached (> 1.9x)'."""
    out = []
    for s in speedups:
        if s.status is Status.INTERPOLATED:
            out.append(f"{s.value:.2f}x")
        elif s.status is Status.NOT_REACHED:
            out.append(f"> {s.value:.2f}x")
        else:
            out.append(f"~{s.value:.2f}x" if s.bound == "exact" else f"< {s.value:.2f}x")
    return " / ".join(out)


def ablation_table(analysis: Analysis) -> str:
    """One row per arm: losses per budget, speed-ups per cost, and whether it pays."""
    header = ["arm", "eval loss per budget", *(f"speed-up, {COSTS[c]}" for c in COSTS), "pays?"]
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    base = sorted((r.steps, r.loss) for r in analysis.results if r.arm == BASELINE)
    lines.append(
        f"| {BASELINE} | {' / '.join(f'{loss:.4f}' for _, loss in base)} | - | - | - | - |"
    )
    for arm in analysis.arms[1:]:
        mine = sorted((k[1], v) for k, v in analysis.speedups.items() if k[0] == arm)
        runs = sorted((r.steps, r.loss) for r in analysis.results if r.arm == arm)
        cells = [arm, " / ".join(f"{loss:.4f}" for _, loss in runs)]
        cells += [_span([v[c] for _, v in mine]) for c in COSTS]
        cells.append(pays([v["flops"] for _, v in mine]))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> int:
    """Run every arm and print the ablation table."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--output-dir", type=Path, default=REPO / "runs" / "ablations")
    parser.add_argument("--budgets", default=",".join(map(str, BUDGETS)))
    parser.add_argument("--arms", default=",".join(ARMS))
    args = parser.parse_args()
    arms = [a for a in args.arms.split(",") if a]
    budgets = budgets_from(args.budgets)
    analysis = compare(
        demo_raw(),
        source="leantrain demo (ablations)",
        arms=arms,
        budgets=arm_budgets(arms, budgets),
        output_dir=args.output_dir,
        title="leantrain demo workload: each technique, each pair, all three",
    )
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True
    ).stdout.strip()
    table = ablation_table(analysis)
    (args.output_dir / "ablations.md").write_text(f"commit {commit}\n\n{table}\n")
    print(f"\nSpeed-ups per budget ({', '.join(map(str, budgets))} steps):\n\n{table}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
