"""Meta-test records and their summary: mean +- 95% CI over tasks x seeds per adaptation step."""

from __future__ import annotations

import csv
import json
import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
from scipy import stats as sps


@dataclass(frozen=True)
class AdaptRecord:
    """One evaluation during meta-testing: run ``label``, task, seed, after ``step`` CPO updates."""

    label: str
    """Curve name (the run directory's name, or ``cpo-from-scratch``)."""
    task_index: int
    """Index of the held-out task (0..tasks-1)."""
    seed: int
    """Meta-test seed (never a training seed)."""
    step: int
    """Number of CPO updates applied so far (0: the initialisation itself)."""
    env_steps: int
    """Environment steps consumed by this adaptation so far (samples used for updates)."""
    ep_return: float
    """Mean undiscounted episode return of the episodes sampled with the current policy."""
    ep_cost: float
    """Mean undiscounted episode cost of those episodes."""
    j_c: float
    """The (discounted) cost estimate ``J_C`` the constraint is stated in."""
    limit_ok: bool
    """``J_C <= d``: the cost limit holds."""


def ci95(values: Sequence[float]) -> float:
    """Half-width of the two-sided 95% Student-t confidence interval of the mean (0 if n < 2)."""
    x = np.asarray(values, dtype=np.float64)
    n = len(x)
    if n < 2:
        return 0.0
    return float(sps.t.ppf(0.975, n - 1) * x.std(ddof=1) / math.sqrt(n))


def summarize(records: Iterable[AdaptRecord]) -> dict[str, list[dict[str, float]]]:
    """Per label, per step: mean and 95% CI of return, cost and J_C, and the fraction within limit."""
    groups: dict[str, dict[int, list[AdaptRecord]]] = defaultdict(lambda: defaultdict(list))
    for r in records:
        groups[r.label][r.step].append(r)
    out: dict[str, list[dict[str, float]]] = {}
    for label, by_step in groups.items():
        rows = []
        for step in sorted(by_step):
            rs = by_step[step]
            row: dict[str, float] = {"step": step, "n": len(rs)}
            for key, attr in (("return", "ep_return"), ("cost", "ep_cost"), ("j_c", "j_c")):
                vals = [getattr(r, attr) for r in rs]
                row[f"{key}_mean"] = float(np.mean(vals))
                row[f"{key}_ci95"] = ci95(vals)
            row["limit_ok_frac"] = float(np.mean([r.limit_ok for r in rs]))
            row["env_steps_mean"] = float(np.mean([r.env_steps for r in rs]))
            rows.append(row)
        out[label] = rows
    return out


def write_records_csv(records: Sequence[AdaptRecord], path: Path) -> None:
    names = [f.name for f in fields(AdaptRecord)]
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=names)
        w.writeheader()
        for r in records:
            w.writerow(asdict(r))


def write_summary_json(summary: dict, *, meta: dict, path: Path) -> None:
    with open(path, "w") as fh:
        json.dump({"settings": meta, "curves": summary}, fh, indent=2, sort_keys=True)
