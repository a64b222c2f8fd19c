"""Run outputs: progress.csv (one row per iteration) and TensorBoard scalars.

Only the training loop writes here; algorithms return stats records whose ``log_row()`` gives
``group/name`` keys. Numeric values go to TensorBoard under the same keys; strings (e.g.
``solver/case``) go to the CSV only; events (skipped updates, solver fallbacks) go to TensorBoard
as text under ``events``.
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from metacpo.fileio import atomic_path


class ProgressCSV:
    """Append-only progress.csv; on resume it keeps exactly the rows of the checkpointed iterations.

    ``keep_rows`` is the checkpoint's iteration count: the file must hold the rows of iterations
    0 .. keep_rows-1 (checked by their ``iteration`` numbers, see :func:`checked_progress`); rows
    of later iterations (logged after the last checkpoint) are dropped, atomically, since those
    iterations run again.
    """

    def __init__(self, path: str | os.PathLike[str], *, keep_rows: int = 0) -> None:
        self.path = Path(path)
        self.columns: list[str] | None = None
        header, body, extra = checked_progress(self.path, keep_rows)
        if header is not None:
            self.columns = header
            if extra:
                _write_rows_atomic(self.path, header, body)

    def write(self, row: Mapping[str, Any]) -> None:
        if self.columns is None:
            self.columns = list(row)
            with self.path.open("w", newline="") as f:
                csv.writer(f).writerow(self.columns)
        elif list(row) != self.columns:
            raise ValueError(f"{self.path}: row keys {list(row)} differ from the header {self.columns}")
        with self.path.open("a", newline="") as f:
            csv.writer(f).writerow([_fmt(row[k]) for k in self.columns])


def checked_progress(path: str | os.PathLike[str], iterations: int) -> tuple[list[str] | None, list[list[str]], int]:
    """``(header, rows of iterations 0..iterations-1, number of later rows)`` of a progress.csv.

    Raises ValueError saying what is wrong when the file does not fit a checkpoint at
    ``iterations``: missing or empty while iterations were done, no ``iteration`` column, a row
    whose iteration number is not the next one (duplicated, missing or out of order), a torn
    row among the checkpointed ones, or fewer rows than iterations. Never rewrites anything.
    """
    path = Path(path)
    if not path.exists():
        if iterations:
            raise ValueError(f"{path} is missing but the checkpoint has {iterations} iterations; restore it "
                             "or start a new run")
        return None, [], 0
    with path.open(newline="") as f:
        rows = list(csv.reader(f))
    if not rows:
        if iterations:
            raise ValueError(f"{path} is empty but the checkpoint has {iterations} iterations: their rows "
                             "would be lost; restore it or start a new run")
        return None, [], 0
    header, body = rows[0], rows[1:]
    if "iteration" not in header:
        raise ValueError(f"{path}: no 'iteration' column in the header; not a metacpo progress.csv")
    col = header.index("iteration")
    for k, row in enumerate(body):
        torn = len(row) != len(header)
        if k >= iterations and torn and k == len(body) - 1:
            break  # a row cut short by a crash after the last checkpoint: dropped with the rest
        if torn:
            raise ValueError(f"{path}: row {k + 1} has {len(row)} fields, the header {len(header)}")
        got = row[col]
        if got != str(k):
            what = "a duplicated row" if k > 0 and got == body[k - 1][col] else "rows missing or out of order"
            raise ValueError(f"{path}: row {k + 1} is iteration {got}, expected {k} ({what}); "
                             f"it does not fit the checkpoint at iteration {iterations}")
    if len(body) < iterations:
        raise ValueError(f"{path} has rows for {len(body)} iterations but the checkpoint has {iterations}: "
                         f"rows of iterations {len(body)}..{iterations - 1} are missing")
    return header, body[:iterations], len(body) - iterations


def _write_rows_atomic(path: Path, header: list[str], body: list[list[str]]) -> None:
    with atomic_path(path) as tmp, tmp.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(body)


def _fmt(v: Any) -> Any:
    if isinstance(v, float):
        return repr(v)  # full precision, so identical runs give identical files
    return v


def read_progress(path: str | os.PathLike[str]) -> list[dict[str, str]]:
    """progress.csv as a list of dicts (strings)."""
    with Path(path).open(newline="") as f:
        return list(csv.DictReader(f))


class RunLogger:
    """progress.csv + (optionally) TensorBoard event files in ``run_dir``."""

    def __init__(self, run_dir: str | os.PathLike[str], *, tensorboard: bool, start_iteration: int) -> None:
        self.run_dir = Path(run_dir)
        self.csv = ProgressCSV(self.run_dir / "progress.csv", keep_rows=start_iteration)
        self.tb = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(log_dir=str(self.run_dir / "tb"), purge_step=start_iteration)

    def log(self, iteration: int, row: Mapping[str, Any]) -> None:
        full = {"iteration": iteration, **row}
        self.csv.write(full)
        if self.tb is not None:
            for k, v in row.items():
                if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
                    self.tb.add_scalar(k, v, iteration)
            self.tb.flush()

    def text(self, tag: str, message: str, iteration: int) -> None:
        if self.tb is not None:
            self.tb.add_text(tag, message, iteration)

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()
            self.tb = None
