"""``meta.inner_cost_margin`` / ``meta.inner_margin_fraction``: the inner steps aim at ``d - m``.

Pinned: the margin rule on hand-computed values, the inner step's ``b = J_C - (d - m)`` and the
CPO step it gives (against the analytic solver on the same g, a, b), the meta-gradient against
central finite differences with the margin on, and bad values.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from metacpo.algorithms.margin import fixed_margin
from metacpo.algorithms.meta_cpo import MetaConfig, surrogate_objective
from metacpo.functional.params import flat_grad, flatten, params_of, unflatten
from metacpo.meta.core import StepRule, inner_loop, inner_step, meta_gradient, meta_parameters, post_adaptation_values
from metacpo.models.policy import GaussianMLPPolicy, PolicySpec
from metacpo.solvers import solve_cpo
from tests.unit.test_meta_policy import synthetic_batch


def test_margin_rule_hand_computed():
    assert MetaConfig().inner_cost_target(25.0) == 25.0  # off by default
    assert MetaConfig(inner_cost_margin=5.0).inner_cost_target(25.0) == 20.0
    assert MetaConfig(inner_margin_fraction=0.2).inner_cost_target(25.0) == 20.0
    assert MetaConfig(inner_cost_margin=2.0, inner_margin_fraction=0.2).inner_cost_target(10.0) == 6.0
    # the margin never takes the target below 0
    assert MetaConfig(inner_cost_margin=40.0).inner_cost_target(25.0) == 0.0
    assert fixed_margin(0.0, margin=3.0, fraction=0.5) == 0.0


@pytest.mark.parametrize(("kw", "msg"), [
    ({"inner_cost_margin": -1.0}, "meta.inner_cost_margin must be a finite number >= 0"),
    ({"inner_cost_margin": float("inf")}, "meta.inner_cost_margin must be a finite number >= 0"),
    ({"inner_margin_fraction": 1.5}, r"meta.inner_margin_fraction must lie in \[0, 1\]"),
    ({"inner_margin_fraction": -0.1}, r"meta.inner_margin_fraction must lie in \[0, 1\]"),
])
def test_bad_margins_are_refused(kw, msg):
    with pytest.raises(ValueError, match=msg):
        MetaConfig(**kw)


def _policy(seed: int) -> GaussianMLPPolicy:
    torch.manual_seed(seed)
    return GaussianMLPPolicy(PolicySpec(obs_dim=3, act_dim=2, hidden=(4,))).double()


def test_inner_step_aims_at_d_minus_m():
    policy = _policy(0)
    theta = meta_parameters(params_of(policy))
    det = {k: v.detach() for k, v in theta.items()}
    obj = surrogate_objective(policy)
    data = synthetic_batch(policy, det, n=100, seed=3, j_c=0.9)
    d, meta = 1.0, MetaConfig(inner_cost_margin=0.3, inner_margin_fraction=0.2)
    rule = StepRule(delta=0.01, normalize=False)
    target = meta.inner_cost_target(d)
    assert target == pytest.approx(0.5)
    new, st = inner_step(theta, data, objective=obj, rule=rule, cost_limit=target)
    assert st.j_c == pytest.approx(0.9) and st.b == pytest.approx(0.9 - 0.5, abs=1e-12)
    # the same step from the solver on (g, a, b = J_C - (d - m)) computed independently
    s = obj(theta, data)
    g = flat_grad(s.loss_r, theta, retain_graph=True).detach()
    a = flat_grad(s.loss_c, theta).detach()
    ref = solve_cpo(g=g, a=a, b=torch.tensor(0.9 - 0.5, dtype=torch.float64), delta=0.01, backend="analytic",
                    normalize=False)
    assert st.case == int(ref.case) == 1  # the constraint binds at d - m
    torch.testing.assert_close(flatten({k: v.detach() for k, v in new.items()}) - flatten(det), ref.step,
                               rtol=1e-10, atol=1e-12)
    # without the margin the constraint is slack at this point and the step differs
    _, plain = inner_step(theta, data, objective=obj, rule=rule, cost_limit=d)
    assert plain.b == pytest.approx(-0.1) and plain.case == 0


def test_meta_gradient_with_inner_margin_matches_finite_differences():
    """Inner steps at d - m, outer figures at d: G.v and A.v equal central differences."""
    policy = _policy(2)
    theta = meta_parameters(params_of(policy))
    det = {k: v.detach() for k, v in theta.items()}
    obj = surrogate_objective(policy)
    d, meta = 1.0, MetaConfig(inner_cost_margin=0.6)
    rule = StepRule(delta=0.01, normalize=False)
    inner = [[synthetic_batch(policy, det, n=100, seed=10 * i + k, j_c=0.85) for k in range(2)] for i in range(2)]
    post = [synthetic_batch(policy, det, n=100, seed=10 * i + 7, j_c=0.85) for i in range(2)]
    target = meta.inner_cost_target(d)
    runs = [inner_loop(theta, x, objective=obj, rule=rule, cost_limit=target) for x in inner]
    plain = [inner_loop(theta, x, objective=obj, rule=rule, cost_limit=d) for x in inner]
    for (p_m, st_m), (p_0, st_0) in zip(runs, plain, strict=True):
        assert st_m[0].b - st_0[0].b == pytest.approx(0.6, abs=1e-12)  # same J_C, target lower by m
        assert float((flatten(p_m) - flatten(p_0)).detach().norm()) > 1e-3  # a different adaptation
    mg = meta_gradient(theta, [p for p, _ in runs], post, objective=obj, cost_limit=d)
    assert mg.B == pytest.approx(mg.j_c - d)  # the outer constraint stays at d
    x0 = flatten(det)
    gen = torch.Generator().manual_seed(0)
    for _ in range(3):
        v = torch.randn(x0.shape, generator=gen, dtype=torch.float64)
        v /= v.norm()
        eps = 1e-5
        rp, cp, _ = post_adaptation_values(unflatten(x0 + eps * v, det), inner, post, objective=obj, rule=rule,
                                           cost_limit=target)
        rm, cm, _ = post_adaptation_values(unflatten(x0 - eps * v, det), inner, post, objective=obj, rule=rule,
                                           cost_limit=target)
        np.testing.assert_allclose(float(mg.G @ v), (rp - rm) / (2 * eps), rtol=1e-5, atol=1e-9)
        np.testing.assert_allclose(float(mg.A @ v), (cp - cm) / (2 * eps), rtol=1e-5, atol=1e-8)
