"""What `leantrain train` tells its user as it runs: a start-up summary, then one line per
evaluation, through `logging` (the caller routes it around the progress bar; rank 0 only)."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Mapping, Sized
from typing import Any

import torch
from torch import nn

from leantrain.adopt import LeantrainHandle
from leantrain.adopt.notices import NO_SECTIONS
from leantrain.models import UnknownModelError, find_stacks
from leantrain.trainer.distributed import precision
from leantrain.trainer.recipe import Recipe
from leantrain.trainer.task import TaskData

__all__ = ["eval_line", "startup_lines"]


def _samples(dataset: Any) -> str:
    return f"{len(dataset):,}" if isinstance(dataset, Sized) else "?"


def _n(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def _blocks(model: nn.Module) -> str:
    """The model's block stacks, e.g. "4 blocks in transformer.h"."""
    try:
        stacks = find_stacks(model)
    except UnknownModelError:
        return "blocks not found (unregistered model type)"
    return " and ".join(f"{len(s)} blocks in {s.path}" for s in stacks)


def startup_lines(
    recipe: Recipe,
    *,
    model: nn.Module,
    data: TaskData,
    handle: LeantrainHandle,
    world: int,
    device: torch.device,
    step: int,
    last: int,
) -> list[str]:
    """The start-up summary: model, data, techniques and their schedules, how and how long it
    trains (`step` the first step to run, `last` where it stops)."""
    o = recipe.optim
    params = sum(p.numel() for p in model.parameters())
    model_type = getattr(model.config, "model_type", "?")
    start = f"resuming at step {step}" if step else "from step 0"
    until = f"to step {last} of {o.max_steps}" if last < o.max_steps else f"to step {last}"
    schedule = "layer-token" if o.decay == "layer_tokens" else o.decay
    techniques = [t.summary() for t in handle.techniques] or ["none (a baseline run)"]
    return [
        f"training {recipe.output_dir}: {recipe.task}, {start} {until}",
        f"  model: {model_type} ({type(model).__name__}), {params:,} parameters, {_blocks(model)}",
        f"  data: {_samples(data.train)} train samples, "
        f"{_samples(data.valid) if data.valid is not None else 'no'} validation samples",
        f"  batch: {o.micro_batch_size} × {o.grad_accum} accumulation × {_n(world, 'rank')} = "
        f"{o.micro_batch_size * o.grad_accum * world} samples per step; lr {o.lr:g} "
        f"({_n(o.warmup_steps, 'warmup step')}, then {schedule} decay)",
        f"  device: {device}, world size {world}"
        + (f" ({recipe.parallel})" if world > 1 else "")
        + f", {precision(recipe, device)}",
        *(f"  technique: {line}" for line in techniques),
    ]


def eval_line(step: int, row: Mapping[str, float], wall_s: float) -> str:
    """One evaluation: step, eval loss ± its standard error, the task's metrics, wall time."""
    loss = f"eval/loss {row['eval/loss']:.4f}"
    if "eval/loss_se" in row:
        loss += f" ± {row['eval/loss_se']:.4f}"
    metrics = [
        f"{key.removeprefix('eval/')} {value:.4f}"
        for key, value in row.items()
        if key.startswith("eval/") and key not in ("eval/loss", "eval/loss_se")
    ]
    return ", ".join([f"step {step}: {loss}", *metrics, f"{wall_s:.1f} s"])


@contextlib.contextmanager
def baseline_is_not_news() -> Iterator[None]:
    """While the trainer prepares its model, drop `prepare`'s "no technique is enabled" warning
    for a recipe that gives no technique section: a baseline by design, which the start-up
    summary names ("none (a baseline run)"). Sections given but off are still warned about."""
    notices = logging.getLogger("leantrain.adopt.notices")

    def keep(record: logging.LogRecord) -> bool:
        return not getattr(record, NO_SECTIONS, False)

    notices.addFilter(keep)
    try:
        yield
    finally:
        notices.removeFilter(keep)
