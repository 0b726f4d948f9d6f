"""Files that survive kills and full disks: per-process temp names, atomic renames, named errors.

Everything is written under a temp name tagged with the host and process id, then renamed into
place, so a kill never leaves a half-written file under its final name and two processes never
share a temp name; `sweep_stale` removes what dead processes of this host left behind. Folders
are deleted by renaming them aside first, so a kill during the deletion never leaves a
half-deleted folder under its final name. A failed write is a `WriteError` naming the path, the
cause and the free space (a full disk included). The curriculum analyzer and the trainer's run
folder both build on these.
"""

from __future__ import annotations

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

from leantrain.errors import LeantrainError

__all__ = [
    "HOST",
    "WriteError",
    "atomic_write_json",
    "discard",
    "pid_alive",
    "sweep_stale",
    "temp_path",
    "write_error",
    "writing",
]

#: This machine's name as it appears in temp names (letters, digits and `_` only).
HOST = re.sub(r"[^A-Za-z0-9_]", "_", socket.gethostname()) or "host"
#: `.<name>.<kind>-<host>-<pid>` (or the older `.<name>.<kind>-<pid>`).
_TEMP = re.compile(r"^\..+\.(?:tmp|old|trash)-(?:(?P<host>[A-Za-z0-9_]+)-)?(?P<pid>\d+)$")


class WriteError(LeantrainError, OSError):
    """A file could not be written; the message names the path, the cause and the free space."""


def temp_path(path: Path, kind: str = "tmp") -> Path:
    """The hidden name beside `path` that this process writes (or moves) it under."""
    return path.with_name(f".{path.name}.{kind}-{HOST}-{os.getpid()}")


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


def atomic_write_json(path: Path, data: dict[str, Any]) -> None:
    """Write JSON to a temp file beside `path`, fsync, then rename: never half-written."""
    tmp = temp_path(path)
    with writing(path):
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(data, fh, indent=1, sort_keys=True)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)


def pid_alive(pid: int) -> bool:
    """Whether process `pid` of this host still runs (POSIX; someone else's counts)."""
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
        if match is None or match["host"] not in (None, HOST) or pid_alive(int(match["pid"])):
            continue
        with writing(entry):
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
        removed.append(entry)
    return removed
