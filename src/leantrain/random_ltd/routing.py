"""Move kept tokens in and out of a layer: hidden states, masks, rotary tables, position ids.

Plain torch, all on the device and autograd-friendly: gather is one `index_select` on a
flattened [B·S, D] view, scatter one out-of-place `index_copy` (indices are unique, so it is
deterministic). The same flat index serves both, computed once per layer call.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from leantrain.errors import LeantrainError

__all__ = [
    "RoutingError",
    "flat_token_index",
    "gather_mask",
    "gather_positions",
    "gather_tokens",
    "scatter_tokens",
]


class RoutingError(LeantrainError, ValueError):
    """A layer argument cannot follow the kept tokens (unexpected shape or type)."""


def flat_token_index(indices: Tensor, seq_len: int, *, batch_first: bool = True) -> Tensor:
    """Row numbers [B·r] (batch_first) or [r·B] (seq-first) of the kept tokens in a flat view.

    `indices` [B, r] are the kept positions of each sample.
    """
    batch = indices.shape[0]
    rows = torch.arange(batch, device=indices.device)  # [B]
    if batch_first:
        return (indices + (rows * seq_len).unsqueeze(1)).reshape(-1)  # [B·r]: b·S + s
    return (indices.t() * batch + rows).reshape(-1)  # [r·B]: s·B + b


def gather_tokens(hidden: Tensor, flat: Tensor, reserved: int, *, batch_first: bool) -> Tensor:
    """Kept tokens of `hidden` [B, S, *] ([S, B, *] seq-first) -> [B, r, *] ([r, B, *])."""
    outer = hidden.shape[0] if batch_first else hidden.shape[1]
    rest = hidden.shape[2:]
    rows = hidden.reshape(-1, *rest).index_select(0, flat)  # [B·r, *]
    if batch_first:
        return rows.view(outer, reserved, *rest)
    return rows.view(reserved, outer, *rest)


def scatter_tokens(hidden: Tensor, kept: Tensor, flat: Tensor) -> Tensor:
    """`hidden` [B, S, *] with the rows at `flat` replaced by `kept` [B, r, *] (out of place)."""
    rest = hidden.shape[2:]
    if kept.shape[2:] != rest or kept.numel() != flat.numel() * math.prod(rest):
        raise RoutingError(
            f"layer output {tuple(kept.shape)} does not match its gathered input "
            f"({flat.numel()} tokens of {tuple(hidden.shape[2:])})"
        )
    kept = kept.to(hidden.dtype)
    return hidden.reshape(-1, *rest).index_copy(0, flat, kept.reshape(-1, *rest)).view_as(hidden)


def gather_mask(mask: Tensor, indices: Tensor) -> Tensor:
    """Rows and columns of the kept tokens of an attention mask (any dtype or convention).

    `mask` is [B|1, S] (per key) or [B|1, ..., Q, S] with Q = S (per query and key) or Q = 1;
    `indices` [B, r]. Gathering both axes is exact for padding, causal, document and sliding
    masks alike, because the kept tokens stay in order. Returns [B, r] or [B, ..., Q', r].
    """
    batch, reserved = indices.shape
    seq_len = mask.shape[-1]
    if mask.dim() < 2 or mask.shape[0] not in (1, batch):
        raise RoutingError(
            f"attention mask {tuple(mask.shape)}: expected [B|1, S] or [B|1, ..., S|1, S] "
            f"with B = {batch}"
        )
    mask = mask.expand(batch, *mask.shape[1:])
    if mask.dim() == 2:
        return mask.gather(1, indices)  # [B, r]
    middle = mask.shape[1:-2]
    ones = (1,) * len(middle)
    if mask.shape[-2] == seq_len:  # per-query rows: [B, ..., S, S] -> [B, ..., r, S]
        rows = indices.view(batch, *ones, reserved, 1).expand(batch, *middle, reserved, seq_len)
        mask = mask.gather(-2, rows)
    elif mask.shape[-2] != 1:
        raise RoutingError(f"attention mask {tuple(mask.shape)}: query dim is neither 1 nor S")
    cols = indices.view(batch, *ones, 1, reserved).expand(*mask.shape[:-1], reserved)
    return mask.gather(-1, cols)  # [B, ..., Q', r]


def gather_positions(value: Any, indices: Tensor, seq_len: int) -> Any:
    """Kept entries of per-token positional data: position ids or rotary (cos, sin) tables.

    Tensors [B|1, S, *] become [B, r, *]; [S, *] become [B, r, *]; tuples and lists are
    handled element-wise; None stays None.
    """
    if value is None:
        return None
    if isinstance(value, tuple | list):
        return type(value)(gather_positions(v, indices, seq_len) for v in value)
    if not isinstance(value, Tensor):
        raise RoutingError(f"positional argument of type {type(value).__name__}: expected tensors")
    batch, reserved = indices.shape
    if value.dim() >= 2 and value.shape[0] in (1, batch) and value.shape[1] == seq_len:
        rest = value.shape[2:]
        value = value.expand(batch, *value.shape[1:])
        index = indices.view(batch, reserved, *(1,) * len(rest)).expand(batch, reserved, *rest)
        return value.gather(1, index)  # [B, r, *]
    if value.dim() >= 1 and value.shape[0] == seq_len:
        return value[indices]  # [B, r, *]
    raise RoutingError(
        f"positional argument {tuple(value.shape)}: expected [B|1, {seq_len}, ...] or "
        f"[{seq_len}, ...]"
    )
