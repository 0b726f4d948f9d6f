"""`leantrain config check FILE`: validate a DeepSpeed config and say what leantrain does with it.

One line per section: each technique describes its own (whether it is on, what it will do, with
its schedule evaluated at a step); then the keys leantrain keeps without using, and which
techniques `prepare` applies, in order. Exits 2 with the `ConfigError` message on a bad file or
an incompatible mix, like every leantrain command.
"""

from __future__ import annotations

import argparse

from leantrain.adopt.compose import (
    TECHNIQUES,
    check_composition,
    composition_facts,
    config_keys,
    enabled_techniques,
)
from leantrain.config import LeantrainConfig, load_config
from leantrain.config.check import container_lines, kept_key_lines

__all__ = ["add_arguments", "describe", "run"]

#: Blocks assumed for compute estimates when neither `--layers` nor the config says.
DEFAULT_LAYERS = 12


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of `leantrain config check`."""
    parser.add_argument("file", help="DeepSpeed-style config (JSON or YAML)")
    parser.add_argument(
        "--layers",
        type=int,
        default=None,
        help="blocks in the model, for compute estimates (default: from the config, e.g. "
        f"random-LTD's total_layer_num, else {DEFAULT_LAYERS})",
    )
    parser.add_argument(
        "--at-step",
        type=int,
        default=1000,
        help="global step at which to evaluate the schedules (default: 1000)",
    )


def run(args: argparse.Namespace) -> int:
    """Validate `args.file`, print one line per section; 0 on success (errors exit 2 via cli)."""
    config = load_config(args.file)
    check_composition(config)
    for line in describe(config, num_layers=args.layers, at_step=args.at_step):
        print(line)
    return 0


def describe(
    config: LeantrainConfig, *, num_layers: int | None = None, at_step: int = 1000
) -> list[str]:
    """What leantrain will do with each section of `config`, one line per section."""
    if num_layers is None:
        num_layers = composition_facts(config).num_layers or DEFAULT_LAYERS
    lines: list[str] = []
    for technique in TECHNIQUES:
        lines.extend(technique.describe(config, num_layers=num_layers, at_step=at_step))
    lines.extend(container_lines(config))
    lines.extend(kept_key_lines(config, claimed=config_keys()))
    if not lines:
        lines.append("(empty config: leantrain does nothing)")
    lines.append(_summary(config))
    return lines


def _summary(config: LeantrainConfig) -> str:
    """Which techniques `leantrain.prepare` applies, in order."""
    on = enabled_techniques(config)
    if not on:
        return f"leantrain: nothing enabled (sections read: {', '.join(config_keys())})"
    surgery = [t.title(config) for t in on if t.requirements(config).converts_model]
    order = f" (surgery order: {', then '.join(surgery)})" if surgery else ""
    return f"leantrain.prepare will apply: {', '.join(t.title(config) for t in on)}{order}"
