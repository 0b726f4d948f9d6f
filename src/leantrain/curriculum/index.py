"""On-disk difficulty index: memmapped numpy arrays per metric plus a JSON manifest.

One folder per metric holds
- `sample_to_metric.npy`: the metric value of every sample (N,);
- `index_to_metric.npy`: the sorted distinct values (V,);
- `index_to_sample.npy`: every sample id, grouped by value, ids ascending within a group (N,);
- `index_to_sample_offsets.npy`: where each value's group starts in it (V + 1,);
- `manifest.json`: version, metric, dtypes, counts, source fingerprint, a sha256 per file and
  (from the analyzer) digests of a few samples, which tie the index to its data.
The folder is built under a temp name, manifest included, and renamed into place, so a folder
without a manifest is unfinished. Files are preallocated before they are filled (a full disk is
an error naming the file, not a SIGBUS). Everything is built in chunks: memory is
O(distinct values + one chunk), never O(samples).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from leantrain.curriculum.storage import alloc_npy, file_sha256, save_npy
from leantrain.errors import LeantrainError
from leantrain.files import atomic_write_json, discard, temp_path, writing

__all__ = [
    "INDEX_VERSION",
    "Column",
    "CurriculumIndex",
    "CurriculumIndexError",
    "distinct_values",
    "resolve_index_dir",
    "write_index",
]

INDEX_VERSION = 1
CHUNK = 1 << 20  # samples per chunk when building an index
FILES = ("sample_to_metric", "index_to_metric", "index_to_sample", "index_to_sample_offsets")


class Column(Protocol):
    """A 1-D array-like: length, dtype and slices as numpy arrays (an ndarray, a memmap, or a
    view over several part files)."""

    dtype: np.dtype

    def __len__(self) -> int: ...

    def __getitem__(self, key: slice, /) -> np.ndarray: ...


class CurriculumIndexError(LeantrainError):
    """A difficulty index is missing, unfinished, corrupt or does not match its data."""


def _index_dtype(n: int) -> np.dtype:
    return np.dtype(np.int32) if n < 2**31 else np.dtype(np.int64)


def _chunks(n: int, size: int = CHUNK) -> Iterator[tuple[int, int]]:
    for start in range(0, n, size):
        yield start, min(n, start + size)


def distinct_values(values: Column | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sorted distinct values and their counts, chunk by chunk (O(distinct) memory)."""
    n = len(values)
    if n == 0:
        return values[:0].copy(), np.zeros(0, np.int64)
    if values.dtype.kind in "iub":
        lo = hi = None
        for a, b in _chunks(n):
            chunk = values[a:b]
            lo = int(chunk.min()) if lo is None else min(lo, int(chunk.min()))
            hi = int(chunk.max()) if hi is None else max(hi, int(chunk.max()))
        assert lo is not None and hi is not None
        if hi - lo < 1 << 22:  # dense counting (<= 32 MiB of counts), one pass
            counts = np.zeros(hi - lo + 1, np.int64)
            for a, b in _chunks(n):
                counts += np.bincount(np.asarray(values[a:b], np.int64) - lo, minlength=hi - lo + 1)
            present = np.flatnonzero(counts)
            return (present + lo).astype(values.dtype), counts[present]
    uniq: np.ndarray | None = None
    cnt: np.ndarray | None = None
    for a, b in _chunks(n):
        u, c = np.unique(np.asarray(values[a:b]), return_counts=True)
        if uniq is None or cnt is None:
            uniq, cnt = u, c
            continue
        allv = np.concatenate([uniq, u])
        allc = np.concatenate([cnt, c])
        uniq, inv = np.unique(allv, return_inverse=True)
        cnt = np.bincount(inv, weights=allc, minlength=len(uniq)).astype(np.int64)
    assert uniq is not None and cnt is not None
    return uniq, cnt


def write_index(
    out_dir: str | Path,
    name: str,
    sample_to_metric: Column | np.ndarray,
    *,
    source_fingerprint: str = "",
    bucket_edges: np.ndarray | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Build and write one metric's index folder from its per-sample values.

    The folder is built, manifest included, under a temp name and renamed into place; an
    existing folder of that name is replaced only once the new one is complete. With
    `bucket_edges` (sorted upper edges, the last >= every value) each value is replaced by the
    smallest edge >= it, so a threshold on the stored value never admits a larger raw value.
    """
    out_dir = Path(out_dir)
    final = out_dir / name
    tmp = temp_path(final)
    discard(tmp)
    with writing(tmp):
        tmp.mkdir(parents=True)
    values = sample_to_metric
    n = len(values)
    s2m = alloc_npy(tmp / "sample_to_metric.npy", values.dtype, n)
    for a, b in _chunks(n):
        chunk = np.asarray(values[a:b])
        if bucket_edges is not None:
            chunk = bucket_edges[np.searchsorted(bucket_edges, chunk, side="left")]
        s2m[a:b] = chunk
    with writing(tmp / "sample_to_metric.npy"):
        s2m.flush()
    distinct, counts = distinct_values(s2m)
    save_npy(tmp / "index_to_metric.npy", distinct)
    offsets = np.zeros(len(distinct) + 1, np.int64)
    np.cumsum(counts, out=offsets[1:])
    save_npy(tmp / "index_to_sample_offsets.npy", offsets)
    idx_dtype = _index_dtype(n)
    flat = alloc_npy(tmp / "index_to_sample.npy", idx_dtype, n)
    cursor = offsets[:-1].copy()
    for a, b in _chunks(n):  # stable counting sort, one chunk at a time
        group = np.searchsorted(distinct, s2m[a:b])
        if len(distinct) <= 1 << 16:  # a 16-bit key sorts by radix, several times faster
            group = group.astype(np.uint16)
        order = np.argsort(group, kind="stable")
        sorted_group = group[order]
        chunk_counts = np.bincount(group, minlength=len(distinct))
        chunk_start = np.zeros(len(distinct), np.int64)
        np.cumsum(chunk_counts[:-1], out=chunk_start[1:])
        rank = np.arange(b - a, dtype=np.int64) - chunk_start[sorted_group]
        flat[cursor[sorted_group] + rank] = (order + a).astype(idx_dtype)
        cursor += chunk_counts
    with writing(tmp / "index_to_sample.npy"):
        flat.flush()
    del flat, s2m
    manifest: dict[str, Any] = {
        "version": INDEX_VERSION,
        "metric": name,
        "num_samples": int(n),
        "num_distinct": len(distinct),
        "value_dtype": values.dtype.str,
        "index_dtype": idx_dtype.str,
        "source_fingerprint": source_fingerprint,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "files": {f: {"sha256": file_sha256(tmp / f"{f}.npy")} for f in FILES},
        **(extra or {}),
    }
    atomic_write_json(tmp / "manifest.json", manifest)
    old = temp_path(final, "old")
    with writing(final):
        if final.exists():
            discard(old)
            os.replace(final, old)
        os.replace(tmp, final)
    discard(old, must_delete=False)
    return final


def index_absent(path: str | Path) -> bool:
    """Whether nothing is at a config's index path: neither the path (a folder, a file in it or a
    prefix in it) nor a finished index in its parent folder. DeepSpeedExamples' scripts write
    `"dummy"` there for metrics whose index DeepSpeed never opens."""
    p = Path(path)
    return not p.exists() and not (p.parent / "manifest.json").is_file()


def resolve_index_dir(path: str | Path) -> Path:
    """The metric folder for a config path: the folder, a file in it, or a prefix in it."""
    p = Path(path)
    for cand in (p, p.parent):
        if (cand / "manifest.json").is_file():
            return cand
    raise CurriculumIndexError(
        f"{p}: no finished difficulty index here (looked for manifest.json in {p} and "
        f"{p.parent}); run `leantrain analyze` first, or it was interrupted before finishing"
    )


@dataclass
class CurriculumIndex:
    """One metric's index, memory-mapped read-only."""

    path: Path
    manifest: dict[str, Any]
    sample_to_metric: np.ndarray
    values: np.ndarray
    index_to_sample: np.ndarray
    offsets: np.ndarray

    @property
    def name(self) -> str:
        """The metric name."""
        return str(self.manifest["metric"])

    @property
    def num_samples(self) -> int:
        """How many samples the index covers."""
        return int(self.manifest["num_samples"])

    @property
    def fingerprint(self) -> str:
        """A digest of the index files (their checksums), used to refuse stale resumes."""
        files = self.manifest["files"]
        text = json.dumps({k: files[k]["sha256"] for k in sorted(files)})
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def end_for_value(self, difficulty: float) -> int:
        """Number of samples (a prefix of `index_to_sample`) whose value is <= difficulty."""
        return int(self.offsets[np.searchsorted(self.values, difficulty, side="right")])

    def end_for_percentile(self, percentile: float, max_percentile: float) -> int:
        """DeepSpeed's percentile cut: (N // max) * p samples, all of them at p == max."""
        if percentile >= max_percentile:
            return self.num_samples
        return int(min(self.num_samples, (self.num_samples // int(max_percentile)) * percentile))

    def samples_with_value(self, value: float) -> np.ndarray:
        """The sample ids whose metric equals `value` (empty if none)."""
        i = int(np.searchsorted(self.values, value))
        if i == len(self.values) or self.values[i] != value:
            return self.index_to_sample[:0]
        return self.index_to_sample[self.offsets[i] : self.offsets[i + 1]]

    @classmethod
    def load(
        cls, path: str | Path, *, verify: bool = True, metric: str | None = None
    ) -> CurriculumIndex:
        """Open an index folder; check version, metric (when `metric` is given), shapes, dtypes,
        the ranges of sample ids and offsets, and (verify=True) checksums."""
        folder = resolve_index_dir(path)
        mpath = folder / "manifest.json"
        try:
            manifest = json.loads(mpath.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as err:
            raise CurriculumIndexError(f"{mpath}: unreadable manifest ({err})") from None
        if manifest.get("version") != INDEX_VERSION:
            raise CurriculumIndexError(
                f"{mpath}: index version {manifest.get('version')!r}; this leantrain reads "
                f"version {INDEX_VERSION}; re-run `leantrain analyze`"
            )
        if metric is not None and manifest.get("metric") != metric:
            raise CurriculumIndexError(
                f"{mpath}: an index of metric {manifest.get('metric')!r}, used for metric "
                f"{metric!r}; point the path at the {metric!r} index"
            )
        n, v = int(manifest["num_samples"]), int(manifest["num_distinct"])
        expect = {
            "sample_to_metric": ((n,), manifest["value_dtype"]),
            "index_to_metric": ((v,), manifest["value_dtype"]),
            "index_to_sample": ((n,), manifest["index_dtype"]),
            "index_to_sample_offsets": ((v + 1,), "<i8"),
        }
        arrays: dict[str, np.ndarray] = {}
        for fname, (shape, dtype) in expect.items():
            fpath = folder / f"{fname}.npy"
            try:
                arr = np.load(fpath, mmap_mode="r")
            except (OSError, ValueError) as err:
                raise CurriculumIndexError(f"{fpath}: missing or corrupt ({err})") from None
            if arr.shape != shape or arr.dtype != np.dtype(dtype):
                raise CurriculumIndexError(
                    f"{fpath}: shape {arr.shape} dtype {arr.dtype}; the manifest says "
                    f"{shape} {np.dtype(dtype)}; the index is corrupt, re-run `leantrain analyze`"
                )
            if verify and file_sha256(fpath) != manifest["files"][fname]["sha256"]:
                raise CurriculumIndexError(
                    f"{fpath}: checksum differs from {mpath}; the file is corrupt or was "
                    "changed after analysis; re-run `leantrain analyze`"
                )
            arrays[fname] = arr
        _check_ranges(folder, arrays, n)
        return cls(
            path=folder,
            manifest=manifest,
            sample_to_metric=arrays["sample_to_metric"],
            values=arrays["index_to_metric"],
            index_to_sample=arrays["index_to_sample"],
            offsets=arrays["index_to_sample_offsets"],
        )

    def check_data(self, dataset: Any) -> None:
        """Refuse `dataset` unless it holds the samples this index was analysed from: the same
        count and the same non-padding tokens in the samples the analyzer took digests of.
        Warns, and checks only the count, where the data cannot be read as the analyzer did
        (or the index records no digests)."""
        from leantrain.curriculum.sources import as_source, probe_digests

        if len(dataset) != self.num_samples:
            raise CurriculumIndexError(
                f"{self.path}: covers {self.num_samples} samples, the dataset has "
                f"{len(dataset)}; was it analysed from other data?"
            )
        data = self.manifest.get("data")
        if not isinstance(data, dict) or not data.get("probes"):
            warnings.warn(
                f"{self.path}: the index records no digests of its data (not written by the "
                "analyzer, or by an older leantrain): only the sample count was checked",
                UserWarning,
                stacklevel=2,
            )
            return
        try:
            source = as_source(dataset, **data["read_as"])
            got = probe_digests(source, [int(i) for i in data["probes"]])
        except (LeantrainError, TypeError, ValueError, KeyError, IndexError) as err:
            warnings.warn(
                f"{self.path}: cannot read the dataset the way the analyzer read its data "
                f"({err}); only the sample count was checked",
                UserWarning,
                stacklevel=2,
            )
            return
        for sample, digest in data["probes"].items():
            if got[sample] != digest:
                raise CurriculumIndexError(
                    f"{self.path}: sample {sample} of the dataset differs from the one "
                    "analysed (other data, or tokenised or padded differently); re-run "
                    "`leantrain analyze` on this dataset, or pass verify_index=False"
                )


def _check_ranges(folder: Path, arrays: dict[str, np.ndarray], n: int) -> None:
    """Sample ids in [0, n), offsets rising strictly from 0 to n, values strictly sorted:
    what the sampler indexes with, checked in chunks."""
    offsets, values = arrays["index_to_sample_offsets"], arrays["index_to_metric"]
    if len(values) and (offsets[0] != 0 or offsets[-1] != n or np.any(np.diff(offsets) <= 0)):
        raise CurriculumIndexError(
            f"{folder / 'index_to_sample_offsets.npy'}: offsets must rise strictly from 0 to "
            f"{n}; the index is corrupt, re-run `leantrain analyze`"
        )
    if len(values) > 1 and not np.all(values[1:] > values[:-1]):
        raise CurriculumIndexError(
            f"{folder / 'index_to_metric.npy'}: values are not strictly sorted; the index is "
            "corrupt, re-run `leantrain analyze`"
        )
    ids = arrays["index_to_sample"]
    for a, b in _chunks(n):
        chunk = ids[a:b]
        if chunk.min() < 0 or chunk.max() >= n:
            raise CurriculumIndexError(
                f"{folder / 'index_to_sample.npy'}: sample ids outside [0, {n}); the index is "
                "corrupt, re-run `leantrain analyze`"
            )
