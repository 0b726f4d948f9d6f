"""Files of the analyzer that survive kills and full disks: numpy arrays and checksums.

Arrays are written under a per-process temp name and renamed into place (`leantrain.files` holds
the temp names, the atomic deletes and the named write errors the analyzer shares with the
trainer). Memory maps are preallocated before they are filled, so a full disk is an `OSError`
(reported as a `WriteError` naming the path, the cause and the free space), never a SIGBUS.
"""

from __future__ import annotations

import errno
import hashlib
import os
from pathlib import Path
from typing import Any

import numpy as np

from leantrain.files import temp_path, writing

__all__ = ["alloc_npy", "file_sha256", "save_npy"]

_BLOCK = 1 << 23


def file_sha256(path: Path) -> str:
    """sha256 of a file, read in 8 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(_BLOCK):
            digest.update(block)
    return digest.hexdigest()


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
