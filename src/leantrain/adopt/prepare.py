"""`prepare`: apply every enabled technique of a config to a model and return its handle."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from leantrain.accounting import TokenCounter
from leantrain.adopt.compose import (
    apply_techniques,
    build_techniques,
    check_composition,
    composition_facts,
    enabled_techniques,
)
from leantrain.adopt.data import ShuffledBatchSampler
from leantrain.adopt.handle import LeantrainHandle
from leantrain.adopt.notices import say_what_is_off
from leantrain.config import LeantrainConfig, load_config
from leantrain.config.batch import resolve_batch_sizes
from leantrain.errors import ConfigError
from leantrain.models import find_block_list
from leantrain.surgery import ensure_plain_model
from leantrain.technique import Setup

__all__ = ["prepare"]


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
    `train_micro_batch_size_per_gpu` and `gradient_accumulation_steps`, or derived from its
    `train_batch_size` as DeepSpeed derives them, else 1 step) size the batch sampler and the
    token counts; a `train_batch_size` they contradict is an error naming both; `rank` and
    `world_size` default to torch.distributed's; `layers` picks the block list for models the
    registry does not know, or one stack of a model with several (default None: the
    registry's; techniques that convert every stack take them all, the others the first, the
    encoder of an encoder-decoder); `seq_length` is the full sequence length of the data
    (default: from the config, or the first batch seen by `process_batch`).
    """
    cfg = load_config(config)
    check_composition(cfg)
    ensure_plain_model(model, "leantrain.prepare")
    rank, world_size = _rank_and_world(rank, world_size)
    sizes = resolve_batch_sizes(
        cfg.model_extra,
        micro_batch_size=micro_batch_size,
        gradient_accumulation_steps=gradient_accumulation_steps,
        world_size=world_size,
    )
    micro_batch_size = sizes.micro_batch_size
    gradient_accumulation_steps = sizes.gradient_accumulation_steps
    samples_per_step = sizes.global_batch_size
    blocks = find_block_list(model, layers)
    counter = TokenCounter()
    setup = Setup(
        blocks=blocks,
        rank=rank,
        world_size=world_size,
        micro_batch_size=micro_batch_size,
        gradient_accumulation_steps=gradient_accumulation_steps,
        global_batch_size=samples_per_step,
        train_dataset=train_dataset,
        counter=counter,
        layers=layers,
    )
    if rank == 0:
        say_what_is_off(cfg, enabled_techniques(cfg))
    techniques = build_techniques(cfg, setup)
    apply_techniques(model, techniques)
    handle = LeantrainHandle(
        model,
        cfg,
        techniques=techniques,
        counter=counter,
        train_dataset=train_dataset,
        collate_fn=collate_fn,
        num_layers=len(blocks),
        samples_per_step=samples_per_step,
        micro_batches=gradient_accumulation_steps * world_size if micro_batch_size else 1,
        forwards_per_step=gradient_accumulation_steps,
        seq_length=seq_length if seq_length is not None else composition_facts(cfg).seq_length,
    )
    if handle.batch_sampler is None and train_dataset is not None and micro_batch_size is not None:
        handle.batch_sampler = ShuffledBatchSampler(
            setup.num_samples(),
            micro_batch_size=micro_batch_size,
            steps=lambda: handle.global_step,
            gradient_accumulation_steps=gradient_accumulation_steps,
            rank=rank,
            world_size=world_size,
            seed=cfg.data_efficiency.seed,
        )
    return handle


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
