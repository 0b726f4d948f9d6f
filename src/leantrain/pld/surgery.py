"""Convert a model's transformer blocks to progressive layer dropping, and back.

Each block's class is swapped for a subclass with `ProgressiveLayerDropMixin` (no wrapper
modules, so `state_dict` keys never change). A forward pre-hook on the module that runs the
blocks draws all L coins of a training forward on the host; each block reads its own coin, so a
gradient-checkpointing recompute in backward sees the same decision.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from leantrain.config import LeantrainConfig, ProgressiveLayerDropConfig
from leantrain.models.registry import BlockList, find_stacks
from leantrain.pld.schedule import ProgressiveLayerDrop
from leantrain.surgery import (
    DepthCounter,
    SurgeryError,
    add_mixin,
    conversions,
    ensure_plain_model,
    forget_conversion,
    forward_slots,
    has_mixin,
    record_conversion,
    remove_mixin,
)

__all__ = [
    "TECHNIQUE",
    "PLDConversion",
    "PLDStack",
    "ProgressiveLayerDropMixin",
    "convert_to_progressive_layer_drop",
    "kept_layers",
    "revert_progressive_layer_drop",
]

logger = logging.getLogger("leantrain.pld")

#: Name of the conversion record (`leantrain.surgery.conversions(model)[TECHNIQUE]`).
TECHNIQUE = "pld"
_SLOT = "_leantrain_pld"

PLDSource = ProgressiveLayerDrop | ProgressiveLayerDropConfig | Mapping[str, Any] | LeantrainConfig


class _Coins:
    """The coins of the latest training forward of one converted stack, shared by its blocks."""

    def __init__(
        self, schedule: ProgressiveLayerDrop, num_layers: int, never_skip: tuple[int, ...] = ()
    ) -> None:
        self.schedule = schedule
        self.num_layers = num_layers
        self.never_skip = never_skip
        self.active = False  # True while the owner's latest forward was in training mode
        self.keep = [True] * num_layers
        self.weight = [1.0] * num_layers  # 1/p_i

    def __call__(self, module: nn.Module, args: tuple[Any, ...]) -> None:
        """Forward pre-hook on the module that runs the blocks: draw this forward's coins."""
        _draw(self, module.training)


@torch.compiler.disable
def _draw(coins: _Coins, training: bool) -> None:
    """Draw the L coins of one forward on the host (kept out of compiled code on purpose)."""
    coins.active = training
    if training:
        keep, probs = coins.schedule.layer_coins(coins.num_layers)
        for i in coins.never_skip:  # always run, unscaled: p = 1
            keep[i], probs[i] = True, 1.0
        coins.keep = keep
        coins.weight = [1.0 / p for p in probs]


class _Slot:
    """What one converted block knows: the shared coins, its depth, its output structure."""

    def __init__(
        self,
        coins: _Coins,
        index: int,
        depth: DepthCounter | None,
        echo: dict[int, tuple[str, int | None]],
        out_len: int | None,
    ) -> None:
        self.coins = coins
        self.index = index
        self.depth = depth  # set for a block shared across depths: its depth is per call
        #: output slot -> (input argument a skipped block hands on, its positional slot)
        self.echo = echo
        self.out_len = out_len  # 0: a tensor; n: a tuple of n; None: unknown until it runs


@torch.compiler.disable
def _read_coin(slot: _Slot) -> tuple[bool, bool, float]:
    """(kept, scaled, 1/p) of this block call in the current forward; outside compiled code."""
    coins = slot.coins
    if not coins.active:
        return True, False, 1.0
    index = slot.index if slot.depth is None else slot.depth.current
    weight = coins.weight[index]
    return coins.keep[index], weight != 1.0, weight


def _hidden_input(args: tuple[Any, ...], kwargs: dict[str, Any]) -> torch.Tensor:
    """The block's hidden-states input: its first positional argument or `hidden_states=`."""
    x = args[0] if args else kwargs.get("hidden_states")
    if not isinstance(x, torch.Tensor):
        raise SurgeryError(
            "progressive layer drop: a converted block must get its hidden states as the first "
            f"positional argument or as hidden_states=; got {type(x).__name__}"
        )
    return x


class ProgressiveLayerDropMixin:
    """Block forward with PLD: in training, skip (identity) or run and rescale by 1/p."""

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """Eval: the plain block. Training: the coin decides; a kept block returns lerp(x, y, 1/p)."""
        slot: _Slot = self.__dict__[_SLOT]
        if not self.training:  # type: ignore[attr-defined]
            return _learn_structure(slot, super().forward(*args, **kwargs))  # type: ignore[misc]
        kept, scaled, weight = _read_coin(slot)
        x = _hidden_input(args, kwargs)
        if not kept:  # no computation, no autograd graph: hand the input through
            if slot.out_len is None:  # custom blocks skipped before any run: learn what they
                with torch.no_grad():  # return (once, at the cost of one block forward)
                    _learn_structure(slot, super().forward(*args, **kwargs))  # type: ignore[misc]
            return _skipped(slot, x, args, kwargs)
        out = _learn_structure(slot, super().forward(*args, **kwargs))  # type: ignore[misc]
        if not scaled:
            return out
        if isinstance(out, tuple):
            return (_rescale(x, out[0], weight), *out[1:])
        return _rescale(x, out, weight)


def _learn_structure(slot: _Slot, out: Any) -> Any:
    """Remember a tuple output's length so a skipped call returns the same structure."""
    length = len(out) if isinstance(out, tuple) else 0
    if slot.out_len != length:
        slot.out_len = length
    return out


def _skipped(slot: _Slot, x: torch.Tensor, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """What a skipped block returns: its input, in the structure the block returns, with the
    inputs it hands on (`Stack.echo_outputs`) in their slots and None elsewhere."""
    if not slot.out_len:
        return x
    out: list[Any] = [x] + [None] * (slot.out_len - 1)
    for index, (name, pos) in slot.echo.items():
        if index < slot.out_len:
            given = args[pos] if pos is not None and pos < len(args) else None
            out[index] = kwargs.get(name, given)
    return tuple(out)


def _rescale(x: torch.Tensor, y: torch.Tensor, weight: float) -> torch.Tensor:
    """x + (y − x)/p as one fused pass.

    Eager: `torch.lerp(x, y, 1/p)`, one kernel instead of three. Compiled: the arithmetic form,
    which inductor fuses just as well and which keeps 1/p a graph input (lerp's scalar weight is
    specialised, so every new θ would recompile).
    """
    if x.dtype != y.dtype:
        x = x.to(y.dtype)
    if torch.compiler.is_compiling():
        return x + (y - x) * weight
    return torch.lerp(x, y, weight)


@dataclass(frozen=True)
class PLDStack:
    """One converted stack: its path, blocks, coins and the hooks that drive them."""

    path: str
    blocks: tuple[nn.Module, ...]
    coins: _Coins
    hook: RemovableHandle
    depth: DepthCounter | None


@dataclass(frozen=True)
class PLDConversion:
    """The record of one conversion: the schedule and every converted stack (encoder first)."""

    schedule: ProgressiveLayerDrop
    stacks: tuple[PLDStack, ...]

    @property
    def path(self) -> str:
        """Path of the first stack's block list."""
        return self.stacks[0].path


def _as_schedule(pld: PLDSource) -> ProgressiveLayerDrop:
    """A ProgressiveLayerDrop from any accepted form (config sections must be enabled)."""
    if isinstance(pld, ProgressiveLayerDrop):
        return pld
    return ProgressiveLayerDrop.from_config(pld)


def _convert_stack(found: BlockList, schedule: ProgressiveLayerDrop) -> PLDStack:
    """Convert the blocks of one stack (checked beforehand)."""
    stack = found.stack
    never_skip = tuple(i for i in (stack.pld_never_skip if stack else ()) if i < len(found))
    coins = _Coins(schedule, len(found), never_skip)
    depth = DepthCounter(found, "progressive layer drop") if found.shared else None
    blocks = tuple(dict.fromkeys(found.blocks))  # a shared block once
    for i, block in enumerate(blocks):
        positions = forward_slots(block).positions
        echo = {k: (n, positions.get(n)) for k, n in (stack.echo_outputs if stack else {}).items()}
        add_mixin(block, ProgressiveLayerDropMixin)
        out_len = stack.block_outputs if stack else None
        block.__dict__[_SLOT] = _Slot(coins, i, depth, echo, out_len)
    hook = found.owner.register_forward_pre_hook(coins)
    return PLDStack(found.path, blocks, coins, hook, depth)


def convert_to_progressive_layer_drop(
    model: nn.Module, pld: PLDSource, layers: nn.ModuleList | str | BlockList | None = None
) -> nn.Module:
    """Make every block of `model` droppable by the PLD schedule `pld`; in place, returns model.

    `layers` is the block `nn.ModuleList` or its dotted path; None finds every block stack by
    `model_type` (both stacks of an encoder-decoder, each depth-scaled on its own). Convert
    before wrapping (surgery -> torch.compile per block -> DDP/FSDP).
    """
    ensure_plain_model(model, "progressive layer drop")
    if TECHNIQUE in conversions(model):
        raise SurgeryError(
            "progressive layer drop: the model is already converted; revert it first"
        )
    schedule = _as_schedule(pld)
    stacks = find_stacks(model, layers)
    for found in stacks:
        if len(found.blocks) == 0:
            raise SurgeryError(f"progressive layer drop: the block list '{found.path}' is empty")
        for i, block in enumerate(found.blocks):
            if has_mixin(block, ProgressiveLayerDropMixin) or _SLOT in block.__dict__:
                raise SurgeryError(
                    f"progressive layer drop: block {found.path}.{i} is already converted "
                    "(by another model sharing it?)"
                )
    converted = tuple(_convert_stack(found, schedule) for found in stacks)
    record_conversion(model, TECHNIQUE, PLDConversion(schedule, converted))
    family = stacks[0].family
    if family is not None and not family.pre_layernorm:
        logger.warning(
            "progressive layer drop is meant for Pre-LayerNorm blocks; %s (model_type %r) is "
            "Post-LN, where skipping layers can destabilise training (see the PLD method card)",
            type(model).__name__,
            getattr(getattr(model, "config", None), "model_type", None),
        )
    return model


def revert_progressive_layer_drop(model: nn.Module) -> nn.Module:
    """Restore the plain blocks of a converted model: same modules, same outputs; returns it."""
    if TECHNIQUE not in conversions(model):
        raise SurgeryError(
            f"progressive layer drop: {type(model).__name__} is not converted (pass the model "
            "given to convert_to_progressive_layer_drop, not a DDP/FSDP/compile wrapper)"
        )
    record: PLDConversion = forget_conversion(model, TECHNIQUE)
    for stack in record.stacks:
        stack.hook.remove()
        if stack.depth is not None:
            stack.depth.remove()
        for block in stack.blocks:
            remove_mixin(block, ProgressiveLayerDropMixin)
            del block.__dict__[_SLOT]
    return model


def kept_layers(model: nn.Module) -> tuple[bool, ...] | None:
    """Which blocks ran in the latest training forward (None if it was an eval forward).

    One entry per block call (per depth for shared blocks), stacks in order (encoder first).
    """
    if TECHNIQUE not in conversions(model):
        raise SurgeryError(f"progressive layer drop: {type(model).__name__} is not converted")
    stacks = conversions(model)[TECHNIQUE].stacks
    if not all(s.coins.active for s in stacks):
        return None
    return tuple(k for s in stacks for k in s.coins.keep)
