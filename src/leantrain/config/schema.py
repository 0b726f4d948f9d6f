"""Typed schema of the DeepSpeed config sections leantrain implements.

Key names and defaults follow DeepSpeed's JSON config exactly, so a DeepSpeed user's file loads
unchanged; where DeepSpeed's config requires a key (PLD's theta and gamma) the default is that of
the DeepSpeed class reading it. Keys marked "leantrain extension" are ours; DeepSpeed has no
equivalent. Values DeepSpeed accepts but cannot train with are rejected here, naming the key.
"""

from __future__ import annotations

import warnings
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = [
    "CurriculumLearningConfig",
    "CurriculumMetricConfig",
    "CurriculumScheduleConfig",
    "DataEfficiencyConfig",
    "DataRoutingConfig",
    "DataSamplingConfig",
    "DynamicBatchingConfig",
    "LayerTokenLRScheduleConfig",
    "LegacyCurriculumConfig",
    "ProgressiveLayerDropConfig",
    "RandomLTDConfig",
    "RandomLTDScheduleConfig",
    "RandomLTDScheduleParams",
    "Section",
]

ScheduleType = Literal["fixed_linear", "fixed_root", "fixed_discrete", "custom"]


class Section(BaseModel):
    """Base of every config section: unknown keys are errors, values are validated on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, populate_by_name=True)


class ProgressiveLayerDropConfig(Section):
    """`progressive_layer_drop`: θ(t) = (1−theta)·exp(−gamma·t) + theta."""

    enabled: bool = Field(False, description="Turn progressive layer dropping on.")
    theta: float = Field(
        0.5,
        gt=0.0,
        le=1.0,
        allow_inf_nan=False,
        description="θ̄, the keep ratio the schedule falls to, in (0, 1].",
    )
    gamma: float = Field(
        0.001,
        ge=0.0,
        allow_inf_nan=False,
        description="γ, how fast θ falls per global step (finite, ≥ 0).",
    )
    seed: int = Field(
        1234,
        ge=0,
        description="leantrain extension: seed of the layer coins, shared by every rank.",
    )


class CurriculumScheduleConfig(Section):
    """`schedule_config` of a curriculum pacing schedule."""

    total_curriculum_step: int | None = Field(
        None, gt=0, description="Steps to reach max_difficulty (fixed_linear, fixed_root)."
    )
    difficulty_step: int | None = Field(
        None, ge=1, description="Round the difficulty down to a multiple of this."
    )
    root_degree: int | None = Field(None, ge=1, description="Root degree r of fixed_root.")
    difficulty: list[int] | None = Field(None, description="fixed_discrete difficulties.")
    max_step: list[int] | None = Field(
        None, description="fixed_discrete: last step of each difficulty but the last."
    )


class _PacedDifficulty(Section):
    """Fields shared by the legacy curriculum section and each Data Efficiency metric."""

    min_difficulty: int | None = Field(None, description="Difficulty at step 0.")
    max_difficulty: int | None = Field(None, description="Difficulty at the end of the schedule.")
    schedule_type: ScheduleType | None = Field(None, description="Pacing function.")
    schedule_config: CurriculumScheduleConfig = Field(
        default_factory=lambda: CurriculumScheduleConfig()
    )

    def _check_schedule(self) -> None:
        """Require what the chosen schedule needs; called only for enabled sections."""
        if self.schedule_type is None:
            raise ValueError(
                "schedule_type: required when enabled; expected one of "
                "'fixed_linear', 'fixed_root', 'fixed_discrete', 'custom'"
            )
        sc = self.schedule_config
        if self.schedule_type == "fixed_discrete":
            if not sc.difficulty or sc.max_step is None:
                raise ValueError(
                    "schedule_config: fixed_discrete needs 'difficulty' and 'max_step' lists"
                )
            if len(sc.difficulty) != len(sc.max_step) + 1:
                raise ValueError(
                    f"schedule_config.difficulty: got {len(sc.difficulty)} entries for "
                    f"{len(sc.max_step)} max_step entries; expected one more difficulty than "
                    "max_step (the last difficulty holds after the last max_step)"
                )
            if any(b <= a for a, b in zip(sc.max_step, sc.max_step[1:], strict=False)):
                raise ValueError(
                    f"schedule_config.max_step: got {sc.max_step}; expected strictly increasing"
                )
            return
        if self.schedule_type == "custom":
            return
        for key in ("min_difficulty", "max_difficulty"):
            if getattr(self, key) is None:
                raise ValueError(f"{key}: required for schedule_type '{self.schedule_type}'")
        assert self.min_difficulty is not None and self.max_difficulty is not None
        if self.min_difficulty > self.max_difficulty:
            raise ValueError(
                f"min_difficulty: got {self.min_difficulty} > max_difficulty "
                f"{self.max_difficulty}; expected min_difficulty <= max_difficulty"
            )
        if sc.total_curriculum_step is None:
            raise ValueError(
                f"schedule_config.total_curriculum_step: required for '{self.schedule_type}'"
            )
        if sc.difficulty_step is None:
            raise ValueError(
                f"schedule_config.difficulty_step: required for '{self.schedule_type}'"
            )
        if self.schedule_type == "fixed_root" and sc.root_degree is None:
            raise ValueError("schedule_config.root_degree: required for 'fixed_root'")
        if self.min_difficulty % sc.difficulty_step:
            warnings.warn(
                f"min_difficulty {self.min_difficulty} is not a multiple of difficulty_step "
                f"{sc.difficulty_step}: DeepSpeed's rounding can fall below it; leantrain clamps "
                f"the difficulty to at least {self.min_difficulty}",
                UserWarning,
                stacklevel=2,
            )


class LegacyCurriculumConfig(_PacedDifficulty):
    """Top-level legacy `curriculum_learning`: sequence-length warmup by truncation."""

    enabled: bool = Field(False, description="Turn sequence-length warmup on.")
    curriculum_type: Literal["seqlen"] | None = Field(
        None, description="What the difficulty measures; only 'seqlen' exists."
    )

    @model_validator(mode="after")
    def _enabled_needs_schedule(self) -> LegacyCurriculumConfig:
        if self.enabled:
            if self.curriculum_type is None:
                raise ValueError("curriculum_type: required when enabled; expected 'seqlen'")
            self._check_lengths()
            self._check_schedule()
        return self

    def _check_lengths(self) -> None:
        """Every difficulty is a sequence length: below 1 it would train on empty sequences."""
        for key in ("min_difficulty", "max_difficulty"):
            value = getattr(self, key)
            if value is not None and value < 1:
                raise ValueError(f"{key}: got {value}; expected a sequence length >= 1")
        steps = self.schedule_config.difficulty
        if steps is not None and min(steps, default=1) < 1:
            raise ValueError(
                f"schedule_config.difficulty: got {steps}; expected sequence lengths >= 1"
            )


class CurriculumMetricConfig(_PacedDifficulty):
    """One entry of `data_efficiency.data_sampling.curriculum_learning.curriculum_metrics`."""

    index_to_sample_path: str | None = Field(
        None, description="Analyzer output: metric value → sample ids."
    )
    index_to_metric_path: str | None = Field(
        None, description="Analyzer output: the sorted distinct metric values."
    )
    difficulty_type: Literal["value", "percentile"] = Field(
        "value", description="Threshold the metric value, or its percentile rank (1–100)."
    )
    clustering_type: Literal["schedule_based", "single_cluster"] = Field(
        "schedule_based", description="Clusters of newly admitted samples, or one pool."
    )

    @model_validator(mode="after")
    def _check(self) -> CurriculumMetricConfig:
        self._check_schedule()
        if self.difficulty_type == "percentile":
            for key in ("min_difficulty", "max_difficulty"):
                value = getattr(self, key)
                if value is not None and not 1 <= value <= 100:
                    raise ValueError(
                        f"{key}: got {value}; expected a percentile in [1, 100] "
                        "for difficulty_type 'percentile'"
                    )
        return self


class CurriculumLearningConfig(Section):
    """`data_efficiency.data_sampling.curriculum_learning`."""

    enabled: bool = False
    data_cluster_path: str | None = Field(
        None, description="DeepSpeed's folder for cluster files; leantrain needs none."
    )
    curriculum_metrics: dict[str, CurriculumMetricConfig] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _metrics_when_enabled(self) -> CurriculumLearningConfig:
        if self.enabled and not self.curriculum_metrics:
            raise ValueError("curriculum_metrics: at least one metric required when enabled")
        return self


class DynamicBatchingConfig(Section):
    """`data_efficiency.data_sampling.dynamic_batching` (accepted; not implemented by leantrain)."""

    enabled: bool = False
    lr_scaling_method: Literal["linear", "sqrt", "none"] = "linear"
    min_batch_size: int = Field(1, ge=1)
    max_batch_size: int | None = Field(None, ge=1)
    dataloader_num_workers: int = Field(0, ge=0)
    dataloader_pin_memory: bool = False
    samples_order: Literal["random", "order", "dataloader"] = "dataloader"
    max_tokens_per_batch: int | None = Field(None, ge=1)
    verbose: bool = False

    @model_validator(mode="after")
    def _warn_unimplemented(self) -> DynamicBatchingConfig:
        if self.enabled:
            warnings.warn(
                "data_efficiency.data_sampling.dynamic_batching is enabled, but leantrain does "
                "not implement dynamic batching: the section is kept and ignored",
                UserWarning,
                stacklevel=2,
            )
        return self


class DataSamplingConfig(Section):
    """`data_efficiency.data_sampling`."""

    enabled: bool = False
    num_epochs: int = Field(1000, ge=1)
    num_workers: int = Field(0, ge=0)
    curriculum_learning: CurriculumLearningConfig = Field(
        default_factory=lambda: CurriculumLearningConfig()
    )
    dynamic_batching: DynamicBatchingConfig = Field(default_factory=lambda: DynamicBatchingConfig())


class RandomLTDScheduleParams(Section):
    """`random_ltd_schedule.schedule_config`."""

    require_steps: int = Field(..., gt=0, description="Steps to grow from min_value to max_value.")
    seq_per_step: int = Field(..., ge=1, description="Reserved length is a multiple of this.")


class RandomLTDScheduleConfig(Section):
    """`random_ltd_schedule`: reserved length grows linearly from min_value to max_value."""

    min_value: int = Field(..., ge=1, description="Reserved length at step 0.")
    max_value: int = Field(..., ge=1, description="Reserved length at the end (full length).")
    schedule_type: Literal["fixed_linear"] = "fixed_linear"
    schedule_config: RandomLTDScheduleParams

    @model_validator(mode="after")
    def _min_le_max(self) -> RandomLTDScheduleConfig:
        if self.min_value > self.max_value:
            raise ValueError(
                f"min_value: got {self.min_value} > max_value {self.max_value}; "
                "expected min_value <= max_value"
            )
        return self


class LayerTokenLRScheduleConfig(Section):
    """`layer_token_lr_schedule`: decay the LR by consumed layer-tokens instead of steps."""

    enabled: bool = False
    total_layer_tokens: int | None = Field(
        None, gt=0, alias="total_layer_tokens", description="Layer-tokens at the end of decay."
    )
    warmup_layer_tokens: int = Field(0, ge=0, description="Layer-tokens of linear warmup.")
    warmup_type: Literal["linear", "constant"] = "linear"

    @model_validator(mode="before")
    @classmethod
    def _accept_singular(cls, data: Any) -> Any:
        # some examples spell it `total_layer_token`; DeepSpeed reads the plural.
        if isinstance(data, dict) and "total_layer_token" in data:
            data = dict(data)
            if "total_layer_tokens" in data:
                raise ValueError(
                    "total_layer_token: given together with total_layer_tokens; keep one"
                )
            data["total_layer_tokens"] = data.pop("total_layer_token")
        return data

    @model_validator(mode="after")
    def _total_when_enabled(self) -> LayerTokenLRScheduleConfig:
        if self.enabled and self.total_layer_tokens is None:
            raise ValueError("total_layer_tokens: required when enabled")
        return self


class RandomLTDConfig(Section):
    """`data_efficiency.data_routing.random_ltd`."""

    enabled: bool = False
    total_layer_num: int | None = Field(None, ge=1, description="Blocks in the model.")
    random_ltd_layer_num: int | None = Field(None, ge=0, description="How many blocks drop tokens.")
    random_ltd_layer_id: list[int] | None = Field(
        None, description="Which blocks drop tokens (0-based); default all but first and last."
    )
    model_mask_name: str | None = Field(
        None, description="Keyword of the block's forward that carries the attention mask."
    )
    model_type: Literal["encoder", "decoder"] | None = Field(
        None, description="encoder (padding masks) or decoder (causal)."
    )
    hidden_state_order: Literal["batch_seq_dim", "seq_batch_dim"] = "batch_seq_dim"
    random_ltd_schedule: RandomLTDScheduleConfig | None = None
    layer_token_lr_schedule: LayerTokenLRScheduleConfig = Field(
        default_factory=lambda: LayerTokenLRScheduleConfig()
    )
    global_batch_size: int | None = Field(None, ge=1, description="Samples per optimizer step.")
    micro_batch_size: int | None = Field(None, ge=1, description="Samples per rank per forward.")
    keep_positions: list[int] | None = Field(
        None,
        description="leantrain extension: positions never dropped (default: the model family's, "
        "e.g. the CLS token of BERT/ViT).",
    )
    sample_non_padding_only: bool | None = Field(
        None,
        description="leantrain extension: draw kept tokens among non-padding ones first "
        "(default: true for encoders; false, DeepSpeed's padding-blind draw, for decoders).",
    )

    @model_validator(mode="after")
    def _consistent(self) -> RandomLTDConfig:
        ids = self.random_ltd_layer_id
        if ids is not None:
            if len(set(ids)) != len(ids):
                raise ValueError(f"random_ltd_layer_id: got {ids}; expected distinct layer ids")
            if any(i < 0 for i in ids):
                raise ValueError(f"random_ltd_layer_id: got {ids}; expected 0-based ids >= 0")
            if self.total_layer_num is not None and any(i >= self.total_layer_num for i in ids):
                raise ValueError(
                    f"random_ltd_layer_id: got {ids}; expected ids below total_layer_num "
                    f"{self.total_layer_num}"
                )
            if self.random_ltd_layer_num is not None and self.random_ltd_layer_num != len(ids):
                raise ValueError(
                    f"random_ltd_layer_num: got {self.random_ltd_layer_num}; expected "
                    f"{len(ids)}, the length of random_ltd_layer_id"
                )
        if (
            self.total_layer_num is not None
            and self.random_ltd_layer_num is not None
            and self.random_ltd_layer_num > self.total_layer_num
        ):
            raise ValueError(
                f"random_ltd_layer_num: got {self.random_ltd_layer_num}; expected at most "
                f"total_layer_num {self.total_layer_num}"
            )
        if self.enabled and self.random_ltd_schedule is None:
            raise ValueError("random_ltd_schedule: required when enabled")
        return self


class DataRoutingConfig(Section):
    """`data_efficiency.data_routing`."""

    enabled: bool = False
    random_ltd: RandomLTDConfig = Field(default_factory=lambda: RandomLTDConfig())


class DataEfficiencyConfig(Section):
    """`data_efficiency`: curriculum data sampling and random-LTD data routing."""

    enabled: bool = False
    seed: int = Field(1234, ge=0)
    data_sampling: DataSamplingConfig = Field(default_factory=lambda: DataSamplingConfig())
    data_routing: DataRoutingConfig = Field(default_factory=lambda: DataRoutingConfig())
