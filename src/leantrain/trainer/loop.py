"""The reference training loop: config → setup → loop → teardown, in plain PyTorch.

`train(recipe)` builds the recipe's Hugging Face model and data (`model`, `data`), hands both
to `leantrain.prepare` (which applies the techniques the recipe configures), wraps the model
for data parallelism under `torchrun` (`distributed`), and runs AdamW with gradient
accumulation, bf16 autocast where the device supports it, an LR that is a pure function of the
step or of consumed layer-tokens (`optim`), evaluation at intervals (`evaluate`), the recipe's
metrics loggers (`loggers`) and atomic checkpoints, in a run folder it holds locked for the run
(`rundir`). It logs a start-up summary and each evaluation (`console`).
"""

from __future__ import annotations

import contextlib
import logging
import math
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from leantrain.adopt import prepare
from leantrain.errors import LeantrainError
from leantrain.trainer.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from leantrain.trainer.checks import check_device, check_finite, check_stop_at
from leantrain.trainer.console import baseline_is_not_news, eval_line, startup_lines
from leantrain.trainer.data import build_task_data
from leantrain.trainer.distributed import autocast, init_distributed, to_device, wrap
from leantrain.trainer.evaluate import evaluate, reached_target
from leantrain.trainer.loggers import open_metrics_log
from leantrain.trainer.model import build_model, save_model, seq_length
from leantrain.trainer.optim import build_optimizer, step_lr
from leantrain.trainer.recipe import Recipe
from leantrain.trainer.rundir import open_run_dir
from leantrain.trainer.runinfo import write_run_info
from leantrain.trainer.task import Batch

__all__ = ["METRIC_COLUMNS", "StepEvent", "train"]

logger = logging.getLogger(__name__)

#: The trainer's own columns of metrics.csv; each technique's (`Technique.columns`) follow, then
#: `tokens/effective_seqlen`, `eval/loss`, `eval/loss_se` and the task's eval metrics (`eval/<name>`).
METRIC_COLUMNS = (
    "step",
    "wall_s",
    "lr",
    "loss",
    "grad_norm",
    "tokens",
    "layer_tokens",
    "tokens_per_s",
)


@dataclass
class StepEvent:
    """What `train(on_step=...)` sees after each optimizer step."""

    step: int
    loss: float
    model: nn.Module
    batches: list[Batch]
    metrics: dict[str, float]


def _batches(loader: Any) -> Iterator[Batch]:
    """Endless micro-batches: a new pass over the loader whenever one ends."""
    while True:
        empty = True
        for batch in loader:
            empty = False
            yield batch
        if empty:
            raise LeantrainError("the training data loader yielded no batches")


# -- the loop --------------------------------------------------------------------------------


def train(
    recipe: Recipe,
    *,
    resume: bool = False,
    overwrite: bool = False,
    stop_at: int | None = None,
    progress: bool = True,
    on_step: Callable[[StepEvent], None] | None = None,
) -> dict[str, float]:
    """Train `recipe` to `optim.max_steps` (or `stop_at`, keeping the schedule, or the first
    evaluation at or below `eval.stop_at_loss`) and return the final metrics.

    `resume` continues from the newest complete checkpoint in the output folder; without it
    the folder must hold no run, unless `overwrite` replaces it. The folder is locked for the
    run (a second process on it fails at once). A NaN or infinite loss or gradient norm stops
    the run with `NonFiniteError`, naming the step."""
    check_stop_at(stop_at)
    check_device(recipe)
    rank, world, device = init_distributed(recipe)
    with contextlib.ExitStack() as run:
        out = Path(recipe.output_dir)
        run.enter_context(open_run_dir(out, resume=resume, overwrite=overwrite))
        return _train(recipe, run, rank, world, device, resume, stop_at, progress, on_step)


def _train(
    recipe: Recipe,
    run: contextlib.ExitStack,
    rank: int,
    world: int,
    device: torch.device,
    resume: bool,
    stop_at: int | None,
    progress: bool,
    on_step: Callable[[StepEvent], None] | None,
) -> dict[str, float]:
    """The run, in its locked folder; `run` closes what it opens (the metrics log)."""
    # ---- setup
    out = Path(recipe.output_dir)
    torch.manual_seed(recipe.seed)  # identical initial weights on every rank
    data = build_task_data(recipe)
    model = build_model(recipe, data).to(device)
    opt = recipe.optim
    with baseline_is_not_news():
        handle = prepare(
            model,
            recipe.config,
            data.train,
            micro_batch_size=opt.micro_batch_size,
            gradient_accumulation_steps=opt.grad_accum,
            collate_fn=data.collate_fn,
            rank=rank,
            world_size=world,
            seq_length=seq_length(recipe, model),
        )
    wrapped = wrap(model, recipe, device, world, handle)
    optimizer = build_optimizer(wrapped, recipe)
    torch.manual_seed(recipe.seed + rank)  # dropout differs between ranks
    random.seed(recipe.seed + rank)
    np.random.seed(recipe.seed + rank)
    gen = torch.Generator().manual_seed(recipe.seed + 1 + rank)  # MLM masks, augmentation
    step, wall = 0, 0.0
    if resume and (ckpt := latest_checkpoint(out)) is not None:
        state = load_checkpoint(ckpt, model=wrapped, optimizer=optimizer, config=recipe.to_dict())
        handle.load_state_dict(state["leantrain"])
        gen.set_state(state["generator"])
        step, wall = state["step"], state["wall_s"]
        logger.info("resumed from %s (step %d)", ckpt, step)
    elif resume:
        logger.info("no checkpoint in %s; starting from step 0", out / "checkpoints")
    last = min(opt.max_steps, stop_at) if stop_at is not None else opt.max_steps
    if step >= opt.max_steps:  # a finished run: nothing to train or save
        if rank == 0:
            logger.info(
                "nothing to do: %s is at step %d and optim.max_steps is %d; raise --max-steps "
                "to train further",
                out,
                step,
                opt.max_steps,
            )
        return {}
    if step >= last:  # --stop-at at or before the checkpoint: nothing trained, it is saved again
        if rank == 0:
            logger.info(
                "nothing to train: %s is at step %d, at or past --stop-at %d; its checkpoint "
                "is saved again",
                out,
                step,
                last,
            )
    elif rank == 0:
        lines = startup_lines(
            recipe,
            model=model,
            data=data,
            handle=handle,
            world=world,
            device=device,
            step=step,
            last=last,
        )
        logger.info("\n".join(lines))
        write_run_info(out, recipe.to_dict(), device, world)
    loader = handle.dataloader(
        num_workers=recipe.num_workers,
        pin_memory=device.type == "cuda",
        generator=torch.Generator().manual_seed(recipe.seed),  # not the global RNG
    )
    batches = _batches(loader)
    symbols = handle.columns()
    columns = [
        *METRIC_COLUMNS,
        *symbols,
        "tokens/effective_seqlen",
        "eval/loss",
        "eval/loss_se",
        *(f"eval/{m}" for m in data.metric_names),
    ]
    log = run.enter_context(
        open_metrics_log(
            out,
            columns,
            step,
            enabled=rank == 0,
            names=recipe.loggers,
            config=recipe.to_dict(),
        )
    )
    precision = autocast(recipe, device)
    ddp = isinstance(wrapped, nn.parallel.DistributedDataParallel)
    bar = tqdm(total=last, initial=step, disable=not progress or rank != 0, desc="train")
    if not bar.disable:  # log lines go above the bar, not through it
        run.enter_context(logging_redirect_tqdm())
    final: dict[str, float] = {}

    def checkpoint() -> None:
        log.sync()  # the rows it covers are on disk before it is
        rank_state = {
            "leantrain": handle.state_dict(),
            "generator": gen.get_state(),
            "wall_s": wall,
        }
        save_checkpoint(
            out,
            step,
            model=wrapped,
            optimizer=optimizer,
            rank_state=rank_state,
            config=recipe.to_dict(),
        )

    # ---- loop
    wrapped.train()
    reached = False
    while step < last:
        t0 = time.perf_counter()
        lr = step_lr(recipe, step, handle)
        for group in optimizer.param_groups:
            group["lr"] = lr
        loss_sum = torch.zeros((), device=device)
        seen: list[Batch] = []
        for micro in range(opt.grad_accum):
            batch = next(batches)  # already post-processed by the techniques for this step
            if data.transform is not None:
                batch = data.transform(batch, gen, True)
            seen.append(batch)
            sync = micro == opt.grad_accum - 1
            with cast(Any, wrapped).no_sync() if ddp and not sync else contextlib.nullcontext():
                with precision:
                    loss = wrapped(**to_device(batch, device)).loss / opt.grad_accum
                loss.backward()
            loss_sum += loss.detach()
        clip = opt.grad_clip if opt.grad_clip is not None else float("inf")  # inf: measure only
        norm = torch.nn.utils.clip_grad_norm_(wrapped.parameters(), clip)
        grad_norm = float(norm.full_tensor() if hasattr(norm, "full_tensor") else norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        schedules = handle.metrics()  # the schedule values this step used
        counted = handle.step()
        step += 1
        if world > 1:
            dist.all_reduce(loss_sum)
            loss_sum /= world
        loss_value = float(loss_sum)  # synchronises the device, so the timing below is honest
        dt = time.perf_counter() - t0
        wall += dt
        totals = handle.metrics()
        row = {
            "step": step,
            "wall_s": wall,
            "lr": lr,
            "loss": loss_value,
            "grad_norm": grad_norm,
            "tokens": totals["tokens/consumed"],
            "layer_tokens": totals["tokens/layer_tokens"],
            "tokens_per_s": counted.tokens / dt,
            **{k: v for k, v in schedules.items() if k in columns and not k.startswith("tokens")},
            "tokens/effective_seqlen": counted.effective,
        }
        if step % recipe.eval.interval == 0 or step == opt.max_steps:
            whole = recipe.eval.final_whole and step == opt.max_steps
            row.update(evaluate(model, data, recipe, device, whole=whole))
            if rank == 0 and "eval/loss" in row:
                logger.info(eval_line(step, row, wall))
        reached = reached_target(recipe, row, world, device)
        finite = math.isfinite(loss_value) and math.isfinite(grad_norm)
        if step % recipe.log_interval == 0 or "eval/loss" in row or step == last or not finite:
            log.write(step, row)
        check_finite(step, {"loss": loss_value, "grad_norm": grad_norm})
        final = row
        if on_step is not None:
            on_step(StepEvent(step, loss_value, wrapped, seen, row))
        bar.update(1)
        bar.set_postfix(_postfix(row, symbols), refresh=False)
        if recipe.checkpoint_interval and step % recipe.checkpoint_interval == 0:
            checkpoint()
        if reached:  # eval.stop_at_loss: the run is done, as at max_steps
            logger.info("step %d: eval/loss %.4f reached eval.stop_at_loss", step, row["eval/loss"])
            break

    # ---- teardown
    bar.close()
    interval = recipe.checkpoint_interval
    finished = step >= opt.max_steps or reached
    if not finished or (interval and step % interval):
        checkpoint()  # stopped early (resume later), or the end is off the interval
    if finished:
        save_model(model, out, rank)
    if dist.is_initialized():
        dist.barrier()
    return final


def _postfix(row: dict[str, float], symbols: dict[str, str]) -> dict[str, str]:
    """Progress-bar fields: loss, tokens/s and each technique's schedule values (`symbols`:
    metric key -> short name)."""
    shown = {"loss": f"{row['loss']:.4f}", "tok/s": f"{row['tokens_per_s']:.0f}"}
    for key, name in symbols.items():
        if key in row:
            shown[name] = f"{row[key]:.3g}"
    return shown
