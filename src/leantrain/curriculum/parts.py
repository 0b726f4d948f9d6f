"""Map parts of the analyzer: the metric values of one fixed range of samples per folder.

A part is computed in a temp folder and renamed into place with its `done.json` (range and a
sha256 per file) inside, so a finished part appears whole. A part is trusted only when its
`done.json` matches the plan and every file matches its checksum; anything else (a folder a
kill left half-deleted, flipped bytes) is removed and computed again.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from leantrain.curriculum.metrics import BUILTIN_METRICS, Metric, accumulate_arrays
from leantrain.curriculum.sources import TokenSource
from leantrain.curriculum.storage import file_sha256, save_npy
from leantrain.files import atomic_write_json, discard, temp_path, write_error, writing

__all__ = ["compute_part", "part_dir", "part_problem", "verified_parts"]

log = logging.getLogger(__name__)


def part_dir(stage_dir: Path, part: int) -> Path:
    """The folder of part `part`."""
    return stage_dir / f"part-{part:06d}"


def part_problem(folder: Path, start: int, end: int, names: Sequence[str]) -> str | None:
    """Why the part in `folder` cannot be trusted for samples [start, end) of metrics `names`
    (None when it can): its done.json and each file's checksum are checked."""
    try:
        done = json.loads((folder / "done.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        return f"no readable done.json ({err})"
    if not isinstance(done, dict) or (done.get("start"), done.get("end")) != (start, end):
        return f"done.json does not describe samples [{start}, {end})"
    sums = done.get("sha256")
    if not isinstance(sums, dict) or sorted(sums) != sorted(names):
        return f"done.json lists metrics {sorted(sums or {})}, expected {sorted(names)}"
    for name in names:
        path = folder / f"{name}.npy"
        try:
            actual = file_sha256(path)
        except OSError as err:
            return f"{path.name} unreadable ({err})"
        if actual != sums[name]:
            return f"{path.name} differs from its checksum in done.json"
    return None


def verified_parts(
    stage_dir: Path, bounds: dict[int, tuple[int, int]], names: Sequence[str]
) -> set[int]:
    """The parts of `bounds` (part -> (start, end)) in `stage_dir` that pass `part_problem`;
    the folders of the others are removed, so they can be computed again."""
    done = set()
    for folder in sorted(stage_dir.glob("part-*")):
        try:
            part = int(folder.name.split("-")[1])
        except (IndexError, ValueError):
            continue
        if part not in bounds:
            continue
        problem = part_problem(folder, *bounds[part], names)
        if problem is None:
            done.add(part)
        else:
            log.warning("%s: %s; removing it, the part will be computed again", folder, problem)
            discard(folder)
    return done


def compute_part(
    source: TokenSource,
    metrics: list[Metric],
    context: dict[str, Any],
    stage_dir: Path,
    part: int,
    start: int,
    end: int,
    batch_size: int,
    progress: Callable[[int], Any] | None = None,
) -> int:
    """Compute metrics for samples [start, end), batch by batch, and write the part folder
    atomically; returns the number of samples."""
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
    final = part_dir(stage_dir, part)
    tmp = temp_path(final)
    discard(tmp)
    with writing(tmp):
        tmp.mkdir(parents=True)
    checks = {}
    for m in metrics:
        chunks = values[m.name]
        arr = np.concatenate(chunks) if chunks else np.zeros(0, m.output_dtype())
        if m.metric_type == "single_value_per_sample":
            arr = arr.astype(m.output_dtype(arr))
        save_npy(tmp / f"{m.name}.npy", arr)
        checks[m.name] = file_sha256(tmp / f"{m.name}.npy")
    atomic_write_json(tmp / "done.json", {"start": start, "end": end, "sha256": checks})
    names = [m.name for m in metrics]
    if final.exists() and part_problem(final, start, end, names) is not None:
        discard(final)  # a leftover a kill made inconsistent
    try:
        os.replace(tmp, final)
    except OSError as err:
        if part_problem(final, start, end, names) is not None:
            raise write_error(final, err) from err
        discard(tmp)  # another worker finished the same part first
    return end - start
