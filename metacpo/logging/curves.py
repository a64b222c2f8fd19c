"""Training curves from a run's progress.csv (return and episode cost vs environment steps).

``metacpo plot RUN_OR_CSV... --out FILE.png`` (:func:`training_figure`) draws several runs on
the same two panels: per-iteration values as thin lines, trailing means as thick ones, the cost
limit dashed.

``python -m metacpo.logging.curves RUN_DIR OUT.png [--cost-limit D] [--window K]
[--with LABEL=OTHER_RUN ...]`` writes the plot and prints summary figures (first/last-window
means), so a results page can quote them. ``--with`` overlays other runs' trailing means (e.g. a
baseline; a run directory or a saved progress CSV) on the same axes.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from typing import TYPE_CHECKING

import numpy as np

from metacpo.logging.writers import read_progress

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def _col(rows: list[dict[str, str]], key: str) -> np.ndarray:
    return np.array([float(r[key]) if r[key] not in ("", "nan") else math.nan for r in rows])


def progress_file(run: str | Path) -> Path:
    """``run`` itself if it is a file (a progress CSV), else ``run/progress.csv``."""
    run = Path(run)
    return run if run.is_file() else run / "progress.csv"


def rolling_mean(x: np.ndarray, window: int) -> np.ndarray:
    """Trailing mean over the last ``window`` entries (fewer at the start), ignoring NaN."""
    return np.array([np.nanmean(x[max(0, i - window + 1) : i + 1]) for i in range(len(x))])


def summarize(run_dir: str | Path, *, window: int = 10) -> dict[str, float]:
    """Mean return / episode cost / J_C over the first and the last ``window`` iterations."""
    rows = read_progress(progress_file(run_dir))
    if not rows:
        raise ValueError(f"{run_dir}/progress.csv has no rows")
    ret, cost = _col(rows, "rollout/ep_return_mean"), _col(rows, "rollout/ep_cost_mean")
    jc = _col(rows, "rollout/j_c")
    w = min(window, len(rows))
    return {
        "iterations": len(rows),
        "env_steps": float(rows[-1]["rollout/env_steps"]),
        "return_first": float(np.nanmean(ret[:w])),
        "return_last": float(np.nanmean(ret[-w:])),
        "cost_first": float(np.nanmean(cost[:w])),
        "cost_last": float(np.nanmean(cost[-w:])),
        "jc_last": float(np.nanmean(jc[-w:])),
    }


def training_figure(
    runs: dict[str, str | Path],
    *,
    cost_limit: float | None,
    window: int = 10,
    title: str = "",
) -> "Figure":
    """Two panels (episode return, episode cost vs environment steps), one colour per run.

    ``runs``: legend label -> run directory or progress CSV. Each run gets its per-iteration
    values (thin, faint) and the trailing mean over ``window`` iterations (thick); the cost limit
    ``d`` (if given) is a dashed line. The cost axis starts at 0.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not runs:
        raise ValueError("metacpo plot needs at least one run directory or progress CSV")
    if window < 1:
        raise ValueError(f"--window must be >= 1, got {window}")
    fig, (ax_r, ax_c) = plt.subplots(1, 2, figsize=(11, 4))
    for i, (label, run) in enumerate(runs.items()):
        path = progress_file(run)
        if not path.is_file():
            raise FileNotFoundError(f"{run}: neither a progress CSV nor a run directory with {path}")
        rows = read_progress(path)
        if not rows:
            raise ValueError(f"{path} has no rows")
        missing = [k for k in ("rollout/env_steps", "rollout/ep_return_mean", "rollout/ep_cost_mean") if k not in rows[0]]
        if missing:
            raise ValueError(f"{path} is not a metacpo progress CSV (no column {missing[0]!r})")
        steps = _col(rows, "rollout/env_steps") / 1000.0
        for ax, key in ((ax_r, "rollout/ep_return_mean"), (ax_c, "rollout/ep_cost_mean")):
            y = _col(rows, key)
            ax.plot(steps, y, color=f"C{i}", lw=0.8, alpha=0.35, label="_nolegend_")
            ax.plot(steps, rolling_mean(y, window), color=f"C{i}", lw=2, label=f"{label} (mean of last {window})")
    if cost_limit is not None:
        ax_c.axhline(cost_limit, color="k", ls="--", lw=1, label=f"cost limit d = {cost_limit:g}")
    for ax, ylabel in ((ax_r, "episode return"), (ax_c, "episode cost")):
        ax.set_xlabel("environment steps (thousands)")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend(loc="best", fontsize=8)
    ax_c.set_ylim(bottom=0.0)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def run_labels(runs: list[str]) -> dict[str, str]:
    """Legend labels for ``runs``: a run directory's name, a CSV's stem (made unique)."""
    out: dict[str, str] = {}
    for run in runs:
        p = Path(run)
        label = (p.stem if p.is_file() else p.resolve().name) or str(run)
        while label in out:
            label += "'"
        out[label] = run
    return out


def plot_run(
    run_dir: str | Path,
    out: str | Path,
    *,
    cost_limit: float | None,
    window: int = 10,
    title: str = "",
    label: str = "",
    others: dict[str, str | Path] | None = None,
) -> Path:
    """Two panels (return, episode cost) per iteration with a trailing ``window`` mean.

    ``others`` (label -> run directory or progress CSV file) adds each run's trailing mean as a
    thin line.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_progress(Path(run_dir) / "progress.csv")
    steps = _col(rows, "rollout/env_steps") / 1000.0
    ret, cost = _col(rows, "rollout/ep_return_mean"), _col(rows, "rollout/ep_cost_mean")
    fig, (ax_r, ax_c) = plt.subplots(1, 2, figsize=(11, 4))
    for ax, y, ylabel in ((ax_r, ret, "episode return"), (ax_c, cost, "episode cost")):
        ax.plot(steps, y, color="0.7", lw=1, label="per iteration")
        ax.plot(steps, rolling_mean(y, window), color="C0" if ax is ax_r else "C3", lw=2,
                label=f"{label + ': ' if label else ''}mean of last {window} iterations")
        ax.set_xlabel("environment steps (thousands)")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    for i, (name, other) in enumerate((others or {}).items()):
        o_rows = read_progress(progress_file(other))
        o_steps = _col(o_rows, "rollout/env_steps") / 1000.0
        for ax, key in ((ax_r, "rollout/ep_return_mean"), (ax_c, "rollout/ep_cost_mean")):
            ax.plot(o_steps, rolling_mean(_col(o_rows, key), window), color=f"C{i + 4}", lw=1.3,
                    label=f"{name}: mean of last {window}")
    if cost_limit is not None:
        ax_c.axhline(cost_limit, color="k", ls="--", lw=1, label=f"cost limit d = {cost_limit:g}")
    ax_r.legend(loc="best", fontsize=8)
    ax_c.legend(loc="best", fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run_dir")
    p.add_argument("out")
    p.add_argument("--cost-limit", type=float, default=None)
    p.add_argument("--window", type=int, default=10)
    p.add_argument("--title", default="")
    p.add_argument("--label", default="", help="legend label of RUN_DIR")
    p.add_argument("--with", dest="others", action="append", default=[], metavar="LABEL=RUN",
                   help="overlay another run's trailing means; RUN: a run directory or a progress CSV (repeatable)")
    a = p.parse_args(argv)
    others = {}
    for item in a.others:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            p.error(f"--with takes LABEL=RUN_DIR, got {item!r}")
        if not progress_file(path).is_file():
            p.error(f"--with {item!r}: neither a progress CSV nor a run directory with {path}/progress.csv")
        others[name] = path
    plot_run(a.run_dir, a.out, cost_limit=a.cost_limit, window=a.window, title=a.title, label=a.label,
             others=others)
    for run_label, run_dir in {a.label or "run": a.run_dir, **others}.items():
        prefix = f"{run_label} " if others else ""
        for k, v in summarize(run_dir, window=a.window).items():
            if not (isinstance(v, float) and math.isnan(v)):
                print(f"{prefix}{k}: {v:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
