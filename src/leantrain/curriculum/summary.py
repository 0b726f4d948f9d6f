"""Analyzer summary: a text histogram per metric and a PNG beside each index (matplotlib Agg)."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from leantrain.curriculum.index import CurriculumIndex

__all__ = ["histogram", "summarize"]


def histogram(index: CurriculumIndex, bins: int = 20) -> tuple[np.ndarray, np.ndarray]:
    """Sample counts in `bins` equal-width bins over the metric's range: (counts, edges)."""
    values = np.asarray(index.values, dtype=np.float64)
    counts = np.diff(np.asarray(index.offsets))
    if len(values) == 0:
        return np.zeros(0, np.int64), np.zeros(1)
    lo, hi = float(values[0]), float(values[-1])
    return np.histogram(values, bins=bins, range=(lo, hi if hi > lo else lo + 1), weights=counts)


def _save_png(index: CurriculumIndex, counts: np.ndarray, edges: np.ndarray) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 3.5))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.bar(edges[:-1], counts, width=np.diff(edges), align="edge")
    ax.set_xlabel(index.name)
    ax.set_ylabel("samples")
    ax.set_title(f"{index.name}: {index.num_samples} samples")
    fig.tight_layout()
    fig.savefig(index.path / "histogram.png", dpi=100)


def summarize(indexes: Mapping[str, CurriculumIndex], *, png: bool = True) -> str:
    """Text histograms of every metric (and `histogram.png` in each index folder)."""
    lines = []
    for name, index in indexes.items():
        counts, edges = histogram(index)
        lines.append(
            f"{name}: {index.num_samples} samples, {len(index.values)} distinct values"
            + (f", min {index.values[0]}, max {index.values[-1]}" if len(index.values) else "")
        )
        peak = counts.max() if len(counts) else 0
        for c, lo, hi in zip(counts, edges[:-1], edges[1:], strict=True):
            bar = "#" * int(40 * c / peak + 0.5) if peak else ""
            lines.append(f"  [{lo:>12.6g}, {hi:>12.6g})  {int(c):>10d}  {bar}")
        if png:
            _save_png(index, counts, edges)
    return "\n".join(lines)
