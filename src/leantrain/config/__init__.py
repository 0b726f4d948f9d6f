"""Configuration shared by every technique: DeepSpeed's JSON sections, typed and validated."""

from leantrain.config.loader import SECTIONS, LeantrainConfig, load_config
from leantrain.config.resolve import SECTION_KEYS, Resolved, resolve
from leantrain.config.schema import (
    CurriculumLearningConfig,
    CurriculumMetricConfig,
    CurriculumScheduleConfig,
    DataEfficiencyConfig,
    DataRoutingConfig,
    DataSamplingConfig,
    DynamicBatchingConfig,
    LayerTokenLRScheduleConfig,
    LegacyCurriculumConfig,
    ProgressiveLayerDropConfig,
    RandomLTDConfig,
    RandomLTDScheduleConfig,
    RandomLTDScheduleParams,
)

__all__ = [
    "SECTIONS",
    "SECTION_KEYS",
    "CurriculumLearningConfig",
    "CurriculumMetricConfig",
    "CurriculumScheduleConfig",
    "DataEfficiencyConfig",
    "DataRoutingConfig",
    "DataSamplingConfig",
    "DynamicBatchingConfig",
    "LayerTokenLRScheduleConfig",
    "LeantrainConfig",
    "LegacyCurriculumConfig",
    "ProgressiveLayerDropConfig",
    "RandomLTDConfig",
    "RandomLTDScheduleConfig",
    "RandomLTDScheduleParams",
    "Resolved",
    "load_config",
    "resolve",
]
