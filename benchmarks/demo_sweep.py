"""How the main job's model and technique settings were chosen: a sweep on the selection split.

Each try is a model setting (shape, LR, batch: shared by both arms, so its baseline runs are
reused by every technique setting tried on it) and a technique setting (the leantrain arm's
sections). Every run is scored on the *selection* split (`data.selection_fraction`: another
twentieth of the standard-library files, never trained on and never reported), so the demo's
reported validation split plays no part in the choice. Speed-ups are read off the baseline's
frontier as `leantrain compare` does; layer-tokens and FLOPs are deterministic, training seconds
depend on the machine's load.

    python benchmarks/demo_sweep.py --tries m8x96:default,m8x96:theta75 --work runs/demo_sweep

appends one row per (try, leantrain budget) to `benchmarks/results/demo_sweep.md` (and the
try's numbers to `demo_sweep/<model>_<technique>.json` beside it). Runs already done in --work
are reused.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
from pathlib import Path
from typing import Any

from leantrain.compare.runner import RunResult, run_one
from leantrain.compare.summary import analyse
from leantrain.demo import REFERENCE_STEPS, demo_raw
from leantrain.trainer.recipe import apply_overrides

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "benchmarks" / "results"

#: Model settings: overrides of the demo recipe shared by both arms (their baselines are shared).
MODELS: dict[str, list[str]] = {
    "m4x128": ["model.config.n_layer=4", "model.config.n_embd=128", "optim.micro_batch_size=16"],
    "m8x64": ["model.config.n_layer=8", "model.config.n_embd=64", "optim.micro_batch_size=16"],
    "m8x96b8": [
        "model.config.n_layer=8",
        "model.config.n_embd=96",
        "optim.micro_batch_size=8",
    ],
    "m8x96b8lr1": [
        "model.config.n_layer=8",
        "model.config.n_embd=96",
        "optim.micro_batch_size=8",
        "optim.lr=1e-3",
    ],
    "m8x96b8lr3": [
        "model.config.n_layer=8",
        "model.config.n_embd=96",
        "optim.micro_batch_size=8",
        "optim.lr=3e-3",
    ],
    "m12x64b8": [
        "model.config.n_layer=12",
        "model.config.n_embd=64",
        "optim.micro_batch_size=8",
    ],
}

_LTD = "data_efficiency.data_routing.random_ltd"
_CL = "curriculum_learning"

#: The sweep's starting point ("default"): θ̄ 0.5 with γ = 6/T, sequence length 64 -> 256 over
#: 40% of the run, random-LTD 64 -> 256 over the whole run (the demo now uses ltd32_cl20pct).
START = [
    f"{_CL}.schedule_config.total_curriculum_step={int(0.4 * REFERENCE_STEPS)}",
    f"{_LTD}.random_ltd_schedule.min_value=64",
]

#: Technique settings: changes from START, for the leantrain arm only (stated for
#: REFERENCE_STEPS steps).
TECHNIQUES: dict[str, list[str]] = {
    "default": [],
    "theta75": ["progressive_layer_drop.theta=0.75"],
    "theta35": ["progressive_layer_drop.theta=0.35"],
    "gamma_slow": [f"progressive_layer_drop.gamma={3.0 / REFERENCE_STEPS}"],
    "cl32": [f"{_CL}.min_difficulty=32"],
    "cl60pct": [f"{_CL}.schedule_config.total_curriculum_step={int(0.6 * REFERENCE_STEPS)}"],
    "cl20pct": [f"{_CL}.schedule_config.total_curriculum_step={int(0.2 * REFERENCE_STEPS)}"],
    "ltd32": [f"{_LTD}.random_ltd_schedule.min_value=32"],
    "ltd128": [f"{_LTD}.random_ltd_schedule.min_value=128"],
    "ltd32_theta60": [
        f"{_LTD}.random_ltd_schedule.min_value=32",
        "progressive_layer_drop.theta=0.6",
    ],
    "ltd32_cl20pct": [
        f"{_LTD}.random_ltd_schedule.min_value=32",
        f"{_CL}.schedule_config.total_curriculum_step={int(0.2 * REFERENCE_STEPS)}",
    ],
    "ltd70pct": [
        f"{_LTD}.random_ltd_schedule.schedule_config.require_steps={int(0.7 * REFERENCE_STEPS)}"
    ],
}


def _layers(model: str) -> int:
    for item in MODELS[model]:
        if item.startswith("model.config.n_layer="):
            return int(item.split("=")[1])
    raise KeyError(model)


def _raw(model: str, technique: str) -> dict[str, Any]:
    """The demo recipe with a model setting and a technique setting, scored on selection."""
    layers = _layers(model)
    ltd_ids = list(range(1, layers - 1))
    fit = [  # random-LTD's layers follow the depth
        f"{_LTD}.random_ltd_layer_id={ltd_ids}",
        f"{_LTD}.random_ltd_layer_num={len(ltd_ids)}",
        f"{_LTD}.total_layer_num={layers}",
    ]
    sets = ["optim.micro_batch_size=16", *MODELS[model], *fit, *START, *TECHNIQUES[technique]]
    return apply_overrides(demo_raw(), sets)


def run_try(
    model: str, technique: str, work: Path, base_budgets: list[int], lt_budgets: list[int]
) -> list[dict[str, Any]]:
    """Baseline (shared per model) and leantrain runs of one try; one row per leantrain run."""
    raw = _raw(model, technique)
    fixed = ["eval.split=selection"]
    results: list[RunResult] = []
    plan = [("baseline", s) for s in base_budgets] + [("leantrain", s) for s in lt_budgets]
    for arm, steps in sorted(plan, key=lambda p: (p[1], p[0])):
        folder = "baseline" if arm == "baseline" else technique
        result, reused = run_one(
            raw,
            arm=arm,
            steps=steps,
            reference_steps=REFERENCE_STEPS,
            run_dir=work / model / folder / f"{steps:06d}",
            fixed=fixed,
            source=f"demo_sweep {model}:{technique}",
        )
        results.append(result)
        print(
            f"{model}:{technique} {arm} {steps}: loss {result.loss:.4f} ± {result.se:.4f}, "
            f"{result.seconds:.1f} s{' (reused)' if reused else ''}",
            flush=True,
        )
    analysis = analyse(results, ["baseline", "leantrain"])
    rows = []
    for r in results:
        if r.arm == "leantrain":
            s = analysis.speedups[("leantrain", r.steps)]
            rows.append(
                {
                    "model": model,
                    "technique": technique,
                    "steps": r.steps,
                    "loss": r.loss,
                    "se": r.se,
                    "speedups": {c: s[c].describe() for c in ("layer_tokens", "flops", "seconds")},
                    "values": {c: s[c].value for c in ("layer_tokens", "flops", "seconds")},
                }
            )
    base = {r.steps: (r.loss, r.se, r.seconds) for r in results if r.arm == "baseline"}
    for row in rows:
        row["baseline"] = base
    return rows


def _commit() -> str:
    done = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True
    )
    return done.stdout.strip() or "unknown"


def main() -> int:
    """Run the named tries and append their rows."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--tries", required=True, help="comma list of MODEL:TECHNIQUE")
    parser.add_argument("--work", type=Path, default=REPO / "runs" / "demo_sweep")
    parser.add_argument("--baseline-budgets", default="100,200,400")
    parser.add_argument("--leantrain-budgets", default="200,400")
    parser.add_argument("--threads", type=int, help="torch CPU threads (1 suits a busy machine)")
    args = parser.parse_args()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    base = [int(x) for x in args.baseline_budgets.split(",")]
    lt = [int(x) for x in args.leantrain_budgets.split(",")]
    OUT.mkdir(parents=True, exist_ok=True)
    md = OUT / "demo_sweep.md"
    if not md.exists():
        md.write_text(
            "| model | technique | leantrain steps | selection loss ± SE | speed-up layer-tokens"
            " | FLOPs | seconds (under load) | baseline losses (steps: loss) | load | commit |\n"
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n"
        )
    for item in args.tries.split(","):
        model, _, technique = item.partition(":")
        load0 = os.getloadavg()[0]
        rows = run_try(model, technique or "default", args.work, base, lt)
        load = f"{load0:.1f}-{os.getloadavg()[0]:.1f}"
        with md.open("a") as f:
            for r in rows:
                losses = ", ".join(f"{s}: {v[0]:.4f}" for s, v in sorted(r["baseline"].items()))
                sp = r["speedups"]
                f.write(
                    f"| {model} | {r['technique']} | {r['steps']} | {r['loss']:.4f} ± "
                    f"{r['se']:.4f} | {sp['layer_tokens']} | {sp['flops']} | {sp['seconds']} | "
                    f"{losses} | {load} | {_commit()} |\n"
                )
        js = OUT / "demo_sweep" / f"{model}_{technique or 'default'}.json"
        js.parent.mkdir(exist_ok=True)
        js.write_text(json.dumps(rows, indent=1, default=str).replace("NaN", "null") + "\n")
        print(f"{item}: " + "; ".join(f"{r['steps']}: {r['speedups']}" for r in rows), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
