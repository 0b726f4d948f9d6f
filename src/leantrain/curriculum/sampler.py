"""`CurriculumSampler`: a DataLoader batch sampler that admits samples by difficulty.

Global batch k (1-based, as DeepSpeed's curriculum step) is drawn only from samples within every
filtering metric's threshold at step k (`admission.py`). Admitted samples form clusters (a new
one per difficulty rise, `schedule_based`, or one pool, `single_cluster`); a batch takes from
each cluster in proportion to its size (multinomial), and each cluster is read in a lazily
permuted order (`permute.py`) re-keyed every pass. Randomness is counter-based: a numpy
Generator seeded by (seed, k), and permutation keys from (seed, cluster, pass). So batches are a
pure function of (seed, index, config, consumed steps), with no global RNG and no files, at
O(batch) per step. With one filtering metric a cluster is a slice of that metric's memmapped
sorted index (O(1) memory); with several, cluster members are intersected once and kept in RAM.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch.distributed as dist
from torch.utils.data import Sampler

from leantrain.config import CurriculumLearningConfig, resolve
from leantrain.curriculum.admission import paced_metrics
from leantrain.curriculum.index import CurriculumIndex
from leantrain.curriculum.permute import mix64, permute
from leantrain.curriculum.scheduler import CurriculumScheduler
from leantrain.errors import ConfigError, LeantrainError, check_state_version

__all__ = ["CurriculumSampler"]

STATE_VERSION = 1
SNAPSHOTS = 1024  # recent per-step cluster positions kept for state_dict(consumed_micro_batches)


@dataclass
class _Draw:
    """Everything that changes as global batches are drawn."""

    steps: int = 0  # global batches drawn
    ends: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    lo: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    size: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    key: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    pos: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    history: list[tuple[int, list[int]]] = field(default_factory=list)  # (step, ends)
    buffer: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    buffer_len: int = 0
    difficulties: dict[str, int | float] = field(default_factory=dict)

    def snapshot(self) -> _Draw:
        """A copy safe to draw from (arrays are replaced, never edited, below buffer_len)."""
        out = copy.copy(self)
        out.history = list(self.history)
        return out


class CurriculumSampler(Sampler[list[int]]):
    """Batch sampler for `DataLoader(dataset, batch_sampler=...)` yielding this rank's
    micro-batches of curriculum-admitted sample ids.

    `config`: a DeepSpeed config (path, dict or `LeantrainConfig`) or its
    `curriculum_learning` section (typed or a dict); `schedulers` are the metrics' difficulty
    schedules when their owner shares them (default: built here). Metrics with an index
    (`index_to_sample_path`, or `indexes`) filter samples; metrics without one (DeepSpeed's
    `seqlen_truncate` with `single_cluster`) only report a difficulty, e.g. for
    `truncate_batch`. A `single_cluster` metric whose index path names nothing on disk (the
    `"dummy"` of DeepSpeedExamples' scripts) has no index, with one warning: DeepSpeed never
    opens the index of a `single_cluster` metric. Global batch = micro_batch_size ×
    world_size × gradient_accumulation_steps. `shard=False` yields every rank's micro-batch in
    rank order (for Accelerate / HF Trainer, which shard batch samplers themselves).
    Each index must be of its metric (the config key, or "voc" for vocab_rarity); with
    `dataset` (the training data) and `verify_index`, it must also be of that data (sample count
    and digests of a few samples, `CurriculumIndex.check_data`).
    """

    def __init__(
        self,
        config: Any,
        *,
        micro_batch_size: int,
        gradient_accumulation_steps: int = 1,
        rank: int | None = None,
        world_size: int | None = None,
        shard: bool = True,
        seed: int | None = None,
        num_samples: int | None = None,  # the dataset's length: checked against the indexes
        indexes: Mapping[str, CurriculumIndex | str | Path] | None = None,
        custom_difficulty: Mapping[str, Callable[[int], float]] | None = None,
        verify_index: bool = True,
        schedulers: Mapping[str, CurriculumScheduler] | None = None,
        dataset: Any = None,
    ) -> None:
        super().__init__()
        section, cfg_seed = _section(config)
        self.seed = int(cfg_seed if seed is None else seed)
        if world_size is None:
            world_size = dist.get_world_size() if dist.is_initialized() else 1
        if rank is None:
            rank = dist.get_rank() if dist.is_initialized() else 0
        if not 0 <= rank < world_size or micro_batch_size < 1 or gradient_accumulation_steps < 1:
            raise ConfigError(
                f"CurriculumSampler: got rank {rank}, world_size {world_size}, micro_batch_size "
                f"{micro_batch_size}, gradient_accumulation_steps {gradient_accumulation_steps}"
            )
        self.rank, self.world_size, self.shard = rank, world_size, shard
        self.batch_size, self.drop_last = micro_batch_size, True  # read by Accelerate
        self.gradient_accumulation_steps = gradient_accumulation_steps
        self.global_batch_size = micro_batch_size * world_size * gradient_accumulation_steps
        self._section = section
        self._metrics = paced_metrics(section, indexes or {}, verify_index, schedulers or {})
        for name, fn in (custom_difficulty or {}).items():
            self.set_custom_get_difficulty(fn, metric=name)
        self._filters = [m for m in self._metrics if m.index is not None]
        if dataset is not None:
            num_samples = len(dataset) if num_samples is None else num_samples
            for m in self._filters if verify_index else []:
                assert m.index is not None
                m.index.check_data(dataset)
        sizes = {m.index.num_samples for m in self._filters if m.index is not None}
        if len(sizes) > 1:
            raise ConfigError(f"curriculum_metrics: indexes cover different sample counts {sizes}")
        if sizes and num_samples is not None and num_samples not in sizes:
            where = self._filters[0].index.path if self._filters[0].index else ""
            raise ConfigError(
                f"num_samples: got {num_samples}; the index {where} covers {sizes.pop()} "
                "samples; was it analysed from another dataset?"
            )
        if not sizes and num_samples is None:
            raise ConfigError("num_samples: required when no curriculum metric has an index")
        self.num_samples = int(sizes.pop() if sizes else num_samples)  # type: ignore[arg-type]
        self._single = all(m.cfg.clustering_type == "single_cluster" for m in self._filters)
        self._state = self._fresh()
        self._micro = 0  # consumed micro-steps (each covers every rank)
        self._batch: np.ndarray | None = None  # ids of global batch self._state.steps
        self._snapshots: OrderedDict[int, _Draw] = OrderedDict()

    # ---- setup --------------------------------------------------------------------------------
    def set_custom_get_difficulty(
        self, fn: Callable[[int], float], metric: str | None = None
    ) -> None:
        """Install the step → difficulty function of a `custom` schedule (the only one if
        `metric` is None)."""
        custom = [m for m in self._metrics if m.cfg.schedule_type == "custom"]
        chosen = [m for m in custom if metric is None or m.name == metric]
        if len(chosen) != 1:
            raise ConfigError(
                f"set_custom_get_difficulty: metric {metric!r}; custom-schedule metrics are "
                f"{[m.name for m in custom]}; name exactly one"
            )
        chosen[0].scheduler.set_custom_get_difficulty(fn)

    def _fresh(self) -> _Draw:
        return _Draw(ends=np.zeros(len(self._filters), np.int64))

    # ---- clusters -----------------------------------------------------------------------------
    def _difficulties_at(self, step: int) -> dict[str, int | float]:
        return {m.name: m.scheduler.get_difficulty(step) for m in self._metrics}

    def _advance(self, st: _Draw, step: int) -> None:
        """Difficulties at `step`; a new cluster when any filtering threshold rose (thresholds
        never fall: a sample once admitted stays, as in DeepSpeed's clusters)."""
        st.difficulties = d = self._difficulties_at(step)
        ends = np.asarray(
            [max(int(e), m.end(d[m.name])) for m, e in zip(self._filters, st.ends, strict=True)],
            dtype=np.int64,
        )
        if st.history and np.array_equal(ends, st.ends):
            return
        self._add_cluster(st, step, ends)

    def _add_cluster(self, st: _Draw, step: int, ends: np.ndarray) -> None:
        old, key = st.ends, len(st.history)
        st.history.append((step, ends.tolist()))
        st.ends = ends
        if not self._filters:
            lo, size = 0, self.num_samples
        elif len(self._filters) == 1:
            lo, size = int(old[0]), int(ends[0] - old[0])
        else:
            new = self._new_members(old, ends)
            lo, size = st.buffer_len, len(new)
            if st.buffer_len + size > len(st.buffer):
                grown = np.zeros(max(2 * len(st.buffer), st.buffer_len + size), np.int64)
                grown[: st.buffer_len] = st.buffer[: st.buffer_len]
                st.buffer = grown
            st.buffer[lo : lo + size] = new
            st.buffer_len += size
        if self._single:  # one pool of everything admitted so far, re-keyed on each rise
            lo, size = 0, lo + size
            st.lo, st.size, st.key, st.pos = (np.zeros(0, np.int64) for _ in range(4))
        if size > 0:
            st.lo, st.size = np.append(st.lo, lo), np.append(st.size, size)
            st.key, st.pos = np.append(st.key, key), np.append(st.pos, 0)

    def _new_members(self, old: np.ndarray, new: np.ndarray) -> np.ndarray:
        """Samples admitted under `new` ends but not under `old` (several metrics): each is
        taken from the first metric whose threshold newly admits it."""
        parts = []
        for i, m in enumerate(self._filters):
            if new[i] <= old[i]:
                continue
            assert m.index is not None
            cand = np.asarray(m.index.index_to_sample[old[i] : new[i]], dtype=np.int64)
            keep = np.ones(len(cand), bool)
            for j, other in enumerate(self._filters):
                if j != i:
                    keep &= other.admitted(cand, int(old[j] if j < i else new[j]))
            parts.append(cand[keep])
        return np.concatenate(parts) if parts else np.zeros(0, np.int64)

    # ---- drawing ------------------------------------------------------------------------------
    def _draw(self, st: _Draw, with_ids: bool) -> np.ndarray | None:
        """Draw global batch `st.steps + 1`: counts per cluster, then (with_ids) the sample ids."""
        step = st.steps + 1
        self._advance(st, step)
        total = int(st.size.sum())
        if total == 0:
            raise LeantrainError(
                f"CurriculumSampler: no sample is admitted at step {step} (difficulties "
                f"{st.difficulties}); lower min_difficulty or check the index"
            )
        rng = np.random.default_rng([self.seed, step, 0x6C65616E])
        counts = rng.multinomial(self.global_batch_size, st.size / total)
        st.steps = step
        if not with_ids:
            st.pos = st.pos + counts
            return None
        cid = np.repeat(np.arange(len(counts)), counts)
        within = np.arange(self.global_batch_size) - np.repeat(np.cumsum(counts) - counts, counts)
        p = st.pos[cid] + within
        size = st.size[cid]
        keys = mix64(
            mix64(st.key[cid].astype(np.uint64) ^ np.uint64(self.seed))
            + (p // size).astype(np.uint64)
        )
        local = st.lo[cid] + permute(p % size, size, keys)
        st.pos = st.pos + counts
        if not self._filters:
            ids = local
        elif len(self._filters) == 1:
            assert self._filters[0].index is not None
            ids = np.asarray(self._filters[0].index.index_to_sample[local], dtype=np.int64)
        else:
            ids = st.buffer[local]
        return ids[rng.permutation(self.global_batch_size)]

    def _replay(self, steps: int) -> _Draw:
        """A copy of the draw state after `steps` global batches: from the live state, a
        recent snapshot, or replayed from the start (counts only, no ids)."""
        if steps in self._snapshots:
            st = self._snapshots[steps].snapshot()
        elif steps >= self._state.steps:
            st = self._state.snapshot()
        else:
            st = self._fresh()
        while st.steps < steps:
            self._draw(st, with_ids=False)
        return st

    def _seek(self, micro: int) -> None:
        """Position before micro-step `micro`: global batches before its step are drawn."""
        before = micro // self.gradient_accumulation_steps
        if self._state.steps not in (before, before + 1):
            self._state = self._replay(before)
            self._batch = None
        self._micro = micro

    def _global_batch(self) -> np.ndarray:
        step = self._micro // self.gradient_accumulation_steps + 1
        if self._batch is None or self._state.steps != step:
            if self._state.steps != step - 1:
                self._state = self._replay(step - 1)
            self._snapshots[self._state.steps] = self._state.snapshot()
            while len(self._snapshots) > SNAPSHOTS:
                self._snapshots.popitem(last=False)
            self._batch = self._draw(self._state, with_ids=True)
        assert self._batch is not None
        return self._batch

    # ---- Sampler API --------------------------------------------------------------------------
    @property
    def steps_per_epoch(self) -> int:
        """Global batches per epoch: samples // global batch (at least 1)."""
        return max(1, self.num_samples // self.global_batch_size)

    def __len__(self) -> int:
        """Micro-batches one `iter()` yields: one epoch's worth (× world_size unsharded)."""
        per_rank = self.steps_per_epoch * self.gradient_accumulation_steps
        return per_rank if self.shard else per_rank * self.world_size

    def __iter__(self) -> Iterator[list[int]]:
        """Yield micro-batches from the current position to the end of the current epoch."""
        epoch_micro = self.steps_per_epoch * self.gradient_accumulation_steps
        end = (self._micro // epoch_micro + 1) * epoch_micro
        mbs, gas = self.batch_size, self.gradient_accumulation_steps
        while self._micro < end:
            batch = self._global_batch()
            i = self._micro % gas
            chunk = batch[i * mbs * self.world_size : (i + 1) * mbs * self.world_size]
            self._micro += 1
            if self.shard:
                yield chunk[self.rank * mbs : (self.rank + 1) * mbs].tolist()
            else:
                for r in range(self.world_size):
                    yield chunk[r * mbs : (r + 1) * mbs].tolist()

    def set_epoch(self, epoch: int) -> None:
        """Start the next `iter()` at `epoch` unless the position is already inside it (a
        resumed mid-epoch state stays put; a fresh sampler jumps, replaying the draws)."""
        epoch_micro = self.steps_per_epoch * self.gradient_accumulation_steps
        if self._micro // epoch_micro != epoch:
            self._seek(epoch * epoch_micro)

    def get_current_difficulties(self) -> dict[str, int | float]:
        """Each metric's difficulty at the step of the last drawn global batch."""
        return dict(self._state.difficulties)

    @property
    def consumed_micro_batches(self) -> int:
        """Micro-steps yielded so far (each covers every rank)."""
        return self._micro

    # ---- state --------------------------------------------------------------------------------
    def fingerprint(self) -> dict[str, Any]:
        """What a saved state must match: index checksums, curriculum config, seed, batch."""
        cfg = json.dumps(self._section.model_dump(mode="json"), sort_keys=True)
        return {
            "index": {m.name: m.index.fingerprint for m in self._filters if m.index is not None},
            "config": hashlib.sha256(cfg.encode()).hexdigest()[:16],
            "seed": self.seed,
            "num_samples": self.num_samples,
            "batch": [self.batch_size, self.world_size, self.gradient_accumulation_steps],
        }

    def state_dict(self, consumed_micro_batches: int | None = None) -> dict[str, Any]:
        """Versioned state at the sampler's position, or at `consumed_micro_batches` (the
        training loop's count, behind the sampler when DataLoader workers prefetch)."""
        micro = self._micro if consumed_micro_batches is None else consumed_micro_batches
        st = self._replay(micro // self.gradient_accumulation_steps)
        return {
            "version": STATE_VERSION,
            "fingerprint": self.fingerprint(),
            "consumed_micro_batches": micro,
            "steps": st.steps,
            "cluster_pos": st.pos.tolist(),
            "history": [[s, e] for s, e in st.history],
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore a `state_dict()`; refuses one saved for another index, config or batch."""
        check_state_version(state, STATE_VERSION, "CurriculumSampler")
        mine = self.fingerprint()
        for key, value in mine.items():
            if state["fingerprint"].get(key) != value:
                raise ConfigError(
                    f"CurriculumSampler state: saved for a different {key} "
                    f"({state['fingerprint'].get(key)!r}, now {value!r}); resuming would not "
                    "reproduce the batch order. Use the same index, config, seed and batch shape"
                )
        st = self._fresh()
        for step, ends in state["history"]:
            self._add_cluster(st, int(step), np.asarray(ends, np.int64))
        st.pos = np.asarray(state["cluster_pos"], np.int64)
        st.steps = int(state["steps"])
        if len(st.pos) != len(st.size):
            raise ConfigError("CurriculumSampler state: cluster positions do not match its history")
        if st.steps:
            st.difficulties = self._difficulties_at(st.steps)
        self._state, self._batch, self._micro = st, None, int(state["consumed_micro_batches"])
        self._snapshots.clear()


def _section(config: Any) -> tuple[CurriculumLearningConfig, int]:
    """The curriculum section and the data-efficiency seed (1234 unless a whole config sets
    it) from any accepted config form."""
    resolved = resolve(config, CurriculumLearningConfig)
    if not resolved.section.curriculum_metrics:
        raise ConfigError(
            "data_efficiency.data_sampling.curriculum_learning.curriculum_metrics: empty; the "
            "curriculum sampler needs at least one metric"
        )
    seed = resolved.config.data_efficiency.seed if resolved.config is not None else 1234
    return resolved.section, seed
