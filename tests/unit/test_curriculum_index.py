"""Lazy permutations, index write/load round trips, corruption detection, bucketing."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from leantrain.curriculum import (
    CurriculumIndex,
    CurriculumIndexError,
    DataAnalyzer,
    Metric,
    write_index,
)
from leantrain.curriculum.permute import permute


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 3000), key=st.integers(0, 2**64 - 1))
def test_permute_is_a_bijection(n: int, key: int) -> None:
    out = permute(np.arange(n), np.full(n, n), np.full(n, key, np.uint64))
    assert np.array_equal(np.sort(out), np.arange(n))


def test_permute_keys_differ_and_mixed_sizes() -> None:
    a = permute(np.arange(100), np.full(100, 100), np.full(100, 1, np.uint64))
    b = permute(np.arange(100), np.full(100, 100), np.full(100, 2, np.uint64))
    assert not np.array_equal(a, b)
    sizes = np.array([5] * 5 + [7] * 7)
    offs = np.concatenate([np.arange(5), np.arange(7)])
    out = permute(offs, sizes, np.array([9] * 12, np.uint64))
    assert sorted(out[:5]) == list(range(5)) and sorted(out[5:]) == list(range(7))
    assert np.array_equal(out[:5], permute(np.arange(5), np.full(5, 5), np.full(5, 9, np.uint64)))


def test_index_round_trip(tmp_path: Path) -> None:
    values = np.random.default_rng(0).integers(0, 50, 10_001).astype(np.int32)
    write_index(tmp_path, "m", values, source_fingerprint="abc")
    index = CurriculumIndex.load(tmp_path / "m")
    assert np.array_equal(index.sample_to_metric, values)
    assert np.array_equal(index.values, np.unique(values))
    for v in (0, 17, 49):
        assert np.array_equal(index.samples_with_value(v), np.flatnonzero(values == v))
    assert index.end_for_value(17) == int((values <= 17).sum())
    assert index.end_for_percentile(100, 100) == len(values)
    assert index.end_for_percentile(10, 100) == (len(values) // 100) * 10
    # the config may name the folder, a file in it or a DeepSpeed-style prefix
    for path in (tmp_path / "m", tmp_path / "m" / "index_to_sample.npy", tmp_path / "m" / "x"):
        assert CurriculumIndex.load(path, verify=False).num_samples == len(values)
    assert index.manifest["source_fingerprint"] == "abc"


def test_corrupt_or_unfinished_index_names_the_file(tmp_path: Path) -> None:
    write_index(tmp_path, "m", np.arange(1000, dtype=np.int64) % 7)
    target = tmp_path / "m" / "index_to_sample.npy"
    raw = bytearray(target.read_bytes())
    raw[-5] ^= 0xFF
    target.write_bytes(bytes(raw))
    with pytest.raises(CurriculumIndexError, match=r"index_to_sample\.npy: checksum"):
        CurriculumIndex.load(tmp_path / "m")
    target.write_bytes(bytes(raw[:-40]))  # truncated
    with pytest.raises(CurriculumIndexError, match=r"index_to_sample\.npy"):
        CurriculumIndex.load(tmp_path / "m", verify=False)
    manifest = tmp_path / "m" / "manifest.json"
    data = json.loads(manifest.read_text())
    manifest.write_text(json.dumps(data | {"version": 99}))
    with pytest.raises(CurriculumIndexError, match="version 99"):
        CurriculumIndex.load(tmp_path / "m")
    manifest.unlink()  # as if the run died before the manifest was written
    with pytest.raises(CurriculumIndexError, match="no finished difficulty index"):
        CurriculumIndex.load(tmp_path / "m")


def test_many_distinct_values_warn_or_bucket(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    lengths = rng.integers(1, 400, 5000)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    tokens = np.zeros(int(offsets[-1]), np.int32)
    kw = {"show_progress": False, "max_distinct_values": 100}
    with pytest.warns(UserWarning, match="num_buckets"):
        DataAnalyzer((tokens, offsets), tmp_path / "a", ["seqlen"], **kw).run()
    index = DataAnalyzer((tokens, offsets), tmp_path / "b", ["seqlen"], num_buckets=16, **kw).run()
    index = index["seqlen"]
    assert len(index.values) <= 16
    stored = np.asarray(index.sample_to_metric)
    assert (stored >= lengths).all()  # a bucket's value is its upper edge: never admits more
    assert set(np.unique(stored)) == set(index.values.tolist())


def _mean_token(tokens: np.ndarray) -> float:
    return float(tokens.mean()) if len(tokens) else 0.0


def _bigram_count(tokens: np.ndarray) -> np.ndarray:
    return np.bincount(np.asarray(tokens[:-1] * 10 + tokens[1:], np.int64), minlength=100)


@pytest.mark.parametrize("workers", [1, 2])
def test_user_metrics_single_and_accumulated(tmp_path: Path, workers: int) -> None:
    rng = np.random.default_rng(2)
    lengths = rng.integers(1, 30, 700)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    tokens = rng.integers(0, 10, int(offsets[-1])).astype(np.int32)
    metrics = [
        Metric("mean_token", _mean_token),
        Metric("bigrams", _bigram_count, "accumulate_value_over_samples"),
    ]
    out = DataAnalyzer(
        (tokens, offsets), tmp_path, metrics, num_workers=workers, batch_size=64,
        show_progress=False,
    ).run()  # fmt: skip
    samples = [tokens[offsets[i] : offsets[i + 1]] for i in range(700)]
    assert np.allclose(out["mean_token"].sample_to_metric, [s.mean() for s in samples])
    want = sum(_bigram_count(s) for s in samples)
    assert np.array_equal(np.load(tmp_path / "bigrams" / "accumulated.npy"), want)
