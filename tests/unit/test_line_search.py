import math

import pytest
import torch

from metacpo.algorithms.common import Evaluation, backtracking_line_search
from metacpo.algorithms.trust_region import candidate_evaluator, surrogate_values
from tests.synthetic import synthetic_processed


def _quadratic(*, kl_coef=0.0, cost_slope=0.0, reward_curv=0.0):
    def evaluate(f):
        return Evaluation(loss_r=1.0 - f + reward_curv * f * f, loss_c=5.0 + cost_slope * f,
                          kl=kl_coef * f * f, trust_region=kl_coef * f * f)

    return evaluate


def _search(evaluate, **kw):
    base = dict(loss_r0=1.0, loss_c0=5.0, expected_improvement=1.0, delta=0.01, b=None,
                backtrack_coef=0.8, max_backtracks=10, accept_ratio=0.1)
    base.update(kw)
    return backtracking_line_search(evaluate=evaluate, **base)


def test_full_step_accepted_when_every_test_passes():
    r = _search(_quadratic(kl_coef=0.005))
    assert r.accepted and r.fraction == 1.0 and r.backtracks == 0 and r.reason == ""
    assert r.actual_improvement == pytest.approx(1.0) and r.expected_improvement == 1.0


def test_trust_region_forces_backtracking():
    r = _search(_quadratic(kl_coef=0.02))  # KL(f) = 0.02 f^2 <= 0.01 needs f <= 0.707
    assert r.accepted and r.fraction == pytest.approx(0.64) and r.backtracks == 2
    assert r.kl == pytest.approx(0.02 * 0.64**2) and r.kl <= 0.01


def test_cost_constraint_when_feasible_and_when_infeasible():
    # Feasible by 1 (b = -1): the cost surrogate may rise by at most 1: 2 f <= 1 -> f = 0.8^4.
    r = _search(_quadratic(cost_slope=2.0), b=-1.0)
    assert r.accepted and r.fraction == pytest.approx(0.8**4) and r.backtracks == 4
    assert r.loss_c - 5.0 <= 1.0
    # Infeasible (b = 3): any increase is rejected, even in recovery.
    r = _search(_quadratic(cost_slope=0.5), b=3.0, recovery=True)
    assert not r.accepted and r.fraction == 0.0 and "cost surrogate change" in r.reason
    # Recovery that lowers the cost is accepted without a reward test.
    r = _search(_quadratic(cost_slope=-0.5, reward_curv=2.0), b=3.0, recovery=True)
    assert r.accepted and r.fraction == 1.0 and r.actual_improvement < 0


def test_insufficient_reward_improvement_is_rejected():
    # Actual improvement f - 0.95 f^2 vs expected f: ratio 1 - 0.95 f >= 0.1 needs f <= 0.947.
    r = _search(_quadratic(reward_curv=0.95))
    assert r.accepted and r.fraction == pytest.approx(0.8)
    r = _search(_quadratic(reward_curv=2.0), max_backtracks=2)  # 1-2f>=0.1 needs f<=0.45
    assert not r.accepted and "reward improvement" in r.reason and r.backtracks == 3
    # Non-finite surrogate values are never accepted.
    r = _search(lambda f: Evaluation(math.nan, 5.0, 0.0, 0.0), max_backtracks=1)
    assert not r.accepted and r.reason == "non-finite surrogate"


def test_candidate_evaluator_matches_surrogates_and_trust_region_at_the_candidate():
    from metacpo.algorithms.common import fisher_vector_product, mean_kl, surrogate_losses
    from metacpo.functional.params import add_flat

    policy, params, processed = synthetic_processed()
    step = torch.randn(sum(v.numel() for v in params.values()), generator=torch.Generator().manual_seed(0)) * 0.01
    ident = candidate_evaluator(params=params, step=step, values=surrogate_values(policy, processed), metric="identity")(0.5)
    assert ident.trust_region == pytest.approx(0.5 * 0.25 * float(step.double().pow(2).sum()), rel=1e-9)
    # the surrogates and KL it reports are those at params + 0.5 step, computed independently here
    cand = add_flat(params, step, alpha=0.5)
    with torch.no_grad():
        lr, lc = surrogate_losses(policy, cand, processed)
        kl = float(mean_kl(policy, cand, processed))
    assert ident.loss_r == pytest.approx(float(lr), rel=1e-6) and ident.loss_c == pytest.approx(float(lc), rel=1e-6)
    assert ident.kl == pytest.approx(kl, rel=1e-6) and kl > 0
    fisher = candidate_evaluator(params=params, step=step, values=surrogate_values(policy, processed), metric="fisher")(0.5)
    assert fisher.trust_region == fisher.kl == pytest.approx(kl, rel=1e-6)
    # for a small step the KL is the Fisher quadratic form 1/2 s^T F s (s = 0.5 step)
    s = 0.5 * step
    quad = 0.5 * float(s @ fisher_vector_product(policy, params, processed)(s))
    assert kl == pytest.approx(quad, rel=0.05)
