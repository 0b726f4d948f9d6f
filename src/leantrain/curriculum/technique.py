"""Curriculum learning as a `Technique`: the legacy sequence-length warmup (`curriculum_learning`)
and the Data Efficiency curriculum (`data_efficiency.data_sampling.curriculum_learning`).

One technique for both, because they share their schedules (`CurriculumSchedules`: one scheduler
per schedule, which the curriculum sampler draws from too) and their metrics
(`curriculum/difficulty`). A length schedule — the legacy warmup, or the metrics
`seqlen_truncate` / `seqlen_reshape` — cuts every batch to the current difficulty d(t + 1)
(DeepSpeed's curriculum step is 1-based); the Data Efficiency curriculum also owns the batch
order (`CurriculumSampler`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any, ClassVar

from leantrain.accounting import StepShape
from leantrain.config import (
    CurriculumMetricConfig,
    LeantrainConfig,
    LegacyCurriculumConfig,
)
from leantrain.config.check import why_off
from leantrain.config.raw import remove_section, scaled_steps, section_at
from leantrain.curriculum.index import index_absent
from leantrain.curriculum.sampler import CurriculumSampler
from leantrain.curriculum.scheduler import CurriculumScheduler, CurriculumSchedules, difficulty_at
from leantrain.curriculum.seqlen import reshape_batch, truncate_batch
from leantrain.errors import ConfigError, check_state_version
from leantrain.technique import Facts, Requirements, Setup, Technique

__all__ = ["LEGACY", "LENGTH_METRICS", "TRUNCATING_METRICS", "CurriculumTechnique"]

#: Name of the legacy sequence-length warmup among the schedules (its config key).
LEGACY = "curriculum_learning"
_DATA = "data_efficiency.data_sampling.curriculum_learning"
#: Data Efficiency metrics that pace the sequence length: `seqlen` admits samples by length
#: (from an index); the other two cut every batch to the current length.
LENGTH_METRICS = ("seqlen", "seqlen_truncate", "seqlen_reshape")
TRUNCATING_METRICS = ("seqlen_truncate", "seqlen_reshape")
_DIFFICULTY = "curriculum/difficulty"
_STATE_VERSION = 1

Paced = LegacyCurriculumConfig | CurriculumMetricConfig


def _schedule_sections(config: LeantrainConfig) -> dict[str, Paced]:
    """Every enabled difficulty schedule by name: the legacy warmup, each Data Efficiency metric."""
    sections: dict[str, Paced] = {}
    if config.seqlen_warmup_enabled:
        sections[LEGACY] = config.curriculum_learning
    if config.curriculum_enabled:
        sections.update(config.curriculum.curriculum_metrics)
    return sections


def _length_schedule(names: Iterable[str]) -> str | None:
    """The schedule among `names` that cuts batches (None: none does)."""
    return next((n for n in (LEGACY, *TRUNCATING_METRICS) if n in names), None)


class CurriculumTechnique(Technique):
    """Difficulty schedules; batches cut to the current length; the curriculum sampler."""

    name = "curriculum"
    arm = "cl"
    sections = (LEGACY, _DATA)
    columns: ClassVar[Mapping[str, str]] = {_DIFFICULTY: "d"}

    def __init__(
        self,
        schedules: CurriculumSchedules,
        sampler: CurriculumSampler | None,
        *,
        gradient_accumulation_steps: int,
    ) -> None:
        """`schedules` of the run; `sampler` (drawing from them) when it owns the data order."""
        self.schedules = schedules
        self.sampler = sampler
        self.accumulation = gradient_accumulation_steps
        self.global_step = 0
        #: The schedule that cuts batches (None: none does).
        self.length_schedule = _length_schedule(schedules.schedulers)

    # -- the config ----------------------------------------------------------------------------

    @classmethod
    def enabled(cls, config: LeantrainConfig) -> bool:
        """The legacy warmup, or the Data Efficiency curriculum (every enclosing switch on)."""
        return config.seqlen_warmup_enabled or config.curriculum_enabled

    @classmethod
    def title(cls, config: LeantrainConfig) -> str:
        """'sequence-length warmup', 'curriculum sampling', or both."""
        parts = ["sequence-length warmup"] if config.seqlen_warmup_enabled else []
        return ", ".join([*parts, "curriculum sampling"] if config.curriculum_enabled else parts)

    @classmethod
    def requirements(cls, config: LeantrainConfig) -> Requirements:
        """A length schedule changes batches; the Data Efficiency curriculum owns their order."""
        cuts = any(n == LEGACY or n in TRUNCATING_METRICS for n in _schedule_sections(config))
        return Requirements(changes_batch=cuts, owns_sampler=config.curriculum_enabled)

    @classmethod
    def facts(cls, config: LeantrainConfig) -> Facts:
        """The length batches are cut to at the end (the full length), and the longest length a
        length schedule reaches by value."""
        seq_length = paced = None
        for name, section in _schedule_sections(config).items():
            if name == LEGACY or name in TRUNCATING_METRICS:
                seq_length = seq_length or section.max_difficulty
            value = (
                isinstance(section, LegacyCurriculumConfig) or section.difficulty_type == "value"
            )
            if (name == LEGACY or name in LENGTH_METRICS) and value:
                paced = paced or section.max_difficulty
        return Facts(seq_length=seq_length, paced_length=paced)

    @classmethod
    def check(cls, config: LeantrainConfig, facts: Facts) -> None:
        """The legacy warmup and a Data Efficiency length metric cannot both pace the length."""
        if config.seqlen_warmup_enabled and config.curriculum_enabled:
            length = [m for m in config.curriculum.curriculum_metrics if m in LENGTH_METRICS]
            if length:
                raise ConfigError(
                    "curriculum_learning: the legacy sequence-length warmup is enabled together "
                    "with the Data Efficiency curriculum metric "
                    f"'{_DATA}.curriculum_metrics.{length[0]}'; both pace the sequence length. "
                    "Keep one: disable the legacy section, or drop the length metric"
                )

    @classmethod
    def describe(cls, config: LeantrainConfig, *, num_layers: int, at_step: int) -> list[str]:
        """The legacy warmup's line and the Data Efficiency curriculum's line, where given."""
        lines = []
        given = config.model_fields_set
        if LEGACY in given:
            legacy = config.curriculum_learning
            lines.append(
                "curriculum_learning: on, sequence-length warmup (every batch truncated to the "
                f"current length) {_pacing(legacy, at_step)}"
                if legacy.enabled
                else "curriculum_learning: off"
            )
        if "data_efficiency" in given:
            if not config.curriculum_enabled:
                lines.append(f"{_DATA}: off{why_off(config, _DATA)}")
            else:
                metrics = "; ".join(
                    _metric_text(name, metric, at_step)
                    for name, metric in config.curriculum.curriculum_metrics.items()
                )
                lines.append(
                    f"{_DATA}: on, batches drawn by leantrain's curriculum sampler; {metrics}"
                )
        return lines

    @classmethod
    def remove_from(cls, raw: dict[str, Any]) -> None:
        """The legacy section, and the Data Efficiency curriculum with the whole `data_sampling`
        section around it (DeepSpeed's data sampling is the curriculum's)."""
        remove_section(raw, LEGACY)
        remove_section(raw, _DATA.rpartition(".")[0])

    @classmethod
    def scale_steps(cls, raw: dict[str, Any], factor: float) -> None:
        """`total_curriculum_step` and `max_step` lists of the legacy warmup and of each metric."""
        metrics = section_at(raw, f"{_DATA}.curriculum_metrics")
        for section in (section_at(raw, LEGACY), *metrics.values()):
            params = section.get("schedule_config") if isinstance(section, dict) else None
            if not isinstance(params, dict):
                continue
            if isinstance(params.get("total_curriculum_step"), int):
                params["total_curriculum_step"] = scaled_steps(
                    params["total_curriculum_step"], factor
                )
            if isinstance(params.get("max_step"), list):
                params["max_step"] = [scaled_steps(int(s), factor) for s in params["max_step"]]

    @classmethod
    def account_logged(
        cls, config: LeantrainConfig, row: Mapping[str, float], shape: StepShape
    ) -> None:
        """Rows cut (or folded) to the length schedule's logged difficulty (logged under
        `curriculum/difficulty` when it is the first schedule, as it is when alone)."""
        names = list(_schedule_sections(config))
        length = _length_schedule(names)
        if length is None:
            return
        d = row.get(_DIFFICULTY if names[0] == length else f"{_DIFFICULTY}/{length}")
        if d is not None:
            shape.cut(int(d), fold=length == "seqlen_reshape")

    @classmethod
    def from_config(cls, config: LeantrainConfig, setup: Setup) -> CurriculumTechnique:
        """The schedules, and the curriculum sampler when the Data Efficiency curriculum is on
        (it needs the dataset and the micro batch: it owns the batch order)."""
        schedules = CurriculumSchedules(
            {n: CurriculumScheduler(s) for n, s in _schedule_sections(config).items()}
        )
        sampler = None
        if config.curriculum_enabled:
            micro = setup.micro_batch_size
            if setup.train_dataset is None or micro is None:
                raise ConfigError(
                    f"{_DATA}: enabled, so prepare() needs train_dataset= and micro_batch_size= "
                    "(the curriculum owns the batch order)"
                )
            sampler = CurriculumSampler(
                config.curriculum,
                seed=config.data_efficiency.seed,
                num_samples=setup.num_samples(),
                dataset=setup.train_dataset,
                micro_batch_size=micro,
                gradient_accumulation_steps=setup.gradient_accumulation_steps,
                rank=setup.rank,
                world_size=setup.world_size,
                schedulers={
                    n: schedules.schedulers[n] for n in config.curriculum.curriculum_metrics
                },
            )
        return cls(
            schedules, sampler, gradient_accumulation_steps=setup.gradient_accumulation_steps
        )

    # -- one run -------------------------------------------------------------------------------

    @property
    def controller(self) -> CurriculumSampler | None:
        """The curriculum sampler (DeepSpeed's curriculum data loader), when it draws batches."""
        return self.sampler

    def summary(self) -> str:
        """Its schedules and whether it cuts batches or draws them."""
        parts = [f"schedules {', '.join(self.schedules.schedulers)}"]
        if self.length_schedule is not None:
            parts.append(f"batches cut to {self.length_schedule}'s difficulty")
        if self.sampler is not None:
            parts.append("batches drawn by the curriculum sampler")
        return f"curriculum: {'; '.join(parts)}"

    def step(self, global_step: int) -> None:
        """Difficulties for the step about to run: d(global_step + 1)."""
        self.global_step = global_step
        self.schedules.update(global_step + 1)

    def seqlen(self) -> int | None:
        """The length batches are cut to now (None: no length schedule)."""
        if self.length_schedule is None:
            return None
        return int(self.schedules.difficulties()[self.length_schedule])

    def process_batch(self, batch: Any) -> Any:
        """Cut (or, for `seqlen_reshape`, fold) the batch to the current length."""
        length = self.seqlen()
        if length is None:
            return batch
        if self.length_schedule == "seqlen_reshape":
            return reshape_batch(batch, length)
        return truncate_batch(batch, length)

    @property
    def batch_sampler(self) -> CurriculumSampler | None:
        """The curriculum sampler, when the Data Efficiency curriculum is on."""
        return self.sampler

    def restart_epoch(self) -> None:
        """Rewind the sampler to the start of its current epoch (its batches are a pure
        function of the position)."""
        if self.sampler is not None:
            micro = self.sampler.consumed_micro_batches
            self.sampler.load_state_dict(self.sampler.state_dict(micro - micro % len(self.sampler)))

    def account(self, shape: StepShape) -> None:
        """Rows are cut (or folded) to the current length."""
        length = self.seqlen()
        if length is not None:
            shape.cut(length, fold=self.length_schedule == "seqlen_reshape")

    def metrics(self) -> dict[str, float]:
        """`curriculum/difficulty` (the first schedule's), and `curriculum/difficulty/<name>`
        for each when there are several."""
        difficulties = self.schedules.difficulties()
        if not difficulties:
            return {}
        out = {_DIFFICULTY: next(iter(difficulties.values()))}
        if len(difficulties) > 1:
            out.update({f"{_DIFFICULTY}/{k}": v for k, v in difficulties.items()})
        return out

    def custom_schedules(self) -> list[str]:
        """Its schedules of schedule_type 'custom'."""
        return self.schedules.custom()

    def set_custom_schedule(self, name: str, fn: Callable[[int], float]) -> None:
        """Install `fn` once: the sampler draws from the same scheduler."""
        self.schedules.schedulers[name].set_custom_get_difficulty(fn)
        self.step(self.global_step)

    def state_dict(self) -> dict[str, Any]:
        """Versioned: each schedule, and the sampler at the micro-batches the loop consumed."""
        sampler = self.sampler
        return {
            "version": _STATE_VERSION,
            "schedules": self.schedules.state_dict(),
            "sampler": sampler.state_dict(self.global_step * self.accumulation)
            if sampler is not None
            else None,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore `state_dict()`."""
        check_state_version(state, _STATE_VERSION, "curriculum")
        self.schedules.load_state_dict(state["schedules"])
        if self.sampler is not None and state["sampler"] is not None:
            self.sampler.load_state_dict(state["sampler"])

    @classmethod
    def state_from_v1(cls, state: Mapping[str, Any]) -> dict[str, Any] | None:
        """Leantrain 0.1 kept the schedules under `curricula`, the sampler under `controllers`."""
        sampler = state["controllers"].get(cls.name)
        if not state["curricula"] and sampler is None:
            return None
        return {"version": _STATE_VERSION, "schedules": state["curricula"], "sampler": sampler}


def _pacing(section: Paced, at_step: int) -> str:
    """'min → max by <schedule> ...; d(t)=...' for a curriculum schedule."""
    kind = section.schedule_type
    sc = section.schedule_config
    if kind == "custom":
        return (
            "custom schedule: install the function with handle.set_custom_curriculum_schedule(fn)"
        )
    if kind == "fixed_discrete":
        assert sc.difficulty is not None and sc.max_step is not None
        steps = ", ".join(
            f"{d} until step {s}" for d, s in zip(sc.difficulty, sc.max_step, strict=False)
        )
        return f"fixed_discrete: {steps}, then {sc.difficulty[-1]}"
    over = f"over {sc.total_curriculum_step} steps in multiples of {sc.difficulty_step}"
    root = f" (root degree {sc.root_degree})" if kind == "fixed_root" else ""
    out = f"{section.min_difficulty} → {section.max_difficulty} by {kind}{root} {over}"
    return f"{out}; d({at_step})={int(difficulty_at(section, at_step))}"


def _metric_text(name: str, metric: CurriculumMetricConfig, at_step: int) -> str:
    """What a Data Efficiency metric does: cut batches, admit samples by its index, or only
    pace a difficulty (a `single_cluster` metric without an index, as DeepSpeed's always is)."""
    path = metric.index_to_sample_path
    single = metric.clustering_type == "single_cluster"
    uses = []
    if name in TRUNCATING_METRICS:
        how = "truncates" if name == "seqlen_truncate" else "reshapes"
        uses.append(f"{how} every batch to the current length")
    if path is not None and single and index_absent(path):
        uses.append(
            f"index {path!r} not found: ignored, as DeepSpeed ignores a single_cluster metric's "
            "index; admits every sample"
        )
    elif path is not None:
        uses.append(f"admits samples by {metric.difficulty_type} from the index {path}")
    elif name in TRUNCATING_METRICS:
        uses.append("no index needed")
    elif single:
        uses.append("no index: paces its difficulty only, admits every sample")
    else:
        uses.append(
            f"admits samples by {metric.difficulty_type}; run `leantrain analyze` to build its index"
        )
    return (
        f"metric {name} ({', '.join(uses)}, {metric.clustering_type}): {_pacing(metric, at_step)}"
    )
