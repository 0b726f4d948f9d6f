"""`DataAnalyzer`: compute difficulty metrics over a dataset once, offline, as map/reduce.

Map: the samples are cut into fixed parts; each worker (a local process, or a `torchrun` rank)
computes its parts batch by batch and writes each finished part atomically (temp folder, then
rename), so an interrupted run resumes where it stopped. Reduce: the parts are merged into one
index folder per metric (see `index.py`). Metrics needing an accumulated table (vocab_rarity
needs the token histogram) run in a second map pass after the first is reduced.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_all_start_methods, get_context
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from leantrain.curriculum.index import (
    CurriculumIndex,
    CurriculumIndexError,
    atomic_write_json,
    distinct_values,
    file_sha256,
    write_index,
)
from leantrain.curriculum.metrics import (
    BUILTIN_METRICS,
    Metric,
    accumulate_arrays,
    prepare_context,
    resolve_metrics,
)
from leantrain.curriculum.sources import TokenSource, as_source

__all__ = ["DataAnalyzer"]

log = logging.getLogger(__name__)
PLAN_VERSION = 1
STAGES = ("accumulate", "values")


class _Concat:
    """Read-only view of several 1-D arrays as one, for `write_index`."""

    def __init__(self, parts: Sequence[np.ndarray]) -> None:
        self.parts = list(parts)
        self.starts = np.cumsum([0] + [len(p) for p in self.parts])
        self.dtype = self.parts[0].dtype if self.parts else np.dtype(np.int64)

    def __len__(self) -> int:
        return int(self.starts[-1])

    def __getitem__(self, key: slice) -> np.ndarray:
        a, b, _ = key.indices(len(self))
        out = []
        for i, part in enumerate(self.parts):
            lo, hi = max(a, self.starts[i]), min(b, self.starts[i + 1])
            if lo < hi:
                out.append(part[lo - self.starts[i] : hi - self.starts[i]])
        return np.concatenate(out) if out else np.zeros(0, self.dtype)


_WORKER: dict[str, Any] = {}


def _init_worker(source: TokenSource, metrics: list[Metric], context: dict[str, Any]) -> None:
    _WORKER.update(source=source, metrics=metrics, context=context)


def _run_part(stage_dir: str, part: int, start: int, end: int, batch_size: int) -> int:
    """Compute one part in a worker process; returns its sample count."""
    return _compute_part(
        _WORKER["source"], _WORKER["metrics"], _WORKER["context"],
        Path(stage_dir), part, start, end, batch_size, None,
    )  # fmt: skip


def _compute_part(
    source: TokenSource,
    metrics: list[Metric],
    context: dict[str, Any],
    stage_dir: Path,
    part: int,
    start: int,
    end: int,
    batch_size: int,
    progress: Callable[[int], Any] | None,
) -> int:
    """Compute metrics for samples [start, end) and write the part folder atomically."""
    tokens_needed = any(m is not BUILTIN_METRICS["seqlen"] for m in metrics)
    values: dict[str, list[np.ndarray]] = {m.name: [] for m in metrics}
    for a in range(start, end, batch_size):
        batch = source.read(a, min(end, a + batch_size), tokens_needed=tokens_needed)
        for m in metrics:
            out = m.compute(batch, context)
            if m.metric_type == "accumulate_value_over_samples" and values[m.name]:
                out = accumulate_arrays([values[m.name][0], out], m.reduce)
                values[m.name] = []
            values[m.name].append(out)
        if progress is not None:
            progress(len(batch))
    tmp = stage_dir / f".part-{part:06d}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    checks = {}
    for m in metrics:
        chunks = values[m.name]
        arr = np.concatenate(chunks) if chunks else np.zeros(0, m.output_dtype())
        if m.metric_type == "single_value_per_sample":
            arr = arr.astype(m.output_dtype(arr))
        np.save(tmp / f"{m.name}.npy", arr)
        checks[m.name] = file_sha256(tmp / f"{m.name}.npy")
    atomic_write_json(tmp / "done.json", {"start": start, "end": end, "sha256": checks})
    try:
        os.replace(tmp, stage_dir / f"part-{part:06d}")
    except OSError:  # another worker finished the same part first
        shutil.rmtree(tmp, ignore_errors=True)
    return end - start


class DataAnalyzer:
    """Compute difficulty metrics for every sample and write memmapped indexes per metric.

    `dataset`: a `datasets.Dataset`, a map-style torch `Dataset`, a `(tokens, offsets)` pair of
    arrays (or .npy paths) or a `TokenSource`. `metrics`: built-in names (`seqlen`,
    `vocab_rarity`, `seqlen_vocab_rarity`) or `Metric` objects. `vocab_size` (required by the
    rarity metrics): the tokenizer's `len()`; the token histogram has vocab_size + 1 bins, as
    in DeepSpeed's reference analysis. `num_workers` local processes
    (`mp_context`, default fork where available) run the map stage; for many nodes call `run_map(worker_id, num_workers)` on every rank
    (or use `leantrain analyze` under torchrun) and `run_reduce()` once all parts exist.
    """

    def __init__(
        self,
        dataset: Any,
        output_dir: str | Path,
        metrics: Iterable[str | Metric] = ("seqlen",),
        *,
        column: str = "input_ids",
        mask_column: str | None = "attention_mask",
        pad_token_id: int | None = None,
        batch_size: int = 8192,
        num_workers: int = 1,
        part_size: int | None = None,
        max_distinct_values: int = 10_000,
        num_buckets: int | None = None,
        max_seq_len: int | None = None,
        show_progress: bool = True,
        mp_context: str | None = None,
        vocab_size: int | None = None,
    ) -> None:
        self.source = as_source(
            dataset, column=column, mask_column=mask_column, pad_token_id=pad_token_id
        )
        self.output_dir = Path(output_dir)
        self.vocab_size = vocab_size
        self.metrics = resolve_metrics(tuple(metrics), vocab_size=vocab_size)
        self.batch_size = batch_size
        self.num_workers = max(1, num_workers)
        self.max_distinct_values = max_distinct_values
        self.num_buckets = num_buckets
        self.max_seq_len = max_seq_len
        self.show_progress = show_progress
        methods = get_all_start_methods()
        self.mp_context = mp_context or ("fork" if "fork" in methods else "spawn")
        n = len(self.source)
        self.part_size = part_size or max(batch_size, math.ceil(n / (self.num_workers * 8)))
        self.work_dir = self.output_dir / "_work"
        self.timings: dict[str, float] = {}

    # ---- plan -------------------------------------------------------------------------------
    def stage_metrics(self, stage: str) -> list[Metric]:
        """The metrics computed in `stage` ('accumulate' or 'values')."""
        kind = (
            "accumulate_value_over_samples" if stage == "accumulate" else "single_value_per_sample"
        )
        return [m for m in self.metrics if m.metric_type == kind]

    def _parts(self) -> list[tuple[int, int, int]]:
        n = len(self.source)
        return [
            (i, a, min(n, a + self.part_size)) for i, a in enumerate(range(0, n, self.part_size))
        ]

    def prepare(self) -> None:
        """Create the work folder; keep finished parts only if they come from the same data,
        metrics and cut (else start over). Call once before `run_map` on many workers."""
        plan = {
            "version": PLAN_VERSION,
            "source_fingerprint": self.source.fingerprint(),
            "num_samples": len(self.source),
            "part_size": self.part_size,
            "metrics": [m.name for m in self.metrics],
            "max_seq_len": self.max_seq_len,
            "vocab_size": self.vocab_size,
        }
        path = self.work_dir / "plan.json"
        if path.is_file():
            try:
                old = json.loads(path.read_text(encoding="utf-8"))
            except json.JSONDecodeError:
                old = None
            if old == plan:
                return
            log.warning("%s: unfinished analysis of other data or settings; starting over", path)
            shutil.rmtree(self.work_dir, ignore_errors=True)
        self.work_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_json(path, plan)

    def _done_parts(self, stage: str) -> set[int]:
        done = set()
        for part_dir in (self.work_dir / stage).glob("part-*"):
            if (part_dir / "done.json").is_file():
                done.add(int(part_dir.name.split("-")[1]))
        return done

    def _context(self, stage: str) -> dict[str, Any]:
        if stage == "accumulate":
            return {}
        accumulated = {}
        for m in self.stage_metrics("accumulate"):
            accumulated[m.name] = np.load(self.output_dir / m.name / "accumulated.npy")
        return prepare_context(accumulated, self.max_seq_len)

    # ---- map --------------------------------------------------------------------------------
    def run_map(self, stage: str, worker_id: int = 0, num_workers: int = 1) -> int:
        """Compute this worker's unfinished parts of `stage` in this process; samples done."""
        metrics = self.stage_metrics(stage)
        stage_dir = self.work_dir / stage
        stage_dir.mkdir(parents=True, exist_ok=True)
        done = self._done_parts(stage)
        todo = [p for p in self._parts() if p[0] % num_workers == worker_id and p[0] not in done]
        context = self._context(stage)
        bar = self._bar(stage, sum(b - a for _, a, b in todo))
        total = 0
        for part, a, b in todo:
            total += _compute_part(
                self.source, metrics, context, stage_dir, part, a, b, self.batch_size, bar.update
            )
        bar.close()
        return total

    def _map_pool(self, stage: str) -> None:
        """All unfinished parts of `stage` on a local pool of `num_workers` processes."""
        if self.num_workers == 1:
            self.run_map(stage)
            return
        stage_dir = self.work_dir / stage
        stage_dir.mkdir(parents=True, exist_ok=True)
        done = self._done_parts(stage)
        todo = [p for p in self._parts() if p[0] not in done]
        if not todo:
            return
        bar = self._bar(stage, sum(b - a for _, a, b in todo))
        ctx = get_context(self.mp_context)
        init = (self.source, self.stage_metrics(stage), self._context(stage))
        with ProcessPoolExecutor(self.num_workers, ctx, _init_worker, init) as pool:
            futures = [
                pool.submit(_run_part, str(stage_dir), part, a, b, self.batch_size)
                for part, a, b in todo
            ]
            for fut in as_completed(futures):
                bar.update(fut.result())
        bar.close()

    def _bar(self, stage: str, total: int) -> Any:
        return tqdm(
            total=total, unit="samples", unit_scale=True, desc=f"analyze {stage}",
            disable=not self.show_progress, smoothing=0.1,
        )  # fmt: skip

    # ---- reduce -----------------------------------------------------------------------------
    def _part_arrays(self, stage: str, name: str) -> list[np.ndarray]:
        parts = self._parts()
        missing = sorted({p for p, _, _ in parts} - self._done_parts(stage))
        if missing:
            raise CurriculumIndexError(
                f"{self.work_dir / stage}: parts {missing[:8]} of {len(parts)} are not finished; "
                "run the map stage on every worker first"
            )
        return [
            np.load(self.work_dir / stage / f"part-{p:06d}" / f"{name}.npy", mmap_mode="r")
            for p, _, _ in parts
        ]

    def run_reduce(self, stage: str) -> None:
        """Merge the finished parts of `stage` into the output folder."""
        fingerprint = self.source.fingerprint()
        for m in self.stage_metrics(stage):
            arrays = self._part_arrays(stage, m.name)
            if stage == "accumulate":
                total = accumulate_arrays([np.asarray(a) for a in arrays], m.reduce)
                folder = self.output_dir / m.name
                folder.mkdir(parents=True, exist_ok=True)
                np.save(folder / "accumulated.npy", total)
                atomic_write_json(
                    folder / "manifest.json",
                    {
                        "version": 1, "metric": m.name, "metric_type": m.metric_type,
                        "source_fingerprint": fingerprint, "vocab_size": self.vocab_size,
                        "sha256": file_sha256(folder / "accumulated.npy"),
                    },
                )  # fmt: skip
                continue
            values = _Concat(arrays)
            edges = self._bucket_edges(m.name, values)
            extra: dict[str, Any] = {"metric_type": m.metric_type}
            if edges is not None:
                extra["bucket_edges"] = edges.tolist()
            write_index(
                self.output_dir, m.name, values, source_fingerprint=fingerprint,
                bucket_edges=edges, extra=extra,
            )  # fmt: skip

    def _bucket_edges(self, name: str, values: _Concat) -> np.ndarray | None:
        """Quantile bucket upper edges when asked and needed; a warning when values are many."""
        distinct, counts = distinct_values(values)
        if self.num_buckets and len(distinct) > self.num_buckets:
            cum = np.cumsum(counts)
            targets = np.linspace(cum[-1] / self.num_buckets, cum[-1], self.num_buckets)
            edges = np.unique(distinct[np.minimum(np.searchsorted(cum, targets), len(cum) - 1)])
            return edges if edges[-1] == distinct[-1] else np.append(edges, distinct[-1])
        if len(distinct) > self.max_distinct_values:
            warnings.warn(
                f"metric {name!r}: {len(distinct)} distinct values (over max_distinct_values="
                f"{self.max_distinct_values}); each difficulty rise then admits few samples. "
                "Pass num_buckets=N to group values into N quantile buckets",
                UserWarning,
                stacklevel=3,
            )
        return None

    def _accumulate_finished(self) -> bool:
        fingerprint = self.source.fingerprint()
        for m in self.stage_metrics("accumulate"):
            path = self.output_dir / m.name / "manifest.json"
            try:
                manifest = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, json.JSONDecodeError):
                return False
            if manifest.get("source_fingerprint") != fingerprint:
                return False
            if manifest.get("vocab_size") != self.vocab_size:
                return False
        return True

    # ---- all --------------------------------------------------------------------------------
    def run(self) -> dict[str, CurriculumIndex]:
        """Map and reduce every stage locally (resuming finished parts); the loaded indexes."""
        self.output_dir.mkdir(parents=True, exist_ok=True)
        self.prepare()
        for stage in STAGES:
            if not self.stage_metrics(stage):
                continue
            if stage == "accumulate" and self._accumulate_finished():
                continue
            t0 = time.perf_counter()
            self._map_pool(stage)
            self.timings[f"map_{stage}"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            self.run_reduce(stage)
            self.timings[f"reduce_{stage}"] = time.perf_counter() - t0
        return self.finish()

    def finish(self) -> dict[str, CurriculumIndex]:
        """Write the summary (text + PNG per metric), drop the parts, load the indexes."""
        from leantrain.curriculum.summary import summarize

        indexes = {
            m.name: CurriculumIndex.load(self.output_dir / m.name, verify=False)
            for m in self.stage_metrics("values")
        }
        text = summarize(indexes)
        (self.output_dir / "summary.txt").write_text(text, encoding="utf-8")
        if self.show_progress:
            print(text)
        atomic_write_json(
            self.output_dir / "analysis.json",
            {
                "metrics": sorted(indexes),
                "num_samples": len(self.source),
                "source_fingerprint": self.source.fingerprint(),
                "timings_s": self.timings,
            },
        )
        shutil.rmtree(self.work_dir, ignore_errors=True)
        return indexes
