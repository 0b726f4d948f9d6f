"""What leantrain tells its user so that nothing is a silent no-op.

- `say_what_is_off`: at `prepare`, one line per section the config gives that does not run,
  with the reason (`enabled: false`: info; `enabled: true` under a switched-off enclosing
  section: a warning), and a warning when no technique runs at all.
- `StepWatch`: a warning, once, when training forwards keep coming while `handle.step()` is not
  called, since every schedule then stays at its first step (PLD's θ at 1, random-LTD's r at its
  minimum). It counts the model's training-mode forwards with one forward pre-hook (a Python
  integer increment: no host sync) and the batches through `handle.process_batch`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from leantrain.adopt.compose import TECHNIQUES, config_keys
from leantrain.config import LeantrainConfig
from leantrain.config.check import off_sections
from leantrain.technique import Technique

__all__ = ["NO_SECTIONS", "StepWatch", "say_what_is_off"]

logger = logging.getLogger(__name__)
#: Set on the "no technique is enabled" record when the config gives no technique section at
#: all, so a host that runs baselines on purpose (the trainer) can leave it to its own summary.
NO_SECTIONS = "leantrain_no_sections"


def say_what_is_off(config: LeantrainConfig, enabled: Sequence[type[Technique]]) -> None:
    """Log each section `config` gives that does not run, and whether nothing runs at all."""
    off = off_sections(config, [key for t in TECHNIQUES for key in t.sections])
    for section in off:
        level = logging.WARNING if section.contradicts else logging.INFO
        logger.log(level, "leantrain: %s does not run: %s", section.key, section.why)
    if not enabled:
        why = (
            "every section it gives is off (above)"
            if off
            else f"it has none of the sections {', '.join(config_keys())}"
        )
        logger.warning(
            "leantrain.prepare: no technique is enabled, since %s; the model is unchanged and "
            "handle.step() only counts tokens",
            why,
            extra={NO_SECTIONS: not off},
        )


class StepWatch:
    """Counts training forwards and processed batches since the last `handle.step()`; calls
    `warn(count, what)` once when either passes `limit`."""

    def __init__(self, limit: int, warn: Callable[[int, str], None] | None) -> None:
        """`limit`: forwards (or batches) without a step that are surely a forgotten step."""
        self.limit = limit
        self._warn = warn
        self.forwards = 0
        self.batches = 0
        self.warned = False

    def __getstate__(self) -> dict[str, object]:
        """A copied or pickled model (`copy.deepcopy`, `torch.save(model)`) keeps an inert
        counter: the handle stays out of the copy (its data loader is not picklable)."""
        return {**self.__dict__, "_warn": None, "warned": True}

    def attach(self, model: nn.Module) -> RemovableHandle:
        """Count `model`'s training forwards (a pre-hook; remove it with the returned handle)."""
        return model.register_forward_pre_hook(self._forward)

    def _forward(self, module: nn.Module, args: object) -> None:
        if torch.compiler.is_compiling() or not module.training:
            return  # traced graphs stay free of the counter (no guard on it, no recompile)
        self.forwards += 1
        self._check(self.forwards, "training forwards")

    def batch(self) -> None:
        """One batch went through `handle.process_batch`."""
        self.batches += 1
        self._check(self.batches, "batches through handle.process_batch")

    def stepped(self) -> None:
        """`handle.step()` was called: start counting again."""
        self.forwards = self.batches = 0

    def _check(self, count: int, what: str) -> None:
        if count > self.limit and not self.warned and self._warn is not None:
            self.warned = True
            self._warn(count, what)
