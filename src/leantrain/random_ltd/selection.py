"""Which tokens a converted layer keeps: pure, batched, on the device, no host sync.

Each sample gets an independent uniformly random subset of `reserved` positions, returned
sorted so the kept tokens stay in order (causality among them is then exact). The subset is the
top-`reserved` of i.i.d. uniform scores, so it is uniform over all subsets; positions to keep get
a score above every random one, and non-padding tokens (when asked) one above every padding one.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = [
    "random_scores",
    "rank_key",
    "sample_token_indices",
    "select_tokens",
    "token_validity",
]

_M32 = 0xFFFFFFFF


def rank_key(rank: int) -> int:
    """A 32-bit key that decorrelates the draws of data-parallel rank `rank` (0 for rank 0)."""
    return (rank * 0x9E3779B1) & _M32


def _mix32(x: Tensor) -> Tensor:
    """An integer finaliser on values in [0, 2**32): products stay below 2**63 in int64."""
    x = x ^ (x >> 16)
    x = (x * 0x7FEB352D) & _M32
    x = x ^ (x >> 15)
    x = (x * 0x5BD1E995) & _M32
    return x ^ (x >> 16)


def random_scores(
    batch: int,
    seq_len: int,
    *,
    device: torch.device | str | None = None,
    generator: torch.Generator | None = None,
    key: int = 0,
) -> Tensor:
    """I.i.d. uniform scores [batch, seq_len] in [0, 1) from `generator` (default: the device's).

    With a nonzero `key` (see `rank_key`), the same generator state gives scores that look
    independent of key 0's: ranks that share a seed still draw different subsets, while the
    draw stays a function of the default generator, which activation checkpointing replays.
    """
    if key == 0:
        return torch.rand(batch, seq_len, device=device, generator=generator)  # [B, S]
    raw = torch.randint(  # [B, S] in [0, 2**32)
        0, 1 << 32, (batch, seq_len), device=device, generator=generator, dtype=torch.int64
    )
    mixed = _mix32(_mix32(raw ^ key) ^ key)
    return (mixed >> 8).to(torch.float32) * (1.0 / (1 << 24))  # 24 exact bits in [0, 1)


def select_tokens(
    scores: Tensor,
    reserved: int,
    *,
    keep_positions: Sequence[int] = (),
    attend: Tensor | None = None,
) -> Tensor:
    """Sorted indices [B, reserved] of the top-`reserved` scores [B, S] of each row.

    `keep_positions` (python ints, negative counts from the end) are always chosen; with
    `attend` [B, S] bool, non-padding tokens are chosen before any padding token.
    """
    seq_len = scores.shape[1]
    if not 0 < reserved <= seq_len:
        raise ValueError(f"reserved: got {reserved}; expected 1..{seq_len}")
    if len(keep_positions) > reserved:
        raise ValueError(
            f"keep_positions: {len(keep_positions)} positions cannot be kept with a reserved "
            f"length of {reserved}"
        )
    bad = [p for p in keep_positions if not -seq_len <= p < seq_len]
    if bad:
        raise ValueError(f"keep_positions: {bad} out of range for {seq_len} tokens")
    if attend is not None:
        scores = scores + attend.to(scores.dtype)  # non-padding in [1, 2), padding in [0, 1)
    elif keep_positions:
        scores = scores.clone()
    for p in keep_positions:  # a few configured positions; basic indexing, no host copy
        scores[:, p] = 3.0
    chosen = scores.topk(reserved, dim=1, sorted=False).indices  # [B, r]
    return chosen.sort(dim=1).values


def sample_token_indices(
    batch: int,
    seq_len: int,
    reserved: int,
    *,
    device: torch.device | str | None = None,
    generator: torch.Generator | None = None,
    keep_positions: Sequence[int] = (),
    attend: Tensor | None = None,
    key: int = 0,
) -> Tensor:
    """Sorted kept positions [batch, reserved], int64, independent per sample (see module doc)."""
    scores = random_scores(batch, seq_len, device=device, generator=generator, key=key)
    return select_tokens(scores, reserved, keep_positions=keep_positions, attend=attend)


def token_validity(mask: Tensor, batch: int, seq_len: int) -> Tensor:
    """Non-padding tokens [batch, seq_len] (bool) read off an attention mask, on the device.

    A token is valid when some query may attend to it. Masks: bool (True = attend), floating
    (additive: 0 = attend) or integer (nonzero = attend), shaped [B|1, S] or [B|1, ..., Q, S].
    """
    if mask.dtype == torch.bool:
        allowed = mask
    elif mask.is_floating_point():
        allowed = mask == 0
    else:
        allowed = mask != 0
    if allowed.shape[-1] != seq_len:
        raise ValueError(f"mask: last dim {allowed.shape[-1]} is not the {seq_len} tokens")
    if allowed.dim() > 2:
        allowed = allowed.flatten(1, -2).any(dim=1)  # [B|1, S]: any head, any query
    return allowed.expand(batch, seq_len)
