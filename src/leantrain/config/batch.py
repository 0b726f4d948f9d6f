"""The batch sizes of a run: `prepare`'s arguments and a DeepSpeed file's batch keys, resolved
the way DeepSpeed's engine resolves them.

DeepSpeed reads `train_batch_size`, `train_micro_batch_size_per_gpu` and
`gradient_accumulation_steps`, fills in a missing one from the other two (or assumes one
accumulation step), and asserts `train_batch_size == micro × accumulation × world size`
(`DeepSpeedConfig._set_batch_related_parameters` and `_batch_assertion`). `prepare`'s
`micro_batch_size` and `gradient_accumulation_steps` take the place of the file's two keys; a
`train_batch_size` in the file that disagrees with them is refused, naming both values, instead
of being silently overridden. `"auto"` (the Hugging Face integration's placeholder) counts as
not given.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from leantrain.errors import ConfigError

__all__ = ["BatchSizes", "resolve_batch_sizes"]

_GLOBAL = "train_batch_size"
_MICRO = "train_micro_batch_size_per_gpu"
_ACCUMULATION = "gradient_accumulation_steps"


@dataclass(frozen=True)
class BatchSizes:
    """Samples per rank per forward, forwards per optimizer step, and samples per step."""

    #: None when neither the arguments nor the file say (nor can it be derived).
    micro_batch_size: int | None
    gradient_accumulation_steps: int
    #: micro × accumulation × world size (None when the micro batch is unknown).
    global_batch_size: int | None


def resolve_batch_sizes(
    extra: Mapping[str, Any] | None,
    *,
    micro_batch_size: int | None,
    gradient_accumulation_steps: int | None,
    world_size: int,
) -> BatchSizes:
    """Resolve the three batch sizes as DeepSpeed does; arguments replace the file's keys.

    Raises ConfigError when a value is not a positive integer, or when the file's
    `train_batch_size` differs from micro × accumulation × world size.
    """
    extra = extra or {}
    micro, micro_from = _given(micro_batch_size, "micro_batch_size", extra, _MICRO)
    steps, steps_from = _given(
        gradient_accumulation_steps, "gradient_accumulation_steps", extra, _ACCUMULATION
    )
    total = _positive(extra.get(_GLOBAL), _GLOBAL)
    if total is None:
        steps = steps or 1
        return BatchSizes(micro, steps, micro * steps * world_size if micro else None)
    if micro is None:
        steps = steps or 1
        what = f"{steps_from} {steps} × world_size {world_size}"
        micro = _divide(total, steps * world_size, what)
    elif steps is None:
        what = f"{micro_from} {micro} × world_size {world_size}"
        steps = _divide(total, micro * world_size, what)
    if micro * steps * world_size != total:
        raise ConfigError(
            f"{_GLOBAL}: the config says {total}, but {micro_from} {micro} × "
            f"{steps_from} {steps} × world_size {world_size} = {micro * steps * world_size} "
            "samples per optimizer step; DeepSpeed asserts they are equal. Make them agree "
            f"(or leave {_GLOBAL} out of the config)"
        )
    return BatchSizes(micro, steps, total)


def _given(
    argument: int | None, argument_name: str, extra: Mapping[str, Any], key: str
) -> tuple[int | None, str]:
    """The argument when given, else the file's key; with where it came from (for messages)."""
    if argument is not None:
        return _positive(argument, argument_name), f"prepare's {argument_name}"
    return _positive(extra.get(key), key), f"the config's {key}"


def _divide(total: int, by: int, what: str) -> int:
    """`total / by` (DeepSpeed's derived batch size); an error naming both when it is not whole."""
    if total % by:
        raise ConfigError(
            f"{_GLOBAL}: the config says {total}, not a multiple of {what} = {by}; DeepSpeed "
            "asserts train_batch_size == micro batch × accumulation steps × world size"
        )
    return total // by


def _positive(value: Any, key: str) -> int | None:
    """A positive integer, None for a missing value or "auto"; else a ConfigError naming `key`."""
    if value is None or value == "auto":
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{key}: got {value!r}; expected a positive integer")
    return value
