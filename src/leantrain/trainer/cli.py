"""`leantrain train CONFIG`: train a Hugging Face model from a YAML recipe."""

from __future__ import annotations

import argparse
import json

from leantrain.trainer.loop import train
from leantrain.trainer.recipe import load_recipe

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `leantrain train`."""
    parser.add_argument("config", help="recipe YAML (see recipes/)")
    parser.add_argument(
        "--resume", action="store_true", help="continue from the newest checkpoint in output_dir"
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the run already in output_dir (its checkpoints, metrics.csv, tb/, run.json and "
        "model/); without --resume or --overwrite a non-empty output_dir is refused",
    )
    parser.add_argument("--max-steps", type=int, help="override optim.max_steps")
    parser.add_argument("--output-dir", help="override output_dir")
    parser.add_argument(
        "--stop-at",
        type=int,
        metavar="STEP",
        help="stop after STEP steps with a checkpoint, keeping the schedule of max_steps "
        "(continue later with --resume)",
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override any recipe key, e.g. --set optim.lr=3e-4 --set model.config.n_layer=2",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    """Load and check the recipe, then train; exits 2 on a bad recipe (via leantrain.cli)."""
    overrides = list(args.overrides)
    if args.max_steps is not None:
        overrides.append(f"optim.max_steps={args.max_steps}")
    if args.output_dir is not None:
        overrides.append(f"output_dir={args.output_dir}")
    recipe = load_recipe(args.config, overrides)
    final = train(
        recipe,
        resume=args.resume,
        overwrite=args.overwrite,
        stop_at=args.stop_at,
        progress=not args.no_progress,
    )
    if final:  # empty when a resumed run had nothing left to do (train logged why)
        print(json.dumps(final))  # every value, NaN included (printed as NaN)
    return 0
