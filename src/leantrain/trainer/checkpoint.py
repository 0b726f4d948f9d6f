"""Atomic training checkpoints: everything a run needs to continue bit for bit.

One folder per saved step, ``checkpoints/step_00000100/``:

- ``model.pt`` — the model's full state dict under plain keys (loads into the unconverted model);
- ``optimizer.pt`` — the optimizer state keyed by parameter name;
- ``rank_<r>.pt`` — per rank: every RNG (python, numpy, torch CPU, CUDA), the leantrain handle
  state (θ, reserved length, difficulty, token counters, the curriculum sampler) and the
  trainer's step, wall-clock and batch-transform generator. The data position and the LR need
  nothing more: the batch sampler starts where the handle's step points, and the LR is a pure
  function of the step (or of the layer-token counter);
- ``config.json`` — the resolved recipe (`Recipe.to_dict()`), readable without leantrain.

Every rank writes into a temporary folder; rank 0 renames it into place once all are done, so
a killed run never leaves a half-written checkpoint where `latest_checkpoint` looks.
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)

from leantrain.errors import LeantrainError

__all__ = [
    "CHECKPOINT_VERSION",
    "full_model_state",
    "get_rng_state",
    "latest_checkpoint",
    "load_checkpoint",
    "save_checkpoint",
    "set_rng_state",
]

#: Layout version of the per-rank state; bumped when it changes.
CHECKPOINT_VERSION = 1
_FULL = StateDictOptions(full_state_dict=True, cpu_offload=True)


def _rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def _world() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def _barrier() -> None:
    if _world() > 1:
        dist.barrier()


def get_rng_state() -> dict[str, Any]:
    """Every global RNG this process draws from."""
    return {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
    }


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore `get_rng_state()`."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if state["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def full_model_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The full (unsharded, CPU) state dict under plain keys; a collective under FSDP."""
    return cast(dict[str, torch.Tensor], get_model_state_dict(model, options=_FULL))


def save_checkpoint(
    run_dir: str | Path,
    step: int,
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    rank_state: dict[str, Any],
    config: dict[str, Any],
) -> Path:
    """Write the checkpoint of `step` atomically; every rank calls it. Returns its folder."""
    root = Path(run_dir) / "checkpoints"
    final = root / f"step_{step:08d}"
    tmp = root / f".tmp_step_{step:08d}"
    rank = _rank()
    model_state = full_model_state(model)
    optim_state = get_optimizer_state_dict(model, optimizer, options=_FULL)
    if rank == 0:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    _barrier()
    state = {
        "version": CHECKPOINT_VERSION,
        "step": step,
        "world_size": _world(),
        "rng": get_rng_state(),
        **rank_state,
    }
    torch.save(state, tmp / f"rank_{rank}.pt")
    if rank == 0:
        torch.save(model_state, tmp / "model.pt")
        torch.save(optim_state, tmp / "optimizer.pt")
        (tmp / "config.json").write_text(json.dumps(config, indent=2, default=str) + "\n")
    _barrier()
    if rank == 0:
        if final.exists():  # an older save of the same step (a run resumed before it)
            shutil.rmtree(final)
        tmp.rename(final)
    _barrier()
    return final


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The newest complete checkpoint folder of a run, or None."""
    root = Path(run_dir) / "checkpoints"
    found = sorted(root.glob("step_*")) if root.is_dir() else []
    return found[-1] if found else None


def load_checkpoint(
    path: str | Path, *, model: nn.Module, optimizer: torch.optim.Optimizer
) -> dict[str, Any]:
    """Load model and optimizer state from `path`, restore the RNGs, return this rank's state."""
    path = Path(path)
    rank, world = _rank(), _world()
    file = path / f"rank_{rank}.pt"
    if not file.is_file():
        raise LeantrainError(f"{path}: no state for rank {rank}; resume with the same world size")
    state = torch.load(file, map_location="cpu", weights_only=False)
    if state.get("version") != CHECKPOINT_VERSION:
        raise LeantrainError(
            f"{file}: checkpoint version {state.get('version')!r}; expected {CHECKPOINT_VERSION}"
        )
    if state["world_size"] != world:
        raise LeantrainError(
            f"{path}: saved with {state['world_size']} processes, resuming with {world}; "
            "resume with the same world size"
        )
    model_state = torch.load(path / "model.pt", map_location="cpu", weights_only=True)
    optim_state = torch.load(path / "optimizer.pt", map_location="cpu", weights_only=False)
    options = StateDictOptions(full_state_dict=True)
    set_model_state_dict(model, model_state, options=options)
    set_optimizer_state_dict(model, optimizer, optim_state, options=options)
    set_rng_state(state["rng"])
    return state
