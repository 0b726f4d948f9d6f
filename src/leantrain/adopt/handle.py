"""`LeantrainHandle`: what `prepare` returns, driving every technique through one event.

The handle holds no technique logic and names no technique: it loops over the techniques
`prepare` built (in composition order, `leantrain.adopt.compose`) to translate one event —
`step()`, once per optimizer step — into their updates, to post-process batches, to count
tokens (Megatron-DeepSpeed's rule, one `TokenCounter`) and to save one versioned state
(`leantrain.adopt.state`).
"""

from __future__ import annotations

import functools
import logging
import operator
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler

from leantrain.accounting import StepShape, StepTokens, TokenCounter
from leantrain.adopt.compose import revert_techniques
from leantrain.adopt.data import PostProcessedLoader, batch_seq_length
from leantrain.adopt.notices import StepWatch
from leantrain.adopt.state import handle_state, load_handle_state
from leantrain.config import LeantrainConfig
from leantrain.errors import ConfigError, LeantrainError
from leantrain.technique import Requirements, Technique

__all__ = ["LeantrainHandle"]

logger = logging.getLogger(__name__)


class LeantrainHandle:
    """What `prepare` returns: the converted model, its techniques, and the token counter.

    Call `step()` once per optimizer step; everything else is read-only or for checkpoints.
    At global step t (optimizer steps taken) every technique is at step t (PLD's θ(t),
    random-LTD's r(t), the curriculum's d(t + 1): DeepSpeed's curriculum step is 1-based).
    """

    def __init__(
        self,
        model: nn.Module,
        config: LeantrainConfig,
        *,
        techniques: Sequence[Technique],
        counter: TokenCounter,
        train_dataset: Dataset | None,
        collate_fn: Callable[[list[Any]], Any] | None,
        num_layers: int,
        samples_per_step: int | None,
        seq_length: int | None,
        micro_batches: int = 1,
        forwards_per_step: int = 1,
    ) -> None:
        """Built by `prepare`; not meant to be called directly."""
        self.model = model
        self.config = config
        self.global_step = 0
        #: The enabled techniques, in composition order.
        self.techniques = tuple(techniques)
        #: The run's consumed tokens and layer-tokens (the one count everything reads).
        self.counter = counter
        #: What the host must respect for these techniques together (DDP, data, wrapping order).
        self.requirements: Requirements = functools.reduce(
            operator.or_, (type(t).requirements(config) for t in techniques), Requirements()
        )
        owned = [t.batch_sampler for t in techniques if t.batch_sampler is not None]
        #: The batch sampler a technique owns, or the shuffled one `prepare` sets (None without a
        #: dataset).
        self.batch_sampler: Sampler[list[int]] | None = owned[0] if owned else None
        self._dataset = train_dataset
        self._collate_fn = collate_fn
        self._num_layers = num_layers
        self._samples_per_step = samples_per_step
        self._micro_batches = micro_batches
        self._seq_length = seq_length
        self._warned_unknown_length = False
        #: Warns once when training forwards keep coming without `step()`.
        self._watch = StepWatch(10 * forwards_per_step + 10, self._warn_no_step)
        self._watch_hook = self._watch.attach(model)
        self._set_step(0)

    def __repr__(self) -> str:
        """The step and one line per technique."""
        lines = [f"  {t.summary()}" for t in self.techniques] or ["  (no technique enabled)"]
        return "\n".join([f"LeantrainHandle(global_step={self.global_step})", *lines])

    @property
    def controllers(self) -> dict[str, Any]:
        """Each enabled technique's controller by technique name: 'pld' (ProgressiveLayerDrop),
        'random_ltd' (RandomLTDScheduler, e.g. for LayerTokenLRScheduler), 'curriculum'
        (CurriculumSampler, when it draws the batches)."""
        return {t.name: t.controller for t in self.techniques if t.controller is not None}

    # -- the one event -------------------------------------------------------------------------

    def step(self) -> StepTokens:
        """Count what the optimizer step just taken consumed, then advance every technique.

        Returns the step's effective sequence length, tokens and expected layer-tokens.
        """
        counted = self.step_tokens()
        self.counter.add(counted)
        self._set_step(self.global_step + 1)
        self._watch.stepped()
        return counted

    def _warn_no_step(self, count: int, what: str) -> None:
        """The schedules are stuck: `step()` was not called for `count` of `what`."""
        now = ", ".join(
            f"{k}={v:g}" for k, v in self.metrics().items() if not k.startswith("tokens/")
        )
        logger.warning(
            "leantrain: %d %s since handle.step() was last called (global step %d): call "
            "handle.step() once per optimizer step, or every schedule stays where it is%s",
            count,
            what,
            self.global_step,
            f" ({now})" if now else "",
        )

    def _set_step(self, step: int) -> None:
        """Put every technique at global step `step`."""
        self.global_step = step
        for technique in self.techniques:
            technique.step(step)

    def set_custom_curriculum_schedule(
        self, fn: Callable[[int], float], metric: str | None = None
    ) -> None:
        """Install the difficulty function of the global step for `schedule_type: custom`.

        DeepSpeed's `engine.set_custom_curriculum_learning_schedule(fn)`; `metric` names the
        schedule when several are custom.
        """
        custom = [(t, name) for t in self.techniques for name in t.custom_schedules()]
        chosen = [(t, name) for t, name in custom if metric is None or name == metric]
        if len(chosen) != 1:
            raise ConfigError(
                f"set_custom_curriculum_schedule: metric {metric!r}; the schedules with "
                f"schedule_type 'custom' are {[name for _, name in custom]}; name exactly one"
            )
        technique, name = chosen[0]
        technique.set_custom_schedule(name, fn)

    # -- data ----------------------------------------------------------------------------------

    def dataloader(self, **dataloader_kwargs: Any) -> DataLoader:
        """A DataLoader over the training dataset that yields post-processed batches.

        Uses the batch sampler a technique owns (the curriculum's), else a seeded per-rank
        shuffled one; every batch goes through `process_batch` in the consuming process (so
        the batch follows the step even with worker processes).
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
        """The batch as the current step uses it (e.g. cut to the curriculum's length)."""
        self._watch.batch()
        if self._seq_length is None:
            self._seq_length = batch_seq_length(batch)
        for technique in self.techniques:
            batch = technique.process_batch(batch)
        return batch

    def restart_epoch(self) -> None:
        """Make owned batch samplers start over at the current epoch's first batch (for hosts
        that skip a resumed epoch's batches themselves)."""
        for technique in self.techniques:
            technique.restart_epoch()

    # -- accounting and metrics ----------------------------------------------------------------

    @property
    def seq_length(self) -> int | None:
        """The full (untruncated) sequence length used for token counting, once known."""
        return self._seq_length

    def _shape(self, samples: int, seq_length: int) -> StepShape:
        """The current step as the techniques shape it."""
        shape = StepShape(samples, seq_length, self._num_layers, micro_batches=self._micro_batches)
        for technique in self.techniques:
            technique.account(shape)
        return shape

    def keep_probs(self) -> list[float] | None:
        """The probability that each block runs at the current step (None: every block runs)."""
        return self._shape(0, 0).keep_probs

    def step_tokens(self) -> StepTokens:
        """Effective sequence length, tokens and expected layer-tokens of the current step."""
        if self._seq_length is None or self._samples_per_step is None:
            if not self._warned_unknown_length:
                # only a technique whose LR follows the counts needs them: say so loudly there
                kinds = [type(t) for t in self.techniques]
                lr = [k.title(self.config) for k in kinds if k.schedules_lr(self.config)]
                logger.log(
                    logging.WARNING if lr else logging.DEBUG,
                    "leantrain: token counts stay 0%s: pass seq_length= and micro_batch_size= "
                    "to prepare() (or send a batch through process_batch) to count tokens",
                    f", so the LR that {', '.join(lr)} sets by them does not move" if lr else "",
                )
                self._warned_unknown_length = True
            return StepTokens(0, 0, 0.0)
        return self._shape(self._samples_per_step, self._seq_length).count()

    def metrics(self) -> dict[str, float]:
        """Each technique's schedule values and the cumulative counters, under namespaced keys
        (`pld/theta`, `random_ltd/reserved_length`, `curriculum/difficulty`, `tokens/...`)."""
        out: dict[str, float] = {}
        for technique in self.techniques:
            out.update(technique.metrics())
        out["tokens/effective_seqlen"] = float(self.step_tokens().effective)
        out["tokens/consumed"] = float(self.counter.tokens)
        out["tokens/layer_tokens"] = float(self.counter.layer_tokens)
        return out

    def columns(self) -> dict[str, str]:
        """Metric key -> short symbol of the techniques' metrics a training loop logs."""
        return {k: v for t in self.techniques for k, v in t.columns.items()}

    def lr_multiplier(self, *, min_ratio: float = 0.0) -> float | None:
        """LR / peak LR of a technique that schedules the LR (random-LTD's layer-token
        schedule), at the current counts; None when none does."""
        for technique in self.techniques:
            factor = technique.lr_multiplier(min_ratio=min_ratio)
            if factor is not None:
                return factor
        return None

    # -- checkpoints ---------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Versioned state of every technique, the data order and the counters."""
        return handle_state(self)

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore a `state_dict()` (also one saved by leantrain 0.1); the same techniques must
        be enabled."""
        load_handle_state(self, state)
        if state.get("seq_length") is not None:
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
        revert_techniques(self.model, list(self.techniques))
        self._watch_hook.remove()
        return self.model

    def plain_state_dict(self) -> dict[str, torch.Tensor]:
        """The model's state dict under plain keys (surgery keeps them, so it is the same dict)."""
        return self.model.state_dict()
