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


class ProgressCSV:
    """Append-only progress.csv that can be cut back to ``keep_rows`` rows on resume."""

    def __init__(self, path: str | os.PathLike[str], *, keep_rows: int = 0) -> None:
        self.path = Path(path)
        self.columns: list[str] | None = None
        if self.path.exists():
            with self.path.open(newline="") as f:
                rows = list(csv.reader(f))
            if rows:
                self.columns = rows[0]
                body = rows[1:]
                if len(body) < keep_rows:
                    raise ValueError(
                        f"{self.path} has {len(body)} rows but the checkpoint is at iteration {keep_rows}"
                    )
                with self.path.open("w", newline="") as f:
                    w = csv.writer(f)
                    w.writerow(self.columns)
                    w.writerows(body[:keep_rows])
        elif keep_rows:
            raise ValueError(f"{self.path} is missing but the checkpoint is at iteration {keep_rows}")

    def write(self, row: Mapping[str, Any]) -> None:
        if self.columns is None:
            self.columns = list(row)
            with self.path.open("w", newline="") as f:
                csv.writer(f).writerow(self.columns)
        elif list(row) != self.columns:
            raise ValueError(f"{self.path}: row keys {list(row)} differ from the header {self.columns}")
        with self.path.open("a", newline="") as f:
            csv.writer(f).writerow([_fmt(row[k]) for k in self.columns])


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
