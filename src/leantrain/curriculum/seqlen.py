"""Sequence-length warmup as batch post-processing: truncate, or reshape into shorter rows.

`truncate_batch` cuts every [B, S] sequence tensor to the current difficulty (DeepSpeed's
seqlen curriculum); `reshape_batch` folds [B, S] into rows of d tokens so the tokens per step
stay constant, as DeepSpeed's Hugging Face example of `seqlen_reshape` does.
`SeqlenWarmupCollator` applies either as a DataLoader `collate_fn`, which is where HF Trainer
users can reach the batch. A 4-D tensor under a sequence key is a pairwise mask
[B, H, S_q, S] (S_q = S, or 1 for a broadcast padding mask): both of its sequence dimensions
are cut or folded; 2-D and 3-D tensors are [B, S] and [B, S, features].
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Literal

import torch
from torch.utils.data import default_collate

from leantrain.curriculum.scheduler import CurriculumScheduler
from leantrain.errors import ConfigError

__all__ = ["SEQUENCE_KEYS", "SeqlenWarmupCollator", "reshape_batch", "truncate_batch"]

#: Batch keys holding [B, S] per-token tensors (or [B, H, S, S] masks).
SEQUENCE_KEYS = ("input_ids", "labels", "attention_mask", "token_type_ids", "position_ids")


def _seq_keys(batch: Mapping[str, Any], extra_keys: Iterable[str]) -> list[str]:
    keys = [k for k in (*SEQUENCE_KEYS, *extra_keys) if k in batch]
    return list(dict.fromkeys(keys))


def _check(seqlen: int) -> int:
    if int(seqlen) < 1:
        raise ConfigError(f"seqlen: got {seqlen}; expected a positive sequence length")
    return int(seqlen)


def _length(value: torch.Tensor) -> int:
    """The sequence length of a [B, S, ...] tensor or a [B, H, S_q, S] mask."""
    return int(value.shape[-1] if value.dim() == 4 else value.shape[1])


def _cut(value: torch.Tensor, a: int, b: int) -> torch.Tensor:
    """Positions [a, b) of every row: dimension 1, or both sequence dimensions of a mask."""
    if value.dim() != 4:
        return value[:, a:b]
    rows = value[:, :, a:b] if value.shape[2] > 1 else value
    return rows[..., a:b]


def truncate_batch(
    batch: dict[str, Any], seqlen: int, *, extra_keys: Iterable[str] = ()
) -> dict[str, Any]:
    """A copy of `batch` with each sequence tensor cut to its first `seqlen` tokens ([B, S] to
    [:, :d], a [B, H, S, S] mask to [:, :, :d, :d]); other entries are kept as they are."""
    seqlen = _check(seqlen)
    out = dict(batch)
    for key in _seq_keys(batch, extra_keys):
        value = batch[key]
        if isinstance(value, torch.Tensor) and value.dim() >= 2 and _length(value) > seqlen:
            out[key] = _cut(value, 0, seqlen).contiguous()
    return out


def reshape_batch(
    batch: dict[str, Any], seqlen: int, *, extra_keys: Iterable[str] = ()
) -> dict[str, Any]:
    """Fold each [B, S] sequence tensor into rows of `seqlen` tokens, as DeepSpeed's Hugging Face
    example does: the S // d full rows of every sample, then, when d does not divide S, the last
    d tokens of samples 0, 1, ... as extra rows, up to ceil(B·S / d) rows in all. Tokens per step
    stay B·S up to at most d − 1 repeated ones. Masks [B, H, S, S] fold into their diagonal
    blocks; position_ids restart at 0 in every row; other [B, ...] tensors follow their rows."""
    d = _check(seqlen)
    keys = _seq_keys(batch, extra_keys)
    seq = [batch[k] for k in keys if isinstance(batch[k], torch.Tensor) and batch[k].dim() >= 2]
    if not seq:
        return dict(batch)
    bsz, full = int(seq[0].shape[0]), _length(seq[0])
    if full <= d:
        return dict(batch)
    folds = full // d
    tails = min(bsz, math.ceil(bsz * full / d) - bsz * folds)  # extra rows of S mod d tokens
    rows = bsz * folds + tails
    out: dict[str, Any] = {}
    for key, value in batch.items():
        if not isinstance(value, torch.Tensor) or value.dim() == 0 or value.shape[0] != bsz:
            out[key] = value
        elif key in keys and value.dim() >= 2:
            if _length(value) != full:
                raise ConfigError(f"reshape_batch: {key} has length {_length(value)}, not {full}")
            if key == "position_ids":
                pos = torch.arange(d, dtype=value.dtype, device=value.device)
                out[key] = pos.expand(rows, d).contiguous()
                continue
            if value.dim() == 4:  # each row keeps its diagonal block of the mask
                blocks = [_cut(value, j * d, (j + 1) * d) for j in range(folds)]
                folded = torch.stack(blocks, dim=1).flatten(0, 1)  # [B·folds, H, d, d]
            else:
                folded = value[:, : folds * d].reshape(bsz * folds, d, *value.shape[2:])
            out[key] = torch.cat([folded, _cut(value[:tails], full - d, full)]).contiguous()
        else:
            per_row = value.repeat_interleave(folds, dim=0)
            out[key] = torch.cat([per_row, value[:tails]])
    return out


class SeqlenWarmupCollator:
    """`collate_fn` wrapper: collate with `base_collate`, then truncate (or reshape) to the
    scheduler's current difficulty.

    The host advances the scheduler (`scheduler.update_difficulty(global_step)`) once per
    step. Its value is in shared memory, so DataLoader workers see updates; a prefetched batch
    is cut to the difficulty of the step at which it was collated (at most num_workers ×
    prefetch_factor batches early); use num_workers=0 for step-exact lengths.
    """

    def __init__(
        self,
        base_collate: Callable[[list[Any]], dict[str, Any]] | None,
        scheduler: CurriculumScheduler,
        *,
        mode: Literal["truncate", "reshape"] = "truncate",
        extra_keys: Iterable[str] = (),
    ) -> None:
        if mode not in ("truncate", "reshape"):
            raise ConfigError(f"mode: got {mode!r}; expected 'truncate' or 'reshape'")
        self.base_collate = base_collate or default_collate
        self.scheduler = scheduler
        self.mode = mode
        self.extra_keys = tuple(extra_keys)

    def __call__(self, features: list[Any]) -> dict[str, Any]:
        """Collate `features` and apply the current sequence length."""
        batch = self.base_collate(features)
        seqlen = int(self.scheduler.get_current_difficulty())
        fn = truncate_batch if self.mode == "truncate" else reshape_batch
        return fn(batch, seqlen, extra_keys=self.extra_keys)
