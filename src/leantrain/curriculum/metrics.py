"""Difficulty metrics: built-in `seqlen`, `vocab_rarity`, `seqlen_vocab_rarity`, and user ones.

A metric sees a `TokenBatch`: the non-padding tokens of consecutive samples as one flat array
plus offsets (CSR layout), so built-ins run as a few numpy calls per batch, never a Python loop
per token. Two kinds, as in DeepSpeed: `single_value_per_sample` (one value per sample) and
`accumulate_value_over_samples` (an array summed, or maxed, over all samples, e.g. the token
histogram vocab_rarity needs before it can run). The histogram spans the whole vocabulary plus
one bin, as DeepSpeed's reference analysis counts it, so the vocabulary size is an input.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from leantrain.errors import ConfigError

__all__ = [
    "BUILTIN_METRICS",
    "Metric",
    "MetricType",
    "TokenBatch",
    "accumulate_arrays",
    "composite_scale",
    "prepare_context",
    "rarity_table",
    "resolve_metrics",
    "token_histogram_metric",
]

MetricType = Literal["single_value_per_sample", "accumulate_value_over_samples"]


@dataclass
class TokenBatch:
    """Non-padding tokens of samples `start .. start + len(offsets) - 2`, flat (CSR layout)."""

    tokens: np.ndarray  # [T] token ids
    offsets: np.ndarray  # [n + 1] int64, offsets[0] == 0, offsets[-1] == T
    start: int = 0  # global id of the first sample

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @property
    def lengths(self) -> np.ndarray:
        """Non-padding tokens per sample, [n] int64."""
        return np.diff(self.offsets)

    def sample(self, i: int) -> np.ndarray:
        """The tokens of the batch's i-th sample."""
        return self.tokens[self.offsets[i] : self.offsets[i + 1]]

    def segment_sum(self, per_token: np.ndarray) -> np.ndarray:
        """Sum a per-token array within each sample (empty samples give 0)."""
        out = np.zeros(len(self), dtype=per_token.dtype)
        nonempty = self.offsets[:-1] < self.offsets[1:]
        if nonempty.any():
            out[nonempty] = np.add.reduceat(per_token, self.offsets[:-1][nonempty])
        return out


@dataclass(frozen=True)
class Metric:
    """A difficulty metric: a name, a function and its kind.

    `fn` takes one sample's non-padding token ids (np.ndarray) and returns a number (or, for
    accumulate metrics, an array); with `batched=True` it takes a `TokenBatch` and returns one
    value per sample (or one array for the batch). `requires` names accumulated results passed
    as `fn(batch, context)`; the built-ins use it. Functions must be picklable (module-level)
    to run in worker processes.
    """

    name: str
    fn: Callable[..., Any]
    metric_type: MetricType = "single_value_per_sample"
    batched: bool = False
    dtype: str | None = None  # output dtype; default int64 for ints, float64 otherwise
    requires: tuple[str, ...] = ()
    reduce: Literal["sum", "max"] = "sum"  # accumulate metrics only

    def compute(self, batch: TokenBatch, context: Mapping[str, Any]) -> np.ndarray:
        """Evaluate on a batch: [n] values, or the batch's accumulated array."""
        if self.requires:
            out = np.asarray(self.fn(batch, context))
        elif self.batched:
            out = np.asarray(self.fn(batch))
        elif self.metric_type == "accumulate_value_over_samples":
            parts = [np.asarray(self.fn(batch.sample(i))) for i in range(len(batch))]
            out = accumulate_arrays(parts, self.reduce) if parts else np.zeros(0, np.int64)
        else:
            out = np.asarray([self.fn(batch.sample(i)) for i in range(len(batch))])
        if self.metric_type == "single_value_per_sample":
            if out.shape != (len(batch),):
                raise ConfigError(
                    f"metric {self.name!r}: returned shape {out.shape} for {len(batch)} "
                    "samples; expected one number per sample"
                )
            if out.dtype.kind in "fc" and not np.isfinite(out).all():
                bad = int(np.flatnonzero(~np.isfinite(out))[0])
                raise ConfigError(
                    f"metric {self.name!r}: value {out[bad]} for sample {batch.start + bad}; "
                    "a difficulty must be a finite number"
                )
            return out.astype(self.output_dtype(out))
        return out

    def output_dtype(self, sample: np.ndarray | None = None) -> np.dtype:
        """The stored dtype: the declared one, else int64 for integers, float64 otherwise."""
        if self.dtype is not None:
            return np.dtype(self.dtype)
        if sample is not None and sample.dtype.kind in "iub":
            return np.dtype(np.int64)
        return np.dtype(np.float64)


def accumulate_arrays(parts: list[np.ndarray], reduce: str) -> np.ndarray:
    """Sum (or max) arrays of possibly different lengths, padding the shorter with zeros."""
    size = max(p.size for p in parts)
    out = np.zeros(size, dtype=np.result_type(*parts))
    for p in parts:
        flat = p.ravel()
        if reduce == "max":
            np.maximum(out[: flat.size], flat, out=out[: flat.size])
        else:
            out[: flat.size] += flat
    return out


def rarity_table(histogram: np.ndarray) -> np.ndarray:
    """R[v] = −ln(F[v] / ΣF) in float64, with zero counts replaced by 1, as DeepSpeed's
    reference analysis computes it. F has vocab_size + 1 bins, so every unused id (and the
    extra bin) adds one to ΣF."""
    freq = np.asarray(histogram, dtype=np.float64).copy()
    freq[freq == 0] = 1.0
    return -np.log(freq / freq.sum())


def composite_scale(max_seq_len: int, max_rarity: float) -> int:
    """C = 10^(ceil(log_10(seq_len · max R)) + 1): seqlen·C + rarity keeps length dominant
    (`math.log(x, 10)`, as the reference computes it)."""
    return 10 ** (math.ceil(math.log(max(max_seq_len * max_rarity, 1.0), 10)) + 1)


def prepare_context(accumulated: Mapping[str, np.ndarray], max_seq_len: int | None) -> dict:
    """What the built-ins need from the accumulate stage: R table and composite scale."""
    context: dict[str, Any] = dict(accumulated)
    if "token_histogram" in accumulated:
        table = rarity_table(accumulated["token_histogram"])
        context["rarity_table"] = table
        seq = max_seq_len or int(np.asarray(accumulated.get("max_seqlen", [1])).max())
        context["composite_scale"] = composite_scale(seq, float(table.max()))
    return context


def _seqlen(batch: TokenBatch) -> np.ndarray:
    return batch.lengths


def _token_histogram(batch: TokenBatch, vocab_size: int) -> np.ndarray:
    """Counts of ids 0 .. vocab_size (vocab_size + 1 bins, the reference's `minlength`)."""
    ids = np.asarray(batch.tokens, dtype=np.int64)
    bad = np.flatnonzero((ids < 0) | (ids >= vocab_size)) if len(ids) else ids[:0]
    if len(bad):
        sample = batch.start + int(np.searchsorted(batch.offsets, bad[0], side="right")) - 1
        raise ConfigError(
            f"vocab_size: sample {sample} holds token id {int(ids[bad[0]])}, outside the "
            f"vocabulary [0, {vocab_size}); pass the tokenizer's vocab_size (len(tokenizer))"
        )
    return np.bincount(ids, minlength=vocab_size + 1)


def token_histogram_metric(vocab_size: int) -> Metric:
    """The `token_histogram` accumulate metric over a vocabulary of `vocab_size` ids."""
    if int(vocab_size) < 1:
        raise ConfigError(f"vocab_size: got {vocab_size}; expected a positive vocabulary size")
    fn = functools.partial(_token_histogram, vocab_size=int(vocab_size))
    return Metric("token_histogram", fn, "accumulate_value_over_samples", batched=True)


def _max_seqlen(batch: TokenBatch) -> np.ndarray:
    return np.asarray([batch.lengths.max(initial=0)], dtype=np.int64)


def _vocab_rarity(batch: TokenBatch, context: Mapping[str, Any]) -> np.ndarray:
    table: np.ndarray = context["rarity_table"]
    return np.floor(batch.segment_sum(table[batch.tokens])).astype(np.int64)


def _seqlen_vocab_rarity(batch: TokenBatch, context: Mapping[str, Any]) -> np.ndarray:
    scale = int(context["composite_scale"])
    return batch.lengths * scale + _vocab_rarity(batch, context)


BUILTIN_METRICS: dict[str, Metric] = {
    "seqlen": Metric("seqlen", _seqlen, batched=True, dtype="int32"),
    "token_histogram": Metric(
        "token_histogram", _token_histogram, "accumulate_value_over_samples", batched=True
    ),
    "max_seqlen": Metric(
        "max_seqlen", _max_seqlen, "accumulate_value_over_samples", batched=True, reduce="max"
    ),
    "vocab_rarity": Metric(
        "vocab_rarity", _vocab_rarity, dtype="int64", requires=("token_histogram",)
    ),
    "seqlen_vocab_rarity": Metric(
        "seqlen_vocab_rarity",
        _seqlen_vocab_rarity,
        dtype="int64",
        requires=("token_histogram", "max_seqlen"),
    ),
}


def resolve_metrics(
    metrics: list[str | Metric] | tuple[str | Metric, ...], *, vocab_size: int | None = None
) -> list[Metric]:
    """Metric objects for names or objects, plus the accumulate metrics they require, first.
    The token histogram (needed by vocab_rarity) is sized by `vocab_size`, which it requires."""
    out: list[Metric] = []
    for m in metrics:
        if isinstance(m, str):
            if m not in BUILTIN_METRICS:
                raise ConfigError(
                    f"metrics: unknown metric {m!r}; built-ins are {sorted(BUILTIN_METRICS)}, "
                    "or pass a leantrain.curriculum.Metric"
                )
            m = BUILTIN_METRICS[m]
        out.append(m)
    names = {m.name for m in out}
    if len(names) != len(out):
        raise ConfigError(f"metrics: duplicate names in {[m.name for m in out]}")
    needed = [r for m in out for r in m.requires if r not in names]
    extra = [BUILTIN_METRICS[r] for r in dict.fromkeys(needed)]
    resolved = extra + out
    histogram = BUILTIN_METRICS["token_histogram"]
    if any(m is histogram for m in resolved):
        if vocab_size is None:
            users = [m.name for m in out if "token_histogram" in m.requires] or ["token_histogram"]
            raise ConfigError(
                f"vocab_size: required for {users}: the token histogram spans the whole "
                "vocabulary (+1 bin), as DeepSpeed's reference analysis counts it; pass "
                "len(tokenizer) (or the padded vocabulary size your reference run used)"
            )
        sized = token_histogram_metric(vocab_size)
        resolved = [sized if m is histogram else m for m in resolved]
    return resolved
