"""The run folder: one run at a time, never replaced by accident, no leftovers of dead runs.

`open_run_dir` takes an exclusive lock on `output_dir` for the life of a run, refuses a folder
that already holds a run unless told to continue it (`resume`) or replace it (`overwrite`),
puts back a checkpoint that a re-save killed mid-swap had moved aside, and sweeps the temp
folders that killed runs left behind.

The lock is `fcntl.flock` on `<output_dir>/.lock`, not an `O_EXCL` lock file: the kernel drops
a flock when its holder dies, SIGKILL included, so a dead run's lock is never "stale" and taking
it over needs no guess about whether a pid still runs (a guess that pid reuse and other hosts
make unreliable, and whose unlink-and-recreate races with a third process). The file holds the
holder's pid and host only to name them in the error a second process gets; it is emptied on
release and never deleted (deleting a flock'ed file lets two processes lock different files).
On a filesystem that cannot lock files (some network or FUSE mounts), the run goes on unlocked
with a warning.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import torch.distributed as dist

from leantrain.errors import ConfigError, LeantrainError
from leantrain.files import HOST, discard, sweep_stale, writing
from leantrain.trainer.checkpoint import restore_set_aside
from leantrain.trainer.runinfo import RUN_INFO

__all__ = ["LOCK_NAME", "RUN_ENTRIES", "RunDirBusy", "RunLock", "open_run_dir"]

logger = logging.getLogger(__name__)
T = TypeVar("T")

#: The lock file inside a run folder.
LOCK_NAME = ".lock"
#: What `leantrain train` writes into a run folder (what `overwrite` removes).
RUN_ENTRIES = ("checkpoints", "metrics.csv", "tb", "wandb", "model", RUN_INFO)
_UNKNOWN = "an unknown process"


class RunDirBusy(LeantrainError):
    """Another process holds the run folder's lock."""


class RunLock:
    """An exclusive lock on a run folder (see the module docstring for why `flock`)."""

    def __init__(self, folder: Path) -> None:
        """Lock `folder` (which must exist) or raise `RunDirBusy` naming the holder."""
        self.path = folder / LOCK_NAME
        self._fd = -1
        try:
            import fcntl
        except ImportError:  # not POSIX
            logger.warning("%s: not locked (locking a run folder needs POSIX flock)", folder)
            return
        with writing(self.path):
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = self._holder()
            for _ in range(20):  # the holder writes its name just after it takes the lock
                if holder != _UNKNOWN:
                    break
                time.sleep(0.05)
                holder = self._holder()
            os.close(self._fd)
            raise RunDirBusy(
                f"output_dir: {folder} is in use by {holder} (lock {self.path}); wait for that "
                "run to end, stop it, or choose another output_dir"
            ) from None
        except OSError as err:  # a filesystem without locks (some network or FUSE mounts)
            os.close(self._fd)
            self._fd = -1
            logger.warning("%s: not locked, its filesystem cannot lock files (%s)", folder, err)
            return
        previous = self._holder()
        if previous != _UNKNOWN:  # emptied on release: its holder died holding it
            logger.warning("%s: taking over the lock of %s, which died", self.path, previous)
        with writing(self.path):
            os.ftruncate(self._fd, 0)
            mine = f"pid {os.getpid()} host {HOST} since {time.time():.0f}\n"
            os.pwrite(self._fd, mine.encode(), 0)
            os.fsync(self._fd)

    def _holder(self) -> str:
        """'process <pid> on <host>' as the lock file names it."""
        words = os.pread(self._fd, 256, 0).decode(errors="replace").split()
        info = dict(zip(words[::2], words[1::2], strict=False))
        if "pid" not in info:
            return _UNKNOWN
        return f"process {info['pid']} on {info.get('host', '?')}"

    def release(self) -> None:
        """Empty the lock file and drop the lock (closing the file drops it)."""
        if self._fd < 0:
            return
        with contextlib.suppress(OSError):
            os.ftruncate(self._fd, 0)
        os.close(self._fd)
        self._fd = -1


def _check_contents(folder: Path, *, resume: bool, overwrite: bool) -> None:
    """Refuse a folder holding a run unless `resume` or `overwrite`; `overwrite` removes it."""
    if resume and overwrite:
        raise ConfigError("--resume and --overwrite: choose one (continue the run or replace it)")
    found = sorted(p.name for p in folder.iterdir() if p.name != LOCK_NAME)
    if resume or not found:
        return
    if not overwrite:
        raise ConfigError(
            f"output_dir: {folder} is not empty ({', '.join(found[:5])}"
            f"{', ...' if len(found) > 5 else ''}); pass --resume to continue its run, "
            "--overwrite to replace it, or choose another output_dir"
        )
    for name in RUN_ENTRIES:
        discard(folder / name)
    logger.info("%s: replaced the run it held (--overwrite)", folder)


def _on_rank0(fn: Callable[[], T]) -> T | None:
    """`fn()` on rank 0 (None elsewhere); every rank raises what it raised, so no rank waits
    for a peer that gave up."""
    result: T | None = None
    error: LeantrainError | None = None
    if not dist.is_initialized() or dist.get_rank() == 0:
        try:
            result = fn()
        except LeantrainError as err:
            error = err
    if dist.is_initialized():
        shared = [error]
        dist.broadcast_object_list(shared, src=0)
        error = shared[0]
    if error is not None:
        raise error
    return result


@contextlib.contextmanager
def open_run_dir(folder: Path, *, resume: bool, overwrite: bool) -> Iterator[None]:
    """Hold `folder` for one run: create it, lock it (rank 0), check what it holds (see
    `_check_contents`), sweep dead runs' temp folders; release the lock on the way out."""

    def claim() -> RunLock:
        with writing(folder):
            folder.mkdir(parents=True, exist_ok=True)
        lock = RunLock(folder)
        try:
            _check_contents(folder, resume=resume, overwrite=overwrite)
            restore_set_aside(folder)
            sweep_stale(folder)
            sweep_stale(folder / "checkpoints")
        except BaseException:
            lock.release()
            raise
        return lock

    lock = _on_rank0(claim)
    try:
        yield
    finally:
        if lock is not None:
            lock.release()
