"""Atomic training checkpoints: everything a run needs to continue bit for bit.

One folder per saved step, ``checkpoints/step_00000100/``:

- ``model.pt`` — the model's full state dict under plain keys (loads into the unconverted model);
- ``optimizer.pt`` — the optimizer state keyed by parameter name;
- ``rank_<r>.pt`` — per rank: every RNG (python, numpy, torch CPU, CUDA), the leantrain handle
  state (θ, reserved length, difficulty, token counters, the curriculum sampler) and the
  trainer's step, wall-clock and batch-transform generator. The data position and the LR need
  nothing more: the batch sampler starts where the handle's step points, and the LR is a pure
  function of the step (or of the layer-token counter);
- ``config.json`` — the resolved recipe (`Recipe.to_dict()`), readable without leantrain;
- ``manifest.json`` — written last: every file above with its size.

Every rank writes into rank 0's temporary folder (named after its host and pid); rank 0 adds
the manifest and renames the folder into place once all are done. Re-saving a step moves the
old folder aside before the new one goes in and deletes it last (a kill between the two renames
leaves it aside, where `restore_set_aside` finds it). `latest_checkpoint` takes the newest
folder whose manifest matches its files, so a kill at any moment leaves a usable checkpoint.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import random
import shutil
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, BinaryIO, cast

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
from leantrain.files import atomic_write_json, temp_path, write_error, writing

__all__ = [
    "CHECKPOINT_VERSION",
    "MANIFEST",
    "PAUSE_ENV",
    "checkpoint_problem",
    "full_model_state",
    "get_rng_state",
    "latest_checkpoint",
    "load_checkpoint",
    "restore_set_aside",
    "save_checkpoint",
    "set_rng_state",
]

#: Layout version of the per-rank state; bumped when it changes.
CHECKPOINT_VERSION = 1
_FULL = StateDictOptions(full_state_dict=True, cpu_offload=True)
#: The file that lists a checkpoint's files and sizes, written last.
MANIFEST = "manifest.json"
#: What every checkpoint has (how a folder without a manifest, from leantrain 0.1, is checked).
_LEGACY_FILES = ("model.pt", "optimizer.pt", "config.json", "rank_0.pt")
#: Test hook: seconds to pause between the steps of a checkpoint write (see `_pause`).
PAUSE_ENV = "LEANTRAIN_TEST_CHECKPOINT_PAUSE"

logger = logging.getLogger(__name__)


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


def _pause() -> None:
    """Test hook: sleep `$LEANTRAIN_TEST_CHECKPOINT_PAUSE` seconds between the writer's steps,
    so that a test's kill lands in the middle of a write or a swap."""
    seconds = float(os.environ.get(PAUSE_ENV) or 0)
    if seconds > 0:
        time.sleep(seconds)


class _Sink:
    """A file for `torch.save` that keeps the `OSError` of a failed write (torch reports a full
    disk as a RuntimeError without the path or the cause)."""

    def __init__(self, fh: BinaryIO) -> None:
        self.fh = fh
        self.error: OSError | None = None

    def write(self, data: bytes) -> int:
        try:
            return self.fh.write(data)
        except OSError as err:
            self.error = err
            raise

    def flush(self) -> None:
        self.fh.flush()


def _save(obj: Any, path: Path) -> None:
    """`torch.save` to `path`, fsynced; a failed write (a full disk) is a `WriteError` naming it."""
    with writing(path), open(path, "wb") as fh:
        sink = _Sink(fh)
        try:
            torch.save(obj, cast(Any, sink))
        except RuntimeError as err:
            if sink.error is None:
                raise
            raise write_error(path, sink.error) from err
        fh.flush()
        os.fsync(fh.fileno())
    _pause()


def _temp_folder(final: Path) -> Path:
    """The folder every rank writes the checkpoint `final` into: rank 0's, named after its
    host and pid (`files.temp_path`), so two processes never share one."""
    names = [str(temp_path(final))]
    if _rank() == 0:
        tmp = Path(names[0])
        with writing(tmp):
            shutil.rmtree(tmp, ignore_errors=True)  # this process's own, from a failed save
            tmp.mkdir(parents=True)
    if _world() > 1:
        dist.broadcast_object_list(names, src=0)
    return Path(names[0])


def _commit(tmp: Path, final: Path) -> None:
    """Put the finished `tmp` in place as `final`. An older `final` (a re-saved step) is moved
    aside first and deleted last, so `final` is at every moment absent or complete."""
    aside = temp_path(final, "old")
    with writing(final):
        while True:
            if final.exists():
                shutil.rmtree(aside, ignore_errors=True)  # our own older aside, if any
                with contextlib.suppress(FileNotFoundError):  # another writer moved it first
                    os.replace(final, aside)
                    _pause()
            try:
                os.replace(tmp, final)
                break
            except OSError as err:  # another writer's copy landed between our check and rename
                if err.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                    raise
        _fsync_folder(final.parent)
    shutil.rmtree(aside, ignore_errors=True)  # a kill here leaves a hidden leftover, swept later


def _fsync_folder(folder: Path) -> None:
    """Make the renames inside `folder` durable."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save_checkpoint(
    run_dir: str | Path,
    step: int,
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    rank_state: dict[str, Any],
    config: dict[str, Any],
) -> Path:
    """Write the checkpoint of `step` atomically; every rank calls it. Returns its folder.

    A failed write (a full disk) raises `WriteError` naming the file; the temp folder is
    removed and the checkpoints saved before stay as they were."""
    final = Path(run_dir) / "checkpoints" / f"step_{step:08d}"
    rank = _rank()
    model_state = full_model_state(model)
    optim_state = get_optimizer_state_dict(model, optimizer, options=_FULL)
    tmp = _temp_folder(final)
    try:
        state = {
            "version": CHECKPOINT_VERSION,
            "step": step,
            "world_size": _world(),
            "rng": get_rng_state(),
            **rank_state,
        }
        _save(state, tmp / f"rank_{rank}.pt")
        if rank == 0:
            _save(model_state, tmp / "model.pt")
            _save(optim_state, tmp / "optimizer.pt")
            text = json.dumps(config, indent=2, default=str) + "\n"
            with writing(tmp / "config.json"):
                (tmp / "config.json").write_text(text)
        _barrier()
        if rank == 0:
            files = {p.name: p.stat().st_size for p in sorted(tmp.iterdir())}
            manifest = {"version": CHECKPOINT_VERSION, "step": step, "files": files}
            atomic_write_json(tmp / MANIFEST, manifest)
            _commit(tmp, final)
    except BaseException:
        if rank == 0:
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    _barrier()
    return final


def restore_set_aside(run_dir: str | Path) -> list[Path]:
    """Put back the checkpoints that re-saves killed between their two renames had moved aside
    (`.step_N.old-*` with no `step_N` in its place); call with the run folder locked."""
    root = Path(run_dir) / "checkpoints"
    restored = []
    for aside in sorted(root.glob(".step_*.old-*")) if root.is_dir() else []:
        final = root / aside.name[1:].split(".old-")[0]
        if not final.exists() and checkpoint_problem(aside) is None:
            with writing(final):
                os.replace(aside, final)
            logger.info("%s: restored (a killed re-save had moved it aside)", final)
            restored.append(final)
    return restored


def checkpoint_problem(folder: Path) -> str | None:
    """Why `folder` is not a complete checkpoint, or None when it is: every file its manifest
    lists is there with its size (a folder saved by leantrain 0.1, without a manifest, needs
    the files every checkpoint has)."""
    try:
        manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
        files = dict(manifest["files"])
    except FileNotFoundError:
        missing = [n for n in _LEGACY_FILES if not (folder / n).is_file()]
        return f"no {MANIFEST} and no {', '.join(missing)}" if missing else None
    except (OSError, ValueError, KeyError, TypeError) as err:
        return f"unreadable {MANIFEST} ({err})"
    for name, size in files.items():
        file = folder / name
        if not file.is_file():
            return f"{name} is missing"
        if file.stat().st_size != size:
            return f"{name} has {file.stat().st_size} bytes; the manifest says {size}"
    return None


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The newest complete checkpoint folder of a run, or None; incomplete ones (a kill while
    one was being deleted) are skipped with a warning."""
    root = Path(run_dir) / "checkpoints"
    for folder in sorted(root.glob("step_*"), reverse=True) if root.is_dir() else []:
        problem = checkpoint_problem(folder)
        if problem is None:
            return folder
        logger.warning("%s: skipped, an incomplete checkpoint (%s)", folder, problem)
    return None


def load_checkpoint(
    path: str | Path,
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    config: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Load model and optimizer state from `path`, restore the RNGs, return this rank's state.

    A model of another shape is refused, naming the `model` keys where `config` (this run's
    resolved recipe) differs from the checkpoint's config.json."""
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
    _check_same_model(path, model_state, model, config)
    optim_state = torch.load(path / "optimizer.pt", map_location="cpu", weights_only=False)
    options = StateDictOptions(full_state_dict=True)
    set_model_state_dict(model, model_state, options=options)
    set_optimizer_state_dict(model, optimizer, optim_state, options=options)
    set_rng_state(state["rng"])
    return state


def _check_same_model(
    path: Path,
    saved: Mapping[str, torch.Tensor],
    model: nn.Module,
    config: Mapping[str, Any] | None,
) -> None:
    """Refuse a checkpoint of another model shape (torch would fail with a raw error)."""
    mine = cast(dict[str, torch.Tensor], get_model_state_dict(model))  # global shapes (FSDP too)
    problems = [f"{k} missing from the checkpoint" for k in mine if k not in saved]
    problems += [f"{k} not in the model" for k in saved if k not in mine]
    problems += [
        f"{k}: checkpoint {list(saved[k].shape)}, model {list(mine[k].shape)}"
        for k in mine
        if k in saved and saved[k].shape != mine[k].shape
    ]
    if not problems:
        return
    changed = ""
    if config is not None and (path / "config.json").is_file():
        was = json.loads((path / "config.json").read_text(encoding="utf-8")).get("model", {})
        keys = _changed_keys(was, config.get("model", {}), "model")
        changed = f"; the recipe changed {', '.join(keys)}" if keys else ""
    raise LeantrainError(
        f"{path}: the recipe's model differs from the checkpoint's ({problems[0]}"
        f"{f'; {len(problems) - 1} more' if len(problems) > 1 else ''}){changed}; resume with "
        "the model the checkpoint was saved with (the `model` section of its config.json) or "
        "start a new run"
    )


def _changed_keys(was: Any, now: Any, key: str) -> list[str]:
    """'<dotted key> <old> -> <new>' for every value that differs between two nested dicts."""
    if isinstance(was, Mapping) and isinstance(now, Mapping):
        names = sorted(set(was) | set(now))
        return [c for n in names for c in _changed_keys(was.get(n), now.get(n), f"{key}.{n}")]
    return [] if was == now else [f"{key} {was!r} -> {now!r}"]
