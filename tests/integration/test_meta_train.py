"""Tiny-budget runs of the meta algorithms through the real CLI, training loop and envs;
seeded determinism and exact resume of Meta-CPO with the local sampler."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from metacpo.algorithms.meta_cpo import MetaConfig, build_meta_cpo
from metacpo.checkpoint import load_checkpoint
from metacpo.cli import main
from metacpo.config.schema import TrainConfig
from metacpo.functional.params import flatten, params_of
from metacpo.samplers.local import LocalSampler

ENV = "SafetyPointStcircle1-v0"
TINY = ["--env-id", ENV, "--sampler", "local", "--steps-per-iter", "500", "--no-progress",
        "--set", "policy.hidden=[8]", "--set", "critic.hidden=[8]"]
META = ["--set", "meta.meta_batch_size=2", "--set", "meta.inner_steps=1"]


def _rows(run_dir: Path) -> list[dict[str, str]]:
    with open(run_dir / "progress.csv") as fh:
        return list(csv.DictReader(fh))


def test_train_meta_cpo_cli(tmp_path):
    rd = tmp_path / "mcpo"
    assert main(["train", "--algo", "meta-cpo", "--iters", "2", "--run-dir", str(rd), *TINY, *META]) == 0
    rows = _rows(rd)
    assert len(rows) == 2
    r = rows[-1]
    # 2 tasks x (1 inner + 1 post) rounds x 500 steps (one episode) per iteration
    assert int(r["rollout/iter_env_steps"]) == 2 * 2 * 500
    assert int(r["rollout/env_steps"]) == 2 * 2 * 2 * 500
    for key in ("meta/pre_ep_cost_mean", "meta/post_ep_cost_max", "meta/post_j_c", "outer/G_norm",
                "outer/A_norm", "outer/ls_fraction", "time/sample_seconds", "time/meta_grad_seconds"):
        assert math.isfinite(float(r[key])), key
    assert float(r["outer/A_norm"]) > 0
    assert r["solver/case"] in ("unconstrained", "active", "recovery")
    assert int(r["inner/unconstrained"]) + int(r["inner/active"]) + int(r["inner/recovery"]) == 2
    ck = load_checkpoint(rd / "checkpoint.pt")
    assert ck["iteration"] == 2 and ck["config"]["algo"] == "meta-cpo"
    assert ck["config"]["meta"]["inner_steps"] == 1


def test_train_meta_trpo_cli_ignores_cost(tmp_path):
    rd = tmp_path / "mtrpo"
    assert main(["train", "--algo", "meta-trpo", "--iters", "1", "--run-dir", str(rd), *TINY, *META,
                 "--set", "meta.first_order=true"]) == 0
    (r,) = _rows(rd)
    assert float(r["outer/A_norm"]) == 0.0
    assert r["solver/case"] == "unconstrained" and float(r["solver/nu"]) == 0.0
    assert int(r["inner/active"]) == 0 and int(r["inner/recovery"]) == 0


def test_train_multitask_cpo_cli_switches_tasks(tmp_path):
    rd = tmp_path / "mt"
    assert main(["train", "--algo", "multitask-cpo", "--iters", "2", "--run-dir", str(rd), *TINY]) == 0
    assert len(_rows(rd)) == 2
    state = load_checkpoint(rd / "checkpoint.pt")["algorithm"]
    # one task per iteration from default_rng([seed, 31337]) on level 1: the second draw is current
    from metacpo.tasks import get_distribution

    rng = np.random.default_rng([0, 31337])
    dist = get_distribution("circle", 1)
    first, second = dist.sample(rng), dist.sample(rng)
    assert state["current_task"] == second.as_dict() != first.as_dict()


def test_bad_meta_config_exits_2(tmp_path, capsys):
    code = main(["train", "--algo", "meta-cpo", "--iters", "1", "--run-dir", str(tmp_path / "x"), *TINY,
                 "--set", "meta.inner_delta=0"])
    assert code == 2
    assert "inner_delta" in capsys.readouterr().err
    with pytest.raises(ValueError, match="dco"):
        MetaConfig(backend="dco", metric="fisher")


def _config(seed: int) -> TrainConfig:
    return TrainConfig.from_dict({
        "algo": "meta-cpo", "env": {"env_id": ENV}, "policy": {"hidden": [8]}, "critic": {"hidden": [8]},
        "sampler": {"kind": "local", "steps_per_iter": 500}, "run": {"seed": seed},
        "meta": {"meta_batch_size": 2, "inner_steps": 2},
    })


def _one_iteration(seed: int):
    cfg = _config(seed)
    with LocalSampler(ENV, seed=seed) as sampler:
        algo = build_meta_cpo(cfg, sampler=sampler, obs_dim=28, act_dim=2)
        before = flatten(params_of(algo.agent.policy, detach=True)).clone()
        stats = algo.iterate(0)
        after = flatten(params_of(algo.agent.policy, detach=True)).clone()
    row = {k: v for k, v in stats.log_row().items() if not k.startswith("time/")}
    return before, after, row


def test_one_meta_iteration_is_seeded_and_deterministic():
    b1, a1, r1 = _one_iteration(3)
    b2, a2, r2 = _one_iteration(3)
    assert torch.equal(b1, b2) and torch.equal(a1, a2)
    assert r1 == r2 or all((v == r2[k]) or (isinstance(v, float) and math.isnan(v) and math.isnan(r2[k]))
                           for k, v in r1.items())
    assert r1["outer/ls_accepted"] == 1 and not torch.equal(a1, b1)  # the accepted meta-step moved theta
    step = float((a1 - b1).norm())
    assert step == pytest.approx(r1["outer/step_norm"], rel=1e-5)  # by the logged length
    assert step <= math.sqrt(2 * 0.003) * (1 + 1e-6)  # inside the outer trust region (identity metric)
    _, a3, _ = _one_iteration(4)
    assert not torch.equal(a1, a3)


def test_resume_continues_exactly(tmp_path):
    full, part = tmp_path / "full", tmp_path / "part"
    args = [*TINY, *META, "--set", "meta.fixed_tasks=true"]
    assert main(["train", "--algo", "meta-cpo", "--iters", "2", "--run-dir", str(full), *args]) == 0
    assert main(["train", "--algo", "meta-cpo", "--iters", "1", "--run-dir", str(part), *args]) == 0
    assert main(["train", "--iters", "2", "--resume", str(part), "--no-progress"]) == 0
    a = load_checkpoint(full / "checkpoint.pt")["algorithm"]
    b = load_checkpoint(part / "checkpoint.pt")["algorithm"]
    for k in a["policy"]:
        assert torch.equal(a["policy"][k], b["policy"][k]), k
    assert a["fixed_tasks"] == b["fixed_tasks"] and len(a["fixed_tasks"]) == 2
    ra, rb = _rows(full)[-1], _rows(part)[-1]
    assert ra["meta/post_ep_return_mean"] == rb["meta/post_ep_return_mean"]


def test_task_draws_fixed_set_level0_and_annealing():
    cfg = TrainConfig.from_dict({
        "algo": "meta-cpo", "env": {"env_id": ENV}, "policy": {"hidden": [8]}, "critic": {"hidden": [8]},
        "sampler": {"kind": "local", "steps_per_iter": 500}, "update": {"cost_limit": 10.0},
        "meta": {"meta_batch_size": 3, "fixed_tasks": True, "include_level0": True,
                 "anneal_cost_limit_from": 50.0, "anneal_iters": 4},
    })
    with LocalSampler(ENV, seed=0) as sampler:
        algo = build_meta_cpo(cfg, sampler=sampler, obs_dim=28, act_dim=2)
        t1, t2 = algo.draw_tasks(), algo.draw_tasks()
        assert t1 == t2 and len(t1) == 3
        assert t1[-1] == algo.level0_task and t1[0] != t1[1]
        np.testing.assert_allclose([algo.cost_limit(i) for i in (0, 2, 4, 9)], [50.0, 30.0, 10.0, 10.0])


class _NaNRewards(LocalSampler):
    """A local sampler whose batches carry a NaN reward (a corrupted environment signal)."""

    def sample(self, **kw):
        out = super().sample(**kw)
        for b in out:
            b.rewards[3] = float("nan")
        return out


def test_non_finite_data_skips_the_meta_update_and_leaves_theta_untouched():
    cfg = _config(5)
    with LocalSampler(ENV, seed=5) as good:
        ok_keys = set(build_meta_cpo(cfg, sampler=good, obs_dim=28, act_dim=2).iterate(0).log_row())
    with _NaNRewards(ENV, seed=5) as sampler:
        algo = build_meta_cpo(cfg, sampler=sampler, obs_dim=28, act_dim=2)
        before = flatten(params_of(algo.agent.policy, detach=True)).clone()
        st = algo.iterate(0)
        assert torch.equal(flatten(params_of(algo.agent.policy, detach=True)), before)
    assert st.skipped and "non-finite" in st.skip_reason and st.skipped_total == 1
    assert st.events() and "skipped" in st.events()[0]
    row = st.log_row()
    assert set(row) == ok_keys  # same progress.csv columns as a normal iteration
    # skipped before any adapted policy sampled: the post-adaptation figures were not measured
    # (NaN), never the pre-update batches relabelled
    assert math.isfinite(row["meta/pre_ep_return_mean"])
    for key in ("meta/post_ep_return_mean", "meta/post_ep_cost_mean", "rollout/ep_return_mean",
                "rollout/ep_cost_mean", "rollout/j_c"):
        assert math.isnan(row[key]), key


@pytest.mark.parametrize("settings", [{"backend": "dco", "inner_steps": 1, "max_backtracks": 2},
                                      {"metric": "fisher", "inner_steps": 1, "max_backtracks": 2},
                                      {"project_meta_step": True, "inner_steps": 0}])
def test_meta_iteration_variants_run(settings):
    """The dco backend, the Fisher metric and inner_steps=0 with the safety projection each run
    one meta-iteration end to end and produce a finite meta-gradient."""
    data = _config(6).to_dict()
    data["meta"].update(settings)
    cfg = TrainConfig.from_dict(data)
    with LocalSampler(ENV, seed=6) as sampler:
        st = build_meta_cpo(cfg, sampler=sampler, obs_dim=28, act_dim=2).iterate(0)
    assert not st.skipped and math.isfinite(st.g_norm) and st.a_norm > 0
    assert sum(st.inner_case_counts) == 2 * cfg.extra["meta"].inner_steps


class _Recording(LocalSampler):
    """A real local sampler that also keeps what each call was asked for and returned."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.calls = []

    def sample(self, *, snapshot, num_steps, tasks=None):
        out = super().sample(snapshot=snapshot, num_steps=num_steps, tasks=tasks)
        self.calls.append((list(snapshot), list(tasks), out))
        return out


def test_each_inner_round_and_the_post_round_sample_with_the_adapted_parameters():
    """Recompute every task's inner steps independently from the recorded batches (critics and
    normaliser frozen during the iteration) and check each later round sampled with them."""
    import copy

    from metacpo.algorithms.common import process_batch
    from metacpo.algorithms.meta_cpo import surrogate_objective
    from metacpo.meta.core import inner_step

    cfg = _config(11)
    with _Recording(ENV, seed=11) as sampler:
        algo = build_meta_cpo(cfg, sampler=sampler, obs_dim=28, act_dim=2)
        theta = {k: v.detach().clone() for k, v in algo.agent.policy.named_parameters()}
        critic_r, critic_c = copy.deepcopy(algo.agent.critic_r), copy.deepcopy(algo.agent.critic_c)
        norm = algo.agent.obs_norm_state()
        algo.iterate(0)
    calls = sampler.calls
    assert len(calls) == 3  # inner round 0, inner round 1, post-update round
    assert all(c[1] == calls[0][1] for c in calls)  # the same tasks every round
    for snap in calls[0][0]:
        for k, v in theta.items():
            np.testing.assert_array_equal(snap.params[k], v.numpy())
    adv, objective = cfg.advantage, surrogate_objective(algo.agent.policy)
    for i in range(2):
        p = dict(theta)
        for k in range(2):
            proc = process_batch(calls[k][2][i], policy=algo.agent.policy, params=p, critic_r=critic_r, critic_c=critic_c,
                                 obs_norm=norm, gamma=adv.gamma, lam=adv.lam, cost_gamma=adv.cost_gamma,
                                 cost_lam=adv.cost_lam)
            leaf = {n: v.detach().requires_grad_(True) for n, v in p.items()}
            p, _ = inner_step(leaf, proc, objective=objective, rule=algo.inner_rule, cost_limit=25.0,
                              second_order=False)
            used = calls[k + 1][0][i].params
            moved = max(float(np.abs(used[n] - theta[n].numpy()).max()) for n in theta)
            assert moved > 1e-4, (i, k)  # not theta
            for n, v in p.items():
                np.testing.assert_allclose(used[n], v.detach().numpy(), rtol=1e-4, atol=1e-6)
    # the two tasks were adapted differently (their own data)
    assert any(not np.allclose(calls[2][0][0].params[n], calls[2][0][1].params[n]) for n in theta)


@pytest.mark.parametrize("cost_limit, case", [(0.0, "recovery"), (85.0, "active")])
def test_tiny_meta_runs_reach_the_recovery_and_the_active_outer_case(cost_limit, case):
    """On Button (hazards near the start) a wide random policy pays ~70-115 per episode: with
    d = 0 no step within the trust region can reach the limit (recovery); with d near J_C the
    linearised constraint binds (active)."""
    env = "SafetyPointStbutton1-v0"
    cfg = TrainConfig.from_dict({
        "algo": "meta-cpo", "env": {"env_id": env}, "policy": {"hidden": [8], "log_std_init": 1.5},
        "critic": {"hidden": [8]}, "sampler": {"kind": "local", "steps_per_iter": 1000}, "run": {"seed": 2},
        "update": {"cost_limit": cost_limit}, "meta": {"meta_batch_size": 2, "inner_steps": 1},
    })
    with LocalSampler(env, seed=2) as sampler:
        algo = build_meta_cpo(cfg, sampler=sampler, obs_dim=60, act_dim=2)
        cases = [algo.iterate(i) for i in range(2)]
    assert case in [st.outer.case for st in cases], [(st.outer.case, st.B) for st in cases]
    for st in cases:
        assert math.isfinite(st.B) and st.B == pytest.approx(st.post_j_c - cost_limit)
        if st.outer.case == "recovery":
            assert st.B > 0 and st.outer.ls_accepted
