"""The contract between a task's data and the training loop: `TaskData` and its batches.

Each task module (`text`, `glue`, `images`) returns a `TaskData`; `data.build_task_data` picks
the module for the recipe's task.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

__all__ = ["Batch", "TaskData", "Transform", "stack_samples"]

Batch = dict[str, torch.Tensor]
#: (batch, generator, training) -> batch; randomness only from the generator.
Transform = Callable[[Batch, torch.Generator, bool], Batch]


@dataclass
class TaskData:
    """What the loop needs from a task: datasets, batching, and how to score predictions."""

    train: Dataset[Any]
    valid: Dataset[Any] | None
    collate_fn: Callable[[list[Any]], Batch]
    #: Model config fields the data implies (vocab_size, pad/bos/eos ids, num_labels).
    model_fields: dict[str, Any] = field(default_factory=dict)
    transform: Transform | None = None
    #: (predictions, labels) -> metric name -> value; None: the task reports only its loss.
    score: Callable[[np.ndarray, np.ndarray], dict[str, float]] | None = None
    metric_names: tuple[str, ...] = field(default_factory=tuple)


def stack_samples(samples: list[Batch]) -> Batch:
    """Same-shaped samples stacked into one batch (the collate of fixed-length tasks)."""
    return {k: torch.stack([s[k] for s in samples]) for k in samples[0]}
