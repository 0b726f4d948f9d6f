"""Where each logged step's metrics go: `metrics.csv` and TensorBoard, behind one interface.

`leantrain train` writes every logged row through each `MetricsLogger` of its `MetricsLog` (on
rank 0): the recipe's `loggers` name them. W&B and MLflow (`trackers`) are two more subclasses;
another destination is one more, with `write`, and `sync` and `close` where it needs them, plus
a line in `open_metrics_log`.

`metrics.csv` is only ever appended to, one whole row per write: on resume it is cut back at
the row boundary after the checkpoint's step (one `truncate`), so a kill at any moment leaves at
least the rows the newest checkpoint covers, and a write that fails (a full disk) is cut back
to the previous row boundary before the error is raised.
"""

from __future__ import annotations

import contextlib
import csv
import io
import os
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from leantrain.files import temp_path, write_error, writing

__all__ = [
    "CSVLogger",
    "MetricsLog",
    "MetricsLogger",
    "TensorBoardLogger",
    "open_metrics_log",
    "scalar_name",
]


def scalar_name(key: str) -> str:
    """A metric's name in a tracker (TensorBoard, W&B, MLflow): its own namespace, or
    `train/<key>` (so that `tokens` and `tokens/effective_seqlen` are not a file and a folder)."""
    return key if "/" in key else f"train/{key}"


class MetricsLogger(ABC):
    """One destination of the per-step metrics."""

    @abstractmethod
    def write(self, step: int, row: Mapping[str, float]) -> None:
        """Log the values of step `step` (`row` holds `step` too)."""

    def sync(self) -> None:
        """Make what was written durable: called before a checkpoint that covers it."""
        return None

    def close(self) -> None:
        """Flush and release what it holds."""
        return None


def _line(cells: Sequence[Any]) -> bytes:
    """One CSV row, as the csv module writes it (\\r\\n-terminated)."""
    buffer = io.StringIO()
    csv.writer(buffer).writerow(cells)
    return buffer.getvalue().encode()


def _kept_end(data: bytes, start: int, last_step: int) -> int:
    """Offset just after the last whole row (from `start`) whose step is at most `last_step`."""
    end = start
    while (newline := data.find(b"\n", end)) >= 0:
        try:
            step = int(data[end:newline].split(b",", 1)[0])
        except ValueError:
            break
        if step > last_step:
            break
        end = newline + 1
    return end


class CSVLogger(MetricsLogger):
    """`metrics.csv`: one row per logged step; never fewer rows than the checkpoint covers."""

    def __init__(self, path: Path, columns: Sequence[str], resume_step: int) -> None:
        """Open `path` for appending; resuming at `resume_step`, keep the rows up to it."""
        self.path, self.columns = path, list(columns)
        header = _line(self.columns)
        data = path.read_bytes() if resume_step and path.is_file() else b""
        with writing(path):
            if data.startswith(header):  # cut back to the checkpoint's step, in place
                os.truncate(path, _kept_end(data, len(header), resume_step))
            else:  # a new log, or another column set (an older leantrain): whole new file
                self._replace(header + self._kept_rows(data, resume_step))
            self._fd = os.open(path, os.O_WRONLY | os.O_APPEND)

    def _kept_rows(self, data: bytes, resume_step: int) -> bytes:
        """The rows of an old file up to `resume_step`, under this logger's columns."""
        rows = csv.DictReader(io.StringIO(data.decode(errors="replace")))
        kept = [r for r in rows if r.get("step", "").isdigit() and int(r["step"]) <= resume_step]
        return b"".join(_line([r.get(c) or "" for c in self.columns]) for r in kept)

    def _replace(self, content: bytes) -> None:
        """Write `content` to a temp file, fsync it, rename it over the log."""
        tmp = temp_path(self.path)
        with open(tmp, "wb") as fh:
            fh.write(content)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.path)

    def write(self, step: int, row: Mapping[str, float]) -> None:
        """Append one whole row (empty cells for missing columns) or none at all."""
        line = memoryview(_line([repr(row[c]) if c in row else "" for c in self.columns]))
        start = os.fstat(self._fd).st_size
        try:
            while line:
                line = line[os.write(self._fd, line) :]
        except OSError as err:
            with contextlib.suppress(OSError):  # no half row: cut back to the last whole one
                os.ftruncate(self._fd, start)
            raise write_error(self.path, err) from err

    def sync(self) -> None:
        """fsync the log."""
        with writing(self.path):
            os.fsync(self._fd)

    def close(self) -> None:
        """Close the file."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


class TensorBoardLogger(MetricsLogger):
    """TensorBoard scalars under `train/<key>` (or the key's own namespace)."""

    def __init__(self, folder: Path, resume_step: int) -> None:
        """Events of steps after `resume_step` that a killed run wrote are purged."""
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(folder), purge_step=resume_step + 1)

    def write(self, step: int, row: Mapping[str, float]) -> None:
        """One scalar per value."""
        for key, value in row.items():
            if key != "step":
                self.writer.add_scalar(scalar_name(key), value, step)

    def sync(self) -> None:
        """Flush pending events."""
        self.writer.flush()

    def close(self) -> None:
        """Flush and close the event file."""
        self.writer.close()


class MetricsLog:
    """Every destination of a run's metrics (none on ranks other than 0); a context manager
    that closes them all."""

    def __init__(self, loggers: Sequence[MetricsLogger]) -> None:
        """Write through each of `loggers`, in order."""
        self.loggers = list(loggers)

    def write(self, step: int, row: Mapping[str, float]) -> None:
        """Log one step's values everywhere."""
        for logger in self.loggers:
            logger.write(step, row)

    def sync(self) -> None:
        """Make everything logged so far durable (before a checkpoint is saved)."""
        for logger in self.loggers:
            logger.sync()

    def close(self) -> None:
        """Close every destination."""
        for logger in self.loggers:
            logger.close()

    def __enter__(self) -> MetricsLog:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.close()


def open_metrics_log(
    out: Path,
    columns: Sequence[str],
    resume_step: int,
    *,
    enabled: bool,
    names: Sequence[str] = ("csv", "tensorboard"),
    config: Mapping[str, Any] | None = None,
) -> MetricsLog:
    """The run's logs named in `names` (a recipe's `loggers`: `metrics.csv` always, TensorBoard
    in `out/tb`, W&B, MLflow with the recipe `config`), on rank 0 (`enabled`), continuing at
    `resume_step` (0: from scratch)."""
    if not enabled:
        return MetricsLog([])
    from leantrain.trainer.trackers import MLflowLogger, WandbLogger

    opened: list[MetricsLogger] = [CSVLogger(out / "metrics.csv", columns, resume_step)]
    try:
        for name in names:
            if name == "tensorboard":
                opened.append(TensorBoardLogger(out / "tb", resume_step))
            elif name == "wandb":
                opened.append(WandbLogger(out, config or {}))
            elif name == "mlflow":
                opened.append(MLflowLogger(out, config or {}))
        return MetricsLog(opened)
    except BaseException:
        MetricsLog(opened).close()
        raise
