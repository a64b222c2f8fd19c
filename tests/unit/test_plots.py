"""Figures of `metacpo plot` and adapt.png: matplotlib objects (limits, labels, lines), not pixels."""

from __future__ import annotations

import csv

import matplotlib.pyplot as plt
import numpy as np
import pytest

from metacpo.logging.curves import training_figure
from metacpo.logging.plots import MIN_CI_N, adaptation_figure, plot_adaptation
from metacpo.logging.meta_test import AdaptRecord, summarize


def _records(label, tasks, seeds, steps=4, cost0=40.0):
    rng = np.random.default_rng(len(label))
    out = []
    for t in range(tasks):
        for s in range(seeds):
            for k in range(steps):
                out.append(AdaptRecord(label=label, task_index=t, seed=1_000_000 + s, step=k, env_steps=k * 1000,
                                       ep_return=5.0 * k + rng.normal(), ep_cost=max(0.0, cost0 - 8 * k + rng.normal(0, 6)),
                                       j_c=0.0, limit_ok=True))
    return out


def _legend(ax):
    return [t.get_text() for t in ax.get_legend().get_texts()]


def test_small_n_shows_individual_curves_and_says_why():
    recs = _records("meta-cpo", 2, 1) + _records("cpo-from-scratch", 2, 1, cost0=3.0)
    fig = adaptation_figure(summarize(recs), cost_limit=25.0, title="t", records=recs)
    ax_r, ax_c = fig.axes
    assert ax_c.get_ylim()[0] == 0.0
    # 2 labels x (mean + 2 individual curves) + the limit line on the cost panel
    assert len(ax_c.get_lines()) == 2 * 3 + 1
    assert len(ax_r.get_lines()) == 2 * 3
    assert not ax_c.collections  # no CI bands
    labels = _legend(ax_c)
    assert "meta-cpo: each task x seed" in labels and "cost limit 25" in labels
    assert not any("95% CI" in lb for lb in labels)
    assert f"n = 2 (tasks x seeds) < {MIN_CI_N}" in fig._suptitle.get_text()
    # the individual curves are the records themselves
    xs = [line for line in ax_c.get_lines() if line.get_linestyle() == ":"]
    first = sorted(r.ep_cost for r in recs if r.label == "meta-cpo" and r.step == 0)
    assert sorted(line.get_ydata()[0] for line in xs[:2]) == pytest.approx(first)
    plt.close(fig)


def test_normal_n_draws_labelled_95ci_bands(tmp_path):
    recs = _records("meta-cpo", 3, 2) + _records("multitask-cpo", 3, 2, cost0=10.0)
    summary = summarize(recs)
    fig = adaptation_figure(summary, cost_limit=25.0, records=recs)
    ax_r, ax_c = fig.axes
    assert ax_c.get_ylim()[0] == 0.0  # even though bands reach below 0
    assert len(ax_c.get_lines()) == 2 + 1 and len(ax_c.collections) == 2
    assert sorted(_legend(ax_c)) == sorted(["meta-cpo (mean)", "multitask-cpo (mean)", "cost limit 25",
                                            "meta-cpo: 95% CI", "multitask-cpo: 95% CI"])
    band = ax_r.collections[0].get_paths()[0].vertices[:, 1]
    row = summary["meta-cpo"][0]
    assert band.max() == pytest.approx(max(r["return_mean"] + r["return_ci95"] for r in summary["meta-cpo"]))
    assert band.min() == pytest.approx(min(r["return_mean"] - r["return_ci95"] for r in summary["meta-cpo"]))
    assert row["n"] == 6 >= MIN_CI_N
    assert "n =" not in (fig._suptitle.get_text() if fig._suptitle else "")
    plt.close(fig)
    path = plot_adaptation(summary, cost_limit=25.0, path=tmp_path / "adapt.png", records=recs)
    assert path.read_bytes()[:4] == b"\x89PNG" and [p.name for p in tmp_path.iterdir()] == ["adapt.png"]


def _progress(path, returns, costs):
    path.mkdir()
    with open(path / "progress.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["iteration", "rollout/env_steps", "rollout/ep_return_mean", "rollout/ep_cost_mean", "rollout/j_c"])
        for i, (r, c) in enumerate(zip(returns, costs)):
            w.writerow([i, 1000 * (i + 1), r, c, c])
    return path


def test_training_figure_lines_limit_and_trailing_means(tmp_path):
    a = _progress(tmp_path / "a", [0, 1, 2, 3], [50, 40, 30, 20])
    b = _progress(tmp_path / "b", [4, 4, 4, 8], [5, 5, 5, 5])
    fig = training_figure({"cpo": a, "trpo": b / "progress.csv"}, cost_limit=25.0, window=2, title="x")
    ax_r, ax_c = fig.axes
    assert len(ax_r.get_lines()) == 4 and len(ax_c.get_lines()) == 5  # raw + mean per run (+ limit)
    assert _legend(ax_c) == ["cpo (mean of last 2)", "trpo (mean of last 2)", "cost limit d = 25"]
    assert ax_c.get_ylim()[0] == 0.0
    mean_cost_a = ax_c.get_lines()[1].get_ydata()
    np.testing.assert_allclose(mean_cost_a, [50, 45, 35, 25])
    np.testing.assert_allclose(ax_c.get_lines()[1].get_xdata(), [1, 2, 3, 4])  # thousands of steps
    limit = ax_c.get_lines()[-1]
    assert list(limit.get_ydata()) == [25.0, 25.0]
    plt.close(fig)
    with pytest.raises(FileNotFoundError, match="neither a progress CSV nor a run directory"):
        training_figure({"x": tmp_path / "nope"}, cost_limit=None)
