import math

import numpy as np
import pytest
import torch

from metacpo.algorithms.common import (
    fisher_vector_product,
    mean_kl,
    process_batch,
    surrogate_losses,
)
from metacpo.algorithms.cpo import trust_region_update
from metacpo.config.schema import UpdateConfig
from metacpo.data.batch import Batch
from metacpo.data.normalizer import NormalizerState
from metacpo.functional.params import flat_grad, flatten
from metacpo.models.policy import GaussianMLPPolicy, PolicySpec, ValueCritic
from metacpo.solvers import FisherMetric, solve_cpo

from tests.synthetic import ACT, EP, N, OBS, synthetic_batch, synthetic_processed  # noqa: E402


def test_processing_j_c_ratio_and_cost_scale():
    policy, params, processed = synthetic_processed()
    _, batch = synthetic_batch()
    assert processed.j_c == pytest.approx(batch.episode_costs.mean())
    assert processed.cost_scale == EP  # undiscounted: mean episode length
    assert processed.behaviour_logp_gap < 1e-5  # recomputed log-probs equal the behaviour ones
    loss_r, loss_c = surrogate_losses(policy, params, processed)
    assert float(loss_r) == pytest.approx(-float(processed.adv_r.mean()), abs=1e-6)  # ratio = 1
    assert abs(float(processed.adv_r.mean())) < 1e-5 and processed.adv_r.double().numpy().std() == pytest.approx(1, abs=1e-5)
    assert float(mean_kl(policy, params, processed)) == pytest.approx(0.0, abs=1e-7)


@pytest.mark.parametrize(
    "cost_limit, expected_case", [(1000.0, "unconstrained"), (None, "active"), (0.0, "recovery")]
)
def test_cpo_update_reports_the_solver_case_and_respects_the_tests(cost_limit, expected_case):
    policy, params, processed = synthetic_processed()
    leaf = {k: v.clone().requires_grad_(True) for k, v in params.items()}
    lr, lc = surrogate_losses(policy, leaf, processed)
    g = flat_grad(lr, leaf, retain_graph=True)
    a = flat_grad(lc, leaf)
    metric = FisherMetric(hvp=fisher_vector_product(policy, params, processed), cg_iters=10, damping=0.1)
    if cost_limit is None:  # put J_C just above the limit, where the constraint is active
        x_trpo = solve_cpo(g=g, a=None, b=None, delta=0.01, metric=metric, normalize=False).step
        cost_limit = processed.j_c + 0.5 * float(a @ x_trpo)
    settings = UpdateConfig(delta=0.01)
    new, stats = trust_region_update(policy=policy, params=params, processed=processed, settings=settings, constrained=True,
                                     cost_target=cost_limit)
    ref = solve_cpo(g=g, a=a, b=processed.j_c - cost_limit, delta=0.01, metric=metric, normalize=False)
    assert stats.case == expected_case == ref.case.name.lower()
    assert stats.lam == pytest.approx(float(ref.lam), rel=1e-4)
    assert stats.nu == pytest.approx(float(ref.nu), rel=1e-4, abs=1e-8)
    assert stats.b == pytest.approx(processed.j_c - cost_limit)
    assert stats.ls_accepted and not stats.skipped
    moved = flatten(new) - flatten(params)
    assert float(moved.norm()) == pytest.approx(stats.step_norm, rel=1e-5)
    kl = float(mean_kl(policy, new, processed))
    assert kl == pytest.approx(stats.kl, rel=1e-5) and kl <= 0.01
    with torch.no_grad():
        lr_new, lc_new = surrogate_losses(policy, new, processed)
    assert float(lc_new) - float(lc.detach()) <= max(-stats.b, 0.0) + 1e-6
    if expected_case == "recovery":
        assert stats.nu == 1.0 and float(lc_new) < float(lc.detach())
    else:
        assert float(lr_new) < float(lr.detach())


def test_trpo_update_ignores_costs():
    policy, params, processed = synthetic_processed()
    _, stats = trust_region_update(
        policy=policy, params=params, processed=processed, settings=UpdateConfig(), constrained=False
    )
    assert stats.case == "unconstrained" and stats.nu == 0.0 and math.isnan(stats.b) and stats.ls_accepted


def test_identity_metric_with_dco_backend_keeps_half_squared_norm_within_delta():
    policy, params, processed = synthetic_processed()
    settings = UpdateConfig(delta=0.005, metric="identity", backend="dco", normalize_grads=True)
    new, stats = trust_region_update(policy=policy, params=params, processed=processed, settings=settings, constrained=True,
                                     cost_target=1000.0)
    assert stats.case == "unconstrained" and not stats.solver_fallback
    assert 0.5 * stats.step_norm**2 <= 0.005 * (1 + 1e-4)


def test_non_finite_advantages_skip_the_update_and_leave_params_untouched():
    policy, params, processed = synthetic_processed(reward_nan=True)
    before = {k: v.clone() for k, v in params.items()}
    new, stats = trust_region_update(policy=policy, params=params, processed=processed, settings=UpdateConfig(),
                                     constrained=True, cost_target=25.0)
    assert new is params and stats.skipped and stats.case == "skipped"
    assert "non-finite advantages" in stats.skip_reason and stats.step_norm == 0.0
    for k in params:
        assert torch.equal(params[k], before[k])


def test_algorithm_counts_and_reports_skipped_updates_on_a_real_env():
    from metacpo.algorithms.cpo import TrustRegionAlgorithm
    from metacpo.config import TrainConfig
    from metacpo.samplers import LocalSampler

    cfg = TrainConfig.from_dict({"policy": {"hidden": [8]}, "critic": {"hidden": [8], "iters": 1},
                                 "sampler": {"kind": "local", "steps_per_iter": 500}, "run": {"seed": 1}})
    with LocalSampler(cfg.env.env_id, seed=1) as sampler:
        algo = TrustRegionAlgorithm(cfg, sampler=sampler, constrained=True, obs_dim=28, act_dim=2)
        with torch.no_grad():
            algo.agent.critic_r.net[-1].bias.fill_(float("nan"))  # poisoned critic -> non-finite advantages
        before = {k: v.clone() for k, v in algo.agent.policy.state_dict().items()}
        stats = algo.iterate(0)
        assert stats.update.skipped and stats.skipped_total == 1 and algo.skipped_total == 1
        row = stats.log_row()
        assert row["update/skipped"] == 1 and row["solver/case"] == "skipped"
        assert stats.events() == ["update skipped: non-finite advantages or J_C"]
        for k, v in algo.agent.policy.state_dict().items():
            assert torch.equal(v, before[k])
        assert algo.env_steps == 500 and algo.agent.normalizer.count == 500  # sampling itself went on
