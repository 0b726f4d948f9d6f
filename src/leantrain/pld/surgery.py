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
from leantrain.models.registry import find_block_list
from leantrain.pld.schedule import ProgressiveLayerDrop
from leantrain.surgery import (
    SurgeryError,
    add_mixin,
    conversions,
    ensure_plain_model,
    forget_conversion,
    has_mixin,
    record_conversion,
    remove_mixin,
)

__all__ = [
    "TECHNIQUE",
    "PLDConversion",
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
    """The coins of the latest training forward of one converted model, shared by its blocks."""

    def __init__(self, schedule: ProgressiveLayerDrop, num_layers: int) -> None:
        self.schedule = schedule
        self.num_layers = num_layers
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
        coins.keep = keep
        coins.weight = [1.0 / p for p in probs]


class _Slot:
    """What one converted block knows: the shared coins, its index, its output structure."""

    def __init__(self, coins: _Coins, index: int) -> None:
        self.coins = coins
        self.index = index
        self.out_len = 0  # 0: the block returns a tensor; n: a tuple of n items


@torch.compiler.disable
def _read_coin(slot: _Slot) -> tuple[bool, bool, float]:
    """(kept, scaled, 1/p) of this block in the current forward; outside compiled code."""
    coins = slot.coins
    if not coins.active:
        return True, False, 1.0
    weight = coins.weight[slot.index]
    return coins.keep[slot.index], weight != 1.0, weight


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
            return x if slot.out_len == 0 else (x,) + (None,) * (slot.out_len - 1)
        out = _learn_structure(slot, super().forward(*args, **kwargs))  # type: ignore[misc]
        if not scaled:
            return out
        if isinstance(out, tuple):
            return (_rescale(x, out[0], weight), *out[1:])
        return _rescale(x, out, weight)


def _learn_structure(slot: _Slot, out: Any) -> Any:
    """Remember a tuple output's length so a skipped call returns the same structure."""
    if isinstance(out, tuple) and slot.out_len != len(out):
        slot.out_len = len(out)
    return out


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
class PLDConversion:
    """The record of one conversion: which blocks, the schedule, and the coin hook."""

    path: str
    blocks: tuple[nn.Module, ...]
    schedule: ProgressiveLayerDrop
    coins: _Coins
    hook: RemovableHandle


def _as_schedule(pld: PLDSource) -> ProgressiveLayerDrop:
    """A ProgressiveLayerDrop from any accepted form (config sections must be enabled)."""
    if isinstance(pld, ProgressiveLayerDrop):
        return pld
    return ProgressiveLayerDrop.from_config(pld)


def convert_to_progressive_layer_drop(
    model: nn.Module, pld: PLDSource, layers: nn.ModuleList | str | None = None
) -> nn.Module:
    """Make every block of `model` droppable by the PLD schedule `pld`; in place, returns model.

    `layers` is the block `nn.ModuleList` or its dotted path; None finds it by `model_type`.
    Convert before wrapping (surgery -> torch.compile per block -> DDP/FSDP).
    """
    ensure_plain_model(model, "progressive layer drop")
    if TECHNIQUE in conversions(model):
        raise SurgeryError(
            "progressive layer drop: the model is already converted; revert it first"
        )
    schedule = _as_schedule(pld)
    found = find_block_list(model, layers)
    if len(found) == 0:
        raise SurgeryError(f"progressive layer drop: the block list '{found.path}' is empty")
    blocks = tuple(found.blocks)
    for i, block in enumerate(blocks):
        if has_mixin(block, ProgressiveLayerDropMixin) or _SLOT in block.__dict__:
            raise SurgeryError(
                f"progressive layer drop: block {found.path}.{i} is already converted "
                "(by another model sharing it?)"
            )
    owner = model.get_submodule(found.path.rpartition(".")[0])
    coins = _Coins(schedule, len(blocks))
    for i, block in enumerate(blocks):
        add_mixin(block, ProgressiveLayerDropMixin)
        block.__dict__[_SLOT] = _Slot(coins, i)
    hook = owner.register_forward_pre_hook(coins)
    record_conversion(model, TECHNIQUE, PLDConversion(found.path, blocks, schedule, coins, hook))
    if found.family is not None and not found.family.pre_layernorm:
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
    record.hook.remove()
    for block in record.blocks:
        remove_mixin(block, ProgressiveLayerDropMixin)
        del block.__dict__[_SLOT]
    return model


def kept_layers(model: nn.Module) -> tuple[bool, ...] | None:
    """Which blocks ran in the latest training forward (None if it was an eval forward)."""
    if TECHNIQUE not in conversions(model):
        raise SurgeryError(f"progressive layer drop: {type(model).__name__} is not converted")
    coins = conversions(model)[TECHNIQUE].coins
    return tuple(coins.keep) if coins.active else None
