"""Where a run computes: its process group and device, the DDP/FSDP wrapper, its precision.

`init_distributed` joins the `torchrun` process group when launched by it; `wrap` applies the
recipe's data parallelism, respecting what the techniques require of their host; `autocast` is
the recipe's precision on the device.
"""

from __future__ import annotations

import contextlib
import os
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from leantrain.adopt import LeantrainHandle
from leantrain.models import find_stacks
from leantrain.trainer.recipe import Recipe
from leantrain.trainer.task import Batch

__all__ = ["any_rank", "autocast", "init_distributed", "precision", "to_device", "wrap"]


def init_distributed(recipe: Recipe) -> tuple[int, int, torch.device]:
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


def wrap(
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


def precision(recipe: Recipe, device: torch.device) -> str:
    """ "bf16" where asked (auto: a CUDA device with bf16), else "fp32"."""
    bf16 = recipe.optim.precision == "bf16" or (
        recipe.optim.precision == "auto"
        and device.type == "cuda"
        and torch.cuda.is_bf16_supported()
    )
    return "bf16" if bf16 else "fp32"


def autocast(recipe: Recipe, device: torch.device) -> contextlib.AbstractContextManager[Any]:
    """bf16 autocast at `precision` bf16, else nothing (fp32)."""
    if precision(recipe, device) == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def to_device(batch: Batch, device: torch.device) -> Batch:
    """The batch's tensors on `device` (copied asynchronously from pinned memory)."""
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def any_rank(flag: bool, world: int, device: torch.device) -> bool:
    """Whether `flag` holds on any rank, so that every rank takes the same branch."""
    if world == 1:
        return flag
    value = torch.tensor(float(flag), device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())
