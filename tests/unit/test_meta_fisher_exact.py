"""``meta.fisher_exact``: the inner Fisher metric's dependence on the parameters on the meta-gradient path.

With the batches fixed (inner steps replayed with importance ratios) the post-adaptation
surrogates are an exact function of theta whose inner steps use the Fisher metric
``F(theta'_k) + damping I`` at the parameters each step is taken from. Central finite differences
of that function are the reference: the exact metric matches them, the constant-H treatment of
the same metric (same forward values) does not.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from metacpo.algorithms.common import fisher_at_params
from metacpo.algorithms.meta_cpo import MetaConfig, inner_fisher_metric_fn, surrogate_objective
from metacpo.functional.params import flatten, params_of, unflatten
from metacpo.meta.core import StepRule, inner_loop, meta_gradient, meta_parameters, post_adaptation_values
from metacpo.models.policy import GaussianMLPPolicy, PolicySpec
from metacpo.solvers import ExactFisherMetric, FisherMetric, MatrixMetric
from tests.unit.test_meta_policy import synthetic_batch

CG = dict(cg_iters=60, damping=0.1, cg_tol=1e-14)  # 17 parameters: CG converges to rounding


def _constant_fn(policy):
    def metric_fn(params, data):
        return FisherMetric(hvp=fisher_at_params(policy, params, data, keep_graph=False), **CG)
    return metric_fn


def _fd_errors(policy, theta, metric_fn, *, j_c: float, n_dirs: int = 2):
    """Relative errors of G.v and A.v against central differences, and the inner cases met."""
    det = {k: v.detach() for k, v in theta.items()}
    obj = surrogate_objective(policy)
    rule = StepRule(delta=0.02, normalize=False)
    inner = [[synthetic_batch(policy, det, n=60, seed=10 * i + k, j_c=j_c) for k in range(2)] for i in range(2)]
    post = [synthetic_batch(policy, det, n=60, seed=10 * i + 7, j_c=j_c) for i in range(2)]
    runs = [inner_loop(theta, d, objective=obj, rule=rule, cost_limit=1.0, metric_fn=metric_fn) for d in inner]
    cases = {s.case for _, st in runs for s in st}
    mg = meta_gradient(theta, [p for p, _ in runs], post, objective=obj, cost_limit=1.0)
    x0 = flatten(det)
    gen = torch.Generator().manual_seed(0)
    err_g, err_a = [], []
    for _ in range(n_dirs):
        v = torch.randn(x0.shape, generator=gen, dtype=torch.float64)
        v /= v.norm()
        eps = 1e-5
        vals = [post_adaptation_values(unflatten(x0 + s * eps * v, det), inner, post, objective=obj, rule=rule,
                                       cost_limit=1.0, metric_fn=metric_fn) for s in (1, -1)]
        fd_g = (vals[0][0] - vals[1][0]) / (2 * eps)
        fd_a = (vals[0][1] - vals[1][1]) / (2 * eps)
        err_g.append(abs(float(mg.G @ v) - fd_g) / abs(fd_g))
        err_a.append(abs(float(mg.A @ v) - fd_a) / abs(fd_a))
    return max(err_g), max(err_a), cases


@pytest.mark.parametrize(("j_c", "case"), [(-20.0, 0), (0.9, 1), (10.0, 2)])  # d = 1: each inner case
def test_exact_fisher_meta_gradient_matches_finite_differences_and_constant_h_does_not(j_c, case):
    torch.manual_seed(3)
    policy = GaussianMLPPolicy(PolicySpec(obs_dim=3, act_dim=1, hidden=(3,))).double()
    theta = meta_parameters(params_of(policy))
    assert sum(v.numel() for v in theta.values()) == 17
    exact_fn = inner_fisher_metric_fn(policy, exact=True, **CG)
    eg, ea, cases = _fd_errors(policy, theta, exact_fn, j_c=j_c)
    assert cases == {case}
    assert eg < 1e-6 and ea < 1e-6, (eg, ea)  # observed 2e-10 .. 3e-8
    cg_, ca, cases_c = _fd_errors(policy, theta, _constant_fn(policy), j_c=j_c)
    assert cases_c == cases
    # the same forward function, H held constant on the backward path: far off (observed 0.14 .. 6)
    assert max(cg_, ca) > 0.1, (cg_, ca)


def test_exact_solve_matches_the_dense_derivative():
    """d/dtheta of H(theta)^-1 v against torch.linalg.solve on the materialised Fisher matrix."""
    torch.manual_seed(4)
    policy = GaussianMLPPolicy(PolicySpec(obs_dim=2, act_dim=1, hidden=(2,))).double()
    theta = meta_parameters(params_of(policy))
    det = {k: v.detach() for k, v in theta.items()}
    data = synthetic_batch(policy, det, n=30, seed=1, j_c=0.0)
    n = sum(v.numel() for v in theta.values())
    v = torch.linspace(-1.0, 1.0, n, dtype=torch.float64)
    u = torch.cos(torch.arange(n, dtype=torch.float64))

    def dense(params):
        hvp = fisher_at_params(policy, params, data, keep_graph=True)
        return torch.stack([hvp(e) for e in torch.eye(n, dtype=torch.float64)], 1) + 0.1 * torch.eye(n)

    ref = flatten_grad(u @ MatrixMetric(dense(theta)).solve(v), theta)
    exact_fn = inner_fisher_metric_fn(policy, exact=True, **CG)
    got = flatten_grad(u @ exact_fn(theta, data).solve(v), theta)
    const = flatten_grad(u @ _constant_fn(policy)(theta, data).solve(v + 0 * flatten(theta).sum()), theta)
    np.testing.assert_allclose(got.numpy(), ref.numpy(), rtol=1e-7, atol=1e-10)
    assert float(const.norm()) == 0.0 and float(ref.norm()) > 1e-3  # constant H: no theta dependence


def flatten_grad(out, params):
    grads = torch.autograd.grad(out, list(params.values()), allow_unused=True)
    return torch.cat([(g if g is not None else torch.zeros_like(p)).reshape(-1)
                      for g, p in zip(grads, params.values(), strict=True)])


def test_exact_metric_value_equals_constant_metric_and_config_checks():
    torch.manual_seed(5)
    policy = GaussianMLPPolicy(PolicySpec(obs_dim=3, act_dim=1, hidden=(3,))).double()
    theta = meta_parameters(params_of(policy))
    data = synthetic_batch(policy, {k: v.detach() for k, v in theta.items()}, n=40, seed=2, j_c=0.0)
    v = torch.randn(17, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    ex = inner_fisher_metric_fn(policy, exact=True, **CG)(theta, data)
    assert isinstance(ex, ExactFisherMetric)
    torch.testing.assert_close(ex.solve(v).detach(), _constant_fn(policy)(theta, data).solve(v), rtol=0, atol=0)
    # at the behaviour parameters the Fisher of pi_params equals the KL Hessian the constant path uses
    legacy = inner_fisher_metric_fn(policy, exact=False, **CG)(theta, data)
    torch.testing.assert_close(ex.matvec(v), legacy.matvec(v), rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="fisher_exact=true needs meta.metric='fisher'"):
        MetaConfig(fisher_exact=True)
    with pytest.raises(ValueError, match="must be a FisherMetric"):
        ExactFisherMetric(base=MatrixMetric(torch.eye(2)), hvp_graph=lambda w: w)
