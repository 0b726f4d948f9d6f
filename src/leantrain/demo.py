"""`leantrain demo`: the main job, on data every machine has, answered at equal quality.

Trains a small GPT (GPT-2 architecture, byte-level vocabulary, so no tokenizer files) on the
Python standard library's own source code: a plain baseline and the same model with all three
leantrain techniques (sequence-length warmup, random-LTD in the middle blocks, progressive
layer dropping), each at several step budgets with its own complete schedule, every run scored
on the whole held-out split. It then says how much less leantrain spent — training seconds,
layer-tokens, FLOPs — to reach the baseline's validation loss (`leantrain compare`, which it
is built on). About 6 minutes on 2 CPU cores; it uses a GPU when one is present.
"""

from __future__ import annotations

import argparse
import copy
import sysconfig
from pathlib import Path
from typing import Any

import yaml

from leantrain.compare.arms import BASELINE, LEANTRAIN, budgets_from
from leantrain.compare.cli import QUICK, QUICK_BUDGETS, compare
from leantrain.trainer.recipe import apply_overrides

__all__ = [
    "BUDGETS",
    "MODEL",
    "REFERENCE_STEPS",
    "add_arguments",
    "arm_budgets",
    "demo_raw",
    "run",
]

#: The small GPT: deep and narrow (8 blocks of width 96, ~0.9M parameters), so that skipping a
#: block costs little; byte-level over 256-byte contexts. Chosen, with the technique settings
#: below, by `benchmarks/demo_sweep.py` on a selection split (benchmarks/RESULTS.md).
MODEL: dict[str, Any] = {
    "n_layer": 8,
    "n_embd": 96,
    "n_head": 4,
    "n_positions": 256,
    "resid_pdrop": 0.0,
    "embd_pdrop": 0.0,
    "attn_pdrop": 0.0,
}
SEQ_LEN = 256
#: The schedules below are written for a run of this many steps; `compare` scales them to each
#: budget (LR warmup, θ's decay rate, curriculum and random-LTD lengths end at the same share).
REFERENCE_STEPS = 400
#: Step budgets of each arm (the baseline also runs half the smallest: see `arm_budgets`).
BUDGETS = [100, 200, 400]


def _techniques() -> dict[str, Any]:
    """PLD, sequence-length warmup and random-LTD for a run of REFERENCE_STEPS steps."""
    layers = int(MODEL["n_layer"])
    return {
        # θ falls from 1 towards 0.5, most of the way in the first half of the run
        "progressive_layer_drop": {"enabled": True, "theta": 0.5, "gamma": 6.0 / REFERENCE_STEPS},
        # sequence length 64 -> 256 over the first 20% of the steps
        "curriculum_learning": {
            "enabled": True,
            "curriculum_type": "seqlen",
            "min_difficulty": 64,
            "max_difficulty": SEQ_LEN,
            "schedule_type": "fixed_linear",
            "schedule_config": {
                "total_curriculum_step": int(0.2 * REFERENCE_STEPS),
                "difficulty_step": 8,
            },
        },
        # all but the first and last block keep 32 -> 256 tokens over the whole run
        "data_efficiency": {
            "enabled": True,
            "data_routing": {
                "enabled": True,
                "random_ltd": {
                    "enabled": True,
                    "random_ltd_layer_id": list(range(1, layers - 1)),
                    "random_ltd_layer_num": layers - 2,
                    "total_layer_num": layers,
                    "model_type": "decoder",
                    "random_ltd_schedule": {
                        "min_value": 32,
                        "max_value": SEQ_LEN,
                        "schedule_type": "fixed_linear",
                        "schedule_config": {
                            "require_steps": REFERENCE_STEPS,
                            "seq_per_step": 16,
                        },
                    },
                },
            },
        },
    }


def demo_raw() -> dict[str, Any]:
    """The demo's recipe as a dict (the leantrain arm; `compare` derives the baseline)."""
    return {
        "task": "causal_lm",
        "seed": 1234,
        "model": {"family": "gpt2", "config": copy.deepcopy(MODEL), "attn_implementation": "sdpa"},
        "data": {
            "train": sysconfig.get_paths()["stdlib"],
            "glob": "*.py",  # the top-level modules, sorted
            "valid_fraction": 0.05,  # every 20th file is the reported validation split
            "selection_fraction": 0.05,  # another 20th chose the settings (never reported)
            "tokenizer": "byte",
            "seq_len": SEQ_LEN,
        },
        "optim": {
            "lr": 2e-3,
            "min_lr_ratio": 0.1,
            "warmup_steps": REFERENCE_STEPS // 20,
            "decay": "cosine",
            "weight_decay": 0.1,
            "betas": [0.9, 0.95],
            "micro_batch_size": 8,
            "max_steps": REFERENCE_STEPS,
        },
        "eval": {"batch_size": 64},
        **_techniques(),
    }


def arm_budgets(arms: list[str], budgets: list[int]) -> dict[str, list[int]]:
    """Each arm's budgets. A leantrain step costs about half a baseline step, so the baseline
    also runs half the smallest budget: the cheapest technique run then lies on the baseline's
    frontier instead of below its cheapest point (where it could only be extrapolated)."""
    out = {arm: list(budgets) for arm in arms}
    out[BASELINE] = sorted({max(1, budgets[0] // 2), *budgets})
    return out


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `leantrain demo`."""
    parser.add_argument(
        "--budgets",
        default=",".join(map(str, BUDGETS)),
        help="step budgets of each arm (default %(default)s)",
    )
    parser.add_argument("--output-dir", default="runs/demo", help="where runs and results go")
    parser.add_argument(
        "--quick", action="store_true", help="a tiny model for a few steps (for the tests)"
    )
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: all cores)")


def run(args: argparse.Namespace) -> int:
    """Train both arms at every budget and print the equal-quality comparison."""
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    raw = demo_raw()
    budgets = budgets_from(args.budgets)
    if args.quick:
        raw = apply_overrides(raw, [*QUICK, "model.config.n_embd=32", "model.config.n_head=2"])
        budgets = QUICK_BUDGETS
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "demo_recipe.yaml").write_text(  # `leantrain compare` reruns it from this file
        "# leantrain demo: the leantrain arm; `leantrain compare` derives the baseline\n"
        + yaml.safe_dump(raw, sort_keys=False)
    )
    arms = [BASELINE, LEANTRAIN]
    compare(
        raw,
        source="leantrain demo",
        arms=arms,
        budgets=arm_budgets(arms, budgets),
        output_dir=out,
        title="leantrain demo: small GPT on the Python standard library",
    )
    return 0
