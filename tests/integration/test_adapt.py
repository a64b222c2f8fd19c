"""`metacpo adapt`: meta-testing trained runs (and CPO from scratch) on held-out level-2 tasks."""

from __future__ import annotations

import csv
import json
import math

import numpy as np

from metacpo.adaptation import TEST_SEED_BASE, held_out_tasks
from metacpo.cli import main

ENV = "SafetyPointStcircle1-v0"
TINY = ["--env-id", ENV, "--sampler", "local", "--steps-per-iter", "500", "--no-progress",
        "--set", "policy.hidden=[8]", "--set", "critic.hidden=[8]"]


def test_adapt_two_runs_and_from_scratch(tmp_path, capsys):
    a, b, out = tmp_path / "meta", tmp_path / "multi", tmp_path / "out"
    assert main(["train", "--algo", "meta-cpo", "--iters", "1", "--run-dir", str(a), *TINY,
                 "--set", "meta.meta_batch_size=2", "--set", "meta.inner_steps=1"]) == 0
    assert main(["train", "--algo", "multitask-cpo", "--iters", "1", "--run-dir", str(b), *TINY]) == 0
    capsys.readouterr()
    code = main(["adapt", str(a), str(b), "--tasks", "2", "--seeds", "2", "--adapt-iters", "1",
                 "--steps-per-iter", "500", "--from-scratch", "--out", str(out), "--quiet"])
    assert code == 0
    assert "cpo-from-scratch" in capsys.readouterr().out

    with open(out / "adapt.csv") as fh:
        rows = list(csv.DictReader(fh))
    # 3 curves x 2 tasks x 2 seeds x (initialisation + 1 update)
    assert len(rows) == 3 * 2 * 2 * 2
    assert {r["label"] for r in rows} == {"meta", "multi", "cpo-from-scratch"}
    assert {int(r["seed"]) for r in rows} == {TEST_SEED_BASE, TEST_SEED_BASE + 1}
    for r in rows:
        assert (r["limit_ok"] == "True") == (float(r["j_c"]) <= 25.0)

    summary = json.loads((out / "adapt.json").read_text())
    assert summary["settings"]["cost_limit"] == 25.0 and summary["settings"]["level"] == 2
    assert summary["settings"]["env_id"] == "SafetyPointStcircle2-v0"
    _, tasks = held_out_tasks(ENV, level=2, count=2)
    assert summary["settings"]["tasks"] == [t.as_dict() for t in tasks]
    # meta runs adapt with exactly their inner step (no line search); the others with CPO proper;
    # nobody with the cost margin unless --margin asks for it
    rules = summary["settings"]["step_rules"]
    assert rules["meta"] == {"step": "cpo", "delta": 0.005, "metric": "identity", "backend": "analytic",
                             "normalize_grads": False, "line_search": False, "margin": False,
                             "fixed_margin": 0.0, "cost_target": 25.0}
    assert rules["multi"] == {"step": "cpo", "delta": 0.01, "metric": "fisher", "backend": "analytic",
                              "normalize_grads": False, "line_search": True, "margin": False,
                              "fixed_margin": 0.0, "cost_target": 25.0}
    assert rules["cpo-from-scratch"] == rules["multi"]
    for label, curve in summary["curves"].items():
        assert [c["step"] for c in curve] == [0, 1]
        for c in curve:
            vals = [float(r["ep_return"]) for r in rows if r["label"] == label and int(r["step"]) == c["step"]]
            assert c["n"] == 4
            np.testing.assert_allclose(c["return_mean"], np.mean(vals))
            # 95% Student-t half-width with 3 degrees of freedom (t = 3.18245)
            np.testing.assert_allclose(c["return_ci95"], 3.182446 * np.std(vals, ddof=1) / 2.0, rtol=1e-5)
            ok = [r["limit_ok"] == "True" for r in rows if r["label"] == label and int(r["step"]) == c["step"]]
            assert c["limit_ok_frac"] == sum(ok) / len(ok) and math.isfinite(c["cost_mean"])
    # step 0 is the initialisation itself on the same tasks and seeds, whatever else is adapted:
    # adapting the meta run alone gives the same step-0 records
    solo = tmp_path / "solo"
    assert main(["adapt", str(a), "--tasks", "2", "--seeds", "2", "--adapt-iters", "1", "--steps-per-iter", "500",
                 "--out", str(solo), "--quiet"]) == 0
    with open(solo / "adapt.csv") as fh:
        solo_rows = list(csv.DictReader(fh))

    def steps0(rs):
        return sorted((r["task_index"], r["seed"], r["ep_return"], r["ep_cost"]) for r in rs
                      if r["label"] == "meta" and r["step"] == "0")

    assert len(steps0(rows)) == 4 and steps0(rows) == steps0(solo_rows)
    png = out / "adapt.png"
    assert png.stat().st_size > 10_000 and png.read_bytes()[:4] == b"\x89PNG"


def test_adapt_bad_input(tmp_path, capsys):
    assert main(["adapt", str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["adapt", str(tmp_path / "empty"), "--tasks", "0"]) == 2
    assert "--tasks must be >= 1" in capsys.readouterr().err


def test_adaptation_config_declares_its_step_and_the_margin_only_on_request(tmp_path):
    from metacpo.adaptation import AdaptSettings, adaptation_config, from_scratch
    from metacpo.config.schema import TrainConfig

    init = from_scratch(TrainConfig.from_dict({"env": {"env_id": ENV}}))
    plain = adaptation_config(init, settings=AdaptSettings(), test_seed=TEST_SEED_BASE, steps_per_iter=500,
                              cost_limit=25.0)
    assert plain.algo == "cpo" and not plain.extra["margin"].adaptive and plain.extra["margin"].fixed == 0.0
    assert plain.constraint.cost_limit == 25.0 and plain.update.line_search
    margin = adaptation_config(init, settings=AdaptSettings(margin=True), test_seed=TEST_SEED_BASE,
                               steps_per_iter=500, cost_limit=25.0)
    assert margin.extra["margin"].adaptive
