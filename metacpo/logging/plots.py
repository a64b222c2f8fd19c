"""Plots of meta-test adaptation curves (``adapt.png``).

Each run label gets its mean curve and, when every step has at least :data:`MIN_CI_N`
(task, seed) pairs, a band labelled "95% CI" (mean +- half-width of the Student-t interval,
as in ``adapt.json``). With fewer pairs the interval says little: its t multiplier is 12.7 at
n = 2, 4.3 at n = 3 and 3.2 at n = 4 (2.8 at n = 5, tending to 1.96), and the standard deviation
it scales is itself estimated from a handful of values (relative standard error about
``1/sqrt(2(n-1))``: 71% at n = 2, 41% at n = 4, 35% at n = 5) -- the demo's 2 tasks x 1 seed gave
bands of +-1000 on costs of 0-100. Below :data:`MIN_CI_N` the individual (task, seed) curves
are drawn instead (thin lines, same colour, beside the mean) and a note under the title says why.
The cost axis starts at 0 (episode costs are never negative; a band reaching below 0 is cut).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only; never open a window
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from metacpo.fileio import atomic_path

MIN_CI_N = 5
"""Fewest (task, seed) pairs per step for which a 95% CI band is drawn (see the module docstring)."""


def adaptation_figure(
    curves: Mapping[str, Sequence[Mapping[str, float]]],
    *,
    cost_limit: float,
    title: str = "",
    records: Sequence[Any] | None = None,
) -> Figure:
    """Return and cost vs adaptation step, one mean curve per run label.

    ``curves[label]`` is a list of per-step rows with keys ``step``, ``n``, ``return_mean``,
    ``return_ci95``, ``cost_mean``, ``cost_ci95`` (as in ``adapt.json``). ``records``
    (:class:`metacpo.logging.meta_test.AdaptRecord`) give the individual curves drawn when n is below
    :data:`MIN_CI_N`. The cost limit is a dashed horizontal line on the cost panel.
    """
    if not curves:
        raise ValueError("plot_adaptation needs at least one curve")
    n_min = int(min(r.get("n", 0) for rows in curves.values() for r in rows))
    bands = n_min >= MIN_CI_N
    individual: dict[str, dict[tuple[int, int], list[Any]]] = defaultdict(lambda: defaultdict(list))
    for rec in records or ():
        individual[rec.label][(rec.task_index, rec.seed)].append(rec)
    fig, (ax_r, ax_c) = plt.subplots(1, 2, figsize=(11, 4.3))
    for label, rows in curves.items():
        steps = [r["step"] for r in rows]
        for ax, key, attr in ((ax_r, "return", "ep_return"), (ax_c, "cost", "ep_cost")):
            m = [r[f"{key}_mean"] for r in rows]
            (line,) = ax.plot(steps, m, marker="o", ms=3, lw=2, label=f"{label} (mean)")
            colour = line.get_color()
            if bands:
                ci = [r[f"{key}_ci95"] for r in rows]
                ax.fill_between(steps, [a - b for a, b in zip(m, ci)], [a + b for a, b in zip(m, ci)],
                                color=colour, alpha=0.2, label=f"{label}: 95% CI")
            else:
                for i, (_, recs) in enumerate(sorted(individual.get(label, {}).items())):
                    recs = sorted(recs, key=lambda r: r.step)
                    ax.plot([r.step for r in recs], [getattr(r, attr) for r in recs], color=colour, lw=0.8,
                            alpha=0.6, ls=":", label=f"{label}: each task x seed" if i == 0 else "_nolegend_")
    ax_c.axhline(cost_limit, color="k", ls="--", lw=1, label=f"cost limit {cost_limit:g}")
    for ax, ylabel in ((ax_r, "mean episode return"), (ax_c, "mean episode cost")):
        ax.set_xlabel("adaptation step (CPO updates)")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax_c.set_ylim(bottom=0.0)
    ax_c.legend(fontsize=7)
    note = "" if bands else (f"n = {n_min} (tasks x seeds) < {MIN_CI_N}: too few for a meaningful 95% CI; "
                             "individual curves shown instead")
    if title or note:
        fig.suptitle("\n".join(t for t in (title, note) if t), fontsize=10)
    fig.tight_layout()
    return fig


def save_figure(fig: Figure, path: str | Path, *, dpi: int = 120) -> Path:
    """Write ``fig`` to ``path`` atomically (temporary file + rename) and close it."""
    path = Path(path)
    try:
        with atomic_path(path, suffix=path.suffix or ".png") as tmp:
            fig.savefig(tmp, dpi=dpi)
    finally:
        plt.close(fig)
    return path


def plot_adaptation(
    curves: Mapping[str, Sequence[Mapping[str, float]]],
    *,
    cost_limit: float,
    path: str | Path,
    title: str = "",
    records: Sequence[Any] | None = None,
) -> Path:
    """Write :func:`adaptation_figure` to ``path`` (``adapt.png``)."""
    return save_figure(adaptation_figure(curves, cost_limit=cost_limit, title=title, records=records), path)
