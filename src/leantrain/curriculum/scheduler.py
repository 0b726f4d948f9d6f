"""Pacing schedules: the difficulty as a function of the global step, as DeepSpeed computes it."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import torch

from leantrain.config.resolve import validate_section
from leantrain.config.schema import CurriculumMetricConfig, LegacyCurriculumConfig
from leantrain.errors import ConfigError, check_state_version

__all__ = [
    "CurriculumScheduler",
    "CurriculumSchedules",
    "difficulty_at",
    "fixed_discrete",
    "fixed_root",
]

STATE_VERSION = 1


def fixed_root(
    step: int, *, min_d: int, max_d: int, total_steps: int, difficulty_step: int, root_degree: int
) -> int:
    """DeepSpeed's fixed_root (fixed_linear is root_degree 1), clamped to at least `min_d`.

    d = floor((t/T)^(1/r)·(max − min) + min); d −= d mod difficulty_step; d = min(d, max).
    """
    d = (float(step) / total_steps) ** (1.0 / root_degree)
    d = math.floor(d * (max_d - min_d) + min_d)
    d -= d % difficulty_step
    return max(min(d, max_d), min_d)


def fixed_discrete(step: int, *, difficulty: list[int], max_step: list[int]) -> int:
    """The first difficulty[i] with step <= max_step[i]; past the last, the last difficulty."""
    for d, last in zip(difficulty, max_step, strict=False):
        if step <= last:
            return d
    return difficulty[-1]


def difficulty_at(
    cfg: LegacyCurriculumConfig | CurriculumMetricConfig,
    step: int,
    custom: Callable[[int], float] | None = None,
) -> float:
    """The schedule's difficulty at `step` (a pure function; `custom` for schedule 'custom')."""
    sc = cfg.schedule_config
    if cfg.schedule_type == "fixed_discrete":
        assert sc.difficulty is not None and sc.max_step is not None
        return fixed_discrete(step, difficulty=sc.difficulty, max_step=sc.max_step)
    if cfg.schedule_type == "custom":
        if custom is None:
            raise ConfigError(
                "schedule_type 'custom': no difficulty function installed; call "
                "set_custom_get_difficulty(fn) with a function of the global step"
            )
        return custom(step)
    assert cfg.min_difficulty is not None and cfg.max_difficulty is not None
    assert sc.total_curriculum_step is not None and sc.difficulty_step is not None
    root = 1 if cfg.schedule_type == "fixed_linear" else sc.root_degree
    assert root is not None
    return fixed_root(
        step,
        min_d=cfg.min_difficulty,
        max_d=cfg.max_difficulty,
        total_steps=sc.total_curriculum_step,
        difficulty_step=sc.difficulty_step,
        root_degree=root,
    )


def _parse(config: Any) -> LegacyCurriculumConfig | CurriculumMetricConfig:
    """One schedule section, typed or a dict: the legacy one when it has its keys."""
    if isinstance(config, LegacyCurriculumConfig | CurriculumMetricConfig):
        return config
    if not isinstance(config, Mapping):
        raise ConfigError(
            f"CurriculumScheduler: got {type(config).__name__}; expected the legacy "
            "curriculum_learning section or one curriculum_metrics entry (dict or parsed)"
        )
    if "curriculum_type" in config or "enabled" in config:
        return validate_section(LegacyCurriculumConfig, config, "curriculum_learning")
    return validate_section(CurriculumMetricConfig, config, "")


class CurriculumScheduler:
    """The difficulty schedule of one metric (or of legacy seqlen warmup).

    `step(global_step)` (DeepSpeed's `update_difficulty`) follows DeepSpeed: it recomputes
    only while the current difficulty is below max_difficulty, so once max is reached it
    stays. The current value lives in a one-element shared-memory tensor, so DataLoader
    workers holding a copy of the scheduler (e.g. through `SeqlenWarmupCollator`) see the
    training loop's updates.
    """

    def __init__(self, config: Any) -> None:
        self.config = _parse(config)
        self._custom: Callable[[int], float] | None = None
        sc = self.config.schedule_config
        if self.config.schedule_type == "fixed_discrete" and self.config.min_difficulty is None:
            assert sc.difficulty is not None
            start: float = sc.difficulty[0]
        else:
            start = self.config.min_difficulty if self.config.min_difficulty is not None else 0
        self._current = torch.tensor([float(start)], dtype=torch.float64).share_memory_()
        self.max_difficulty: float | None = self.config.max_difficulty
        if self.max_difficulty is None and sc.difficulty:
            self.max_difficulty = max(sc.difficulty)

    def set_custom_get_difficulty(self, fn: Callable[[int], float]) -> None:
        """Install the function of the global step used by schedule_type 'custom'."""
        self._custom = fn

    @property
    def custom(self) -> bool:
        """Whether its schedule_type is 'custom' (a user function of the step)."""
        return self.config.schedule_type == "custom"

    @property
    def waiting(self) -> bool:
        """Whether it is custom and its function is not installed yet."""
        return self.custom and self._custom is None

    def get_difficulty(self, global_step: int) -> int | float:
        """The schedule at `global_step`, without touching the state (pure)."""
        return _num(difficulty_at(self.config, global_step, self._custom))

    def step(self, global_step: int) -> int | float:
        """Advance to `global_step` (DeepSpeed semantics) and return the current difficulty."""
        if self.max_difficulty is None or self._current.item() < self.max_difficulty:
            self._current.fill_(float(self.get_difficulty(global_step)))
        return self.get_current_difficulty()

    #: DeepSpeed's name for `step`.
    update_difficulty = step

    def get_current_difficulty(self) -> int | float:
        """The difficulty set by the last `step`."""
        return _num(self._current.item())

    def set_current_difficulty(self, difficulty: float) -> None:
        """Set the current difficulty directly (e.g. from a host's own step counter)."""
        self._current.fill_(float(difficulty))

    def state_dict(self) -> dict[str, Any]:
        """Versioned state: the current difficulty and the schedule it belongs to."""
        return {
            "version": STATE_VERSION,
            "current_difficulty": self.get_current_difficulty(),
            "schedule": self.config.model_dump(mode="json"),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore `state_dict()`; refuses a state saved for another schedule."""
        check_state_version(state, STATE_VERSION, "CurriculumScheduler")
        if state.get("schedule") != self.config.model_dump(mode="json"):
            raise ConfigError(
                "CurriculumScheduler state: saved for a different schedule "
                f"({state.get('schedule')}); this scheduler has {self.config.model_dump()}"
            )
        self.set_current_difficulty(state["current_difficulty"])


def _num(x: float) -> int | float:
    return int(x) if float(x).is_integer() else float(x)


class CurriculumSchedules:
    """Every difficulty schedule of one run, by name: one `CurriculumScheduler` each.

    The curriculum technique steps them and the curriculum sampler draws from the same objects,
    so a custom schedule's function is installed once. A custom schedule is not advanced until
    its function is installed; reading difficulties before that raises.
    """

    def __init__(self, schedulers: Mapping[str, CurriculumScheduler]) -> None:
        """`schedulers` by name (the legacy warmup's, or a Data Efficiency metric's)."""
        self.schedulers = dict(schedulers)

    def update(self, global_step: int) -> None:
        """Advance every schedule with its function to `global_step` (DeepSpeed semantics)."""
        for scheduler in self.schedulers.values():
            if not scheduler.waiting:
                scheduler.step(global_step)

    def difficulties(self) -> dict[str, float]:
        """The current difficulty of each schedule."""
        waiting = [name for name, s in self.schedulers.items() if s.waiting]
        if waiting:
            raise ConfigError(
                f"curriculum schedule {waiting[0]!r}: schedule_type is 'custom': call "
                "handle.set_custom_curriculum_schedule(fn) (or set_custom_get_difficulty) "
                "before training"
            )
        return {k: float(s.get_current_difficulty()) for k, s in self.schedulers.items()}

    def custom(self) -> list[str]:
        """Names of the schedules of schedule_type 'custom'."""
        return [name for name, s in self.schedulers.items() if s.custom]

    def state_dict(self) -> dict[str, Any]:
        """Each schedule's state, by name."""
        return {name: s.state_dict() for name, s in self.schedulers.items()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore `state_dict()`; the same schedules must be configured."""
        if sorted(state) != sorted(self.schedulers):
            raise ConfigError(
                f"curriculum state: saved for the schedules {sorted(state)}, this run has "
                f"{sorted(self.schedulers)}; resume with the same config"
            )
        for name, scheduler in self.schedulers.items():
            scheduler.load_state_dict(state[name])
