"""Plots of a benchmark report: training curves and adaptation curves per env, cost limit drawn in."""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path

import numpy as np

from metacpo.benchmark.report import CellData, Report, load_cells


def _plt():  # type: ignore[no-untyped-def]
    import matplotlib

    matplotlib.use("Agg")  # files only
    import matplotlib.pyplot as plt

    return plt


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)


def plot_training(cells: list[CellData], *, env: str, path: Path) -> Path:
    """Return and cost vs env steps for each algorithm on ``env``: mean over seeds, band = min..max."""
    plt = _plt()
    by_label: dict[str, list[CellData]] = defaultdict(list)
    for c in cells:
        if c.state.env_id == env and c.progress:
            by_label[c.state.label].append(c)
    fig, (ax_r, ax_c) = plt.subplots(1, 2, figsize=(11, 4))
    limits = set()
    for label, group in by_label.items():
        n = min(len(c.progress) for c in group)
        steps = np.array([float(r["rollout/env_steps"]) for r in group[0].progress[:n]]) / 1000.0
        for ax, key in ((ax_r, "rollout/ep_return_mean"), (ax_c, "rollout/ep_cost_mean")):
            y = np.array([[float(r[key]) for r in c.progress[:n]] for c in group])
            (line,) = ax.plot(steps, np.nanmean(y, axis=0), lw=2, label=f"{label} ({len(group)} seeds)")
            ax.fill_between(steps, np.nanmin(y, axis=0), np.nanmax(y, axis=0), color=line.get_color(), alpha=0.15)
        limits |= {c.cost_limit for c in group}
    for d in sorted(limits):
        ax_c.axhline(d, color="k", ls="--", lw=1, label=f"cost limit {d:g}")
    for ax, ylabel in ((ax_r, "mean episode return"), (ax_c, "mean episode cost")):
        ax.set_xlabel("environment steps (thousands)")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    ax_c.legend(fontsize=8)
    fig.suptitle(f"training on {env}: mean over seeds, band = range over seeds")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_adaptation_curves(rep: Report, *, env: str, path: Path) -> Path:
    """Return and cost vs adaptation step for each algorithm on ``env``: mean and 95% bootstrap CI band."""
    plt = _plt()
    rows = [r for r in rep.adaptation if r.env == env]
    fig, (ax_r, ax_c) = plt.subplots(1, 2, figsize=(11, 4))
    for label in dict.fromkeys(r.algorithm for r in rows):
        rs = [r for r in rows if r.algorithm == label]
        steps = [r.step for r in rs]
        for ax, attr in ((ax_r, "ret"), (ax_c, "cost")):
            est = [getattr(r, attr) for r in rs]
            (line,) = ax.plot(steps, [e.value for e in est], marker="o", ms=3, label=label)
            lo = [e.low if math.isfinite(e.low) else e.value for e in est]
            hi = [e.high if math.isfinite(e.high) else e.value for e in est]
            ax.fill_between(steps, lo, hi, color=line.get_color(), alpha=0.2)
    for d in sorted({r.cost_limit for r in rows if math.isfinite(r.cost_limit)}):
        ax_c.axhline(d, color="k", ls="--", lw=1, label=f"cost limit {d:g}")
    from matplotlib.ticker import MaxNLocator

    for ax, ylabel in ((ax_r, "mean episode return"), (ax_c, "mean episode cost")):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("adaptation step (CPO updates)")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    ax_c.legend(fontsize=8)
    test_env = rows[0].test_env if rows else ""
    fig.suptitle(f"meta-test on {test_env} (trained on {env}): mean and 95% bootstrap CI over tasks x seeds")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_plots(rep: Report, out_dir: str | Path) -> list[Path]:
    """``training_<env>.png`` and ``adapt_<env>.png`` for every env of the report; returns the paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    cells, _ = load_cells(rep.out)
    paths = []
    for env in sorted({r.env for r in rep.training}):
        paths.append(plot_training(cells, env=env, path=out_dir / f"training_{_safe(env)}.png"))
    for env in sorted({r.env for r in rep.adaptation}):
        paths.append(plot_adaptation_curves(rep, env=env, path=out_dir / f"adapt_{_safe(env)}.png"))
    return paths
