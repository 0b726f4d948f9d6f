"""The `leantrain` command: one subcommand per module that owns it.

Each subcommand module defines `add_arguments(parser)` and `run(args) -> int`; this file only
dispatches, so the technique and trainer code stay in their own folders.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

import leantrain
from leantrain.errors import LeantrainError

__all__ = ["main"]

#: name -> (module, one-line help). Nested names ("config check") become nested subcommands.
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("leantrain.demo", "train a small GPT twice (baseline vs leantrain) and compare"),
    "train": ("leantrain.trainer.cli", "train a Hugging Face model from a YAML recipe"),
    "compare": (
        "leantrain.compare.cli",
        "baseline vs techniques at several budgets: speed-ups at equal validation loss",
    ),
    "analyze": ("leantrain.curriculum.cli", "run the curriculum data analyzer"),
    "report": ("leantrain.trainer.report", "plot and tabulate several runs"),
    "config check": ("leantrain.adopt.check", "validate a DeepSpeed config and explain it"),
}


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand."""
    parser = argparse.ArgumentParser(
        prog="leantrain",
        description="Cheaper transformer training: PLD, curriculum learning and random-LTD.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--version", action="version", version=f"leantrain {leantrain.__version__}")
    top = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    groups: dict[str, argparse._SubParsersAction] = {}
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        *group, leaf = name.split()
        actions = top
        if group:
            if group[0] not in groups:
                group_parser = top.add_parser(group[0], help=f"{group[0]} commands")
                groups[group[0]] = group_parser.add_subparsers(
                    dest=f"{group[0]}_command", required=True, metavar="COMMAND"
                )
            actions = groups[group[0]]
        sub = actions.add_parser(leaf, help=help_text, description=help_text)
        module = importlib.import_module(module_name)
        module.add_arguments(sub)
        sub.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `leantrain` command."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    try:
        return int(args._run(args) or 0)
    except LeantrainError as err:
        print(f"leantrain: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
