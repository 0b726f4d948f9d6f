"""Built-in metrics against DeepSpeed's reference formulas, on hand-computable inputs."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from leantrain.curriculum import DataAnalyzer, Metric
from leantrain.errors import ConfigError


def test_vocab_rarity_counts_the_whole_vocabulary_plus_one(tmp_path: Path) -> None:
    """The reference bins ids 0 .. V (minlength V + 1) and replaces zero counts by 1, so every
    unused id, those above the largest one seen included, adds one to the total."""
    rows = [[0, 1], [1]]
    got = DataAnalyzer(rows, tmp_path, ["vocab_rarity"], vocab_size=4, show_progress=False).run()
    freq = np.array([1, 2, 1, 1, 1], np.float64)  # counts of ids 0..4, zeros replaced by 1
    table = -np.log(freq / freq.sum())  # total 6, not 3
    assert list(got["vocab_rarity"].sample_to_metric) == [
        math.floor(table[0] + table[1]),  # floor(ln 6 + ln 3) = 2
        math.floor(table[1]),  # floor(ln 3) = 1
    ]
    hist = np.load(tmp_path / "token_histogram" / "accumulated.npy")
    assert list(hist) == [1, 2, 0, 0, 0]


def test_vocab_size_is_required_and_ids_are_range_checked(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"vocab_size: required for \['vocab_rarity'\]"):
        DataAnalyzer([[1]], tmp_path, ["vocab_rarity"])
    with pytest.raises(ConfigError, match=r"vocab_size: sample 2 holds token id 7, outside"):
        DataAnalyzer(
            [[1], [2, 3], [4, 7]], tmp_path, ["vocab_rarity"], vocab_size=5, show_progress=False
        ).run()


def _inverse_length(tokens: np.ndarray) -> float:
    return 1.0 / len(tokens) if len(tokens) else float("nan")


def test_a_non_finite_metric_value_names_the_sample(tmp_path: Path) -> None:
    """NaN has no place in a sorted index: it used to be written, then fail its own load."""
    metric = Metric("inverse_length", _inverse_length)
    with pytest.raises(ConfigError, match=r"'inverse_length': value nan for sample 2"):
        DataAnalyzer([[1], [1, 2], [], [3]], tmp_path, [metric], show_progress=False).run()
