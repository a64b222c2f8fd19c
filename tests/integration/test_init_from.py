"""``run.init_from`` (``metacpo train --init-from RUN``): a run that starts from another run's trained
policy, critics and normaliser (e.g. Meta-CPO meta-trained from CPO pre-trained on level 0), and
the grid entry key ``init`` that wires it between cells of a benchmark grid."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import yaml

from metacpo.benchmark.cell import read_state
from metacpo.checkpoint import load_checkpoint
from metacpo.cli import main

TINY = ["--sampler", "local", "--steps-per-iter", "500", "--no-progress",
        "--set", "policy.hidden=[8]", "--set", "critic.hidden=[8]"]
META = ["--set", "meta.meta_batch_size=2", "--set", "meta.inner_steps=1"]


def _flat(state: dict) -> torch.Tensor:
    return torch.cat([v.reshape(-1).double() for v in state.values()])


@pytest.fixture(scope="module")
def cpo_level0(tmp_path_factory) -> Path:
    rd = tmp_path_factory.mktemp("init") / "cpo0"
    assert main(["train", "--algo", "cpo", "--env-id", "SafetyPointStcircle0-v0", "--iters", "2", "--seed", "3",
                 "--run-dir", str(rd), *TINY]) == 0
    return rd


def test_meta_cpo_starts_from_a_cpo_run(cpo_level0, tmp_path):
    warm, cold = tmp_path / "warm", tmp_path / "cold"
    common = ["train", "--algo", "meta-cpo", "--env-id", "SafetyPointStcircle1-v0", "--iters", "1", *TINY, *META]
    assert main([*common, "--run-dir", str(warm), "--init-from", str(cpo_level0)]) == 0
    assert main([*common, "--run-dir", str(cold)]) == 0
    src = load_checkpoint(cpo_level0 / "checkpoint.pt")["algorithm"]
    w = load_checkpoint(warm / "checkpoint.pt")
    c = load_checkpoint(cold / "checkpoint.pt")["algorithm"]
    assert w["config"]["run"]["init_from"] == str(cpo_level0)
    # one meta-step moves the policy by at most the outer trust region: 1/2 |s|^2 <= outer_delta
    bound = math.sqrt(2 * w["config"]["meta"]["outer_delta"])
    moved = (_flat(w["algorithm"]["policy"]) - _flat(src["policy"])).norm().item()
    assert moved <= bound * 1.001
    assert (_flat(c["policy"]) - _flat(src["policy"])).norm().item() > 10 * bound  # a fresh start is far away
    # the normaliser went on from the CPO run's statistics: its count plus this run's observations
    # (2 tasks x (1 inner + 1 post) rounds x 500 steps)
    assert w["algorithm"]["obs_norm"]["count"] == src["obs_norm"]["count"] + 2 * 2 * 500
    assert c["obs_norm"]["count"] == 2 * 2 * 500
    log = (warm / "events.log").read_text()
    assert f"initialised from {cpo_level0} (cpo on SafetyPointStcircle0-v0, 2 iterations, 1000 env steps)" in log
    # its own env steps only
    assert w["algorithm"]["counters"]["env_steps"] == 2 * 2 * 500


@pytest.mark.parametrize("extra, message", [
    (["--init-from", "/nonexistent/run"], "error: run.init_from '/nonexistent/run': run directory /nonexistent/run does not exist"),
    (["--init-from", "CPO", "--set", "policy.hidden=[16]"], "does not fit this config: policy weights do not match this config"),
    (["--init-from", "CPO", "--env-id", "SafetyCarStcircle1-v0"],
     "was trained on SafetyPointStcircle0-v0 (observation size"),
])
def test_a_run_that_cannot_start_this_one_is_a_one_line_error(cpo_level0, tmp_path, capsys, extra, message):
    extra = [str(cpo_level0) if e == "CPO" else e for e in extra]
    rd = tmp_path / "r"
    argv = ["train", "--algo", "meta-cpo", "--env-id", "SafetyPointStcircle1-v0", "--iters", "1", "--run-dir", str(rd),
            *TINY, *META, *extra]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1, err
    assert not rd.exists()  # nothing written


REPO = Path(__file__).resolve().parents[2]
GRID_ENV = "SafetyPointStcircle1-v0"


def _metacpo(*args: str, timeout: float = 400):
    """``python -m metacpo.cli ARGS`` in a subprocess from the repo root (stdout, stderr captured)."""
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "metacpo.cli", *args], capture_output=True, text=True,
                          env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"}, timeout=timeout, cwd=REPO)


def _run_grid(tmp_path: Path, algorithms: dict) -> tuple:
    """A one-env, one-seed grid of tiny local cells with ``algorithms``, run with 2 jobs: (result, out)."""
    grid = {"name": "warm", "description": "cells that start from other cells", "envs": [GRID_ENV], "seeds": [0],
            "train": {"sampler.kind": "local", "sampler.steps_per_iter": 500, "run.iters": 1, "run.tensorboard": False,
                      "policy.hidden": [8], "critic.hidden": [8]},
            "algorithms": algorithms}
    path, out = tmp_path / "warm.yaml", tmp_path / "out"
    path.write_text(yaml.safe_dump(grid, sort_keys=False))
    # two jobs: a dependent cell must still wait for the cell it starts from
    return _metacpo("benchmark", str(path), "--out", str(out), "--jobs", "2"), out


@pytest.mark.slow
def test_grid_entry_with_init_waits_for_its_sibling_and_starts_from_it(tmp_path):
    env = GRID_ENV
    res, out = _run_grid(tmp_path, {"cpo-level0": {"algo": "cpo", "level": 0, "set": {"run.iters": 2}},
                                    "warm": {"algo": "meta-cpo", "init": "cpo-level0",
                                             "set": {"meta.meta_batch_size": 2, "meta.inner_steps": 1}}})
    assert res.returncode == 0, res.stderr
    lines = res.stderr.splitlines()
    done_src = next(i for i, ln in enumerate(lines) if f"done cpo-level0/{env}/seed0" in ln)
    start_warm = next(i for i, ln in enumerate(lines) if f"start warm/{env}/seed0" in ln)
    assert done_src < start_warm
    src, warm = out / "cpo-level0" / env / "seed0", out / "warm" / env / "seed0"
    assert read_state(warm).status == "done"
    assert read_state(warm).config["run"]["init_from"] == str(src.resolve())
    assert f"initialised from {src.resolve()} (cpo on SafetyPointStcircle0-v0, 2 iterations" in (warm / "events.log").read_text()
    rep = _metacpo("report", str(out), timeout=200)
    assert rep.returncode == 0, rep.stderr
    assert f"| warm | {env} (started from cpo-level0's run; its env steps not counted) | 1 |" in rep.stdout
    assert f"| cpo-level0 | {env} (trained on SafetyPointStcircle0-v0) | 1 |" in rep.stdout


def test_grid_cell_whose_init_cell_fails_fails_without_running(tmp_path):
    env = GRID_ENV
    # 200 steps is shorter than one 500-step episode: accepted by the grid, refused when training starts
    res, out = _run_grid(tmp_path, {"src": {"algo": "cpo", "set": {"sampler.steps_per_iter": 200}},
                                    "warm": {"algo": "meta-cpo", "init": "src"}})
    assert res.returncode == 1
    assert f"failed warm/{env}/seed0: its init cell src/{env}/seed0 failed: nothing to start from" in res.stderr
    assert f"start warm/{env}/seed0" not in res.stderr
    state = read_state(out / "warm" / env / "seed0")
    assert state.status == "failed" and "its init cell" in state.error and not state.attempts
    assert not (out / "warm" / env / "seed0" / "checkpoint.pt").exists()
