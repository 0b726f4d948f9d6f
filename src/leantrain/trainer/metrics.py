"""The official metrics of the GLUE tasks (accuracy, F1, Matthews correlation, Pearson and
Spearman correlation), in numpy: scipy and scikit-learn are not dependencies."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["glue_metrics", "matthews_corr", "pearson_spearman"]


def matthews_corr(pred: np.ndarray, label: np.ndarray) -> float:
    """Matthews correlation of binary predictions (0 when undefined), CoLA's metric."""
    tp = float(np.sum((pred == 1) & (label == 1)))
    tn = float(np.sum((pred == 0) & (label == 0)))
    fp = float(np.sum((pred == 1) & (label == 0)))
    fn = float(np.sum((pred == 0) & (label == 1)))
    denom = np.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    return float((tp * tn - fp * fn) / denom) if denom > 0 else 0.0


def _rank(x: np.ndarray) -> np.ndarray:
    """Ranks with ties averaged (as scipy.stats.rankdata)."""
    order = np.argsort(x, kind="mergesort")
    ranks = np.empty(len(x), dtype=np.float64)
    ranks[order] = np.arange(1, len(x) + 1)
    _, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    sums = np.bincount(inverse, weights=ranks)
    return sums[inverse] / counts[inverse]


def pearson_spearman(pred: np.ndarray, label: np.ndarray) -> tuple[float, float]:
    """Pearson and Spearman correlation, STS-B's metrics (0 when a side is constant)."""

    def corr(a: np.ndarray, b: np.ndarray) -> float:
        a, b = a - a.mean(), b - b.mean()
        denom = np.sqrt((a * a).sum() * (b * b).sum())
        return float((a * b).sum() / denom) if denom > 0 else 0.0

    pred, label = pred.astype(np.float64), label.astype(np.float64)
    return corr(pred, label), corr(_rank(pred), _rank(label))


def glue_metrics(names: Sequence[str], pred: np.ndarray, label: np.ndarray) -> dict[str, float]:
    """The named GLUE metrics of predictions (class ids, or scores for STS-B) against labels."""
    out: dict[str, float] = {}
    if "accuracy" in names:
        out["accuracy"] = float(np.mean(pred == label))
    if "f1" in names:
        tp = float(np.sum((pred == 1) & (label == 1)))
        denom = float(np.sum(pred == 1) + np.sum(label == 1))
        out["f1"] = 2 * tp / denom if denom else 0.0
    if "matthews_corr" in names:
        out["matthews_corr"] = matthews_corr(pred, label)
    if "pearson" in names or "spearman" in names:
        out["pearson"], out["spearman"] = pearson_spearman(pred, label)
    return out
