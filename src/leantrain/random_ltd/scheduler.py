"""Reserved-length schedule of random-LTD and the layer-token count it implies.

`reserved_length` is the pure pacing formula; `RandomLTDScheduler` is the small controller the
converted layers read at every forward and the training loop advances once per optimizer step.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from typing import Any

import torch

from leantrain.accounting import TokenCounter
from leantrain.config import LeantrainConfig, RandomLTDConfig, Resolved, resolve
from leantrain.config.batch import resolve_batch_sizes
from leantrain.errors import ConfigError, LeantrainError, check_state_version

__all__ = [
    "RandomLTDScheduler",
    "layer_tokens_per_step",
    "reserved_length",
    "resolve_random_ltd_config",
]

_STATE_VERSION = 1
_SECTION = "data_efficiency.data_routing.random_ltd"


def reserved_length(
    step: int, *, min_value: int, max_value: int, require_steps: int, seq_per_step: int
) -> int:
    """Tokens each converted layer keeps at global step `step` (`fixed_linear`, MSLG).

    r = floor((step / require_steps)·(max − min) + min), rounded down to a multiple of
    `seq_per_step`, capped at `max_value`. Unlike DeepSpeed (leantrain's choice), r never falls below
    `min_value`: when rounding down would, it is rounded up to the next multiple instead
    (min 10, seq_per_step 8 gives 16, where the classic formula gave 8).
    """
    if step < 0:
        raise ValueError(f"step: got {step}; expected a global step >= 0")
    # Same float expression, in the same order, as DeepSpeed's fixed_root with degree 1.
    r = math.floor(float(step) / require_steps * (max_value - min_value) + min_value)
    r -= r % seq_per_step
    if r < min_value:
        r = -(-min_value // seq_per_step) * seq_per_step
    return min(r, max_value)


def layer_tokens_per_step(
    reserved: int,
    *,
    max_value: int,
    global_batch_size: int,
    total_layer_num: int,
    random_ltd_layer_num: int,
) -> int:
    """Layer-tokens one optimizer step consumes: B·(r·L_ltd + max·(L − L_ltd)) (DeepSpeed's formula)."""
    full_layers = total_layer_num - random_ltd_layer_num
    return global_batch_size * (reserved * random_ltd_layer_num + max_value * full_layers)


def resolve_random_ltd_config(config: Any) -> RandomLTDConfig:
    """The validated `random_ltd` section from any accepted form, with a schedule present.

    Accepts the section as a dict or `RandomLTDConfig`, a whole DeepSpeed config (a path, a dict
    with `data_efficiency`, or `LeantrainConfig`, where random-LTD must be enabled), or a
    `RandomLTDScheduler`.
    """
    return _resolve(config).section


def _resolve(config: Any) -> Resolved[RandomLTDConfig]:
    """`resolve_random_ltd_config`, keeping the whole config when one was given."""
    if isinstance(config, RandomLTDScheduler):
        return Resolved(config.config, None)
    resolved = resolve(
        config,
        RandomLTDConfig,
        expected="a dict, RandomLTDConfig, LeantrainConfig or RandomLTDScheduler",
    )
    if resolved.config is not None and not resolved.config.random_ltd_enabled:
        raise ConfigError(
            f"{_SECTION}: random-LTD is not enabled (data_efficiency.enabled, "
            "data_routing.enabled and random_ltd.enabled must all be true)"
        )
    if resolved.section.random_ltd_schedule is None:
        raise ConfigError(f"{_SECTION}.random_ltd_schedule: required (min_value, max_value, ...)")
    return resolved


class RandomLTDScheduler:
    """Controller of random-LTD: the current reserved length and the consumed layer-tokens.

    Call `step(global_step)` (DeepSpeed's `update_seq`), or `step()` for the next step, once
    per optimizer step, before the forward passes of that step; converted layers read
    `current_seq` at every forward. Counting layer-tokens needs the layer counts and the global
    batch: from the keyword arguments (as `leantrain.prepare` builds it, complete), else from
    the config's `total_layer_num`, `random_ltd_layer_num` and `global_batch_size` (for a whole
    DeepSpeed file without it, from `train_batch_size` and the other batch keys, as DeepSpeed's
    engine fills it in); `convert_to_random_ltd` fills in layer counts a scheduler was built
    without. With `counter` (the handle's), the scheduler reads that one count instead of
    keeping DeepSpeed's own (which ignores PLD and curriculum lengths), so its LR schedule and
    the training loop agree.
    """

    def __init__(
        self,
        config: Any,
        *,
        total_layer_num: int | None = None,
        random_ltd_layer_num: int | None = None,
        global_batch_size: int | None = None,
        counter: TokenCounter | None = None,
    ) -> None:
        resolved = _resolve(config)
        self.config = resolved.section
        schedule = self.config.random_ltd_schedule
        assert schedule is not None  # resolve_random_ltd_config guarantees it
        self.min_value = schedule.min_value
        self.max_value = schedule.max_value
        self.require_steps = schedule.schedule_config.require_steps
        self.seq_per_step = schedule.schedule_config.seq_per_step
        ids = self.config.random_ltd_layer_id
        self.total_layer_num = self.config.total_layer_num
        self.random_ltd_layer_num = (
            len(ids) if ids is not None else self.config.random_ltd_layer_num
        )
        if total_layer_num is not None and random_ltd_layer_num is not None:
            self.set_layer_counts(total_layer_num, random_ltd_layer_num)
        if global_batch_size is None and self.config.global_batch_size is None and resolved.config:
            # a whole DeepSpeed file: its engine sets random-LTD's global batch from the batch keys
            global_batch_size = _file_global_batch(resolved.config)
        self.global_batch_size = _global_batch(self.config.global_batch_size, global_batch_size)
        self.current_step = -1
        self.current_seq = self.reserved_length(0)
        self._counter = counter if counter is not None else TokenCounter()
        self._counts = counter is None  # keeps DeepSpeed's count itself

    def reserved_length(self, step: int) -> int:
        """Reserved length at `step` under this schedule (pure; does not change the state)."""
        return reserved_length(
            step,
            min_value=self.min_value,
            max_value=self.max_value,
            require_steps=self.require_steps,
            seq_per_step=self.seq_per_step,
        )

    def set_layer_counts(self, total_layer_num: int, random_ltd_layer_num: int) -> None:
        """Fill in the layer counts from the converted model; conflicts with the config raise."""
        for name, have, got in (
            ("total_layer_num", self.total_layer_num, total_layer_num),
            ("random_ltd_layer_num", self.random_ltd_layer_num, random_ltd_layer_num),
        ):
            if have is not None and have != got:
                raise ConfigError(
                    f"{_SECTION}.{name}: got {have} in the config; the model has {got}"
                )
        self.total_layer_num = total_layer_num
        self.random_ltd_layer_num = random_ltd_layer_num

    def _missing_counts(self) -> list[str]:
        return [
            name
            for name in ("global_batch_size", "total_layer_num", "random_ltd_layer_num")
            if getattr(self, name) is None
        ]

    def layer_tokens_per_step(self, reserved: int) -> int:
        """Layer-tokens of one optimizer step at reserved length `reserved`."""
        missing = self._missing_counts()
        if missing:
            raise ConfigError(
                f"{_SECTION}: counting layer-tokens needs {', '.join(missing)} "
                "(set them in the config, or convert the model first for the layer counts)"
            )
        assert self.global_batch_size is not None
        assert self.total_layer_num is not None and self.random_ltd_layer_num is not None
        return layer_tokens_per_step(
            reserved,
            max_value=self.max_value,
            global_batch_size=self.global_batch_size,
            total_layer_num=self.total_layer_num,
            random_ltd_layer_num=self.random_ltd_layer_num,
        )

    def step(self, global_step: int | None = None) -> int:
        """Set the reserved length for `global_step` (default: the step after the last one; the
        first call is step 0), count its layer-tokens once and return the reserved length.

        As DeepSpeed: repeated calls with the same step (gradient accumulation) count once.
        """
        if global_step is None:
            global_step = self.current_step + 1
        if self.current_seq < self.max_value:
            self.current_seq = self.reserved_length(global_step)
        if global_step != self.current_step:
            if self._counts and not self._missing_counts():
                self._counter.layer_tokens += self.layer_tokens_per_step(self.current_seq)
            self.current_step = global_step
        return self.current_seq

    #: DeepSpeed's name for `step`.
    update_seq = step

    def get_current_seq(self) -> int:
        """The reserved length converted layers use now (DeepSpeed's accessor)."""
        return self.current_seq

    @property
    def consumed_layer_tokens(self) -> int:
        """Layer-tokens consumed by the steps seen so far (drives the layer-token LR)."""
        missing = self._missing_counts()
        if self._counts and missing:
            raise ConfigError(f"{_SECTION}: counting layer-tokens needs {', '.join(missing)}")
        return int(self._counter.layer_tokens)

    def total_layer_tokens(self, train_iters: int) -> int:
        """Layer-tokens of a whole run of `train_iters` steps (pure, unlike DeepSpeed's)."""
        return sum(self.layer_tokens_per_step(self.reserved_length(t)) for t in range(train_iters))

    def metrics(self) -> dict[str, int]:
        """Namespaced values to log each step."""
        out = {"random_ltd/reserved_length": self.current_seq}
        if not (self._counts and self._missing_counts()):
            out["random_ltd/consumed_layer_tokens"] = self.consumed_layer_tokens
        return out

    def state_dict(self) -> dict[str, Any]:
        """Versioned, JSON-friendly state (the schedule bounds are kept to check on load)."""
        return {
            "version": _STATE_VERSION,
            "current_step": self.current_step,
            "current_value": self.current_seq,
            "consumed_layer_tokens": int(self._counter.layer_tokens),
            "min_value": self.min_value,
            "max_value": self.max_value,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore `state_dict()`; refuses another version or other schedule bounds."""
        check_state_version(state, _STATE_VERSION, "random-LTD")
        for key in ("min_value", "max_value"):
            if state[key] != getattr(self, key):
                raise LeantrainError(
                    f"random-LTD state: {key} {state[key]} was saved, the config has "
                    f"{getattr(self, key)}; resume with the same schedule"
                )
        self.current_step = int(state["current_step"])
        self.current_seq = int(state["current_value"])
        if self._counts:  # a shared counter is restored by its owner
            self._counter.layer_tokens = float(state["consumed_layer_tokens"])


def _file_global_batch(config: LeantrainConfig) -> int | None:
    """Samples per optimizer step from a whole config's batch keys (`train_batch_size`, or micro
    batch × accumulation × world size), as DeepSpeed's engine hands them to random-LTD."""
    dist = torch.distributed
    world = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
    sizes = resolve_batch_sizes(
        config.model_extra,
        micro_batch_size=None,
        gradient_accumulation_steps=None,
        world_size=world,
    )
    return sizes.global_batch_size


def _global_batch(configured: int | None, real: int | None) -> int | None:
    """The global batch to count layer-tokens with: the real one when known (DeepSpeed's engine
    always uses it), warning when the config's `global_batch_size` disagrees."""
    if real is None:
        return configured
    if configured is not None and configured != real:
        warnings.warn(
            f"{_SECTION}.global_batch_size: got {configured} in the config, but an optimizer "
            f"step takes {real} samples (micro batch × accumulation × data-parallel ranks); "
            f"layer-tokens are counted with {real}",
            UserWarning,
            stacklevel=3,
        )
    return real
