"""`leantrain compare RECIPE`: baseline against leantrain at equal quality, on three costs.

Trains each arm (`baseline`: the recipe without its technique sections; `leantrain`: as
written; or technique subsets such as `pld+ltd`) at several step budgets, each run with its own
complete schedule, evaluates every run on the whole validation split with its standard error,
and reads each technique run's speed-up off the baseline's Pareto frontier for training
seconds, layer-tokens and FLOPs. Writes `compare.md` (headline and table), `compare.csv`,
`compare.json` and `frontiers.png` to the output folder; finished runs are reused on a rerun.

    leantrain compare recipes/gpt2_curriculum_ltd.yaml --budgets 500,1000 --device cuda \\
        --precision bf16 --arms baseline,leantrain,cl+ltd
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from leantrain.compare.arms import (
    BASELINE,
    LEANTRAIN,
    arm_names,
    budgets_from,
    parse_arms,
    recipe_techniques,
)
from leantrain.compare.runner import run_all
from leantrain.compare.summary import (
    Analysis,
    analyse,
    format_table,
    headline,
    plot_frontiers,
    write_csv,
    write_json,
)
from leantrain.errors import ConfigError
from leantrain.version import __version__

__all__ = ["QUICK", "add_arguments", "compare", "run"]

#: `--quick`: tiny batches and data, two short budgets (for tests and a first try).
QUICK = ["optim.micro_batch_size=2", "data.subset=48", "data.valid_subset=6", "eval.batch_size=6"]
QUICK_BUDGETS = [2, 4]


def compare(
    raw: Mapping[str, Any],
    *,
    source: str,
    arms: Sequence[str],
    budgets: Mapping[str, Sequence[int]],
    output_dir: Path,
    fixed: Sequence[str] = (),
    z: float = 1.0,
    title: str | None = None,
    log: Callable[[str], None] = print,
) -> Analysis:
    """Run every arm at its budgets, then write and print the comparison; returns it."""
    output_dir.mkdir(parents=True, exist_ok=True)
    started, load0 = time.perf_counter(), _load()
    plan = ", ".join(f"{a} {list(budgets[a])}" for a in arms)
    log(f"compare {source}: {plan} steps -> {output_dir}")
    results = run_all(
        raw, arms=arms, budgets=budgets, output_dir=output_dir, fixed=fixed, source=source, log=log
    )
    analysis = analyse(results, arms, z=z)
    import torch

    meta = {
        "source": source,
        "command": " ".join(["leantrain", *sys.argv[1:]]) if sys.argv else "",
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "leantrain": __version__,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "fixed": list(fixed),
        "load_average_start_end": [load0, _load()],
        "elapsed_s": time.perf_counter() - started,
    }
    title = title or f"{source}: equal-quality comparison"
    line, table = headline(analysis), format_table(analysis)
    note = (
        f"Speed-up = the baseline's cost at the run's validation loss (its frontier, linear in "
        f"log-cost) / the run's cost; [interval] at loss ± {z:g}·σ (σ: both standard errors in "
        "quadrature); ~ extrapolated, > not reached. Training seconds exclude evaluation and "
        f"were measured with load average {load0:.1f} -> {_load():.1f} on {os.cpu_count()} CPUs."
    )
    md = f"# {title}\n\n**{line}**\n\n{table}\n\n{note}\n\n![frontiers](frontiers.png)\n"
    (output_dir / "compare.md").write_text(md)
    write_csv(analysis, output_dir / "compare.csv")
    write_json(analysis, output_dir / "compare.json", meta)
    png = plot_frontiers(analysis, output_dir / "frontiers.png", title)
    log(f"\n{table}\n\n{note}\n\n{line}\n\nwrote {output_dir}/compare.{{md,csv,json}} and {png}")
    return analysis


def _load() -> float:
    try:
        return os.getloadavg()[0]
    except OSError:  # not on every platform
        return float("nan")


def read_raw_recipe(path: str | Path, overrides: Sequence[str] = ()) -> dict[str, Any]:
    """A recipe YAML as a dict with `key=value` overrides applied (validated per run later)."""
    from leantrain.trainer.recipe import apply_overrides

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: recipe file not found")
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: got a top-level {type(data).__name__}; expected a mapping")
    return apply_overrides(data, overrides)


def plan_budgets(
    arms: Sequence[str], default: Sequence[int], per_arm: Sequence[str]
) -> dict[str, list[int]]:
    """Budgets per arm: `default` for all, `ARM=LIST` items overriding single arms."""
    out = {a: list(default) for a in arms}
    for item in per_arm:
        arm, sep, values = item.partition("=")
        if not sep or arm not in out:
            raise ConfigError(f"--arm-budgets {item}: expected ARM=STEPS,... with ARM in {arms}")
        out[arm] = budgets_from(values)
    return out


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `leantrain compare`."""
    add = parser.add_argument
    add("recipe", help="recipe YAML (its technique sections make the leantrain arm)")
    add("--arms", default=f"{BASELINE},{LEANTRAIN}", help=f"comma list: {BASELINE}, {LEANTRAIN}, "
        f"or '+'-joined subsets of {', '.join(arm_names())}")  # fmt: skip
    add("--budgets", help="step budgets of every arm, e.g. 100,200,400 (default: the recipe's "
        "max_steps and half of it)")  # fmt: skip
    add("--arm-budgets", action="append", default=[], metavar="ARM=STEPS,...",
        help="budgets of one arm instead (repeatable)")  # fmt: skip
    add("--output-dir", help="where runs and results go (default runs/compare/<recipe name>)")
    add("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help="override a recipe key in every run, e.g. --set optim.lr=3e-4")  # fmt: skip
    add("--device", help="cpu, cuda or auto (default: the recipe's)")
    add("--precision", choices=["auto", "bf16", "fp32"], help="default: the recipe's")
    add("--threads", type=int, help="torch CPU threads")
    add("--eval-split", choices=["validation", "selection"], default="validation",
        help="selection: score runs on data.selection_fraction's split (for sweeps)")  # fmt: skip
    add("--z", type=float, default=1.0, help="interval half-width in standard errors")
    add("--quick", action="store_true", help="tiny batches, 2 and 4 steps (a smoke test)")


def run(args: argparse.Namespace) -> int:
    """Run the comparison from the command line."""
    overrides = [*(QUICK if args.quick else []), *args.overrides]
    raw = read_raw_recipe(args.recipe, overrides)
    arms = parse_arms(args.arms, recipe_techniques(raw))
    steps = int((raw.get("optim") or {}).get("max_steps", 100))
    default = (
        budgets_from(args.budgets)
        if args.budgets
        else (QUICK_BUDGETS if args.quick else budgets_from([max(1, steps // 2), steps]))
    )
    budgets = plan_budgets(arms, default, args.arm_budgets)
    fixed = [f"eval.split={args.eval_split}"]
    fixed += [f"device={args.device}"] if args.device else []
    fixed += [f"optim.precision={args.precision}"] if args.precision else []
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    out = Path(args.output_dir or Path("runs") / "compare" / Path(args.recipe).stem)
    compare(raw, source=str(args.recipe), arms=arms, budgets=budgets, output_dir=out, fixed=fixed)
    return 0
