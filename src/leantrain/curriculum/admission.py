"""Which samples a curriculum metric admits: its difficulty schedule and its sorted index.

The curriculum sampler asks each metric two things: how many samples of its sorted index a
difficulty admits (a prefix, `end`), and whether given samples are among them (`admitted`).
`paced_metrics` finds each metric's index (given, or loaded from the config's path and checked
to be of that metric); a `single_cluster` metric may go without one and only paces a difficulty.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from leantrain.config import CurriculumLearningConfig, CurriculumMetricConfig
from leantrain.curriculum.index import CurriculumIndex, index_absent
from leantrain.curriculum.scheduler import CurriculumScheduler
from leantrain.errors import ConfigError

__all__ = ["INDEX_METRIC", "PacedMetric", "paced_metrics"]

logger = logging.getLogger(__name__)

#: Config metric names that read an index named otherwise (Megatron-DeepSpeed's scripts call
#: the vocab_rarity index "voc"; its seqlen curricula read the seqlen index).
INDEX_METRIC = {"voc": "vocab_rarity", "seqlen_truncate": "seqlen", "seqlen_reshape": "seqlen"}


@dataclass
class PacedMetric:
    """One curriculum metric: its schedule, and its index when it filters samples."""

    name: str
    cfg: CurriculumMetricConfig
    scheduler: CurriculumScheduler
    index: CurriculumIndex | None

    def end(self, difficulty: float) -> int:
        """Samples admitted at `difficulty`: a prefix of the sorted index."""
        assert self.index is not None
        if self.cfg.difficulty_type == "percentile":
            return self.index.end_for_percentile(difficulty, self.cfg.max_difficulty or 100)
        return self.index.end_for_value(difficulty)

    def admitted(self, ids: np.ndarray, end: int) -> np.ndarray:
        """Whether each sample's rank in the sorted index is below `end`, in O(1) each."""
        assert self.index is not None
        n = self.index.num_samples
        if end >= n:
            return np.ones(len(ids), bool)
        if end <= 0:
            return np.zeros(len(ids), bool)
        first_out = int(self.index.index_to_sample[end])
        v_out = self.index.sample_to_metric[first_out]
        vals = self.index.sample_to_metric[ids]
        return (vals < v_out) | ((vals == v_out) & (ids < first_out))


def paced_metrics(
    section: CurriculumLearningConfig,
    indexes: Mapping[str, Any],
    verify: bool,
    schedulers: Mapping[str, CurriculumScheduler],
) -> list[PacedMetric]:
    """Every metric of `section` with its schedule (from `schedulers`, else built) and its
    index (from `indexes`, else its `index_to_sample_path`; `verify`: check file digests)."""
    out = []
    for name, cfg in section.curriculum_metrics.items():
        source = indexes.get(name, cfg.index_to_sample_path)
        index = None
        expected = INDEX_METRIC.get(name, name)
        if isinstance(source, CurriculumIndex):
            index = source
            if index.name != expected:
                raise ConfigError(
                    f"indexes.{name}: an index of metric {index.name!r} ({index.path}); "
                    f"expected the {expected!r} index"
                )
        elif (
            source is not None and cfg.clustering_type == "single_cluster" and index_absent(source)
        ):
            logger.warning(
                "curriculum_metrics.%s.index_to_sample_path: nothing at %r; ignored, as "
                "DeepSpeed ignores the index of a 'single_cluster' metric: the metric paces "
                "its difficulty and admits every sample",
                name,
                str(source),
            )
        elif source is not None:
            index = CurriculumIndex.load(source, verify=verify, metric=expected)
        elif cfg.clustering_type == "schedule_based":
            raise ConfigError(
                f"curriculum_metrics.{name}.index_to_sample_path: required for "
                "clustering_type 'schedule_based' (run `leantrain analyze`); only "
                "'single_cluster' metrics (e.g. seqlen by truncation) may go without"
            )
        scheduler = schedulers[name] if name in schedulers else CurriculumScheduler(cfg)
        out.append(PacedMetric(name, cfg, scheduler, index))
    return out
