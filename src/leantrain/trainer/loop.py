"""The reference training loop: config → setup → loop → teardown, in plain PyTorch.

`train(recipe)` builds the recipe's Hugging Face model and data, hands both to
`leantrain.prepare` (which applies the techniques the recipe configures), wraps the model
for data parallelism under `torchrun`, and runs AdamW with gradient accumulation, bf16 autocast
where the device supports it, an LR that is a pure function of the step (or of consumed
layer-tokens), evaluation at intervals, TensorBoard + `metrics.csv` logs (`loggers`) and atomic
checkpoints, in a run folder it holds locked for the run (`rundir`).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
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
from transformers import PreTrainedModel

from leantrain.adopt import LeantrainHandle, prepare
from leantrain.errors import LeantrainError
from leantrain.models import family_of_type, find_stacks
from leantrain.trainer.checkpoint import (
    full_model_state,
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
)
from leantrain.trainer.checks import (
    check_device,
    check_finite,
    check_model_config,
    check_stop_at,
    positions_needed,
)
from leantrain.trainer.data import Batch, TaskData, build_task_data
from leantrain.trainer.evalstats import mean_and_se, sample_losses
from leantrain.trainer.loggers import open_metrics_log
from leantrain.trainer.recipe import Recipe
from leantrain.trainer.rundir import open_run_dir
from leantrain.trainer.schedule import lr_at_step

__all__ = ["METRIC_COLUMNS", "StepEvent", "build_model", "evaluate", "train"]

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

_AUTO_CLASSES = {
    "causal_lm": "AutoModelForCausalLM",
    "masked_lm": "AutoModelForMaskedLM",
    "sequence_classification": "AutoModelForSequenceClassification",
    "image_classification": "AutoModelForImageClassification",
}


@dataclass
class StepEvent:
    """What `train(on_step=...)` sees after each optimizer step."""

    step: int
    loss: float
    model: nn.Module
    batches: list[Batch]
    metrics: dict[str, float]


# -- setup -----------------------------------------------------------------------------------


def build_model(recipe: Recipe, data: TaskData) -> nn.Module:
    """The recipe's HF model: from a local checkpoint, or built from `model.config` fields."""
    import transformers

    auto = getattr(transformers, _AUTO_CLASSES[recipe.task])
    spec = recipe.model
    data_fields = dict(data.model_fields)
    attn = (
        {}
        if spec.attn_implementation is None
        else {"attn_implementation": spec.attn_implementation}
    )
    if spec.pretrained is not None:  # keep the checkpoint's vocabulary; set the head size
        extra = {k: data_fields[k] for k in ("num_labels", "pad_token_id") if k in data_fields}
        model = auto.from_pretrained(spec.pretrained, local_files_only=True, **attn, **extra)
        check_model_config(recipe, model.config, pretrained=True)
        return model
    fields = {**data_fields, **spec.config, **attn}
    fields.setdefault("architectures", [])  # HF's auto classes iterate it (DeiT has two heads)
    family = family_of_type(spec.family)
    if family is not None and family.positions_after_pad and recipe.task != "image_classification":
        # RoBERTa-style ids start at pad + 1: size the table for the data unless the recipe did
        need = positions_needed(recipe, fields.get("pad_token_id"), after_pad=True)
        fields.setdefault("max_position_embeddings", need)
    config = transformers.AutoConfig.for_model(str(spec.family), **fields)  # family: required
    check_model_config(recipe, config, pretrained=False)
    return auto.from_config(config)


def _init_distributed(recipe: Recipe) -> tuple[int, int, torch.device]:
    """(rank, world size, device); joins the torchrun process group when launched by it."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    cuda = recipe.device == "cuda" or (recipe.device == "auto" and torch.cuda.is_available())
    local = int(os.environ.get("LOCAL_RANK", "0"))
    device = (
        torch.device("cuda", local)
        if cuda
        else torch.device(recipe.device if recipe.device != "auto" else "cpu")
    )
    if cuda:
        torch.cuda.set_device(device)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo")
    rank = dist.get_rank() if dist.is_initialized() else 0
    return rank, world, device


def _wrap(
    model: nn.Module, recipe: Recipe, device: torch.device, world: int, handle: LeantrainHandle
) -> nn.Module:
    """DDP (finding unused parameters when a technique leaves some without a gradient, as PLD
    does) or FSDP2, per the recipe."""
    if world == 1:
        return model
    if recipe.parallel == "fsdp":
        from torch.distributed.fsdp import fully_shard

        for stack in find_stacks(model):  # every stack (encoder and decoder), each block once
            for block in dict.fromkeys(stack.blocks):
                fully_shard(block)
        fully_shard(model)
        return model
    ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(
        model, device_ids=ids, find_unused_parameters=handle.requirements.find_unused_parameters
    )


def _optimizer(model: nn.Module, recipe: Recipe) -> torch.optim.Optimizer:
    """AdamW with weight decay on matrices only (not biases, norms or 1-D embeddings)."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": recipe.optim.weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    o = recipe.optim
    return torch.optim.AdamW(groups, lr=o.lr, betas=o.betas, eps=o.eps)


def _autocast(recipe: Recipe, device: torch.device) -> contextlib.AbstractContextManager[Any]:
    """bf16 autocast where asked (auto: a CUDA device with bf16), else nothing (fp32)."""
    bf16 = recipe.optim.precision == "bf16" or (
        recipe.optim.precision == "auto"
        and device.type == "cuda"
        and torch.cuda.is_bf16_supported()
    )
    return torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()


def _seq_length(recipe: Recipe, model: nn.Module) -> int | None:
    """Tokens per sample for accounting: the block length, or ViT's patches + CLS."""
    if recipe.task in ("causal_lm", "masked_lm"):
        return recipe.data.seq_len
    cfg: Any = model.config
    if recipe.task == "image_classification" and hasattr(cfg, "patch_size"):
        return (cfg.image_size // cfg.patch_size) ** 2 + 1
    return None


def _lr(recipe: Recipe, step: int, handle: LeantrainHandle) -> float:
    """This step's LR, a pure function of the step, or (`optim.decay: layer_tokens`) of the
    technique that schedules the LR (random-LTD's, by the handle's consumed layer-tokens)."""
    o = recipe.optim
    if o.decay == "layer_tokens":
        factor = handle.lr_multiplier(min_ratio=o.min_lr_ratio)
        assert factor is not None  # checked when the recipe loaded
        return o.lr * factor
    return lr_at_step(
        step,
        peak=o.lr,
        warmup_steps=o.warmup_steps,
        max_steps=o.max_steps,
        decay=o.decay,
        min_ratio=o.min_lr_ratio,
    )


def _batches(loader: Any) -> Iterator[Batch]:
    """Endless micro-batches: a new pass over the loader whenever one ends."""
    while True:
        empty = True
        for batch in loader:
            empty = False
            yield batch
        if empty:
            raise LeantrainError("the training data loader yielded no batches")


def _to(batch: Batch, device: torch.device) -> Batch:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


# -- evaluation ------------------------------------------------------------------------------


@torch.no_grad()
def evaluate(
    model: nn.Module,
    data: TaskData,
    recipe: Recipe,
    device: torch.device,
    *,
    whole: bool = False,
) -> dict[str, float]:
    """Validation loss (token-weighted, with its standard error over samples) and the task's
    metrics, over at most `eval.max_batches` batches, or the whole split when `whole`."""
    if data.valid is None:
        return {}
    was_training = model.training
    model.eval()
    size = recipe.eval.batch_size or recipe.optim.micro_batch_size
    g = torch.Generator().manual_seed(recipe.seed)  # same masks at every evaluation
    loader = torch.utils.data.DataLoader(
        data.valid, batch_size=size, collate_fn=data.collate_fn, generator=g
    )  # its own generator: a loader draws a seed, which must not come from the global RNG
    limit = None if whole else recipe.eval.max_batches
    sums, counts, preds, labels = [], [], [], []
    for i, batch in enumerate(loader):
        if limit is not None and i >= limit:
            break
        if data.transform is not None:
            batch = data.transform(batch, g, False)
        with _autocast(recipe, device):
            out = model(**_to(batch, device))
        s, c = sample_losses(recipe.task, out.logits, batch["labels"].to(device))
        sums.append(s.cpu())
        counts.append(c.cpu())
        if data.score is not None:
            logits = out.logits.float()
            preds.append(logits.squeeze(-1) if logits.shape[-1] == 1 else logits.argmax(-1))
            labels.append(batch["labels"])
    model.train(was_training)
    loss, se = mean_and_se(torch.cat(sums), torch.cat(counts))
    result = {"eval/loss": loss, "eval/loss_se": se}
    if data.score is not None:
        scores = data.score(torch.cat(preds).cpu().numpy(), torch.cat(labels).numpy())
        result.update({f"eval/{k}": v for k, v in scores.items()})
    return result


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
    rank, world, device = _init_distributed(recipe)
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
    handle = prepare(
        model,
        recipe.config,
        data.train,
        micro_batch_size=opt.micro_batch_size,
        gradient_accumulation_steps=opt.grad_accum,
        collate_fn=data.collate_fn,
        rank=rank,
        world_size=world,
        seq_length=_seq_length(recipe, model),
    )
    wrapped = _wrap(model, recipe, device, world, handle)
    optimizer = _optimizer(wrapped, recipe)
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
    log = run.enter_context(open_metrics_log(out, columns, step, enabled=rank == 0))
    autocast = _autocast(recipe, device)
    ddp = isinstance(wrapped, nn.parallel.DistributedDataParallel)
    last = min(opt.max_steps, stop_at) if stop_at is not None else opt.max_steps
    bar = tqdm(total=last, initial=step, disable=not progress or rank != 0, desc="train")
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
        lr = _lr(recipe, step, handle)
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
                with autocast:
                    loss = wrapped(**_to(batch, device)).loss / opt.grad_accum
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
        reached = _reached(recipe, row, world, device)
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
        _save_model(model, out, rank)
    if dist.is_initialized():
        dist.barrier()
    return final


def _reached(recipe: Recipe, row: dict[str, float], world: int, device: torch.device) -> bool:
    """Whether this step's evaluation reached `eval.stop_at_loss` (on any rank, so all stop)."""
    target = recipe.eval.stop_at_loss
    if target is None or "eval/loss" not in row:  # every rank evaluates at the same steps
        return False
    hit = row["eval/loss"] <= target
    if world > 1:
        flag = torch.tensor(float(hit), device=device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        hit = bool(flag.item())
    return hit


def _postfix(row: dict[str, float], symbols: dict[str, str]) -> dict[str, str]:
    """Progress-bar fields: loss, tokens/s and each technique's schedule values (`symbols`:
    metric key -> short name)."""
    shown = {"loss": f"{row['loss']:.4f}", "tok/s": f"{row['tokens_per_s']:.0f}"}
    for key, name in symbols.items():
        if key in row:
            shown[name] = f"{row[key]:.3g}"
    return shown


def _save_model(model: nn.Module, out: Path, rank: int) -> None:
    """The trained model as a `from_pretrained` folder (`<output_dir>/model`); the surgery keeps
    state_dict keys, so the converted model saves as the plain one."""
    state = full_model_state(model)
    if rank == 0 and isinstance(model, PreTrainedModel):
        model.save_pretrained(out / "model", state_dict=state)
