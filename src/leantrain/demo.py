"""`leantrain demo`: the main job, on data every machine has.

Trains a small GPT (GPT-2 architecture, byte-level vocabulary, so no tokenizer files) on the
Python standard library's own source code twice — a plain baseline, then the same model and
budget with all three leantrain techniques (sequence-length warmup, random-LTD in the middle
blocks, progressive layer dropping) — and prints what each run spent (wall-clock, tokens,
layer-tokens) and reached (validation loss), with a report PNG. A few minutes on a laptop CPU;
it uses a GPU when one is present.
"""

from __future__ import annotations

import argparse
import sysconfig
import time
from pathlib import Path
from typing import Any

from leantrain.trainer.loop import train
from leantrain.trainer.recipe import Recipe, recipe_from_dict
from leantrain.trainer.report import (
    format_table,
    plot_runs,
    read_metrics,
    summarize,
    time_to_loss,
)

__all__ = ["add_arguments", "demo_recipe", "run"]


#: The small GPT: 4 blocks of width 128 over 256-byte contexts (~0.9M parameters).
MODEL = {
    "n_layer": 4,
    "n_embd": 128,
    "n_head": 4,
    "n_positions": 256,
    "resid_pdrop": 0.0,
    "embd_pdrop": 0.0,
    "attn_pdrop": 0.0,
}
SEQ_LEN = 256


def _techniques(steps: int) -> dict[str, Any]:
    """PLD, sequence-length warmup and random-LTD, scaled to a run of `steps` steps."""
    return {
        # θ falls from 1 towards 0.75, most of the way in the first half of the run (the
        # paper's 0.5 suits 12+ blocks; with 4 it drops too much to pay off in 200 steps)
        "progressive_layer_drop": {"enabled": True, "theta": 0.75, "gamma": 6.0 / steps},
        # sequence length 64 -> 256 over the first 40% of the steps
        "curriculum_learning": {
            "enabled": True,
            "curriculum_type": "seqlen",
            "min_difficulty": 64,
            "max_difficulty": SEQ_LEN,
            "schedule_type": "fixed_linear",
            "schedule_config": {
                "total_curriculum_step": max(1, int(0.4 * steps)),
                "difficulty_step": 8,
            },
        },
        # the two middle blocks keep 64 -> 256 tokens over the whole run
        "data_efficiency": {
            "enabled": True,
            "data_routing": {
                "enabled": True,
                "random_ltd": {
                    "enabled": True,
                    "random_ltd_layer_id": [1, 2],
                    "random_ltd_layer_num": 2,
                    "total_layer_num": MODEL["n_layer"],
                    "model_type": "decoder",
                    "random_ltd_schedule": {
                        "min_value": 64,
                        "max_value": SEQ_LEN,
                        "schedule_type": "fixed_linear",
                        "schedule_config": {"require_steps": steps, "seq_per_step": 16},
                    },
                },
            },
        },
    }


def demo_recipe(
    output_dir: str | Path, *, steps: int, leantrain: bool, quick: bool = False
) -> Recipe:
    """The recipe of one demo run: baseline (`leantrain=False`) or with all three techniques."""
    recipe: dict[str, Any] = {
        "task": "causal_lm",
        "seed": 1234,
        "output_dir": str(output_dir),
        "model": {"family": "gpt2", "config": MODEL, "attn_implementation": "sdpa"},
        "data": {
            "train": sysconfig.get_paths()["stdlib"],
            "glob": "*.py",  # the top-level modules, sorted; every 20th file is held out
            "valid_fraction": 0.05,
            "tokenizer": "byte",
            "seq_len": SEQ_LEN,
        },
        "optim": {
            "lr": 2e-3,
            "min_lr_ratio": 0.1,
            "warmup_steps": max(1, steps // 20),
            "decay": "cosine",
            "weight_decay": 0.1,
            "betas": [0.9, 0.95],
            "micro_batch_size": 2 if quick else 16,
            "max_steps": steps,
        },
        "eval": {
            "interval": steps if quick else max(1, steps // 10),
            "max_batches": 1 if quick else 10,
        },
        "log_interval": 1,
    }
    if leantrain:
        recipe.update(_techniques(steps))
    return recipe_from_dict(recipe, source="leantrain demo")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `leantrain demo`."""
    parser.add_argument("--steps", type=int, default=200, help="optimizer steps per run")
    parser.add_argument("--output-dir", default="runs/demo", help="where both runs and the PNG go")
    parser.add_argument(
        "--quick", action="store_true", help="a few steps on small batches (for the tests)"
    )


def run(args: argparse.Namespace) -> int:
    """Train the baseline and the leantrain run, print the comparison, write the report PNG."""
    steps = 4 if args.quick else args.steps
    out = Path(args.output_dir)
    runs = {"baseline": out / "baseline", "leantrain": out / "leantrain"}
    start = time.perf_counter()
    for name, run_dir in runs.items():
        print(f"== {name}: {steps} steps -> {run_dir}", flush=True)
        recipe = demo_recipe(run_dir, steps=steps, leantrain=name == "leantrain", quick=args.quick)
        train(recipe, overwrite=True, progress=not args.quick)  # a demo re-run replaces its runs
    rows = [summarize(d, name) for name, d in runs.items()]
    png = plot_runs(list(runs.values()), out / "report.png", names=list(runs))
    print()
    print(format_table(rows))
    target = float(rows[1]["eval/loss"])
    base = read_metrics(runs["baseline"])
    seconds, layer_tokens = time_to_loss(base, target), time_to_loss(base, target, "layer_tokens")
    reached = (
        f"the baseline after {seconds:.1f} s and {layer_tokens / 1e6:.2f}M layer-tokens "
        "(interpolated between its evaluations)"
        if seconds == seconds
        else "the baseline did not reach it"
    )
    print(
        f"\nvalidation loss {target:.4f}: leantrain reached it after {rows[1]['wall_s']:.1f} s "
        f"of training and {float(rows[1]['layer_tokens']) / 1e6:.2f}M layer-tokens; {reached}"
    )
    print(f"\nreport: {png}  (both runs: {time.perf_counter() - start:.0f} s in all)")
    return 0
