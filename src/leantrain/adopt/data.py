"""Data order and per-batch post-processing owned by the handle when curriculum learning is off."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

import torch
from torch.utils.data import DataLoader, Sampler

from leantrain.errors import ConfigError, StateError

__all__ = ["PostProcessedLoader", "ShuffledBatchSampler", "batch_seq_length"]


class ShuffledBatchSampler(Sampler[list[int]]):
    """Seeded, per-rank shuffled micro-batches whose position follows the handle's step count.

    Every rank shuffles the whole dataset with the same seed per epoch and takes its own strided
    share, so ranks see disjoint samples. Where a fresh iterator starts is a pure function of the
    optimizer steps taken (``steps × accumulation`` micro-batches), so a resumed handle continues
    exactly where it stopped, whatever the data loader prefetched.
    """

    def __init__(
        self,
        num_samples: int,
        *,
        micro_batch_size: int,
        steps: Callable[[], int],
        gradient_accumulation_steps: int = 1,
        rank: int = 0,
        world_size: int = 1,
        seed: int = 1234,
    ) -> None:
        """`steps` returns the optimizer steps taken so far (the handle's `global_step`)."""
        per_rank = num_samples // world_size
        if per_rank < micro_batch_size * gradient_accumulation_steps:
            raise ConfigError(
                f"micro_batch_size: got {micro_batch_size} × {gradient_accumulation_steps} "
                f"accumulation steps for {num_samples} samples over {world_size} ranks; expected "
                f"at most {per_rank} samples per rank per optimizer step"
            )
        self.num_samples = num_samples
        self.micro_batch_size = micro_batch_size
        self.gradient_accumulation_steps = gradient_accumulation_steps
        self.rank = rank
        self.world_size = world_size
        self.seed = seed
        self._steps = steps

    def __len__(self) -> int:
        """Micro-batches per rank per epoch: whole optimizer steps only, so an epoch never ends
        inside a step (a new iterator then restarts exactly at a step boundary)."""
        accumulation = self.gradient_accumulation_steps
        return (
            (self.num_samples // self.world_size)
            // self.micro_batch_size
            // accumulation
            * accumulation
        )

    def epoch_order(self, epoch: int) -> list[int]:
        """This rank's sample order in `epoch`: one global permutation, strided by rank."""
        g = torch.Generator().manual_seed(self.seed + epoch)
        perm = torch.randperm(self.num_samples, generator=g)
        per_rank = self.num_samples // self.world_size
        return perm[self.rank : per_rank * self.world_size : self.world_size].tolist()

    def __iter__(self) -> Iterator[list[int]]:
        """The rest of the current epoch, from the micro-batch the step count points at."""
        consumed = self._steps() * self.gradient_accumulation_steps
        epoch, start = divmod(consumed, len(self))
        order = self.epoch_order(epoch)
        mbs = self.micro_batch_size
        for b in range(start, len(self)):
            yield order[b * mbs : (b + 1) * mbs]

    def state_dict(self) -> dict[str, Any]:
        """Everything the order and the position depend on besides the step count."""
        return {
            "seed": self.seed,
            "num_samples": self.num_samples,
            "world_size": self.world_size,
            "micro_batch_size": self.micro_batch_size,
            "gradient_accumulation_steps": self.gradient_accumulation_steps,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Check the order and the position would be the same (the position is the handle's
        step × accumulation micro-batches, so another batch shape would skip or repeat
        samples); states of leantrain 0.1 have no batch shape to check."""
        mine = self.state_dict()
        changed = {k: (state[k], v) for k, v in mine.items() if k in state and state[k] != v}
        if changed:
            shown = ", ".join(
                f"{k} {a} was saved, this run has {b}" for k, (a, b) in changed.items()
            )
            raise StateError(
                f"data order: {shown}; resume with the same dataset size, world size, seed, "
                "micro-batch size and gradient accumulation"
            )


class PostProcessedLoader(DataLoader):
    """A DataLoader that post-processes each batch in the consuming process, at the current step."""

    def __init__(self, *args: Any, process: Callable[[Any], Any], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._process = process

    def __iter__(self) -> Iterator[Any]:  # type: ignore[override]
        for batch in super().__iter__():
            yield self._process(batch)


def batch_seq_length(batch: Any) -> int | None:
    """The sequence length of a batch of token ids, or None when it has none."""
    if isinstance(batch, Mapping):
        ids = batch.get("input_ids")
        if isinstance(ids, torch.Tensor) and ids.dim() >= 2:
            return int(ids.shape[1])
    return None
