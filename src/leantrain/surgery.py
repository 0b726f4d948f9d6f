"""Reversible model surgery shared by the techniques.

A converted block keeps its identity, parameters and `state_dict` keys: its class is swapped for
a subclass that mixes in the technique's forward (PEFT-style inject/unload without wrapper
modules, so checkpoints load into the plain model). Mixins stack, so techniques compose on one
block and revert in any order. The swapped classes are made at run time, so they pickle by
recipe (mixins + base class) rather than by name: `torch.save(model)` works while converted.
"""

from __future__ import annotations

import functools
import inspect
from typing import Any, NamedTuple

import torch
from torch import nn
from torch.distributed.fsdp import FSDPModule
from torch.utils.hooks import RemovableHandle

from leantrain.errors import LeantrainError
from leantrain.models.registry import BlockList

__all__ = [
    "DepthCounter",
    "ForwardSlots",
    "SurgeryError",
    "add_mixin",
    "conversions",
    "ensure_plain_model",
    "forget_conversion",
    "forward_slots",
    "has_mixin",
    "plain_class",
    "record_conversion",
    "remove_mixin",
]

_RECORD_ATTR = "_leantrain_conversions"
_cache: dict[tuple[type, type], type] = {}


class SurgeryError(LeantrainError, ValueError):
    """A model cannot be converted or reverted as asked."""


def ensure_plain_model(model: nn.Module, technique: str) -> None:
    """Refuse models already wrapped by DDP, FSDP or torch.compile: convert first, then wrap."""
    wrapped = None
    if hasattr(model, "_orig_mod"):
        wrapped = "torch.compile"
    elif isinstance(model, nn.parallel.DistributedDataParallel | nn.DataParallel):
        wrapped = type(model).__name__
    elif isinstance(model, FSDPModule):
        wrapped = "FSDP"
    if wrapped:
        raise SurgeryError(
            f"{technique}: the model is already wrapped by {wrapped}; apply leantrain to the plain "
            "model first, then wrap it (surgery -> torch.compile -> DDP/FSDP)"
        )


def _is_leantrain_class(cls: type) -> bool:
    return "_leantrain_mixin" in cls.__dict__


def _mixins_and_base(cls: type) -> tuple[list[type], type]:
    mixins: list[type] = []
    while _is_leantrain_class(cls):
        mixins.append(cls.__dict__["_leantrain_mixin"])
        cls = cls.__dict__["_leantrain_base"]
    return mixins[::-1], cls  # innermost first


def _subclass(mixin: type, base: type) -> type:
    key = (mixin, base)
    if key not in _cache:
        name = f"{mixin.__name__.removesuffix('Mixin')}{base.__name__}"
        _cache[key] = type(
            name,
            (mixin, base),
            {
                "_leantrain_mixin": mixin,
                "_leantrain_base": base,
                "__module__": base.__module__,
                "__reduce_ex__": _reduce_converted,
            },
        )
    return _cache[key]


def _converted_class(mixins: tuple[type, ...], base: type) -> type:
    """The class `base` with `mixins` applied innermost first (what `add_mixin` builds)."""
    cls = base
    for mixin in mixins:
        cls = _subclass(mixin, cls)
    return cls


def _new_converted(mixins: tuple[type, ...], base: type) -> Any:
    """An empty instance of a converted class, for unpickling (the state is set afterwards)."""
    cls: Any = _converted_class(mixins, base)
    return cls.__new__(cls)


def _reduce_converted(self: Any, protocol: Any) -> tuple[Any, ...]:
    """Pickle a converted module by its mixins and plain base class, which pickle by name."""
    reduced = object.__reduce_ex__(self, protocol)  # (newobj, (cls,), state, ...)
    mixins, base = _mixins_and_base(type(self))
    return (_new_converted, (tuple(mixins), base), *reduced[2:])


def plain_class(module: nn.Module) -> type:
    """The class of `module` beneath any leantrain mixins (its own class when not converted)."""
    return _mixins_and_base(type(module))[1]


def has_mixin(module: nn.Module, mixin: type) -> bool:
    """Whether `module` currently carries `mixin`."""
    return mixin in _mixins_and_base(type(module))[0]


def add_mixin(module: nn.Module, mixin: type) -> None:
    """Swap `module`'s class for one whose forward runs `mixin` first (outermost)."""
    if has_mixin(module, mixin):
        raise SurgeryError(f"{type(module).__name__} is already converted by {mixin.__name__}")
    module.__class__ = _subclass(mixin, type(module))


def remove_mixin(module: nn.Module, mixin: type) -> None:
    """Remove `mixin` from `module`'s class, keeping any other technique's mixins in order."""
    mixins, base = _mixins_and_base(type(module))
    if mixin not in mixins:
        raise SurgeryError(f"{type(module).__name__} is not converted by {mixin.__name__}")
    module.__class__ = _converted_class(tuple(m for m in mixins if m is not mixin), base)


class ForwardSlots(NamedTuple):
    """How a block's own forward takes its arguments (beneath any leantrain mixin)."""

    #: Name of the first parameter after self (the hidden states).
    first: str
    #: Positional slot of each parameter that can be passed by position (before any *args).
    positions: dict[str, int]
    #: Every parameter name.
    names: frozenset[str]
    #: Whether the forward takes **kwargs.
    var_keyword: bool


@functools.cache
def _slots_of(base: type[nn.Module]) -> ForwardSlots:
    params = list(inspect.signature(base.forward).parameters.values())[1:]  # drop self
    if not params or params[0].kind not in (
        params[0].POSITIONAL_ONLY,
        params[0].POSITIONAL_OR_KEYWORD,
    ):
        raise SurgeryError(
            f"{base.__name__}.forward must take the hidden states as its first argument"
        )
    positions: dict[str, int] = {}
    for i, p in enumerate(params):
        if p.kind not in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD):
            break
        positions[p.name] = i
    var_kw = any(p.kind is p.VAR_KEYWORD for p in params)
    return ForwardSlots(params[0].name, positions, frozenset(p.name for p in params), var_kw)


def forward_slots(block: nn.Module) -> ForwardSlots:
    """The argument layout of `block`'s plain forward (cached per class)."""
    return _slots_of(plain_class(block))


def record_conversion(model: nn.Module, technique: str, info: Any) -> None:
    """Remember what `technique` converted in `model` (not part of its state_dict)."""
    record = model.__dict__.setdefault(_RECORD_ATTR, {})
    if technique in record:
        raise SurgeryError(f"the model is already converted by {technique}; revert it first")
    record[technique] = info


def forget_conversion(model: nn.Module, technique: str) -> Any:
    """Drop and return the record of `technique`; error if the model was not converted by it."""
    record = model.__dict__.get(_RECORD_ATTR, {})
    if technique not in record:
        raise SurgeryError(f"the model is not converted by {technique}")
    return record.pop(technique)


def conversions(model: nn.Module) -> dict[str, Any]:
    """What each technique converted in `model`, by technique name."""
    return dict(model.__dict__.get(_RECORD_ATTR, {}))


class DepthCounter:
    """Which depth a block shared across depths (ALBERT) is running at in the current forward.

    The stack owner's forward pre-hook restarts the count; each block's pre-hook (which runs
    before any technique's forward, so also for calls another technique skips) takes the next
    depth. A technique reads `current` inside the block's forward. Each technique keeps its own
    counter, so conversions stay independent.
    """

    def __init__(self, stack: BlockList, technique: str) -> None:
        self.depth = stack.depth
        self.technique = technique
        self.current = 0
        self._next = 0
        self._hooks: list[RemovableHandle] = [stack.owner.register_forward_pre_hook(self._restart)]
        self._hooks += [b.register_forward_pre_hook(self._advance) for b in set(stack.blocks)]

    @torch.compiler.disable
    def _restart(self, module: nn.Module, args: tuple[Any, ...]) -> None:
        self._next = 0

    @torch.compiler.disable
    def _advance(self, module: nn.Module, args: tuple[Any, ...]) -> None:
        if self._next >= self.depth:
            raise SurgeryError(
                f"{self.technique}: a shared block ran more than the {self.depth} times one "
                "forward makes (gradient checkpointing re-runs blocks, which a stack shared "
                "across depths cannot tell apart: turn it off for this model)"
            )
        self.current = self._next
        self._next += 1

    def remove(self) -> None:
        """Remove the hooks."""
        for hook in self._hooks:
            hook.remove()
