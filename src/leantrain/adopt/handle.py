"""`prepare`: apply every enabled technique to a model and return one handle that drives them.

The handle holds no technique logic: it owns each technique's controller (PLD's θ schedule,
random-LTD's reserved length, the curriculum scheduler or sampler) and translates one event —
`step()`, once per optimizer step — into their updates, plus token accounting (SPEC.md §4) and
one versioned state dict. Composition rules live in `leantrain.adopt.compose`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence, Sized
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler

from leantrain.accounting import StepTokens, step_tokens
from leantrain.adopt.compose import (
    LEGACY,
    SURGERY_ORDER,
    TRUNCATING_METRICS,
    apply_surgery,
    build_controllers,
    check_composition,
    config_seq_length,
    revert_surgery,
)
from leantrain.adopt.data import PostProcessedLoader, ShuffledBatchSampler, batch_seq_length
from leantrain.config import LeantrainConfig, load_config
from leantrain.errors import ConfigError, LeantrainError, check_state_version
from leantrain.models import find_block_list
from leantrain.surgery import ensure_plain_model

__all__ = ["STATE_VERSION", "LeantrainHandle", "prepare"]

logger = logging.getLogger(__name__)

#: Version of `LeantrainHandle.state_dict()`; bumped when its layout changes.
STATE_VERSION = 1


class LeantrainHandle:
    """What `prepare` returns: the converted model, every technique's controller, and counters.

    Call `step()` once per optimizer step; everything else is read-only or for checkpoints.
    At global step t (optimizer steps taken) forward passes see θ(t) and r(t), and batches are
    cut to the curriculum's d(t + 1) (DeepSpeed's curriculum step is 1-based).
    """

    def __init__(
        self,
        model: nn.Module,
        config: LeantrainConfig,
        *,
        controllers: dict[str, Any],
        train_dataset: Dataset | None,
        collate_fn: Callable[[list[Any]], Any] | None,
        num_layers: int,
        ltd_layer_ids: Sequence[int],
        samples_per_step: int | None,
        gradient_accumulation_steps: int,
        seq_length: int | None,
    ) -> None:
        """Built by `prepare`; not meant to be called directly."""
        self.model = model
        self.config = config
        self.global_step = 0
        #: The curriculum sampler, or the shuffled one `prepare` sets (None without a dataset).
        self.batch_sampler: Sampler[list[int]] | None = controllers.get("curriculum")
        self._controllers = controllers
        self._curricula = _curriculum_schedulers(config)
        self._custom_installed = False
        self._dataset = train_dataset
        self._collate_fn = collate_fn
        self._num_layers = num_layers
        self._ltd_layer_ids = list(ltd_layer_ids)
        self._samples_per_step = samples_per_step
        self._accumulation = gradient_accumulation_steps
        self._seq_length = seq_length
        self._tokens = 0
        self._layer_tokens = 0.0
        self._warned_unknown_length = False
        self._set_step(0)

    @property
    def controllers(self) -> dict[str, Any]:
        """Each enabled technique's controller: 'pld' (ProgressiveLayerDrop), 'random_ltd'
        (RandomLTDScheduler, e.g. for LayerTokenLRScheduler), 'curriculum' (CurriculumSampler)."""
        return dict(self._controllers)

    # -- the one event -------------------------------------------------------------------------

    def step(self) -> StepTokens:
        """Count what the optimizer step just taken consumed, then advance every schedule.

        Returns the step's effective sequence length, tokens and expected layer-tokens.
        """
        counted = self.step_tokens()
        self._tokens += counted.tokens
        self._layer_tokens += counted.layer_tokens
        self._set_step(self.global_step + 1)
        return counted

    def _set_step(self, step: int) -> None:
        """Put every schedule at global step `step`."""
        self.global_step = step
        if "pld" in self._controllers:
            self._controllers["pld"].update_state(step)
        if "random_ltd" in self._controllers:
            self._controllers["random_ltd"].update_seq(step)
        for scheduler in self._curricula.values():
            if self._custom_installed or not _is_custom(scheduler):
                scheduler.update_difficulty(step + 1)

    def set_custom_curriculum_schedule(
        self, fn: Callable[[int], float], metric: str | None = None
    ) -> None:
        """Install the difficulty function of the global step for `schedule_type: custom`.

        DeepSpeed's `engine.set_custom_curriculum_learning_schedule(fn)`; `metric` names the
        Data Efficiency metric when several use a custom schedule.
        """
        custom = [n for n, s in self._curricula.items() if _is_custom(s)]
        chosen = [n for n in custom if metric is None or n == metric]
        if len(chosen) != 1:
            raise ConfigError(
                f"set_custom_curriculum_schedule: metric {metric!r}; the curriculum schedules "
                f"with schedule_type 'custom' are {custom}; name exactly one"
            )
        self._curricula[chosen[0]].set_custom_get_difficulty(fn)
        sampler = self._controllers.get("curriculum")
        if sampler is not None and chosen[0] != LEGACY:
            sampler.set_custom_get_difficulty(fn, metric=chosen[0])
        self._custom_installed = True
        self._set_step(self.global_step)

    # -- data ----------------------------------------------------------------------------------

    def dataloader(self, **dataloader_kwargs: Any) -> DataLoader:
        """A DataLoader over the training dataset that yields post-processed batches.

        Uses the curriculum batch sampler when curriculum learning is on, else a seeded per-rank
        shuffled batch sampler; every batch goes through `process_batch` in the consuming process
        (so the sequence length follows the step even with worker processes).
        """
        if self._dataset is None or self.batch_sampler is None:
            raise LeantrainError(
                "handle.dataloader(): prepare() was called without train_dataset (and "
                "micro_batch_size); pass them to get a data loader"
            )
        for key in ("batch_size", "shuffle", "sampler", "batch_sampler", "drop_last"):
            if key in dataloader_kwargs:
                raise LeantrainError(
                    f"handle.dataloader(): {key}= is set by leantrain's batch sampler; leave it out"
                )
        dataloader_kwargs.setdefault("collate_fn", self._collate_fn)
        return PostProcessedLoader(
            self._dataset,
            batch_sampler=self.batch_sampler,
            process=self.process_batch,
            **dataloader_kwargs,
        )

    def process_batch(self, batch: Any) -> Any:
        """Post-process one batch for the current step (sequence-length truncation or reshape)."""
        if self._seq_length is None:
            self._seq_length = batch_seq_length(batch)
        length = self.curriculum_seqlen()
        if length is None:
            return batch
        from leantrain.curriculum import reshape_batch, truncate_batch

        if self._length_mode() == "reshape":
            return reshape_batch(batch, length)
        return truncate_batch(batch, length)

    def _length_mode(self) -> str:
        """'reshape' for the seqlen_reshape metric, else 'truncate'."""
        return "reshape" if "seqlen_reshape" in self._curricula else "truncate"

    def curriculum_seqlen(self) -> int | None:
        """The sequence length a length curriculum imposes at the current step, or None."""
        for name in (LEGACY, *TRUNCATING_METRICS):
            if name in self._curricula:
                return int(self.curriculum_difficulties()[name])
        return None

    def curriculum_difficulties(self) -> dict[str, float]:
        """Current difficulty of each curriculum schedule ('curriculum_learning' for the legacy
        sequence-length warmup, else by Data Efficiency metric name; {} when off)."""
        if not self._custom_installed and any(map(_is_custom, self._curricula.values())):
            raise LeantrainError(
                "a curriculum schedule_type is 'custom': call "
                "handle.set_custom_curriculum_schedule(fn) before training"
            )
        return {k: float(s.get_current_difficulty()) for k, s in self._curricula.items()}

    # -- accounting and metrics ----------------------------------------------------------------

    @property
    def seq_length(self) -> int | None:
        """The full (untruncated) sequence length used for token counting, once known."""
        return self._seq_length

    def keep_probs(self) -> list[float] | None:
        """PLD's keep probability of each block at the current step (None when PLD is off)."""
        pld = self._controllers.get("pld")
        return None if pld is None else list(pld.keep_probs(self._num_layers))

    def step_tokens(self) -> StepTokens:
        """Effective sequence length, tokens and expected layer-tokens of the current step."""
        if self._seq_length is None or self._samples_per_step is None:
            if not self._warned_unknown_length:
                logger.warning(
                    "leantrain: token counts stay 0: pass seq_length= and micro_batch_size= to "
                    "prepare() (or send a batch through process_batch) to count tokens"
                )
                self._warned_unknown_length = True
            return StepTokens(0, 0, 0.0)
        ltd = self._controllers.get("random_ltd")
        reserved = int(ltd.get_current_seq()) if ltd is not None else None
        cur = self.curriculum_seqlen()
        samples = self._samples_per_step
        if cur is not None and self._length_mode() == "reshape" and cur < self._seq_length:
            samples = samples * (self._seq_length // cur)  # reshape folds tokens into more rows
        return step_tokens(
            samples,
            self._seq_length,
            num_layers=self._num_layers,
            curriculum_seqlen=cur,
            ltd_layer_ids=self._ltd_layer_ids if ltd is not None else (),
            reserved_length=reserved,
            keep_probs=self.keep_probs(),
        )

    def metrics(self) -> dict[str, float]:
        """Current schedule values and cumulative counters, under namespaced keys.

        Only enabled techniques report; with several curriculum metrics each also reports
        `curriculum/difficulty/<metric>` (`curriculum/difficulty` is the first).
        """
        out: dict[str, float] = {}
        if "pld" in self._controllers:
            out["pld/theta"] = float(self._controllers["pld"].get_theta())
        if "random_ltd" in self._controllers:
            ltd = self._controllers["random_ltd"]
            out["random_ltd/reserved_length"] = float(ltd.get_current_seq())
        difficulties = self.curriculum_difficulties()
        if difficulties:
            out["curriculum/difficulty"] = next(iter(difficulties.values()))
            if len(difficulties) > 1:
                out.update({f"curriculum/difficulty/{k}": v for k, v in difficulties.items()})
        out["tokens/effective_seqlen"] = float(self.step_tokens().effective)
        out["tokens/consumed"] = float(self._tokens)
        out["tokens/layer_tokens"] = float(self._layer_tokens)
        return out

    # -- checkpoints ---------------------------------------------------------------------------

    def _state_of(self, name: str) -> dict[str, Any]:
        """One controller's state; the curriculum sampler's at the loop's consumed micro-batches."""
        controller = self._controllers[name]
        if name == "curriculum":
            return controller.state_dict(self.global_step * self._accumulation)
        return controller.state_dict()

    def state_dict(self) -> dict[str, Any]:
        """Versioned state of every technique, the data order and the counters."""
        return {
            "version": STATE_VERSION,
            "techniques": sorted(self._controllers),
            "global_step": self.global_step,
            "tokens": self._tokens,
            "layer_tokens": self._layer_tokens,
            "seq_length": self._seq_length,
            "controllers": {name: self._state_of(name) for name in self._controllers},
            "curricula": {k: s.state_dict() for k, s in self._curricula.items()},
            "sampler": self.batch_sampler.state_dict()
            if isinstance(self.batch_sampler, ShuffledBatchSampler)
            else None,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore a `state_dict()`; the same techniques must be enabled."""
        check_state_version(state, STATE_VERSION, "leantrain")
        if sorted(state["techniques"]) != sorted(self._controllers) or sorted(
            state["curricula"]
        ) != sorted(self._curricula):
            raise LeantrainError(
                f"leantrain state: checkpoint has techniques {state['techniques']} and curricula "
                f"{sorted(state['curricula'])}, this run has {sorted(self._controllers)} and "
                f"{sorted(self._curricula)}; resume with the same config"
            )
        if isinstance(self.batch_sampler, ShuffledBatchSampler) and state["sampler"] is not None:
            self.batch_sampler.load_state_dict(state["sampler"])
        for name, controller in self._controllers.items():
            controller.load_state_dict(state["controllers"][name])
        for name, scheduler in self._curricula.items():
            scheduler.load_state_dict(state["curricula"][name])
        self._tokens = int(state["tokens"])
        self._layer_tokens = float(state["layer_tokens"])
        if state["seq_length"] is not None:
            self._seq_length = int(state["seq_length"])
        self._set_step(int(state["global_step"]))

    def save(self, path: str | Path) -> None:
        """Write `state_dict()` atomically (temp file, then rename)."""
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        torch.save(self.state_dict(), tmp)
        tmp.replace(path)

    def load(self, path: str | Path) -> None:
        """Read a file written by `save` into this handle."""
        self.load_state_dict(torch.load(Path(path), map_location="cpu", weights_only=False))

    # -- undo ----------------------------------------------------------------------------------

    def revert(self) -> nn.Module:
        """Undo all surgery (reverse order) and return the plain model."""
        revert_surgery(self.model, [t for t in SURGERY_ORDER if t in self._controllers])
        return self.model

    def plain_state_dict(self) -> dict[str, torch.Tensor]:
        """The model's state dict under plain keys (surgery keeps them, so it is the same dict)."""
        return self.model.state_dict()


def _is_custom(scheduler: Any) -> bool:
    """Whether a curriculum scheduler uses `schedule_type: custom`."""
    return scheduler.config.schedule_type == "custom"


def _curriculum_schedulers(config: LeantrainConfig) -> dict[str, Any]:
    """One difficulty schedule per curriculum: the legacy warmup, or each Data Efficiency metric."""
    sections: dict[str, Any] = {}
    if config.seqlen_warmup_enabled:
        sections[LEGACY] = config.curriculum_learning
    if config.curriculum_enabled:
        sections.update(config.curriculum.curriculum_metrics)
    if not sections:
        return {}
    from leantrain.curriculum import CurriculumScheduler

    return {name: CurriculumScheduler(section) for name, section in sections.items()}


def prepare(
    model: nn.Module,
    config: str | Path | Mapping[str, Any] | LeantrainConfig,
    train_dataset: Dataset | None = None,
    *,
    micro_batch_size: int | None = None,
    gradient_accumulation_steps: int | None = None,
    collate_fn: Callable[[list[Any]], Any] | None = None,
    rank: int | None = None,
    world_size: int | None = None,
    layers: nn.ModuleList | str | None = None,
    seq_length: int | None = None,
) -> LeantrainHandle:
    """Apply every enabled technique of `config` to `model` (in place) and return its handle.

    `config` is a DeepSpeed-style config (file or dict; a whole DeepSpeed file loads unchanged).
    `micro_batch_size` and `gradient_accumulation_steps` (defaults: the config's
    `train_micro_batch_size_per_gpu` and `gradient_accumulation_steps`, else 1 step) size the
    batch sampler and the token counts (else the config's `train_batch_size`); `rank` and
    `world_size` default to torch.distributed's; `layers` picks the block list for models the
    registry does not know; `seq_length` is the full sequence length of the data (default: from
    the config, or the first batch seen by `process_batch`).
    """
    cfg = load_config(config)
    check_composition(cfg)
    ensure_plain_model(model, "leantrain.prepare")
    rank, world_size = _rank_and_world(rank, world_size)
    if gradient_accumulation_steps is None:
        gradient_accumulation_steps = _positive(cfg.model_extra, "gradient_accumulation_steps") or 1
    if gradient_accumulation_steps < 1:
        raise ConfigError(
            f"gradient_accumulation_steps: got {gradient_accumulation_steps}; expected >= 1"
        )
    if micro_batch_size is None:
        micro_batch_size = _positive(cfg.model_extra, "train_micro_batch_size_per_gpu")
    samples_per_step = (
        micro_batch_size * gradient_accumulation_steps * world_size
        if micro_batch_size is not None
        else _positive(cfg.model_extra, "train_batch_size")
    )
    blocks = find_block_list(model, layers)
    controllers = build_controllers(cfg)
    if cfg.curriculum_enabled:
        controllers["curriculum"] = _curriculum_sampler(
            cfg, train_dataset, micro_batch_size, gradient_accumulation_steps, rank, world_size
        )
    ltd_ids = apply_surgery(model, controllers, blocks, rank=rank)
    if seq_length is None:
        seq_length = config_seq_length(cfg)
    ltd = controllers.get("random_ltd")
    if ltd is not None and ltd.global_batch_size is None:
        ltd.global_batch_size = samples_per_step  # its layer-token counter (for the LR schedule)
    handle = LeantrainHandle(
        model,
        cfg,
        controllers=controllers,
        train_dataset=train_dataset,
        collate_fn=collate_fn,
        num_layers=len(blocks),
        ltd_layer_ids=ltd_ids,
        samples_per_step=samples_per_step,
        gradient_accumulation_steps=gradient_accumulation_steps,
        seq_length=seq_length,
    )
    if not cfg.curriculum_enabled and train_dataset is not None and micro_batch_size is not None:
        handle.batch_sampler = ShuffledBatchSampler(
            _len(train_dataset),
            micro_batch_size=micro_batch_size,
            steps=lambda: handle.global_step,
            gradient_accumulation_steps=gradient_accumulation_steps,
            rank=rank,
            world_size=world_size,
            seed=cfg.data_efficiency.seed,
        )
    return handle


def _curriculum_sampler(
    cfg: LeantrainConfig,
    dataset: Dataset | None,
    micro_batch_size: int | None,
    accumulation: int,
    rank: int,
    world_size: int,
) -> Any:
    """The Data Efficiency curriculum batch sampler (needs the dataset and the micro batch)."""
    if dataset is None or micro_batch_size is None:
        raise ConfigError(
            "data_efficiency.data_sampling.curriculum_learning: enabled, so prepare() needs "
            "train_dataset= and micro_batch_size= (the curriculum owns the batch order)"
        )
    from leantrain.curriculum import CurriculumSampler

    return CurriculumSampler(
        cfg,
        num_samples=_len(dataset),
        micro_batch_size=micro_batch_size,
        gradient_accumulation_steps=accumulation,
        rank=rank,
        world_size=world_size,
    )


def _rank_and_world(rank: int | None, world_size: int | None) -> tuple[int, int]:
    """Fill in rank and world size from torch.distributed when not given."""
    dist = torch.distributed
    initialized = dist.is_available() and dist.is_initialized()
    if rank is None:
        rank = dist.get_rank() if initialized else 0
    if world_size is None:
        world_size = dist.get_world_size() if initialized else 1
    if not 0 <= rank < world_size:
        raise ConfigError(
            f"rank: got {rank} for world_size {world_size}; expected 0 <= rank < world_size"
        )
    return rank, world_size


def _positive(extra: Mapping[str, Any] | None, key: str) -> int | None:
    """An integer top-level key of a DeepSpeed config, or None."""
    value = (extra or {}).get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{key}: got {value!r}; expected a positive integer")
    return value


def _len(dataset: Dataset) -> int:
    """The dataset's length; map-style datasets only."""
    if not isinstance(dataset, Sized):
        raise ConfigError(
            f"train_dataset: got {type(dataset).__name__} without __len__; expected a map-style "
            "dataset (leantrain owns the sample order)"
        )
    return len(dataset)
