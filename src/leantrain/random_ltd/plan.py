"""What one converted block knows (`LayerPlan`) and how it draws the tokens it keeps.

A plan is made per converted block by `convert_to_random_ltd` and kept out of `state_dict`: the
scheduler it reads, the depths it drops tokens at, where its forward takes each argument and
how each follows the kept tokens, and how tokens are drawn (padding, kept positions, rank).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from leantrain.models import Route
from leantrain.random_ltd.padding import PaddingWatch
from leantrain.random_ltd.scheduler import RandomLTDScheduler
from leantrain.random_ltd.selection import rank_key, sample_token_indices, token_validity
from leantrain.surgery import DepthCounter, ForwardSlots

__all__ = ["LayerPlan", "draw", "shared_depth"]


@dataclass(eq=False)
class LayerPlan:
    """How one converted block finds its arguments and draws its tokens (not in state_dict)."""

    scheduler: RandomLTDScheduler
    #: Depths at which this block drops tokens (one id, unless the block is shared: ALBERT).
    layer_ids: frozenset[int]
    batch_first: bool
    slots: ForwardSlots
    mask_arg: str | None
    #: Every routed argument (the mask included) and how it follows the kept tokens.
    routes: dict[str, Route]
    keep_positions: tuple[int, ...]
    sample_non_padding_only: bool
    data_parallel_rank: int | None
    #: The family (or "custom blocks"), for messages.
    family: str
    #: Output slot -> input argument the block hands on (returned ungathered).
    echo: dict[int, str] = field(default_factory=dict)
    #: One kept subset per batch (DeBERTa).
    shared_draw: bool = False
    #: The block's depth (its layer id); a block shared across depths reads `depth` instead.
    index: int = 0
    #: Set for a block shared across depths: which depth the current call runs at.
    depth: DepthCounter | None = None
    #: Shared by the blocks of one conversion.
    padding_watch: PaddingWatch = field(default_factory=PaddingWatch)
    #: Kept positions [B, r] of each depth's last dropping forward (inspection and tests).
    last_indices: dict[int, Tensor] = field(default_factory=dict, repr=False)
    #: Kept positions of the latest dropping call (the MoE router taps read them).
    current: Tensor | None = field(default=None, repr=False)

    @property
    def hidden_name(self) -> str:
        """Name of the hidden-states argument."""
        return self.slots.first

    def get(self, args: list[Any], kwargs: dict[str, Any], name: str | None) -> Any:
        """The value of forward argument `name` (keyword or positional), or None."""
        if name is None:
            return None
        if name in kwargs:
            return kwargs[name]
        pos = self.slots.positions.get(name)
        return args[pos] if pos is not None and pos < len(args) else None

    def put(self, args: list[Any], kwargs: dict[str, Any], name: str, value: Any) -> None:
        """Replace forward argument `name` where the caller passed it."""
        pos = self.slots.positions.get(name)
        if name not in kwargs and pos is not None and pos < len(args):
            args[pos] = value
        else:
            kwargs[name] = value

    def rank(self) -> int:
        """The data-parallel rank whose draws this process makes."""
        if self.data_parallel_rank is not None:
            return self.data_parallel_rank
        dist = torch.distributed
        return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


@torch.compiler.disable
def shared_depth(counter: DepthCounter) -> int:
    """The depth a shared block runs at in this call (outside compiled code)."""
    return counter.current


@torch.compiler.disable
def draw(
    plan: LayerPlan, depth: int, batch: int, seq_len: int, reserved: int, hidden: Tensor, mask: Any
) -> Tensor:
    """Kept positions [B, r] for one layer call; outside compiled regions, on the device."""
    attend = None
    if plan.sample_non_padding_only and isinstance(mask, Tensor):
        attend = token_validity(mask, batch, seq_len)  # [B, S]
    rows = batch
    if plan.shared_draw:
        rows = 1
        attend = None if attend is None else attend.any(0, keepdim=True)
    indices = sample_token_indices(
        rows,
        seq_len,
        reserved,
        device=hidden.device,
        keep_positions=plan.keep_positions,
        attend=attend,
        key=rank_key(plan.rank()),
    ).expand(batch, reserved)
    plan.last_indices[depth] = indices
    plan.current = indices
    if attend is None and isinstance(mask, Tensor) and plan.padding_watch.due():
        plan.padding_watch.check(depth, token_validity(mask, batch, seq_len), indices)
    return indices
