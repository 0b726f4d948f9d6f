"""Curriculum learning: difficulty analysis, pacing schedules, curriculum sampling and
sequence-length warmup (DeepSpeed Data Efficiency's curriculum, see README.md)."""

from leantrain.curriculum.analyzer import DataAnalyzer
from leantrain.curriculum.index import CurriculumIndex, CurriculumIndexError, write_index
from leantrain.curriculum.metrics import BUILTIN_METRICS, Metric, TokenBatch, rarity_table
from leantrain.curriculum.sampler import CurriculumSampler
from leantrain.curriculum.scheduler import CurriculumScheduler, CurriculumSchedules
from leantrain.curriculum.seqlen import SeqlenWarmupCollator, reshape_batch, truncate_batch
from leantrain.curriculum.sources import ArraySource, HFSource, TokenSource, TorchSource
from leantrain.curriculum.technique import CurriculumTechnique
from leantrain.files import WriteError

__all__ = [
    "BUILTIN_METRICS",
    "ArraySource",
    "CurriculumIndex",
    "CurriculumIndexError",
    "CurriculumSampler",
    "CurriculumScheduler",
    "CurriculumSchedules",
    "CurriculumTechnique",
    "DataAnalyzer",
    "HFSource",
    "Metric",
    "SeqlenWarmupCollator",
    "TokenBatch",
    "TokenSource",
    "TorchSource",
    "WriteError",
    "rarity_table",
    "reshape_batch",
    "truncate_batch",
    "write_index",
]
