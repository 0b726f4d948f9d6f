"""CurriculumSampler properties on synthetic indexes, for many schedules and batch shapes."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from leantrain.curriculum import (
    CurriculumIndex,
    CurriculumSampler,
    CurriculumScheduler,
    write_index,
)
from leantrain.errors import ConfigError, LeantrainError, StateError

N = 600


@pytest.fixture(scope="module")
def index(tmp_path_factory: pytest.TempPathFactory) -> CurriculumIndex:
    values = np.random.default_rng(3).integers(1, 100, N).astype(np.int16)
    return CurriculumIndex.load(write_index(tmp_path_factory.mktemp("idx"), "m", values))


def _cfg(lo: int, hi: int, total: int, step: int, difficulty_type: str = "value") -> dict:
    metric = {
        "index_to_sample_path": "given-directly",
        "difficulty_type": difficulty_type,
        "min_difficulty": lo,
        "max_difficulty": hi,
        "schedule_type": "fixed_linear",
        "schedule_config": {"total_curriculum_step": total, "difficulty_step": step},
    }
    sampling = {
        "enabled": True,
        "curriculum_learning": {"enabled": True, "curriculum_metrics": {"m": metric}},
    }
    return {"data_efficiency": {"enabled": True, "seed": 5, "data_sampling": sampling}}


def _take(sampler: CurriculumSampler, n: int) -> list[list[int]]:
    """The next `n` micro-batches, across epoch ends (a new `iter()` starts the next epoch)."""
    out: list[list[int]] = []
    while len(out) < n:
        out.extend(itertools.islice(iter(sampler), n - len(out)))
    return out


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    lo=st.integers(10, 60),
    span=st.integers(0, 60),
    total=st.integers(1, 40),
    mbs=st.integers(1, 9),
    gas=st.integers(1, 3),
    world=st.integers(1, 3),
    cut=st.integers(0, 30),
)
def test_threshold_slices_and_resume_by_replay(
    index: CurriculumIndex, lo: int, span: int, total: int, mbs: int, gas: int, world: int, cut: int
) -> None:
    cfg = _cfg(lo, lo + span, total, 1)
    values = np.asarray(index.sample_to_metric)
    sched = CurriculumScheduler(
        cfg["data_efficiency"]["data_sampling"]["curriculum_learning"]["curriculum_metrics"]["m"]
    )
    kw = {"micro_batch_size": mbs, "gradient_accumulation_steps": gas, "indexes": {"m": index}}
    if values.min() > lo:
        with pytest.raises(LeantrainError, match="no sample is admitted"):
            next(iter(CurriculumSampler(cfg, world_size=world, rank=0, **kw)))
        return
    streams = []
    for rank in range(world):
        sampler = CurriculumSampler(cfg, world_size=world, rank=rank, **kw)
        batches = _take(sampler, 40)
        for i, batch in enumerate(batches):
            assert len(batch) == mbs
            assert values[batch].max() <= sched.get_difficulty(i // gas + 1)
        streams.append(batches)
    for step in zip(*streams, strict=True):
        assert sum(len(b) for b in step) == mbs * world  # every rank a full slice
    # the state at an earlier point, rebuilt by replay (no snapshot), continues identically
    sampler = CurriculumSampler(cfg, world_size=world, rank=0, **kw)
    _take(sampler, 40)
    sampler._snapshots.clear()
    resumed = CurriculumSampler(cfg, world_size=world, rank=0, **kw)
    resumed.load_state_dict(sampler.state_dict(consumed_micro_batches=min(cut, 39)))
    rest = _take(resumed, 40 - min(cut, 39))
    assert rest == streams[0][min(cut, 39) :]


def test_percentile_admits_rank_prefix(index: CurriculumIndex) -> None:
    cfg = _cfg(10, 100, 20, 10, "percentile")
    sampler = CurriculumSampler(cfg, micro_batch_size=4, indexes={"m": index})
    order = np.asarray(index.index_to_sample)
    rank_of = np.empty(N, np.int64)
    rank_of[order] = np.arange(N)
    for step, batch in zip(range(1, 60), sampler, strict=False):
        pct = int(sampler.get_current_difficulties()["m"])
        assert rank_of[batch].max() < (N if pct == 100 else (N // 100) * pct), step


def test_bad_arguments(index: CurriculumIndex) -> None:
    cfg = _cfg(10, 100, 20, 10)
    with pytest.raises(ConfigError, match="rank"):
        CurriculumSampler(cfg, micro_batch_size=4, rank=2, world_size=2, indexes={"m": index})
    with pytest.raises(ConfigError, match="num_samples: got 5"):
        CurriculumSampler(cfg, micro_batch_size=4, num_samples=5, indexes={"m": index})
    with pytest.raises(ConfigError, match="curriculum_metrics"):
        CurriculumSampler({}, micro_batch_size=4)
    sampler = CurriculumSampler(cfg, micro_batch_size=4, indexes={"m": index})
    with pytest.raises(ConfigError, match="custom-schedule metrics"):
        sampler.set_custom_get_difficulty(lambda step: 1)
    with pytest.raises(StateError, match="version 0 is not supported"):
        sampler.load_state_dict({"version": 0})


def test_fewer_admitted_samples_than_a_global_batch_repeat(index: CurriculumIndex) -> None:
    """DeepSpeed yields a short batch here; leantrain keeps the global batch full by repeating
    the admitted samples (documented in the curriculum card and coming-from-deepspeed.md)."""
    low = int(index.values[1])  # the two smallest values: a handful of samples
    admitted = set(np.flatnonzero(np.asarray(index.sample_to_metric) <= low).tolist())
    assert 0 < len(admitted) < 32
    sampler = CurriculumSampler(
        _cfg(low, low, 10, 1), micro_batch_size=16, gradient_accumulation_steps=2,
        indexes={"m": index},
    )  # fmt: skip
    batches = _take(sampler, 4)
    for a, b in zip(batches[::2], batches[1::2], strict=True):
        ids = a + b
        assert len(ids) == 32 and set(ids) <= admitted
        counts = np.bincount(ids)[sorted(admitted)]
        assert counts.min() >= 32 // len(admitted) - 1  # every one drawn, none much more
