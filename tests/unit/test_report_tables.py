"""`metacpo report` on hand-written cell directories: the numbers, NaN iterations, mixed commits, left-out cells."""

from __future__ import annotations

import csv
import json
import math

import pytest

from metacpo.benchmark.cell import Attempt, CellState, write_state
from metacpo.benchmark.report import build_report, to_csv, to_json, to_markdown
from metacpo.cli import main
from metacpo.config.schema import TrainConfig

ENV = "SafetyPointStcircle1-v0"


def _cell(root, label, seed, *, returns, costs, commit, status="done", limit=25.0, adapt=None):
    d = root / label / ENV / f"seed{seed}"
    d.mkdir(parents=True)
    config = TrainConfig.from_dict({"algo": "cpo", "env": {"env_id": ENV}, "run": {"seed": seed, "iters": len(returns)},
                                    "update": {"cost_limit": limit}}).to_dict()
    with open(d / "progress.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["iteration", "rollout/env_steps", "rollout/ep_return_mean", "rollout/ep_cost_mean", "rollout/j_c"])
        for i, (r, c) in enumerate(zip(returns, costs)):
            w.writerow([i, 1000 * (i + 1), r, c, c])
    adapt_settings = None
    if adapt is not None:
        adapt_settings = {"level": 2, "tasks": 2, "seeds": 1, "adapt_iters": 1, "steps_per_iter": 500, "cost_limit": limit}
        (d / "adapt").mkdir()
        with open(d / "adapt" / "adapt.csv", "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["label", "task_index", "seed", "step", "env_steps", "ep_return", "ep_cost", "j_c", "limit_ok"])
            for (task, step, ret, cost) in adapt:
                w.writerow([f"seed{seed}", task, 1_000_000, step, 500 * step, ret, cost, cost, cost <= limit])
        (d / "adapt" / "adapt.json").write_text(json.dumps({"settings": {"env_id": "SafetyPointStcircle2-v0"}}))
    prov = {"commit": commit * 40 if len(commit) == 1 else commit, "dirty": False}
    write_state(d, CellState(grid="g", grid_file="g.yaml", label=label, algo="cpo", env_id=ENV, seed=seed, train=True,
                             config=config, adapt=adapt_settings, cpus=1, status=status,
                             error="" if status == "done" else "train: ValueError: boom",
                             attempts=(Attempt(started=0.0, wall_s=1.0, status=status, resumed_from=0, provenance=prov,
                                               pid=1),),
                             train_wall_s=10.0 * (seed + 1), adapt_done=adapt_settings))
    return d


def test_training_and_adaptation_numbers(tmp_path):
    nan = float("nan")
    _cell(tmp_path, "a", 0, returns=[1, 2, 3, 4, 5, 6, 7, 8], costs=[30, 30, 20, 20, 10, 10, 40, 20], commit="a",
          adapt=[(0, 0, 1.0, 0.0), (1, 0, 3.0, 30.0), (0, 1, 5.0, 10.0), (1, 1, 7.0, 20.0)])
    # seed 1: a skipped last iteration (NaN figures)
    _cell(tmp_path, "a", 1, returns=[0, 0, 0, 0, 0, 0, 4, nan], costs=[0, 0, 0, 0, 0, 0, 30, nan], commit="a",
          adapt=[(0, 0, 2.0, 0.0), (1, 0, 2.0, 0.0), (0, 1, 9.0, 40.0), (1, 1, 11.0, 0.0)])
    _cell(tmp_path, "b", 0, returns=[1, 1], costs=[1, 1], commit="a", status="failed")
    rep = build_report(tmp_path)
    assert rep.cells_done == 2 and rep.not_done == (f"b/{ENV}/seed0 (failed: train: ValueError: boom)",)
    (row,) = rep.training
    assert (row.algorithm, row.seeds, row.iterations, row.late_iterations) == ("a", 2, 8, 2)
    # final: the last finite iteration (seed 1: iteration 6)
    assert row.final_return.value == pytest.approx((8 + 4) / 2)
    assert row.final_cost.value == pytest.approx((20 + 30) / 2)
    # late window = last 2 iterations, NaN left out: seed 0 (7+8)/2, seed 1 4
    assert row.late_return.value == pytest.approx((7.5 + 4) / 2)
    assert row.late_cost.value == pytest.approx((30 + 30) / 2)
    # within limit (J_C <= 25): seed 0 5/8, seed 1 6/7 finite iterations
    assert row.within_limit.value == pytest.approx((5 / 8 + 6 / 7) / 2)
    assert row.final_return.low <= row.final_return.value <= row.final_return.high
    assert row.train_wall_s == pytest.approx(15.0) and row.env_steps == 8000
    steps = {r.step: r for r in rep.adaptation}
    assert steps[0].pairs == 4 and steps[0].ret.value == pytest.approx(2.0) and steps[0].within_limit == 0.75
    assert steps[1].ret.value == pytest.approx(8.0) and steps[1].cost.value == pytest.approx(17.5)
    assert steps[1].within_limit == 0.75 and steps[1].test_env == "SafetyPointStcircle2-v0"
    agg = {(a.stage, a.metric): a.iqm for a in rep.aggregate}
    assert agg[("meta-test", "return")].value == pytest.approx(8.0)  # IQM of 5, 7, 9, 11
    assert agg[("training", "return")].n == 2
    assert rep.commits == ("aaaaaaa",)
    md = to_markdown(rep)
    assert "All rows from commit `aaaaaaa`." in md and "Mixed commits" not in md
    assert f"| a | {ENV} | 2 | 8 (late 2) | 8,000 | 25 | 6.00 [" in md
    data = json.loads(to_json(rep))
    assert data["training"][0]["late_return"] == pytest.approx(5.75) and data["mixed_commits"] is False
    rows = list(csv.DictReader(to_csv(rep).splitlines()))
    assert {r["table"] for r in rows} == {"training", "adaptation", "aggregate"}
    within = [r for r in rows if r["table"] == "adaptation" and r["metric"] == "within_limit" and r["step"] == "1"]
    assert float(within[0]["value"]) == 0.75


def test_mixed_commits_are_flagged(tmp_path, capsys):
    _cell(tmp_path, "a", 0, returns=[1.0, 2.0], costs=[0.0, 0.0], commit="a")
    _cell(tmp_path, "a", 1, returns=[1.0, 2.0], costs=[0.0, 0.0], commit="b")
    rep = build_report(tmp_path)
    assert rep.commits == ("aaaaaaa", "bbbbbbb") and rep.training[0].commits == ("aaaaaaa", "bbbbbbb")
    assert "**Mixed commits**: rows come from 2 commits (`aaaaaaa`, `bbbbbbb`)" in to_markdown(rep)
    assert json.loads(to_json(rep))["mixed_commits"] is True
    assert main(["report", str(tmp_path), "--format", "json", "--out", str(tmp_path / "r.json")]) == 0
    assert "warning: rows come from 2 commits" in capsys.readouterr().err
    assert json.loads((tmp_path / "r.json").read_text())["commits"] == ["aaaaaaa", "bbbbbbb"]
    one = _cell(tmp_path, "c", 0, returns=[1.0], costs=[0.0], commit="a")
    assert one.exists() and math.isnan(build_report(tmp_path).training[1].final_return.low)  # one seed: no CI


def test_bad_report_input(tmp_path, capsys):
    assert main(["report", str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["report", str(tmp_path)]) == 2
    assert "holds no benchmark cells" in capsys.readouterr().err
    _cell(tmp_path, "a", 0, returns=[1.0], costs=[0.0], commit="a")
    assert main(["report", str(tmp_path), "--late-fraction", "0"]) == 2
    assert "--late-fraction must lie in (0, 1], got 0.0" in capsys.readouterr().err
