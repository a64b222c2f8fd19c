"""The meta-gradient on a real GaussianMLPPolicy with the importance-ratio surrogates."""

from __future__ import annotations

import numpy as np
import torch

from metacpo.algorithms.common import ProcessedBatch, RolloutStats
from metacpo.algorithms.meta_cpo import surrogate_objective
from metacpo.functional.params import flatten, params_of
from metacpo.meta.core import StepRule, adapt, meta_gradient, meta_parameters
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
                          target_r=adv_r, target_c=adv_c, j_c=j_c, cost_scale=10.0, behaviour_logp_gap=0.0,
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
            p, _ = adapt(p, [data], objective=obj, rule=rule, cost_limit=1.0, second_order=not first_order)
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
