"""TRPO-Lagrangian through the real CLI, training loop and envs: the logged multiplier follows the dual
rule on the logged J_C, resume is exact, multi-task TRPO-Lagrangian walks the level-1 tasks, and its
trained policy is meta-tested with the same CPO step as every other initialisation."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from metacpo.algorithms.lagrange import next_multiplier
from metacpo.checkpoint import load_checkpoint
from metacpo.cli import main

TINY = ["--sampler", "local", "--steps-per-iter", "500", "--no-progress", "--set", "run.tensorboard=false",
        "--set", "policy.hidden=[8]", "--set", "critic.hidden=[8]"]


def _rows(run_dir: Path) -> list[dict[str, str]]:
    with open(run_dir / "progress.csv") as fh:
        return list(csv.DictReader(fh))


def test_trpo_lag_multiplier_follows_the_dual_rule_and_resumes_exactly(tmp_path):
    full, part = tmp_path / "full", tmp_path / "part"
    # d = 2 on level-1 Circle tasks: a fresh policy leaves some circles, so J_C > d and lambda must rise
    args = ["--algo", "multitask-trpo-lag", "--env-id", "SafetyPointStcircle1-v0", "--cost-limit", "2", "--seed", "5",
            *TINY,
            "--set", "lagrange.lr=0.02", "--set", "lagrange.init=0.1"]
    assert main(["train", "--iters", "4", "--run-dir", str(full), *args]) == 0
    rows = _rows(full)
    lam, seen = 0.1, []
    for r in rows:
        lam = next_multiplier(lam, j_c=float(r["rollout/j_c"]), cost_limit=2.0, lr=0.02, max_value=100.0)
        seen.append(float(r["lagrange/lambda"]))
        assert seen[-1] == pytest.approx(lam, rel=1e-12)
        assert r["solver/case"] == "unconstrained"  # a TRPO step: no constraint in the sub-problem
    assert any(float(r["rollout/j_c"]) > 2.0 for r in rows) and max(seen) > 0.1
    state = load_checkpoint(full / "checkpoint.pt")["algorithm"]
    assert state["lagrange"] == {"value": seen[-1]}

    assert main(["train", "--iters", "2", "--run-dir", str(part), *args]) == 0
    assert main(["train", "--iters", "4", "--resume", str(part), "--no-progress"]) == 0
    strip = [{k: v for k, v in r.items() if not k.startswith("time/")} for r in _rows(part)]
    assert strip == [{k: v for k, v in r.items() if not k.startswith("time/")} for r in rows]
    resumed = load_checkpoint(part / "checkpoint.pt")["algorithm"]
    for k, v in state["policy"].items():
        assert torch.equal(v, resumed["policy"][k]), k


def test_other_algorithms_log_no_multiplier_and_bad_settings_exit_2(tmp_path, capsys):
    rd = tmp_path / "trpo"
    assert main(["train", "--algo", "trpo", "--env-id", "SafetyPointStcircle0-v0", "--iters", "1",
                 "--run-dir", str(rd), *TINY]) == 0
    assert "lagrange/lambda" not in _rows(rd)[0]
    code = main(["train", "--algo", "trpo-lag", "--env-id", "SafetyPointStcircle0-v0", "--iters", "1",
                 "--run-dir", str(tmp_path / "bad"), *TINY, "--set", "lagrange.lr=-1"])
    assert code == 2
    assert "lagrange.lr must be a finite number > 0, got -1" in capsys.readouterr().err


def test_multitask_trpo_lag_walks_level1_and_adapts_with_cpo(tmp_path, capsys):
    rd, out = tmp_path / "mtl", tmp_path / "adapt"
    assert main(["train", "--algo", "multitask-trpo-lag", "--env-id", "SafetyPointStcircle1-v0", "--iters", "2",
                 "--run-dir", str(rd), *TINY]) == 0
    state = load_checkpoint(rd / "checkpoint.pt")["algorithm"]
    from metacpo.tasks import get_distribution

    rng = np.random.default_rng([0, 31337])
    dist = get_distribution("circle", 1)
    dist.sample(rng)
    assert state["current_task"] == dist.sample(rng).as_dict()
    assert [float(r["lagrange/lambda"]) >= 0.0 for r in _rows(rd)] == [True, True]
    capsys.readouterr()
    assert main(["adapt", str(rd), "--tasks", "1", "--seeds", "1", "--adapt-iters", "1", "--steps-per-iter", "500",
                 "--out", str(out), "--quiet"]) == 0
    summary = json.loads((out / "adapt.json").read_text())
    # the Lagrangian initialisation adapts with its own update section as a CPO step, like multitask-cpo's
    assert summary["settings"]["step_rules"]["mtl"] == {
        "step": "cpo", "delta": 0.01, "metric": "fisher", "backend": "analytic", "normalize_grads": False,
        "line_search": True, "margin": False, "fixed_margin": 0.0, "cost_target": 25.0}
    assert [c["step"] for c in summary["curves"]["mtl"]] == [0, 1]
