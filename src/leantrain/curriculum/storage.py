"""Files of the analyzer that survive kills and full disks.

Everything is written under a temp name tagged with the host and process id, then renamed into
place, so a kill never leaves a half-written file under its final name; `sweep_stale` removes
what dead processes of this host left behind. Folders are deleted by renaming them aside first,
so a kill during the deletion never leaves a half-deleted folder under its final name. Memory
maps are preallocated before they are filled, so a full disk is an `OSError` (reported as a
`WriteError` naming the path, the cause and the free space), never a SIGBUS.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import shutil
import socket
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from leantrain.errors import LeantrainError

__all__ = [
    "WriteError",
    "alloc_npy",
    "atomic_write_json",
    "discard",
    "file_sha256",
    "save_npy",
    "sweep_stale",
    "temp_path",
    "write_error",
    "writing",
]

_HOST = re.sub(r"[^A-Za-z0-9_]", "_", socket.gethostname()) or "host"
#: `.<name>.<kind>-<host>-<pid>` (or the older `.<name>.<kind>-<pid>`).
_TEMP = re.compile(r"^\..+\.(?:tmp|old|trash)-(?:(?P<host>[A-Za-z0-9_]+)-)?(?P<pid>\d+)$")
_BLOCK = 1 << 23


class WriteError(LeantrainError, OSError):
    """A file could not be written; the message names the path, the cause and the free space."""


def temp_path(path: Path, kind: str = "tmp") -> Path:
    """The hidden name beside `path` that this process writes (or moves) it under."""
    return path.with_name(f".{path.name}.{kind}-{_HOST}-{os.getpid()}")


def _free_bytes(path: Path) -> int | None:
    for folder in (path, *path.parents):
        if folder.exists():
            try:
                return shutil.disk_usage(folder).free
            except OSError:
                return None
    return None


def write_error(path: Path, err: OSError) -> WriteError:
    """A `WriteError` for `err`, which happened while writing `path`."""
    # numpy's "29668 requested and 14832 written" is a short write without an errno
    short = f"short write ({err}), most likely a full disk"
    cause = os.strerror(err.errno) if err.errno else short
    free = _free_bytes(path)
    room = "" if free is None else f"; {free / 2**20:.1f} MiB free on its filesystem"
    return WriteError(f"{path}: cannot write: {cause}{room}")


@contextmanager
def writing(path: Path) -> Iterator[None]:
    """Turn an `OSError` raised while writing `path` into a `WriteError` that names it."""
    try:
        yield
    except WriteError:
        raise
    except OSError as err:
        raise write_error(path, err) from err


def file_sha256(path: Path) -> str:
    """sha256 of a file, read in 8 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(_BLOCK):
            digest.update(block)
    return digest.hexdigest()


def atomic_write_json(path: Path, data: dict[str, Any]) -> None:
    """Write JSON to a temp file beside `path`, fsync, then rename: never half-written."""
    tmp = temp_path(path)
    with writing(path):
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(data, fh, indent=1, sort_keys=True)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)


def save_npy(path: Path, array: np.ndarray) -> None:
    """`np.save` under a temp name, then rename; a failed write names `path`."""
    tmp = temp_path(path)
    with writing(path):
        with open(tmp, "wb") as fh:
            np.save(fh, array)
        os.replace(tmp, path)


def _preallocate(fh: Any, start: int, end: int) -> None:
    """Give bytes [start, end) of the file real blocks: ENOSPC now, not SIGBUS later."""
    fallocate = getattr(os, "posix_fallocate", None)
    if fallocate is not None:
        try:
            fallocate(fh.fileno(), start, end - start)
            return
        except OSError as err:
            if err.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
                raise
    zeros = bytes(_BLOCK)  # no fallocate (macOS, some network filesystems): write the zeros
    fh.seek(start)
    for a in range(start, end, _BLOCK):
        fh.write(zeros[: min(_BLOCK, end - a)])
    fh.flush()
    os.fsync(fh.fileno())


def alloc_npy(path: Path, dtype: np.dtype, n: int) -> np.memmap:
    """A new .npy file of `n` values of `dtype`, preallocated on disk, mapped for writing."""
    with writing(path):
        array = np.lib.format.open_memmap(path, "w+", dtype, (n,))
        with open(path, "r+b") as fh:
            _preallocate(fh, int(array.offset), int(array.offset) + array.nbytes)
    return array


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def discard(path: Path, *, must_delete: bool = True) -> None:
    """Delete a file or folder: rename it aside first (atomic), then delete the renamed one.
    When deleting it fails, raise (`must_delete`) or warn: the renamed leftover is harmless
    and the next `sweep_stale` after this process ends removes it."""
    if not path.exists() and not path.is_symlink():
        return
    trash = temp_path(path, "trash")
    with writing(path):
        if trash.is_dir():  # left by an earlier failed delete of this process
            shutil.rmtree(trash)
        os.replace(path, trash)
    try:
        if trash.is_dir() and not trash.is_symlink():
            shutil.rmtree(trash)
        else:
            trash.unlink()
    except OSError as err:
        if must_delete:
            raise write_error(trash, err) from err
        warnings.warn(f"{trash}: could not delete it ({err}); delete it by hand", stacklevel=2)


def sweep_stale(folder: Path) -> list[Path]:
    """Remove temp and trash entries that processes of this host left in `folder` when they
    died (their pid no longer runs); entries of live processes and other hosts stay."""
    if os.name != "posix" or not folder.is_dir():  # os.kill(pid, 0) only probes on POSIX
        return []
    removed = []
    for entry in folder.iterdir():
        match = _TEMP.match(entry.name)
        if match is None or match["host"] not in (None, _HOST) or _alive(int(match["pid"])):
            continue
        with writing(entry):
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
        removed.append(entry)
    return removed
