"""Plots of meta-test adaptation curves (``adapt.png``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never open a window
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402


def plot_adaptation(
    curves: Mapping[str, Sequence[Mapping[str, float]]],
    *,
    cost_limit: float,
    path: str | Path,
    title: str = "",
) -> Path:
    """Return and cost vs adaptation step, one curve (mean and 95% CI band) per run label.

    ``curves[label]`` is a list of per-step rows with keys ``step``, ``return_mean``,
    ``return_ci95``, ``cost_mean``, ``cost_ci95`` (as in ``adapt.json``). The cost limit is
    drawn as a dashed horizontal line on the cost panel.
    """
    if not curves:
        raise ValueError("plot_adaptation needs at least one curve")
    fig, (ax_r, ax_c) = plt.subplots(1, 2, figsize=(11, 4))
    for label, rows in curves.items():
        steps = [r["step"] for r in rows]
        for ax, key in ((ax_r, "return"), (ax_c, "cost")):
            m = [r[f"{key}_mean"] for r in rows]
            ci = [r[f"{key}_ci95"] for r in rows]
            (line,) = ax.plot(steps, m, marker="o", ms=3, label=label)
            ax.fill_between(steps, [a - b for a, b in zip(m, ci)], [a + b for a, b in zip(m, ci)],
                            color=line.get_color(), alpha=0.2)
    ax_c.axhline(cost_limit, color="k", ls="--", lw=1, label=f"cost limit {cost_limit:g}")
    ax_r.set_xlabel("adaptation step (CPO updates)")
    ax_c.set_xlabel("adaptation step (CPO updates)")
    ax_r.set_ylabel("mean episode return")
    ax_c.set_ylabel("mean episode cost")
    ax_c.legend(fontsize=8)
    ax_r.grid(alpha=0.3)
    ax_r.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax_c.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax_c.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
