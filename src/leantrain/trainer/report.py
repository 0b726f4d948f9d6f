"""`leantrain report RUN_DIR...`: compare runs by loss against wall-clock and against compute.

Reads each run's `metrics.csv` (written by `leantrain train` and `leantrain demo`), draws the
training loss (lines) and validation loss (markers) against training wall-clock and against
consumed layer-tokens in one PNG, and prints a table of what each run spent and reached, with
each run's ratios to the first and a caveat where the two were set up differently in more than
their techniques (their recorded recipes, host or device differ, or were not recorded).
"""

from __future__ import annotations

import argparse
import csv
import math
from collections.abc import Sequence
from pathlib import Path

from leantrain.adopt.compose import config_keys
from leantrain.errors import LeantrainError
from leantrain.trainer.runinfo import read_run_info, setup_differences

__all__ = [
    "add_arguments",
    "caveats",
    "format_table",
    "plot_runs",
    "read_metrics",
    "run",
    "summarize",
    "time_to_loss",
]


def read_metrics(run_dir: str | Path) -> list[dict[str, float]]:
    """The rows of `<run_dir>/metrics.csv` as floats (empty cells are left out)."""
    path = Path(run_dir) / "metrics.csv"
    if not path.is_file():
        raise LeantrainError(f"{run_dir}: no metrics.csv; expected a leantrain run folder")
    with path.open(newline="") as f:
        rows = [
            {k: float(v) for k, v in r.items() if v not in ("", None)} for r in csv.DictReader(f)
        ]
    if not rows:
        raise LeantrainError(f"{path}: no logged steps yet")
    return rows


def summarize(run_dir: str | Path, name: str | None = None) -> dict[str, float | str]:
    """One table row: steps, wall-clock, tokens, layer-tokens, final train and eval values."""
    rows = read_metrics(run_dir)
    last = rows[-1]
    tail = [r["loss"] for r in rows[-max(1, len(rows) // 10) :]]
    out: dict[str, float | str] = {
        "run": name or Path(run_dir).name,
        "steps": last["step"],
        "wall_s": last["wall_s"],
        "tokens": last["tokens"],
        "layer_tokens": last["layer_tokens"],
        "train_loss": sum(tail) / len(tail),
    }
    evals = [r for r in rows if "eval/loss" in r]
    if evals:
        out.update({k: v for k, v in evals[-1].items() if k.startswith("eval/")})
    return out


def time_to_loss(rows: Sequence[dict[str, float]], target: float, x: str = "wall_s") -> float:
    """When (in column `x`) the validation loss first reached `target`, interpolated linearly
    between evaluations; NaN when it never did."""
    points = [(r[x], r["eval/loss"]) for r in rows if "eval/loss" in r]
    for i, (at, loss) in enumerate(points):
        if loss <= target:
            if i == 0:
                return at
            (x0, y0), (x1, y1) = points[i - 1], (at, loss)
            return x0 + (x1 - x0) * (y0 - target) / (y0 - y1)
    return math.nan


def _fmt(value: float | str | None) -> str:
    """A table cell: "-" where a run has no such value, "nan" where it logged NaN."""
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    if value != value:
        return "nan"
    if abs(value) >= 1e5:
        return f"{value / 1e6:.2f}M"
    if float(value).is_integer():
        return f"{int(value)}"
    return f"{value:.4f}" if abs(value) < 100 else f"{value:.1f}"


def caveats(run_dirs: Sequence[str | Path], names: Sequence[str]) -> dict[str, str]:
    """By run name: why a run's ratios to the first run (`run_dirs[0]`) may measure more than
    its techniques; runs without a caveat are left out."""
    infos = [read_run_info(d) for d in run_dirs]
    out: dict[str, str] = {}
    for name, run_dir, info in zip(names[1:], run_dirs[1:], infos[1:], strict=True):
        notes = []
        if infos[0] is None or info is None:
            unknown = [str(d) for d, i in ((run_dirs[0], infos[0]), (run_dir, info)) if i is None]
            notes.append(
                f"no recipe recorded in {' or '.join(unknown)} (no run.json, no checkpoint): "
                "whether the runs differ only in their techniques is unknown"
            )
        else:
            differs = setup_differences(infos[0], info, config_keys())
            if differs:
                notes.append("differs in more than the techniques: " + "; ".join(differs))
            if "host" not in infos[0] or "host" not in info:
                notes.append(
                    "where a run ran is not recorded (no run.json): wall-clock ratios assume the "
                    "same machine and load"
                )
        if notes:
            out[name] = ". ".join(notes)
    return out


def format_table(
    rows: Sequence[dict[str, float | str]], notes: dict[str, str] | None = None
) -> str:
    """A Markdown table of `summarize` rows, with each run's ratio to the first one and its
    caveat (`notes`, by run name: see `caveats`)."""
    keys = list(dict.fromkeys(k for r in rows for k in r))
    header = ["run", *[k for k in keys if k != "run"]]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        lines.append("| " + " | ".join(_fmt(r.get(k)) for k in header) + " |")
    if len(rows) > 1:
        base = rows[0]
        for r in rows[1:]:
            parts = []
            for key in ("wall_s", "tokens", "layer_tokens"):
                a, b = base.get(key), r.get(key)
                if isinstance(a, float) and isinstance(b, float) and a > 0:
                    parts.append(f"{key} {b / a:.2f}x")
            lines.append(f"\n{r['run']} vs {base['run']}: " + ", ".join(parts))
            if notes and str(r["run"]) in notes:
                lines.append(f"  caveat: {notes[str(r['run'])]}")
    return "\n".join(lines)


def plot_runs(
    run_dirs: Sequence[str | Path], out: str | Path, names: Sequence[str] | None = None
) -> Path:
    """Loss vs wall-clock and vs layer-tokens for every run, in one PNG at `out`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for i, run_dir in enumerate(run_dirs):
        rows = read_metrics(run_dir)
        label = names[i] if names else Path(run_dir).name
        color = f"C{i}"
        evals = [r for r in rows if "eval/loss" in r]
        for ax, x in ((axes[0], "wall_s"), (axes[1], "layer_tokens")):
            ax.plot(
                [r[x] for r in rows],
                [r["loss"] for r in rows],
                color=color,
                alpha=0.6,
                label=f"{label} train",
            )
            if evals:
                ax.plot(
                    [r[x] for r in evals],
                    [r["eval/loss"] for r in evals],
                    "o--",
                    color=color,
                    label=f"{label} validation",
                )
    axes[0].set_xlabel("training wall-clock (s)")
    axes[1].set_xlabel("consumed layer-tokens")
    for ax in axes:
        ax.set_ylabel("loss")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("leantrain: loss against time and against compute")
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `leantrain report`."""
    parser.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="run output folders")
    parser.add_argument("--out", default="report.png", help="PNG to write (default report.png)")


def run(args: argparse.Namespace) -> int:
    """Print the comparison table and write the PNG."""
    rows = [summarize(d) for d in args.run_dirs]
    print(format_table(rows, caveats(args.run_dirs, [str(r["run"]) for r in rows])))
    print(f"\nwrote {plot_runs(args.run_dirs, args.out)}")
    return 0
