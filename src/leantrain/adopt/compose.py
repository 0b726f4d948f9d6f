"""Composition as code: which technique mixes are allowed, and in which order surgery happens.

`prepare` builds every enabled technique's controller, then converts the model in
`SURGERY_ORDER` (undoing what it did if a later step fails); `LeantrainHandle.revert` undoes it
in reverse. Incompatible mixes are rejected by `check_composition` before any surgery.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import nn

from leantrain.config import LeantrainConfig
from leantrain.errors import ConfigError
from leantrain.models.registry import BlockList
from leantrain.surgery import conversions

__all__ = [
    "LEGACY",
    "LENGTH_METRICS",
    "SURGERY_ORDER",
    "TRUNCATING_METRICS",
    "apply_surgery",
    "build_controllers",
    "check_composition",
    "config_seq_length",
    "curriculum_length_bound",
    "revert_surgery",
]

#: Model surgery, innermost first: random-LTD wraps the block's forward, PLD wraps that (a block
#: skipped by PLD does not draw token subsets). Reverted in reverse order.
SURGERY_ORDER = ("random_ltd", "pld")
#: Data Efficiency curriculum metrics that pace the sequence length: `seqlen` admits samples by
#: length (from an index); the other two cut every batch to the current length.
LENGTH_METRICS = ("seqlen", "seqlen_truncate", "seqlen_reshape")
TRUNCATING_METRICS = ("seqlen_truncate", "seqlen_reshape")
#: Name of the legacy sequence-length warmup among the handle's curriculum schedules.
LEGACY = "curriculum_learning"


def check_composition(config: LeantrainConfig) -> None:
    """Reject technique mixes leantrain cannot compose, before any surgery (raises ConfigError)."""
    if config.seqlen_warmup_enabled and config.curriculum_enabled:
        length = [m for m in config.curriculum.curriculum_metrics if m in LENGTH_METRICS]
        if length:
            raise ConfigError(
                "curriculum_learning: the legacy sequence-length warmup is enabled together with "
                "the Data Efficiency curriculum metric "
                f"'data_efficiency.data_sampling.curriculum_learning.curriculum_metrics.{length[0]}'"
                "; both pace the sequence length. Keep one: disable the legacy section, or drop "
                "the length metric"
            )
    if config.random_ltd_enabled:
        ltd = config.random_ltd
        assert ltd.random_ltd_schedule is not None  # guaranteed by the schema when enabled
        seqlen = curriculum_length_bound(config)
        if seqlen is not None and seqlen > ltd.random_ltd_schedule.max_value:
            raise ConfigError(
                "data_efficiency.data_routing.random_ltd.random_ltd_schedule.max_value: got "
                f"{ltd.random_ltd_schedule.max_value}, below the curriculum's maximum sequence "
                f"length {seqlen}; expected max_value to be the full sequence length"
            )


def curriculum_length_bound(config: LeantrainConfig) -> int | None:
    """The largest sequence length a length curriculum reaches, when one is on."""
    if config.seqlen_warmup_enabled:
        return config.curriculum_learning.max_difficulty
    if config.curriculum_enabled:
        for name, metric in config.curriculum.curriculum_metrics.items():
            if name in LENGTH_METRICS and metric.difficulty_type == "value":
                return metric.max_difficulty
    return None


def build_controllers(cfg: LeantrainConfig) -> dict[str, Any]:
    """One controller per enabled schedule (no surgery yet)."""
    controllers: dict[str, Any] = {}
    if cfg.pld_enabled:
        from leantrain.pld import ProgressiveLayerDrop

        controllers["pld"] = ProgressiveLayerDrop.from_config(cfg)
    if cfg.random_ltd_enabled:
        from leantrain.random_ltd import RandomLTDScheduler

        controllers["random_ltd"] = RandomLTDScheduler(cfg.random_ltd)
    return controllers


def apply_surgery(
    model: nn.Module,
    controllers: dict[str, Any],
    layers: nn.ModuleList | str | BlockList | None,
    *,
    rank: int,
) -> list[int]:
    """Convert `model` for every controller in `SURGERY_ORDER`; all or nothing.

    `layers` is the caller's block list, or None for the registry's (PLD then converts every
    stack, random-LTD the first: the encoder of an encoder-decoder). Returns the 0-based ids
    of the blocks random-LTD converted ([] when it is off).
    """
    done: list[str] = []
    try:
        for name in SURGERY_ORDER:
            if name not in controllers:
                continue
            if name == "random_ltd":
                from leantrain.random_ltd import convert_to_random_ltd

                convert_to_random_ltd(
                    model, controllers[name], layers=layers, data_parallel_rank=rank
                )
            elif name == "pld":
                from leantrain.pld import convert_to_progressive_layer_drop

                convert_to_progressive_layer_drop(model, controllers[name], layers=layers)
            done.append(name)
    except Exception:
        revert_surgery(model, done)
        raise
    record = conversions(model).get("random_ltd")
    return list(record.layer_ids) if record is not None else []


def revert_surgery(model: nn.Module, techniques: Sequence[str]) -> None:
    """Revert `techniques` (given in SURGERY_ORDER) in reverse order."""
    for name in reversed(techniques):
        if name == "pld":
            from leantrain.pld import revert_progressive_layer_drop

            revert_progressive_layer_drop(model)
        elif name == "random_ltd":
            from leantrain.random_ltd import revert_random_ltd

            revert_random_ltd(model)


def config_seq_length(cfg: LeantrainConfig) -> int | None:
    """The full sequence length the config implies: random-LTD's max_value, else the maximum of
    a curriculum that cuts batches (legacy warmup, `seqlen_truncate`, `seqlen_reshape`)."""
    if cfg.random_ltd_enabled and cfg.random_ltd.random_ltd_schedule is not None:
        return cfg.random_ltd.random_ltd_schedule.max_value
    if cfg.seqlen_warmup_enabled:
        return cfg.curriculum_learning.max_difficulty
    if cfg.curriculum_enabled:
        for name in TRUNCATING_METRICS:
            metric = cfg.curriculum.curriculum_metrics.get(name)
            if metric is not None:
                return metric.max_difficulty
    return None
