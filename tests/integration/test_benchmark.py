"""`metacpo benchmark` on benchmarks/smoke.yaml: interrupted -> resumed -> all skipped; `metacpo report`.

The benchmark runs as a real subprocess (its cells are subprocesses of it) and is killed hard
(SIGKILL to its process group) in the middle of a cell's training.
"""

from __future__ import annotations

import csv
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from metacpo.benchmark.cell import read_state

REPO = Path(__file__).resolve().parents[2]
SMOKE = REPO / "benchmarks" / "smoke.yaml"
ENV = "SafetyPointStcircle1-v0"


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}


def _benchmark(grid: Path, out: Path, *extra: str, timeout: float = 400) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "metacpo.cli", "benchmark", str(grid), "--out", str(out), *extra],
                          capture_output=True, text=True, env=_env(), timeout=timeout, cwd=REPO)


def _report(out: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "metacpo.cli", "report", str(out), *extra],
                          capture_output=True, text=True, env=_env(), timeout=200, cwd=REPO)


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def _kill_mid_training(grid: Path, out: Path, iters: int) -> str:
    """Start the benchmark, SIGKILL its process group once a cell has a checkpoint before ``iters``."""
    proc = subprocess.Popen([sys.executable, "-m", "metacpo.cli", "benchmark", str(grid), "--out", str(out), "--jobs", "2"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=_env(), cwd=REPO,
                            start_new_session=True)
    deadline = time.time() + 300
    victim = None
    try:
        while victim is None and time.time() < deadline and proc.poll() is None:
            for d in out.glob(f"*/{ENV}/seed*"):
                prog = d / "progress.csv"
                if (d / "checkpoint.pt").exists() and prog.exists() and 1 <= len(_rows(prog)) < iters:
                    victim = str(d.relative_to(out))
                    break
            time.sleep(0.05)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert victim is not None, "no cell was caught between its first checkpoint and its last iteration"
    return victim


@pytest.mark.slow
def test_smoke_grid_interrupted_resumed_skipped_and_reported(tmp_path):
    grid = yaml.safe_load(SMOKE.read_text())
    iters = grid["train"]["run.iters"]
    out = tmp_path / "smoke"

    victim = _kill_mid_training(SMOKE, out, iters)
    killed = read_state(out / victim)
    assert killed.status == "running"  # killed hard: it could not record its end
    done_before = {str(p.parent.relative_to(out)) for p in out.glob("*/*/seed*/cell.json")
                   if read_state(p.parent).status == "done"}

    # run again: the killed cell resumes from its checkpoint, the rest run or are skipped
    res = _benchmark(SMOKE, out, "--jobs", "2")
    assert res.returncode == 0, res.stderr
    assert "resume from iteration" in res.stderr
    cells = sorted(str(p.parent.relative_to(out)) for p in out.glob("*/*/seed*/cell.json"))
    assert cells == sorted(f"{label}/{ENV}/seed{s}" for label in grid["algorithms"] for s in grid["seeds"])
    state = read_state(out / victim)
    assert state.status == "done" and len(state.attempts) == 2
    assert 1 <= state.attempts[1].resumed_from < iters and state.attempts[1].status == "done"
    for key in cells:
        st = read_state(out / key)
        assert st.status == "done" and st.wall_s > 0 and st.adapt_done == st.adapt
        prov = st.attempts[-1].provenance
        assert len(prov["commit"]) == 40 and set(prov["versions"]) >= {"torch", "numpy", "mujoco", "safety-gymnasium",
                                                                         "cvxpy", "metacpo"}
        prog = _rows(out / key / "progress.csv")
        assert [int(r["iteration"]) for r in prog] == list(range(iters))  # resumed: no row lost or repeated
        assert st.config["run"]["iters"] == iters and st.config["env"]["env_id"] == ENV
        assert len(_rows(out / key / "adapt" / "adapt.csv")) == (grid["adapt"]["tasks"] * grid["adapt"]["seeds"]
                                                                  * (grid["adapt"]["adapt_iters"] + 1))
    skipped_now = len(done_before)
    assert f"{len(cells) - skipped_now} cells done, {skipped_now} skipped" in res.stdout

    # a third run has nothing to do
    mtimes = {k: (out / k / "cell.json").stat().st_mtime_ns for k in cells}
    res = _benchmark(SMOKE, out)
    assert res.returncode == 0, res.stderr
    assert f"0 cells done, {len(cells)} skipped" in res.stdout
    assert {k: (out / k / "cell.json").stat().st_mtime_ns for k in cells} == mtimes

    # the report in its three formats, checked against the cells' own files
    js = _report(out, "--format", "json", "--plots", str(tmp_path / "plots"))
    assert js.returncode == 0, js.stderr
    rep = json.loads(js.stdout)
    assert rep["cells_done"] == len(cells) and not rep["mixed_commits"] and len(rep["commits"]) == 1
    assert {r["algorithm"] for r in rep["training"]} == set(grid["algorithms"])
    late = max(1, math.ceil(0.25 * iters))
    for row in rep["training"]:
        progs = [_rows(out / row["algorithm"] / ENV / f"seed{s}" / "progress.csv") for s in grid["seeds"]]
        ret = [np.mean([float(r["rollout/ep_return_mean"]) for r in p[-late:]]) for p in progs]
        cost = [float(p[-1]["rollout/ep_cost_mean"]) for p in progs]
        within = [np.mean([float(r["rollout/j_c"]) <= 25.0 for r in p]) for p in progs]
        assert row["seeds"] == len(grid["seeds"]) and row["iterations"] == iters
        assert row["late_return"] == pytest.approx(np.mean(ret))
        assert row["final_cost"] == pytest.approx(np.mean(cost))
        assert row["within_limit"] == pytest.approx(np.mean(within))
        assert row["late_return_ci_low"] <= row["late_return"] <= row["late_return_ci_high"]
        assert row["commits"] == rep["commits"]
    steps = grid["adapt"]["adapt_iters"] + 1
    assert len(rep["adaptation"]) == len(grid["algorithms"]) * steps
    for row in rep["adaptation"]:
        recs = [r for s in grid["seeds"] for r in _rows(out / row["algorithm"] / ENV / f"seed{s}" / "adapt" / "adapt.csv")
                if int(r["step"]) == row["step"]]
        assert row["pairs"] == len(recs) == grid["adapt"]["tasks"] * grid["adapt"]["seeds"] * len(grid["seeds"])
        assert row["ret"] == pytest.approx(np.mean([float(r["ep_return"]) for r in recs]))
        assert row["cost"] == pytest.approx(np.mean([float(r["ep_cost"]) for r in recs]))
        assert row["within_limit"] == pytest.approx(np.mean([r["limit_ok"] == "True" for r in recs]))
        assert row["test_env"] == "SafetyPointStcircle2-v0"
    assert {(a["algorithm"], a["stage"], a["metric"]) for a in rep["aggregate"]} == {
        (alg, stage, m) for alg in grid["algorithms"] for stage in ("training", "meta-test") for m in ("return", "cost")}
    for name in ("training", "adapt"):
        png = tmp_path / "plots" / f"{name}_{ENV}.png"
        assert png.read_bytes()[:4] == b"\x89PNG" and png.stat().st_size > 10_000

    md = _report(out, "--out", str(tmp_path / "report.md"))
    assert md.returncode == 0, md.stderr
    text = (tmp_path / "report.md").read_text()
    assert f"All rows from commit `{rep['commits'][0]}`" in text
    for row in rep["training"]:
        assert f"| {row['algorithm']} | {ENV} | {len(grid['seeds'])} | {iters} (late {late}) |" in text
        assert f"{row['late_return']:.2f} [{row['late_return_ci_low']:.2f}, {row['late_return_ci_high']:.2f}]" in text

    csv_res = _report(out, "--format", "csv")
    assert csv_res.returncode == 0, csv_res.stderr
    table = list(csv.DictReader(csv_res.stdout.splitlines()))
    by_key = {(r["table"], r["algorithm"], r["step"], r["metric"]): r for r in table}
    for row in rep["training"]:
        assert float(by_key[("training", row["algorithm"], "", "late_return")]["value"]) == pytest.approx(row["late_return"])
    for row in rep["adaptation"]:
        assert float(by_key[("adaptation", row["algorithm"], str(row["step"]), "cost")]["value"]) == pytest.approx(row["cost"])


@pytest.mark.slow
def test_failing_cell_does_not_stop_the_others_and_more_iterations_resume(tmp_path):
    grid = {"name": "tiny", "description": "two CPO cells", "envs": [ENV], "seeds": [0, 1],
            "train": {"sampler.kind": "local", "sampler.steps_per_iter": 500, "run.iters": 1, "run.tensorboard": False,
                      "policy.hidden": [8], "critic.hidden": [8]},
            "algorithms": {"cpo": {"algo": "cpo"}}}
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(grid))
    out = tmp_path / "out"
    res = _benchmark(path, out, "--jobs", "2")
    assert res.returncode == 0, res.stderr
    # two iterations now; seed 0 has lost its progress.csv, so its resume fails at run time
    grid["train"]["run.iters"] = 2
    path.write_text(yaml.safe_dump(grid))
    (out / "cpo" / ENV / "seed0" / "progress.csv").unlink()
    res = _benchmark(path, out, "--jobs", "2")
    assert res.returncode == 1
    assert "failed cells:" in res.stderr and f"cpo/{ENV}/seed0: train: ValueError:" in res.stderr
    assert "progress.csv is missing but the checkpoint has 1 iterations" in res.stderr
    ok = read_state(out / "cpo" / ENV / "seed1")
    assert ok.status == "done" and [a.resumed_from for a in ok.attempts] == [0, 1]
    assert len(_rows(out / "cpo" / ENV / "seed1" / "progress.csv")) == 2
    bad = read_state(out / "cpo" / ENV / "seed0")
    assert bad.status == "failed" and "progress.csv is missing" in bad.error
    # the report uses the finished cell and lists the failed one
    rep = _report(out)
    assert rep.returncode == 0, rep.stderr
    assert f"Left out (1 cells not finished): cpo/{ENV}/seed0 (failed: train: ValueError" in rep.stdout
    assert f"| cpo | {ENV} | 1 | 2 (late 1) |" in rep.stdout
    # a grid that changes a cell's config is refused for that cell, not overwritten
    grid["train"]["update.delta"] = 0.02
    path.write_text(yaml.safe_dump(grid))
    res = _benchmark(path, out)
    assert res.returncode == 1 and "holds a cell with another config (update.delta: checkpoint 0.01 vs now 0.02)" in res.stderr


@pytest.mark.slow
def test_entry_trained_on_level_0_is_meta_tested_with_the_grid_env(tmp_path):
    # "CPO pre-trained on the level-0 task": an entry with level: 0 trains on SafetyPointStcircle0-v0,
    # lives under the grid env and is meta-tested on the same held-out level-2 tasks as the others
    grid = {"name": "lvl", "description": "CPO on level 1 and on level 0", "envs": [ENV], "seeds": [0],
            "train": {"sampler.kind": "local", "sampler.steps_per_iter": 500, "run.iters": 1, "run.tensorboard": False,
                      "policy.hidden": [8], "critic.hidden": [8]},
            "algorithms": {"cpo": {"algo": "cpo"}, "cpo-level0": {"algo": "cpo", "level": 0}},
            "adapt": {"level": 2, "tasks": 1, "seeds": 1, "adapt_iters": 1, "steps_per_iter": 500}}
    path = tmp_path / "lvl.yaml"
    path.write_text(yaml.safe_dump(grid))
    out = tmp_path / "out"
    check = _benchmark(path, out, "--check")
    assert check.returncode == 0, check.stderr
    assert f"run    cpo-level0/{ENV}/seed0  (1 CPU)  trains on SafetyPointStcircle0-v0" in check.stdout
    res = _benchmark(path, out, "--jobs", "2")
    assert res.returncode == 0, res.stderr
    level0, plain = out / "cpo-level0" / ENV / "seed0", out / "cpo" / ENV / "seed0"
    state = read_state(level0)
    assert state.status == "done" and state.env_id == ENV and state.train_env_id == "SafetyPointStcircle0-v0"
    assert state.config["env"]["env_id"] == "SafetyPointStcircle0-v0"
    assert read_state(plain).train_env_id == ENV
    # what training truly used: the run's own config and checkpoint
    from metacpo.checkpoint import load_checkpoint

    assert yaml.safe_load((level0 / "config.yaml").read_text())["env"]["env_id"] == "SafetyPointStcircle0-v0"
    assert load_checkpoint(level0 / "checkpoint.pt")["config"]["env"]["env_id"] == "SafetyPointStcircle0-v0"
    # the same meta-test (env, tasks, seeds) for both cells
    a, b = (json.loads((d / "adapt" / "adapt.json").read_text())["settings"] for d in (level0, plain))
    assert a["env_id"] == b["env_id"] == "SafetyPointStcircle2-v0"
    assert a["tasks"] == b["tasks"] and a["seeds"] == b["seeds"]
    rep = _report(out)
    assert rep.returncode == 0, rep.stderr
    assert f"| cpo-level0 | {ENV} (trained on SafetyPointStcircle0-v0) | 1 |" in rep.stdout
    assert f"| cpo | {ENV} | 1 |" in rep.stdout
    assert f"### {ENV} -> meta-test on SafetyPointStcircle2-v0" in rep.stdout
    js = json.loads(_report(out, "--format", "json").stdout)
    assert {r["algorithm"]: r["train_env"] for r in js["training"]} == {"cpo": ENV, "cpo-level0": "SafetyPointStcircle0-v0"}
