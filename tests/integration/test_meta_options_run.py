"""Meta-CPO options through the real CLI. The inner margin: meta-training aims the inner steps at d - m, and
``metacpo adapt`` adapts the run with the same target (recorded in adapt.json)."""

from __future__ import annotations

import csv
import json

import pytest

from metacpo.adaptation import AdaptSettings, adaptation_config, held_out_tasks, load_initialisation
from metacpo.algorithms.cpo import TrustRegionAlgorithm
from metacpo.cli import main
from metacpo.samplers import CurrentTaskSampler, LocalSampler

ENV = "SafetyPointStcircle1-v0"
TINY = ["--env-id", ENV, "--sampler", "local", "--steps-per-iter", "500", "--no-progress",
        "--set", "policy.hidden=[8]", "--set", "critic.hidden=[8]",
        "--set", "meta.meta_batch_size=1", "--set", "meta.inner_steps=1"]


def test_inner_margin_in_training_and_meta_test(tmp_path):
    rd, out = tmp_path / "mcpo", tmp_path / "out"
    assert main(["train", "--algo", "meta-cpo", "--iters", "1", "--run-dir", str(rd), *TINY,
                 "--set", "meta.inner_cost_margin=3.0", "--set", "meta.inner_margin_fraction=0.2"]) == 0
    with open(rd / "progress.csv") as fh:
        (row,) = list(csv.DictReader(fh))
    # d = 25, m = 3 + 0.2 * 25 = 8; one task, one inner step: b = J_C(pre-update batch) - 17
    assert float(row["meta/cost_limit"]) == 25.0 and float(row["inner/cost_target"]) == 17.0
    assert float(row["inner/b"]) == pytest.approx(float(row["meta/pre_j_c"]) - 17.0, abs=1e-9)
    assert float(row["outer/B"]) == pytest.approx(float(row["meta/post_j_c"]) - 25.0, abs=1e-9)

    # meta-test: the same target as a fixed margin (scaled with the meta-test's own d)
    init = load_initialisation(rd)
    settings = AdaptSettings(tasks=1, seeds=1, adapt_iters=1)
    cfg = adaptation_config(init, settings=settings, test_seed=1_000_000, steps_per_iter=500, cost_limit=10.0)
    margin = cfg.extra["margin"]
    assert margin.adaptive is False and margin.fixed == pytest.approx(3.0 + 0.2 * 10.0)
    sampler = LocalSampler("SafetyPointStcircle2-v0", seed=1_000_000)
    try:
        _, (task,) = held_out_tasks(ENV, level=2, count=1)
        obs_dim, act_dim = init.dims()
        algo = TrustRegionAlgorithm(cfg, sampler=CurrentTaskSampler(sampler, task=task), constrained=True,
                                    obs_dim=obs_dim, act_dim=act_dim)
        st = algo.iterate(0)
        assert st.margin == pytest.approx(5.0)
        assert st.update.b == pytest.approx(st.rollout.j_c - 5.0, abs=1e-9)  # b = J_C - (d - m), d = 10
    finally:
        sampler.close()

    assert main(["adapt", str(rd), "--tasks", "1", "--seeds", "1", "--adapt-iters", "1", "--steps-per-iter", "500",
                 "--out", str(out), "--quiet"]) == 0
    rule = json.loads((out / "adapt.json").read_text())["settings"]["step_rules"]["mcpo"]
    assert rule["fixed_margin"] == pytest.approx(8.0) and rule["cost_target"] == pytest.approx(17.0)
    assert rule["margin"] is False and rule["line_search"] is False



def test_fisher_exact_meta_cpo_runs_and_differs_from_constant_h(tmp_path):
    """A tiny real run with the exact Fisher meta-gradient: finite, and (same seed, same first
    batches) a different meta-step from the constant-H run."""
    runs = {}
    for exact in ("false", "true"):
        rd = tmp_path / f"fisher-{exact}"
        assert main(["train", "--algo", "meta-cpo", "--iters", "1", "--run-dir", str(rd), *TINY,
                     "--set", "meta.metric=fisher", "--set", f"meta.fisher_exact={exact}",
                     "--set", "meta.inner_delta=0.01", "--set", "meta.outer_delta=0.01"]) == 0
        with open(rd / "progress.csv") as fh:
            (runs[exact],) = list(csv.DictReader(fh))
    for r in runs.values():
        assert float(r["outer/G_norm"]) > 0 and float(r["outer/A_norm"]) > 0
    # identical sampling and inner steps up to the meta-gradient (value-identical metric at the
    # behaviour parameters), different outer gradients
    assert runs["true"]["meta/pre_j_c"] == runs["false"]["meta/pre_j_c"]
    assert float(runs["true"]["outer/G_norm"]) != pytest.approx(float(runs["false"]["outer/G_norm"]), rel=1e-6)
