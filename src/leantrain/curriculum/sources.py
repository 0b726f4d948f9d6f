"""Token sources for the analyzer: HF `datasets.Dataset`, map-style torch `Dataset`, or a flat
token array with offsets, all read as `TokenBatch`es of non-padding tokens."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np

from leantrain.curriculum.metrics import TokenBatch
from leantrain.errors import ConfigError

__all__ = [
    "ArraySource",
    "HFSource",
    "TokenSource",
    "TorchSource",
    "as_source",
    "probe_digests",
]


class TokenSource:
    """Base: `len(source)` samples, read as `TokenBatch`es of their non-padding tokens."""

    pad_token_id: int | None = None

    def __len__(self) -> int:
        raise NotImplementedError

    def read(self, start: int, end: int, *, tokens_needed: bool = True) -> TokenBatch:
        """Samples [start, end); without `tokens_needed`, tokens may be left empty."""
        raise NotImplementedError

    def fingerprint(self) -> str:
        """A cheap digest identifying the data (not a full hash of it)."""
        raise NotImplementedError

    def _strip(
        self, tokens: np.ndarray, offsets: np.ndarray, mask: np.ndarray | None
    ) -> TokenBatch:
        """Drop padding (mask == 0, or token == pad_token_id) and rebuild the offsets."""
        if mask is None and self.pad_token_id is not None:
            mask = tokens != self.pad_token_id
        if mask is None:
            return TokenBatch(tokens, offsets)
        keep = np.asarray(mask).astype(bool)
        counts = np.zeros(len(offsets) - 1, np.int64)
        nonempty = offsets[:-1] < offsets[1:]
        if nonempty.any():
            counts[nonempty] = np.add.reduceat(keep.astype(np.int64), offsets[:-1][nonempty])
        new_offsets = np.zeros(len(offsets), np.int64)
        np.cumsum(counts, out=new_offsets[1:])
        return TokenBatch(tokens[keep], new_offsets)


class ArraySource(TokenSource):
    """A flat token array (numpy or memmap) and offsets [N + 1]: sample i is
    tokens[offsets[i]:offsets[i+1]]. Memmaps travel to worker processes by file name."""

    def __init__(
        self,
        tokens: np.ndarray | str | Path,
        offsets: np.ndarray | str | Path,
        *,
        pad_token_id: int | None = None,
    ) -> None:
        self._tokens_path = str(tokens) if isinstance(tokens, str | Path) else None
        self._offsets_path = str(offsets) if isinstance(offsets, str | Path) else None
        self.tokens = _open(tokens)
        self.offsets = _open(offsets)
        self.pad_token_id = pad_token_id
        if self.offsets.ndim != 1 or len(self.offsets) < 1 or int(self.offsets[0]) != 0:
            raise ConfigError("offsets: expected a 1-D array starting at 0 (N + 1 entries)")
        if int(self.offsets[-1]) > len(self.tokens):
            raise ConfigError(
                f"offsets: last offset {int(self.offsets[-1])} beyond {len(self.tokens)} tokens"
            )

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def read(self, start: int, end: int, *, tokens_needed: bool = True) -> TokenBatch:
        """Samples [start, end), seqlen straight from the offsets when tokens aren't needed."""
        offs = _slice(self.offsets, start, end + 1).astype(np.int64, copy=False)
        base = int(offs[0])
        local = offs - base
        if not tokens_needed and self.pad_token_id is None:
            return TokenBatch(self.tokens[:0], local, start)
        tokens = _slice(self.tokens, base, int(offs[-1]))
        batch = self._strip(tokens, local, None)
        batch.start = start
        return batch

    def fingerprint(self) -> str:
        """Digest of sizes and up to 4096 strided offsets and tokens."""
        h = hashlib.sha256(f"array:{len(self)}:{len(self.tokens)}:{self.tokens.dtype}".encode())
        for arr in (self.offsets, self.tokens):
            points = np.linspace(0, len(arr) - 1, num=min(4096, len(arr)), dtype=np.int64)
            h.update(b"".join(_slice(arr, int(i), int(i) + 1).tobytes() for i in points))
        return h.hexdigest()[:16]

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        if self._tokens_path is not None:
            state["tokens"] = None
        if self._offsets_path is not None:
            state["offsets"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        if self._tokens_path is not None:
            self.tokens = _open(self._tokens_path)
        if self._offsets_path is not None:
            self.offsets = _open(self._offsets_path)


def _slice(arr: np.ndarray, a: int, b: int) -> np.ndarray:
    """arr[a:b] as an in-memory copy; memmaps are read with a file read, not mapped, so a pass
    over a corpus bigger than RAM keeps the resident set at one batch."""
    if isinstance(arr, np.memmap) and isinstance(arr.filename, str | Path) and arr.ndim == 1:
        with open(arr.filename, "rb") as fh:
            fh.seek(arr.offset + a * arr.itemsize)
            return np.fromfile(fh, dtype=arr.dtype, count=max(0, b - a))
    return np.asarray(arr[a:b])


def _open(arr: np.ndarray | str | Path) -> np.ndarray:
    if isinstance(arr, str | Path):
        return np.load(arr, mmap_mode="r")
    return arr


class HFSource(TokenSource):
    """A Hugging Face `datasets.Dataset` column of token-id lists, read through Arrow (no
    Python loop per sample); an `attention_mask` column, when present, marks padding."""

    def __init__(
        self,
        dataset: Any,
        column: str = "input_ids",
        *,
        mask_column: str | None = "attention_mask",
        pad_token_id: int | None = None,
    ) -> None:
        if column not in dataset.column_names:
            raise ConfigError(
                f"column: {column!r} not in the dataset's columns {dataset.column_names}"
            )
        self.dataset = dataset
        self.column = column
        self.mask_column = mask_column if mask_column in dataset.column_names else None
        self.pad_token_id = pad_token_id
        cols = [self.column] + ([self.mask_column] if self.mask_column else [])
        self._view = dataset.select_columns(cols).with_format("arrow")

    def __len__(self) -> int:
        return len(self.dataset)

    def read(self, start: int, end: int, *, tokens_needed: bool = True) -> TokenBatch:
        """Samples [start, end) as flat Arrow buffers."""
        table = self._view[start:end]
        tokens, offsets = _flat(table.column(self.column))
        mask = _flat(table.column(self.mask_column))[0] if self.mask_column else None
        batch = self._strip(tokens, offsets, mask)
        batch.start = start
        return batch

    def fingerprint(self) -> str:
        """The dataset's own fingerprint, length and column."""
        fp = getattr(self.dataset, "_fingerprint", "")
        text = f"hf:{fp}:{len(self)}:{self.column}:{self.mask_column}:{self.pad_token_id}"
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def _flat(column: Any) -> tuple[np.ndarray, np.ndarray]:
    arr = column.combine_chunks()
    offsets = np.asarray(arr.offsets, dtype=np.int64)
    values = arr.flatten().to_numpy(zero_copy_only=False)
    if values.dtype == object:  # list<null>: every list is empty
        values = values.astype(np.int64)
    return values, offsets - offsets[0]


class TorchSource(TokenSource):
    """A map-style torch `Dataset` whose items are token-id sequences or dicts holding them
    (`column`, and `mask_column` for padding). Read one item at a time: the slowest source."""

    def __init__(
        self,
        dataset: Any,
        column: str = "input_ids",
        *,
        mask_column: str | None = "attention_mask",
        pad_token_id: int | None = None,
    ) -> None:
        self.dataset = dataset
        self.column = column
        self.mask_column = mask_column
        self.pad_token_id = pad_token_id

    def __len__(self) -> int:
        return len(self.dataset)

    def _item(self, i: int) -> tuple[np.ndarray, np.ndarray | None]:
        item = self.dataset[i]
        mask = None
        if isinstance(item, dict):
            if self.column not in item:
                raise ConfigError(f"column: {self.column!r} not in dataset item keys {list(item)}")
            if self.mask_column and self.mask_column in item:
                mask = np.asarray(item[self.mask_column]).reshape(-1)
            item = item[self.column]
        tokens = np.asarray(item).reshape(-1)
        if tokens.size == 0:  # np.asarray([]) is float64: keep an empty sample integer-typed
            return tokens.astype(np.int64), mask
        if tokens.dtype.kind not in "iu":
            raise ConfigError(
                f"dataset: sample {i}: token ids of dtype {tokens.dtype}; expected integers"
            )
        return tokens, mask

    def read(self, start: int, end: int, *, tokens_needed: bool = True) -> TokenBatch:
        """Samples [start, end), item by item."""
        items = [self._item(i) for i in range(start, end)]
        lengths = np.asarray([len(t) for t, _ in items], dtype=np.int64)
        offsets = np.zeros(len(items) + 1, np.int64)
        np.cumsum(lengths, out=offsets[1:])
        tokens = np.concatenate([t for t, _ in items]) if items else np.zeros(0, np.int64)
        masks = [m for _, m in items]
        mask = None
        if any(m is not None for m in masks):
            mask = np.concatenate(
                [
                    m if m is not None else np.ones(len(t))
                    for (t, _), m in zip(items, masks, strict=True)
                ]
            )
        batch = self._strip(tokens, offsets, mask)
        batch.start = start
        return batch

    def fingerprint(self) -> str:
        """Class, length and the tokens of up to 16 evenly spread items."""
        h = hashlib.sha256(f"torch:{type(self.dataset).__qualname__}:{len(self)}".encode())
        for i in np.linspace(0, max(0, len(self) - 1), num=min(16, len(self)), dtype=int):
            h.update(np.ascontiguousarray(self._item(int(i))[0]).tobytes())
        return h.hexdigest()[:16]


def as_source(
    data: Any,
    *,
    column: str = "input_ids",
    mask_column: str | None = "attention_mask",
    pad_token_id: int | None = None,
) -> TokenSource:
    """Wrap a dataset: TokenSource, (tokens, offsets) pair, HF Dataset or map-style Dataset."""
    if isinstance(data, TokenSource):
        return data
    if isinstance(data, tuple) and len(data) == 2:
        return ArraySource(data[0], data[1], pad_token_id=pad_token_id)
    if hasattr(data, "column_names") and hasattr(data, "with_format"):
        return HFSource(data, column, mask_column=mask_column, pad_token_id=pad_token_id)
    if hasattr(data, "__getitem__") and hasattr(data, "__len__"):
        return TorchSource(data, column, mask_column=mask_column, pad_token_id=pad_token_id)
    raise ConfigError(
        f"dataset: got {type(data).__name__}; expected a datasets.Dataset, a map-style torch "
        "Dataset, a (tokens, offsets) pair of arrays or an ArraySource"
    )


def probe_digests(source: TokenSource, ids: list[int] | None = None) -> dict[str, str]:
    """Digests of the non-padding tokens of samples `ids` (default: up to 32 evenly spread),
    keyed by sample id: equal for equal samples whichever way they are stored (HF dataset,
    torch dataset, flat arrays), so an index can be checked against the training data."""
    if ids is None:
        n = len(source)
        ids = np.unique(np.linspace(0, n - 1, num=min(32, n), dtype=np.int64)).tolist()
    out = {}
    for i in ids:
        tokens = np.asarray(source.read(int(i), int(i) + 1).tokens, dtype="<i8")
        out[str(int(i))] = hashlib.sha256(tokens.tobytes()).hexdigest()[:16]
    return out
