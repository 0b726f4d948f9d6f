"""`DataAnalyzer`: compute difficulty metrics over a dataset once, offline, as map/reduce.

Map: the samples are cut into fixed parts; each worker (a local process, or a `torchrun` rank)
computes its parts batch by batch and writes each finished part atomically (`parts.py`), so an
interrupted run resumes where it stopped, and a part is reused only once its files match their
checksums. Reduce: the parts are merged into one index folder per metric (see `index.py`).
Metrics needing an accumulated table (vocab_rarity needs the token histogram) run in a second
map pass after the first is reduced; the table too is verified against its checksum before it
is reused. Local workers never outlive the analysis (`pool.py`); writes name the file and the
cause when they fail (`storage.py`).
"""

from __future__ import annotations

import json
import logging
import math
import time
import warnings
from collections.abc import Iterable, Sequence
from multiprocessing import get_all_start_methods
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from leantrain.curriculum.index import (
    CurriculumIndex,
    CurriculumIndexError,
    distinct_values,
    write_index,
)
from leantrain.curriculum.metrics import Metric, accumulate_arrays, prepare_context, resolve_metrics
from leantrain.curriculum.parts import compute_part, part_dir, verified_parts
from leantrain.curriculum.pool import run_pool
from leantrain.curriculum.sources import TokenSource, as_source, probe_digests
from leantrain.curriculum.storage import file_sha256, save_npy
from leantrain.files import atomic_write_json, discard, sweep_stale, writing

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
    return compute_part(
        _WORKER["source"], _WORKER["metrics"], _WORKER["context"],
        Path(stage_dir), part, start, end, batch_size,
    )  # fmt: skip


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
        self.read_as = {"column": column, "mask_column": mask_column, "pad_token_id": pad_token_id}
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
        metrics and cut (else start over); remove what killed runs of this host left behind.
        Call once before `run_map` on many workers."""
        plan = {
            "version": PLAN_VERSION,
            "source_fingerprint": self.source.fingerprint(),
            "num_samples": len(self.source),
            "part_size": self.part_size,
            "metrics": [m.name for m in self.metrics],
            "max_seq_len": self.max_seq_len,
            "vocab_size": self.vocab_size,
        }
        self._sweep()
        path = self.work_dir / "plan.json"
        if path.is_file():
            try:
                old = json.loads(path.read_text(encoding="utf-8"))
            except json.JSONDecodeError:
                old = None
            if old == plan:
                return
            log.warning("%s: unfinished analysis of other data or settings; starting over", path)
            discard(self.work_dir)
        elif self.work_dir.exists():  # a folder without its plan: nothing in it can be trusted
            discard(self.work_dir)
        with writing(self.work_dir):
            self.work_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_json(path, plan)

    def _sweep(self) -> None:
        folders = [self.output_dir, self.work_dir]
        for parent in folders[:]:
            if parent.is_dir():
                folders += [p for p in parent.iterdir() if p.is_dir() and p.name[0] != "."]
        for folder in folders:
            for entry in sweep_stale(folder):
                log.info("%s: removed, left by a process that died", entry)

    def _done_parts(self, stage: str) -> set[int]:
        """Parts of `stage` whose files match their done.json; the others are removed."""
        bounds = {p: (a, b) for p, a, b in self._parts()}
        names = [m.name for m in self.stage_metrics(stage)]
        return verified_parts(self.work_dir / stage, bounds, names)

    def _load_accumulated(self, m: Metric) -> np.ndarray:
        """The reduced table of accumulate metric `m`, once its manifest and checksum agree
        with this analysis."""
        folder = self.output_dir / m.name
        path, mpath = folder / "accumulated.npy", folder / "manifest.json"
        try:
            manifest = json.loads(mpath.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as err:
            raise CurriculumIndexError(f"{mpath}: unreadable manifest ({err})") from None
        if manifest.get("source_fingerprint") != self.source.fingerprint():
            raise CurriculumIndexError(f"{mpath}: computed from other data")
        if manifest.get("vocab_size") != self.vocab_size:
            raise CurriculumIndexError(
                f"{mpath}: vocab_size {manifest.get('vocab_size')}, this analysis uses "
                f"{self.vocab_size}"
            )
        try:
            ok = file_sha256(path) == manifest.get("sha256")
        except OSError as err:
            raise CurriculumIndexError(f"{path}: unreadable ({err})") from None
        if not ok:
            raise CurriculumIndexError(
                f"{path}: checksum differs from {mpath}; the file is corrupt or was changed"
            )
        return np.load(path)

    def _context(self, stage: str) -> dict[str, Any]:
        if stage == "accumulate":
            return {}
        accumulated = {m.name: self._load_accumulated(m) for m in self.stage_metrics("accumulate")}
        return prepare_context(accumulated, self.max_seq_len)

    # ---- map --------------------------------------------------------------------------------
    def _todo(self, stage: str, worker_id: int = 0, num_workers: int = 1) -> list[tuple]:
        (self.work_dir / stage).mkdir(parents=True, exist_ok=True)
        done = self._done_parts(stage)
        return [p for p in self._parts() if p[0] % num_workers == worker_id and p[0] not in done]

    def run_map(self, stage: str, worker_id: int = 0, num_workers: int = 1) -> int:
        """Compute this worker's unfinished parts of `stage` in this process; samples done."""
        metrics = self.stage_metrics(stage)
        todo = self._todo(stage, worker_id, num_workers)
        context = self._context(stage)
        bar = self._bar(stage, sum(b - a for _, a, b in todo))
        total = 0
        for part, a, b in todo:
            total += compute_part(
                self.source, metrics, context, self.work_dir / stage, part, a, b,
                self.batch_size, bar.update,
            )  # fmt: skip
        bar.close()
        return total

    def _map_pool(self, stage: str) -> None:
        """All unfinished parts of `stage` on a local pool of `num_workers` processes."""
        if self.num_workers == 1:
            self.run_map(stage)
            return
        todo = self._todo(stage)
        if not todo:
            return
        bar = self._bar(stage, sum(b - a for _, a, b in todo))
        init = (self.source, self.stage_metrics(stage), self._context(stage))
        stage_dir = str(self.work_dir / stage)
        tasks = [(stage_dir, part, a, b, self.batch_size) for part, a, b in todo]
        run_pool(
            self.num_workers, self.mp_context, _init_worker, init, _run_part, tasks, bar.update
        )
        bar.close()

    def _bar(self, stage: str, total: int) -> Any:
        return tqdm(
            total=total, unit="samples", unit_scale=True, desc=f"analyze {stage}",
            disable=not self.show_progress, smoothing=0.1,
        )  # fmt: skip

    # ---- reduce -----------------------------------------------------------------------------
    def _part_arrays(self, stage: str, name: str, done: set[int]) -> list[np.ndarray]:
        parts = self._parts()
        missing = sorted({p for p, _, _ in parts} - done)
        if missing:
            raise CurriculumIndexError(
                f"{self.work_dir / stage}: parts {missing[:8]} of {len(parts)} are not finished "
                "(or were removed as inconsistent); run the map stage on every worker first"
            )
        stage_dir = self.work_dir / stage
        return [np.load(part_dir(stage_dir, p) / f"{name}.npy", mmap_mode="r") for p, _, _ in parts]

    def run_reduce(self, stage: str) -> None:
        """Merge the finished parts of `stage` into the output folder."""
        fingerprint = self.source.fingerprint()
        done = self._done_parts(stage)
        for m in self.stage_metrics(stage):
            arrays = self._part_arrays(stage, m.name, done)
            if stage == "accumulate":
                total = accumulate_arrays([np.asarray(a) for a in arrays], m.reduce)
                folder = self.output_dir / m.name
                with writing(folder):
                    folder.mkdir(parents=True, exist_ok=True)
                save_npy(folder / "accumulated.npy", total)
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
            extra: dict[str, Any] = {"metric_type": m.metric_type, "data": self._data_record()}
            if edges is not None:
                extra["bucket_edges"] = edges.tolist()
            write_index(
                self.output_dir, m.name, values, source_fingerprint=fingerprint,
                bucket_edges=edges, extra=extra,
            )  # fmt: skip

    def _data_record(self) -> dict[str, Any]:
        """What ties an index to its data: how samples were read and digests of a few of them
        (`CurriculumIndex.check_data` compares them with the training dataset)."""
        return {"read_as": self.read_as, "probes": probe_digests(self.source)}

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
        """Whether every accumulated table of a previous run can be reused (verified)."""
        for m in self.stage_metrics("accumulate"):
            if not (self.output_dir / m.name / "manifest.json").is_file():
                return False
            try:
                self._load_accumulated(m)
            except CurriculumIndexError as err:
                log.warning("%s; computing it again", err)
                return False
        return True

    # ---- all --------------------------------------------------------------------------------
    def run(self) -> dict[str, CurriculumIndex]:
        """Map and reduce every stage locally (resuming finished parts); the loaded indexes."""
        with writing(self.output_dir):
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
        summary = self.output_dir / "summary.txt"
        with writing(summary):
            summary.write_text(text, encoding="utf-8")
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
        # renamed aside first: a kill while deleting never leaves a half-deleted _work behind
        discard(self.work_dir, must_delete=False)
        return indexes
