"""The meta-gradient on a real GaussianMLPPolicy with the importance-ratio surrogates."""

from __future__ import annotations

import numpy as np
import torch

from metacpo.algorithms.common import ProcessedBatch, RolloutStats
from metacpo.algorithms.meta_cpo import surrogate_objective
from metacpo.functional.params import flatten, params_of
from metacpo.meta.core import StepRule, inner_loop, meta_gradient, meta_parameters
from metacpo.models.policy import GaussianMLPPolicy, PolicySpec


def synthetic_batch(policy, params, *, n: int, seed: int, j_c: float) -> ProcessedBatch:
    """A batch 'sampled' from ``params`` with random advantages (what the surrogates consume)."""
    g = torch.Generator().manual_seed(seed)
    obs = torch.randn(n, policy.spec.obs_dim, generator=g, dtype=torch.float64)
    with torch.no_grad():
        dist = policy.distribution(obs, params)
        actions = dist.mean + dist.stddev * torch.randn(dist.mean.shape, generator=g, dtype=torch.float64)
        old_lp = dist.log_prob(actions).sum(-1)
    # advantages correlated with the actions so the surrogate has a real gradient
    adv_r = actions[:, 0] + 0.3 * torch.randn(n, generator=g, dtype=torch.float64)
    adv_c = (actions[:, -1] - 0.2) + 0.3 * torch.randn(n, generator=g, dtype=torch.float64)
    stats = RolloutStats(num_steps=n, num_episodes=1, ep_return_mean=0.0, ep_return_std=0.0, ep_cost_mean=j_c,
                         ep_cost_std=0.0, ep_len_mean=float(n), j_c=j_c)
    return ProcessedBatch(obs=obs, actions=actions, old_log_probs=old_lp, old_mean=dist.mean,
                          old_log_std=dist.stddev.log(), adv_r=adv_r, adv_c=adv_c - adv_c.mean(),
                          target_r=adv_r, target_c=adv_c, obs_c=obs, j_c=j_c, cost_scale=10.0, behaviour_logp_gap=0.0,
                          rollout=stats)


def _policy(seed: int = 0) -> GaussianMLPPolicy:
    torch.manual_seed(seed)
    return GaussianMLPPolicy(PolicySpec(obs_dim=5, act_dim=2, hidden=(8, 8))).double()


def _run(policy, theta, *, first_order: bool, j_c: float, tasks: int = 2, steps: int = 2):
    obj = surrogate_objective(policy)
    rule = StepRule(delta=0.05)
    adapted, post = [], []
    for i in range(tasks):
        p = dict(theta)
        for k in range(steps):
            data = synthetic_batch(policy, {n: v.detach() for n, v in p.items()}, n=200, seed=100 * i + k, j_c=j_c)
            p, _ = inner_loop(p, [data], objective=obj, rule=rule, cost_limit=1.0, second_order=not first_order)
        adapted.append(p)
        post.append(synthetic_batch(policy, {n: v.detach() for n, v in p.items()}, n=200, seed=100 * i + 50, j_c=j_c))
    return meta_gradient(theta, adapted, post, objective=obj, cost_limit=1.0)


def test_gradients_reach_every_meta_parameter_and_theta_is_untouched():
    policy = _policy()
    theta = meta_parameters(params_of(policy))
    before = flatten({k: v.detach() for k, v in theta.items()}).clone()
    for j_c in (0.0, 0.95):  # inactive and active constraint in the inner steps
        mg = _run(policy, theta, first_order=False, j_c=j_c)
        i = 0
        for name, v in theta.items():
            seg_g = mg.G[i : i + v.numel()]
            seg_a = mg.A[i : i + v.numel()]
            i += v.numel()
            assert torch.isfinite(seg_g).all() and torch.isfinite(seg_a).all(), name
            assert float(seg_g.abs().max()) > 0, f"no reward meta-gradient reaches {name}"
            assert float(seg_a.abs().max()) > 0, f"no cost meta-gradient reaches {name}"
    assert torch.equal(flatten({k: v.detach() for k, v in theta.items()}), before)
    assert all(v.grad is None for v in theta.values())
    # the module's own parameters were never touched either
    assert torch.equal(flatten(params_of(policy, detach=True)), before)


def test_second_order_term_is_present_on_a_policy():
    policy = _policy(1)
    theta = meta_parameters(params_of(policy))
    so = _run(policy, theta, first_order=False, j_c=0.95)
    fo = _run(policy, theta, first_order=True, j_c=0.95)
    rel = float((so.G - fo.G).norm() / fo.G.norm())
    assert 1e-4 < rel < 10.0, rel  # differs (Jacobian term) but is of the same order
    np.testing.assert_allclose(so.loss_r, fo.loss_r, rtol=1e-12)  # same adapted values


def test_policy_meta_gradient_matches_directional_finite_differences():
    """With the batches fixed, the post-adaptation surrogate is an exact function of theta (the
    inner steps are replayed with importance ratios): G.v and A.v equal central differences."""
    from metacpo.functional.params import unflatten
    from metacpo.meta.core import post_adaptation_values

    torch.manual_seed(2)
    policy = GaussianMLPPolicy(PolicySpec(obs_dim=3, act_dim=2, hidden=(4,))).double()
    theta = meta_parameters(params_of(policy))
    det = {k: v.detach() for k, v in theta.items()}
    obj = surrogate_objective(policy)
    seen: set[int] = set()
    # j_c = 0.9: active and unconstrained inner steps; 3.0: recovery then active (d = 1)
    for j_c, backend in ((0.9, "analytic"), (0.9, "dco"), (3.0, "analytic")):
        rule = StepRule(delta=0.01, backend=backend, normalize=False)
        inner = [[synthetic_batch(policy, det, n=100, seed=10 * i + k, j_c=j_c) for k in range(2)] for i in range(2)]
        post = [synthetic_batch(policy, det, n=100, seed=10 * i + 7, j_c=j_c) for i in range(2)]
        runs = [inner_loop(theta, d, objective=obj, rule=rule, cost_limit=1.0) for d in inner]
        adapted = [p for p, _ in runs]
        seen |= {s.case for _, st in runs for s in st}
        mg = meta_gradient(theta, adapted, post, objective=obj, cost_limit=1.0)
        x0 = flatten(det)
        gen = torch.Generator().manual_seed(0)
        for _ in range(3):
            v = torch.randn(x0.shape, generator=gen, dtype=torch.float64)
            v /= v.norm()
            eps = 1e-5
            rp, cp, _ = post_adaptation_values(unflatten(x0 + eps * v, det), inner, post, objective=obj,
                                               rule=StepRule(delta=0.01, normalize=False), cost_limit=1.0)
            rm, cm, _ = post_adaptation_values(unflatten(x0 - eps * v, det), inner, post, objective=obj,
                                               rule=StepRule(delta=0.01, normalize=False), cost_limit=1.0)
            np.testing.assert_allclose(float(mg.G @ v), (rp - rm) / (2 * eps), rtol=1e-4, atol=1e-9)
            np.testing.assert_allclose(float(mg.A @ v), (cp - cm) / (2 * eps), rtol=1e-4, atol=1e-7)
    assert seen == {0, 1, 2}  # all three solver cases were differentiated through
