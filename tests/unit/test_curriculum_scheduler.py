"""Pacing schedules against hand-computed DeepSpeed formulas, at many steps."""

from __future__ import annotations

import math
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from leantrain.config import LegacyCurriculumConfig
from leantrain.curriculum import CurriculumScheduler
from leantrain.errors import ConfigError


def _root(t: int, lo: int, hi: int, total: int, step: int, r: int) -> int:
    """DeepSpeed's __fixed_root_get_difficulty, written out independently."""
    frac = (float(t) / total) ** (1.0 / r)
    d = math.floor(frac * (hi - lo) + lo)
    d = d - d % step
    return max(lo, min(d, hi))


def _metric(schedule: str, **sc: object) -> dict:
    return {
        "index_to_sample_path": "unused",
        "min_difficulty": 8,
        "max_difficulty": 1024,
        "schedule_type": schedule,
        "schedule_config": sc,
    }


@settings(max_examples=150, deadline=None)
@given(
    t=st.integers(0, 20_000),
    lo=st.integers(1, 64).map(lambda x: 16 * x),
    span=st.integers(0, 4096),
    total=st.integers(1, 10_000),
    step=st.sampled_from([1, 8, 16]),
    r=st.integers(1, 4),
)
def test_fixed_root_and_linear_match_formula(
    t: int, lo: int, span: int, total: int, step: int, r: int
) -> None:
    hi = lo + span
    sc = {"total_curriculum_step": total, "difficulty_step": step, "root_degree": r}
    cfg = _metric("fixed_root", **sc) | {"min_difficulty": lo, "max_difficulty": hi}
    assert CurriculumScheduler(cfg).get_difficulty(t) == _root(t, lo, hi, total, step, r)
    cfg = cfg | {"schedule_type": "fixed_linear"}
    assert CurriculumScheduler(cfg).get_difficulty(t) == _root(t, lo, hi, total, step, 1)


def test_fixed_linear_hand_values() -> None:
    # 8 + t/100 * (1024 - 8), rounded down to a multiple of 8
    sched = CurriculumScheduler(
        _metric("fixed_linear", total_curriculum_step=100, difficulty_step=8)
    )
    expected = {0: 8, 1: 16, 10: 104, 33: 336, 50: 512, 99: 1008, 100: 1024, 10**6: 1024}
    for t, d in expected.items():
        want = int(Fraction(t, 100) * 1016 + 8) // 8 * 8 if t <= 100 else 1024
        assert sched.get_difficulty(t) == d == min(want, 1024)


@settings(max_examples=100, deadline=None)
@given(t=st.integers(0, 500))
def test_fixed_discrete(t: int) -> None:
    sched = CurriculumScheduler(
        _metric("fixed_discrete", difficulty=[64, 128, 256], max_step=[100, 300])
    )
    want = 64 if t <= 100 else 128 if t <= 300 else 256
    assert sched.get_difficulty(t) == want


def test_update_stays_at_max_and_state_round_trip() -> None:
    sched = CurriculumScheduler(
        _metric("fixed_linear", total_curriculum_step=10, difficulty_step=8)
    )
    assert sched.get_current_difficulty() == 8
    assert sched.update_difficulty(5) == 512
    assert sched.update_difficulty(10) == 1024
    assert sched.update_difficulty(3) == 1024  # DeepSpeed: once at max, never recomputed
    state = sched.state_dict()
    fresh = CurriculumScheduler(
        _metric("fixed_linear", total_curriculum_step=10, difficulty_step=8)
    )
    fresh.load_state_dict(state)
    assert fresh.get_current_difficulty() == 1024
    other = CurriculumScheduler(
        _metric("fixed_linear", total_curriculum_step=11, difficulty_step=8)
    )
    with pytest.raises(ConfigError, match="different schedule"):
        other.load_state_dict(state)


def test_custom_schedule_and_legacy_section() -> None:
    sched = CurriculumScheduler({"schedule_type": "custom", "max_difficulty": 100})
    with pytest.raises(ConfigError, match="set_custom_get_difficulty"):
        sched.update_difficulty(1)
    sched.set_custom_get_difficulty(lambda step: 2 * step)
    assert sched.update_difficulty(7) == 14
    legacy = {
        "enabled": True,
        "curriculum_type": "seqlen",
        "min_difficulty": 64,
        "max_difficulty": 512,
        "schedule_type": "fixed_root",
        "schedule_config": {"total_curriculum_step": 1000, "difficulty_step": 8, "root_degree": 2},
    }
    sched = CurriculumScheduler(legacy)
    assert isinstance(sched.config, LegacyCurriculumConfig)
    assert sched.get_difficulty(250) == _root(250, 64, 512, 1000, 8, 2) == 288


def test_min_not_multiple_is_clamped_with_warning() -> None:
    cfg = _metric("fixed_linear", total_curriculum_step=100, difficulty_step=8)
    cfg["min_difficulty"] = 1
    with pytest.warns(UserWarning, match="clamps"):
        sched = CurriculumScheduler(cfg)
    assert sched.get_difficulty(0) == 1  # DeepSpeed would give 0


def test_percentile_bounds_and_bad_input() -> None:
    cfg = _metric("fixed_linear", total_curriculum_step=10, difficulty_step=1)
    cfg |= {"difficulty_type": "percentile", "min_difficulty": 1, "max_difficulty": 100}
    assert CurriculumScheduler(cfg).get_difficulty(5) == 50
    with pytest.raises(ConfigError, match="percentile"):
        CurriculumScheduler(cfg | {"max_difficulty": 101})
    with pytest.raises(ConfigError, match="expected the legacy"):
        CurriculumScheduler(3)
