"""Hugging Face `transformers.Trainer` integration: translate Trainer events into handle calls.

`LeantrainCallback` advances the handle once per optimizer step, adds its metrics to every log
and saves its state beside each checkpoint. `attach` also wires the per-batch post-processing
(e.g. sequence-length truncation) and, when a technique owns the batch order (the curriculum
sampler), its batch sampler into a `Trainer` instance (instance attributes only; the Trainer
class is untouched).
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from torch.utils.data import DataLoader
from transformers import Trainer, TrainerCallback, TrainerControl, TrainerState, TrainingArguments
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from leantrain.adopt.handle import LeantrainHandle
from leantrain.errors import LeantrainError

__all__ = ["STATE_FILE", "LeantrainCallback", "attach"]

#: File the callback writes into each `checkpoint-N` folder.
STATE_FILE = "leantrain_state.pt"


class LeantrainCallback(TrainerCallback):
    """Drives a `LeantrainHandle` from `transformers.Trainer`: step, log, save, resume."""

    def __init__(self, handle: LeantrainHandle) -> None:
        """`handle` is what `leantrain.prepare` returned for the Trainer's model."""
        self.handle = handle

    def on_train_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        """On resume, load the handle's state saved in the checkpoint the Trainer resumed from
        (`<output_dir>/checkpoint-<step>/leantrain_state.pt`) unless it was loaded already."""
        if state.global_step == 0:
            return
        if state.global_step != self.handle.global_step:
            path = _checkpoint_dir(args, state) / STATE_FILE
            if not path.is_file():
                raise LeantrainError(
                    f"leantrain: the Trainer resumes at step {state.global_step} but the handle "
                    f"is at step {self.handle.global_step} and {path} does not exist; call "
                    f"handle.load(<checkpoint>/{STATE_FILE}) before trainer.train()"
                )
            self.handle.load(path)
        if not args.ignore_data_skip:
            # The Trainer skips the resumed epoch's first batches itself: rewind owned batch
            # samplers to the start of that epoch.
            self.handle.restart_epoch()

    def on_step_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        """After each optimizer step: advance θ(t), the reserved length and the difficulty."""
        while self.handle.global_step < state.global_step:
            self.handle.step()

    def on_log(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        logs: dict[str, float] | None = None,
        **kwargs: Any,
    ) -> None:
        """Add the handle's namespaced metrics to the log record (and to later callbacks)."""
        if logs is None:
            return
        metrics = self.handle.metrics()
        logs.update(metrics)
        if state.log_history and state.log_history[-1].get("step") == state.global_step:
            state.log_history[-1].update(metrics)

    def on_save(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        """Save the handle's state into the checkpoint folder the Trainer just wrote."""
        if not state.is_world_process_zero:
            return
        folder = _checkpoint_dir(args, state)
        folder.mkdir(parents=True, exist_ok=True)
        self.handle.save(folder / STATE_FILE)


def attach(trainer: Trainer, handle: LeantrainHandle) -> LeantrainCallback:
    """Wire `handle` into `trainer`: the callback (first, so logging callbacks see the metrics),
    per-batch post-processing, and the batch sampler when a technique owns the batch order (the
    curriculum's).

    Call after building the Trainer and before `trainer.train()`; returns the callback.
    """
    if trainer.model is not handle.model:
        raise LeantrainError(
            "attach: the Trainer's model is not the model given to leantrain.prepare"
        )
    callback = LeantrainCallback(handle)
    trainer.callback_handler.callbacks.insert(0, callback)
    original = trainer.get_batch_samples

    @functools.wraps(original)
    def get_batch_samples(epoch_iterator: Iterator[Any], num_batches: int, device: Any) -> Any:
        # The Trainer fetches a step's micro-batches when the step starts, so the handle is at
        # that step here (collate functions may run a batch ahead under accelerate's prefetch).
        processed = (handle.process_batch(batch) for batch in epoch_iterator)
        return original(processed, num_batches, device)

    trainer.get_batch_samples = get_batch_samples  # type: ignore[method-assign]
    if handle.requirements.owns_sampler:
        trainer.get_train_dataloader = functools.partial(  # type: ignore[method-assign]
            _owned_sampler_dataloader, trainer, handle
        )
    return callback


def _checkpoint_dir(args: TrainingArguments, state: TrainerState) -> Path:
    """`<output_dir>/checkpoint-<global step>`, the folder the Trainer saves into."""
    return Path(str(args.output_dir)) / f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}"


def _owned_sampler_dataloader(trainer: Trainer, handle: LeantrainHandle) -> DataLoader:
    """The Trainer's training DataLoader with the batch sampler a technique owns."""
    if trainer.train_dataset is None or handle.batch_sampler is None:
        owners = [
            t.name for t in handle.techniques if type(t).requirements(handle.config).owns_sampler
        ]
        raise LeantrainError(
            f"attach: {', '.join(owners)} owns the batch order, so it needs train_dataset in "
            "both prepare() and the Trainer"
        )
    args = trainer.args
    loader = DataLoader(
        trainer.train_dataset,
        batch_sampler=handle.batch_sampler,
        collate_fn=trainer.data_collator,
        num_workers=args.dataloader_num_workers,
        pin_memory=args.dataloader_pin_memory,
    )
    prepared = trainer.accelerator.prepare(loader)
    # The sampler is already rank-aware: make accelerate's shard wrapper a passthrough.
    shard = getattr(prepared, "batch_sampler", None)
    if shard is not None and getattr(shard, "batch_sampler", None) is handle.batch_sampler:
        shard.num_processes = 1
        shard.process_index = 0
    return prepared
