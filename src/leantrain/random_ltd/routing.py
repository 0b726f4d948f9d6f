"""Move kept tokens in and out of a layer: hidden states, masks, rotary tables, position ids.

All on the device and autograd-friendly. `gather_route` / `scatter_route` move the hidden states
with the backend `kernels.kernel_backend` picks: fused Triton kernels (CUDA by default; see
`kernels` for the passes they save) or plain torch: gather is one `index_select` on a flattened
[B·S, D] view, scatter one out-of-place `index_copy` (indices are unique, so it is
deterministic). The same flat index serves both, computed once per layer call.
`gather_tokens` / `scatter_tokens` are the plain torch pair.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import torch
from torch import Tensor

from leantrain.errors import LeantrainError
from leantrain.models.registry import Route
from leantrain.random_ltd.kernels import fused_gather, fused_scatter, inverse_index, kernel_backend

__all__ = [
    "RoutingError",
    "TokenRoute",
    "flat_token_index",
    "gather_alibi",
    "gather_mask",
    "gather_positions",
    "gather_queries",
    "gather_route",
    "gather_tokens",
    "route_argument",
    "scatter_route",
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


def _check_output(hidden: Tensor, kept: Tensor, flat: Tensor) -> None:
    """Refuse a layer output that cannot go back where its input tokens came from."""
    rest = hidden.shape[2:]
    if kept.shape[2:] != rest or kept.numel() != flat.numel() * math.prod(rest):
        raise RoutingError(
            f"layer output {tuple(kept.shape)} does not match its gathered input "
            f"({flat.numel()} tokens of {tuple(rest)})"
        )


def scatter_tokens(hidden: Tensor, kept: Tensor, flat: Tensor) -> Tensor:
    """`hidden` [B, S, *] with the rows at `flat` replaced by `kept` [B, r, *] (out of place).

    The result is a tensor of its own, not a view (FSDP2 warns about blocks returning views).
    """
    _check_output(hidden, kept, flat)
    rest = hidden.shape[2:]
    out = hidden.clone(memory_format=torch.contiguous_format)  # [B, S, *]
    out.view(-1, *rest).index_copy_(0, flat, kept.to(hidden.dtype).reshape(-1, *rest))
    return out


class TokenRoute(NamedTuple):
    """Where one layer call's kept tokens came from, for `scatter_route` to put them back.

    Opaque: hand it to `scatter_route` only. On the fused path the backward writes in place into
    the gradient that reaches `hidden`, which is safe only while the scatter is its sole consumer.
    """

    #: The layer input [B, S, *] ([S, B, *] seq-first); on the fused path the gather's skip
    #: output, an alias of the input that carries the dropped tokens' gradient.
    hidden: Tensor
    #: Rows [B·r] ([r·B]) of the kept tokens in the flat [B·S, *] view.
    flat: Tensor
    #: Fused path: kept slot of each of the B·S rows, or -1 ([B·S] int32); torch path: None.
    slot: Tensor | None


def gather_route(
    hidden: Tensor, indices: Tensor, *, batch_first: bool = True
) -> tuple[Tensor, TokenRoute]:
    """Kept tokens [B, r, *] ([r, B, *]) of `hidden` at `indices` [B, r], and their route back.

    The backend comes from `kernel_backend` (env `LEANTRAIN_RANDOM_LTD_KERNELS`).
    """
    seq_len = hidden.shape[1 if batch_first else 0]
    if kernel_backend(hidden.device) == "triton":
        return _fused_gather_route(hidden, indices, seq_len, batch_first)
    flat = flat_token_index(indices, seq_len, batch_first=batch_first)  # [B·r]
    kept = gather_tokens(hidden, flat, indices.shape[1], batch_first=batch_first)
    return kept, TokenRoute(hidden, flat, None)


def scatter_route(route: TokenRoute, kept: Tensor) -> Tensor:
    """The layer input with its kept tokens replaced by the layer's output `kept` [B, r, *]."""
    if route.slot is None:
        return scatter_tokens(route.hidden, kept, route.flat)
    return _fused_scatter_route(route.hidden, kept, route.flat, route.slot)


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


def gather_queries(value: Tensor, indices: Tensor) -> Tensor:
    """Query rows of the kept tokens in per-(query, key) data over another sequence.

    `value` is [B|1, ..., Q, K] with Q = S (per query) or Q = 1 (one row for every query), or
    [B|1, K] (per key): cross-attention masks and biases, whose keys (the encoder's tokens) are
    not dropped. Returns [B, ..., r, K], or `value` itself when it has no per-query rows.
    """
    batch, reserved = indices.shape
    if value.dim() < 3 or value.shape[-2] == 1:
        return value
    if value.shape[0] not in (1, batch):
        raise RoutingError(f"cross-attention data {tuple(value.shape)}: expected [B|1, ..., S, K]")
    value = value.expand(batch, *value.shape[1:])
    middle, keys = value.shape[1:-2], value.shape[-1]
    rows = indices.view(batch, *(1,) * len(middle), reserved, 1).expand(
        batch, *middle, reserved, keys
    )
    return value.gather(-2, rows)


def gather_alibi(value: Tensor, indices: Tensor) -> Tensor:
    """Kept keys of an ALiBi bias [B·H, 1, S] (heads folded into the batch: BLOOM) -> [B·H, 1, r],
    or [B, H, 1, S] (Falcon) -> [B, H, 1, r].

    ALiBi adds slope·position(key) to every score; softmax ignores the per-query constant, so the
    kept keys' original positions give the same distances as in the full sequence.
    """
    if value.dim() == 4:
        return gather_mask(value, indices)
    batch, reserved = indices.shape
    if value.dim() != 3 or value.shape[0] % batch or value.shape[1] != 1:
        raise RoutingError(f"alibi {tuple(value.shape)}: expected [B·heads, 1, S] with B = {batch}")
    heads, seq_len = value.shape[0] // batch, value.shape[-1]
    index = indices.view(batch, 1, 1, reserved).expand(batch, heads, 1, reserved)
    return (
        value.view(batch, heads, 1, seq_len).gather(-1, index).reshape(batch * heads, 1, reserved)
    )


def route_argument(
    kind: Route, value: Any, indices: Tensor, seq_len: int, *, shared: bool = False
) -> Any:
    """`value` (a block argument) restricted to the kept tokens `indices` [B, r], as `kind` says.

    `shared`: every row of `indices` is the same (one subset per batch), so data with batch 1
    stays batch 1. Tuples and lists are routed element-wise; None stays None.
    """
    if value is None or kind == "full":
        return value
    if isinstance(value, tuple | list):
        return type(value)(route_argument(kind, v, indices, seq_len, shared=shared) for v in value)
    if not isinstance(value, Tensor):
        raise RoutingError(f"got {type(value).__name__}; random-LTD routes tensors")
    if shared and value.shape[0] == 1:
        indices = indices[:1]
    if kind == "pairs":
        return gather_mask(value, indices)
    if kind == "tokens":
        return gather_positions(value, indices, seq_len)
    if kind == "queries":
        return gather_queries(value, indices)
    return gather_alibi(value, indices)


@torch.compiler.disable
def _fused_gather_route(
    hidden: Tensor, indices: Tensor, seq_len: int, batch_first: bool
) -> tuple[Tensor, TokenRoute]:
    """Triton side of `gather_route`; runs eagerly under torch.compile (see `kernels`)."""
    outer = hidden.shape[0] if batch_first else hidden.shape[1]
    reserved, rest = indices.shape[1], hidden.shape[2:]
    rows = hidden.shape[0] * hidden.shape[1]
    flat = flat_token_index(indices, seq_len, batch_first=batch_first)  # [B·r]
    kept, skip = fused_gather(hidden.reshape(rows, math.prod(rest)), flat)  # [B·r, D], [B·S, D]
    shape = (outer, reserved, *rest) if batch_first else (reserved, outer, *rest)
    return kept.view(shape), TokenRoute(skip.view(hidden.shape), flat, inverse_index(flat, rows))


@torch.compiler.disable
def _fused_scatter_route(hidden: Tensor, kept: Tensor, flat: Tensor, slot: Tensor) -> Tensor:
    """Triton side of `scatter_route`; runs eagerly under torch.compile (see `kernels`)."""
    _check_output(hidden, kept, flat)
    rows, width = hidden.shape[0] * hidden.shape[1], math.prod(hidden.shape[2:])
    kept = kept.to(hidden.dtype).reshape(flat.numel(), width)  # [B·r, D]
    return fused_scatter(hidden.reshape(rows, width), kept, slot, hidden.shape)
