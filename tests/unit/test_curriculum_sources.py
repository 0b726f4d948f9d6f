"""Token sources: every dataset form gives the same metrics, empty samples included."""

from __future__ import annotations

from pathlib import Path

import datasets
import numpy as np
import pytest
import torch

from leantrain.curriculum import DataAnalyzer
from leantrain.errors import ConfigError

ROWS = [[5, 2, 7], [], [2, 2], [9], []]


def _run(data: object, out: Path) -> dict[str, np.ndarray]:
    metrics = ["seqlen", "vocab_rarity"]
    got = DataAnalyzer(data, out, metrics, vocab_size=10, show_progress=False).run()
    return {name: np.asarray(index.sample_to_metric) for name, index in got.items()}


def test_zero_length_samples_work_in_every_dataset_form(tmp_path: Path) -> None:
    """A list of lists with empty samples gives what a datasets.Dataset and flat arrays give:
    metric 0 for the empty ones, not an IndexError from a float-typed empty batch."""
    hf = _run(datasets.Dataset.from_dict({"input_ids": ROWS}), tmp_path / "hf")
    flat = (
        np.asarray([t for row in ROWS for t in row], np.int64),
        np.concatenate([[0], np.cumsum([len(r) for r in ROWS])]),
    )
    for name, data in (
        ("lists", ROWS),
        ("tensors", [torch.tensor(r, dtype=torch.long) for r in ROWS]),
        ("flat", flat),
    ):
        got = _run(data, tmp_path / name)
        for metric in hf:
            assert np.array_equal(got[metric], hf[metric]), (name, metric)
    assert list(hf["seqlen"]) == [3, 0, 2, 1, 0]
    assert hf["vocab_rarity"][1] == hf["vocab_rarity"][4] == 0
    only_empty = _run([[], []], tmp_path / "empty")  # no token at all: still works
    assert list(only_empty["vocab_rarity"]) == [0, 0]


def test_non_integer_token_ids_name_the_sample(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"sample 1: token ids of dtype float64"):
        _run([[1, 2], [0.5, 3.0]], tmp_path)
