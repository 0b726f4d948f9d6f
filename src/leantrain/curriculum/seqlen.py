"""Sequence-length warmup as batch post-processing: truncate, or reshape into shorter rows.

`truncate_batch` cuts every [B, S] sequence tensor to the current difficulty (DeepSpeed's
seqlen curriculum); `reshape_batch` folds [B, S] into [B·(S // d), d] so the tokens per step
stay constant (Megatron-DeepSpeed's `seqlen_reshape`). `SeqlenWarmupCollator` applies either
as a DataLoader `collate_fn`, which is where HF Trainer users can reach the batch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any, Literal

import torch
from torch.utils.data import default_collate

from leantrain.curriculum.scheduler import CurriculumScheduler
from leantrain.errors import ConfigError

__all__ = ["SEQUENCE_KEYS", "SeqlenWarmupCollator", "reshape_batch", "truncate_batch"]

#: Batch keys holding [B, S] per-token tensors.
SEQUENCE_KEYS = ("input_ids", "labels", "attention_mask", "token_type_ids", "position_ids")


def _seq_keys(batch: Mapping[str, Any], extra_keys: Iterable[str]) -> list[str]:
    keys = [k for k in (*SEQUENCE_KEYS, *extra_keys) if k in batch]
    return list(dict.fromkeys(keys))


def _check(seqlen: int) -> int:
    if int(seqlen) < 1:
        raise ConfigError(f"seqlen: got {seqlen}; expected a positive sequence length")
    return int(seqlen)


def truncate_batch(
    batch: dict[str, Any], seqlen: int, *, extra_keys: Iterable[str] = ()
) -> dict[str, Any]:
    """A copy of `batch` with each [B, S] sequence tensor cut to its first `seqlen` tokens;
    other entries are kept as they are."""
    seqlen = _check(seqlen)
    out = dict(batch)
    for key in _seq_keys(batch, extra_keys):
        value = batch[key]
        if isinstance(value, torch.Tensor) and value.dim() >= 2 and value.shape[1] > seqlen:
            out[key] = value[:, :seqlen].contiguous()
    return out


def reshape_batch(
    batch: dict[str, Any], seqlen: int, *, extra_keys: Iterable[str] = ()
) -> dict[str, Any]:
    """Fold each [B, S] sequence tensor into [B·(S // seqlen), seqlen] rows (dropping the last
    S mod seqlen tokens of each row), keeping tokens per step; position_ids restart at 0 in
    every new row; other [B, ...] tensors are repeated once per new row."""
    seqlen = _check(seqlen)
    keys = _seq_keys(batch, extra_keys)
    seq = [batch[k] for k in keys if isinstance(batch[k], torch.Tensor) and batch[k].dim() >= 2]
    if not seq:
        return dict(batch)
    bsz, full = seq[0].shape[:2]
    if full <= seqlen:
        return dict(batch)
    folds = full // seqlen
    out: dict[str, Any] = {}
    for key, value in batch.items():
        if not isinstance(value, torch.Tensor) or value.dim() == 0 or value.shape[0] != bsz:
            out[key] = value
        elif key in keys and value.dim() >= 2:
            if value.shape[1] != full:
                raise ConfigError(f"reshape_batch: {key} has length {value.shape[1]}, not {full}")
            if key == "position_ids":
                pos = torch.arange(seqlen, dtype=value.dtype, device=value.device)
                out[key] = pos.expand(bsz * folds, seqlen).contiguous()
            else:
                cut = value[:, : folds * seqlen]
                out[key] = cut.reshape(bsz * folds, seqlen, *value.shape[2:]).contiguous()
        else:
            out[key] = value.repeat_interleave(folds, dim=0)
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
