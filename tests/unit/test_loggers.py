"""metrics.csv is appended one whole row at a time and cut back at a row boundary on resume;
a failed write (a full disk) leaves no half row."""

from __future__ import annotations

import csv
import errno
import os
from pathlib import Path
from typing import Any

import pytest

from leantrain.files import WriteError
from leantrain.trainer.loggers import CSVLogger, MetricsLog, MetricsLogger

COLUMNS = ["step", "loss", "eval/loss"]


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def _log(path: Path, steps: range, resume: int = 0) -> None:
    log = CSVLogger(path, COLUMNS, resume)
    for step in steps:
        log.write(step, {"step": step, "loss": step / 10})
    log.close()


def test_rows_are_appended_with_empty_cells_for_missing_columns(tmp_path: Path) -> None:
    path = tmp_path / "metrics.csv"
    _log(path, range(1, 4))
    assert _rows(path) == [
        {"step": str(s), "loss": repr(s / 10), "eval/loss": ""} for s in (1, 2, 3)
    ]


def test_resume_cuts_back_to_the_checkpoint_step_in_place(tmp_path: Path) -> None:
    path = tmp_path / "metrics.csv"
    _log(path, range(1, 8))
    inode = path.stat().st_ino
    with path.open("ab") as f:
        f.write(b"8,0.8")  # half a row, as a kill mid-write could leave
    _log(path, range(5, 7), resume=4)
    assert [r["step"] for r in _rows(path)] == ["1", "2", "3", "4", "5", "6"]
    assert path.stat().st_ino == inode  # truncated, never rewritten


def test_resume_at_step_0_starts_a_new_log(tmp_path: Path) -> None:
    path = tmp_path / "metrics.csv"
    _log(path, range(1, 4))
    _log(path, range(1, 2), resume=0)
    assert [r["step"] for r in _rows(path)] == ["1"]


def test_a_log_with_other_columns_is_rewritten_under_the_new_header(tmp_path: Path) -> None:
    path = tmp_path / "metrics.csv"
    path.write_text("step,loss\r\n1,0.5\r\n2,0.25\r\n3,0.125\r\n")
    _log(path, range(3, 4), resume=2)
    assert _rows(path) == [
        {"step": "1", "loss": "0.5", "eval/loss": ""},
        {"step": "2", "loss": "0.25", "eval/loss": ""},
        {"step": "3", "loss": "0.3", "eval/loss": ""},
    ]
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.csv"]  # no temp file left


def test_a_failed_write_leaves_no_half_row(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "metrics.csv"
    log = CSVLogger(path, COLUMNS, 0)
    log.write(1, {"step": 1, "loss": 0.5})
    real_write = os.write

    def disk_fills_up(fd: int, data: Any) -> int:
        if len(data) > 3:  # the kernel takes a few bytes of the row, then the disk is full
            return real_write(fd, bytes(data[:3]))
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "write", disk_fills_up)
    with pytest.raises(WriteError, match=r"metrics\.csv: cannot write: No space left on device"):
        log.write(2, {"step": 2, "loss": 0.25})
    monkeypatch.undo()
    log.close()
    assert path.read_bytes().endswith(b"\r\n")
    assert [r["step"] for r in _rows(path)] == ["1"]


def test_another_destination_is_one_small_class() -> None:
    class Recorder(MetricsLogger):
        def __init__(self) -> None:
            self.seen: list[tuple[int, dict[str, float]]] = []

        def write(self, step: int, row: Any) -> None:
            self.seen.append((step, dict(row)))

    recorder = Recorder()
    with MetricsLog([recorder]) as log:
        log.write(3, {"step": 3, "loss": 1.5})
        log.sync()
    assert recorder.seen == [(3, {"step": 3, "loss": 1.5})]
