"""`metacpo adapt`: meta-testing trained runs (and CPO from scratch) on held-out level-2 tasks."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest

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


# ---- --meta-steps: the meta-trained inner step for the first N updates, then the run's own CPO step ----------

@pytest.fixture(scope="module")
def meta_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("meta-steps") / "meta"
    assert main(["train", "--algo", "meta-cpo", "--iters", "1", "--run-dir", str(run), *TINY,
                 "--set", "meta.meta_batch_size=2", "--set", "meta.inner_steps=1"]) == 0
    return run


def _curve(init, settings):
    """Adapt ``init`` on held-out task 0, test seed 0: records, the flat policy after each update
    and the update section each update used (index k: the k-th update; 0: the initial config)."""
    import torch

    from metacpo.adaptation import adapt_one
    from metacpo.samplers import make_sampler

    test_env, tasks = held_out_tasks(ENV, level=2, count=1)
    params, updates, limits = [], [], []

    def watch(k, algo):
        params.append(torch.cat([p.detach().flatten().clone() for p in algo.agent.policy.parameters()]))
        updates.append(algo.config.update)
        limits.append(algo.config.constraint.cost_limit)

    sampler = make_sampler("local", test_env, seed=TEST_SEED_BASE)
    try:
        recs = adapt_one(init, sampler=sampler, task=tasks[0], task_index=0, test_seed=TEST_SEED_BASE,
                         settings=settings, steps_per_iter=500, cost_limit=25.0, on_policy=watch)
    finally:
        sampler.close()
    return [(r.ep_return, r.ep_cost, r.j_c) for r in recs], params, updates, limits


def test_meta_steps_switches_to_the_runs_cpo_step_after_n_updates(meta_run):
    from dataclasses import replace

    import torch

    from metacpo.adaptation import AdaptSettings, load_initialisation

    init = load_initialisation(meta_run)
    inner, own = init.update, init.cpo_update
    assert (inner.metric, inner.delta, inner.line_search) == ("identity", 0.005, False)
    assert (own.metric, own.delta, own.line_search) == ("fisher", 0.01, True)
    base_recs, base_params, base_updates, _ = _curve(init, AdaptSettings(adapt_iters=3))
    recs, params, updates, limits = _curve(init, AdaptSettings(adapt_iters=3, meta_steps=1))
    # update 1 is the inner step in both: the policy after it and the batches up to step 1 are identical
    for k in (0, 1):
        assert torch.equal(params[k], base_params[k])
    assert recs[:2] == base_recs[:2]
    # updates 2, 3, 4 take the run's own Fisher/line-search CPO step: other policies, other batches
    assert [u.metric for u in updates[1:]] == ["identity", "fisher", "fisher", "fisher"]
    assert [u.line_search for u in updates[1:]] == [False, True, True, True]
    assert {u.metric for u in base_updates} == {"identity"} and set(limits) == {25.0}
    for k in (2, 3):
        assert not torch.equal(params[k], base_params[k])
    assert recs[2:] != base_recs[2:]
    # the switch carries the whole state over: switching to a step equal to the inner one changes nothing
    same = replace(init, cpo_update=init.update, inner_cost_margin=0.0)
    assert init.inner_cost_margin == 0.0 and init.inner_margin_fraction == 0.0
    s_recs, s_params, _, _ = _curve(same, AdaptSettings(adapt_iters=3, meta_steps=1))
    assert s_recs == base_recs and all(torch.equal(a, b) for a, b in zip(s_params, base_params, strict=True))
    # meta_steps = 0: every update is the run's own CPO step
    z_recs, z_params, z_updates, _ = _curve(init, AdaptSettings(adapt_iters=3, meta_steps=0))
    o_recs, o_params, _, _ = _curve(init.after_meta_steps(), AdaptSettings(adapt_iters=3))
    assert z_recs == o_recs and all(torch.equal(a, b) for a, b in zip(z_params, o_params, strict=True))
    assert {u.metric for u in z_updates[1:]} == {"fisher"}


def test_meta_steps_cli_records_the_rule_and_never_reuses_other_rules(meta_run, tmp_path, capsys):
    out = tmp_path / "out"
    args = ["adapt", str(meta_run), "--tasks", "1", "--seeds", "1", "--adapt-iters", "2", "--steps-per-iter", "500",
            "--from-scratch", "--out", str(out)]
    assert main([*args, "--meta-steps", "1"]) == 0
    capsys.readouterr()
    settings = json.loads((out / "adapt.json").read_text())["settings"]
    inner = {"step": "cpo", "delta": 0.005, "metric": "identity", "backend": "analytic", "normalize_grads": False,
             "line_search": False, "margin": False, "fixed_margin": 0.0, "cost_target": 25.0}
    cpo = {**inner, "delta": 0.01, "metric": "fisher", "line_search": True}
    assert settings["step_rules"] == {"meta": {"meta_steps": 1, "first": inner, "rest": cpo},
                                      "cpo-from-scratch": cpo}  # a non-meta curve is unaffected

    def rows():
        with open(out / "adapt.csv") as fh:
            return {(r["label"], r["step"]): (r["ep_return"], r["ep_cost"]) for r in csv.DictReader(fh)}

    stepped = rows()
    # the same rule again in the same --out: both finished curves reused
    assert main([*args, "--meta-steps", "1"]) == 0
    assert "reused 2 finished curve(s)" in capsys.readouterr().err
    assert rows() == stepped
    # the default rule: the meta curve is computed again (not reused), the other one reused
    assert main(args) == 0
    assert "reused 1 finished curve(s)" in capsys.readouterr().err
    assert json.loads((out / "adapt.json").read_text())["settings"]["step_rules"]["meta"] == inner
    default = rows()
    assert [default[("meta", k)] == stepped[("meta", k)] for k in "012"] == [True, True, False]
    assert all(default[("cpo-from-scratch", k)] == stepped[("cpo-from-scratch", k)] for k in "012")
    # a bad value: one line, exit 2
    assert main([*args, "--meta-steps", "-1"]) == 2
    err = capsys.readouterr().err
    assert "--meta-steps must be an integer >= 0" in err and "got -1" in err and err.count("\n") == 1
