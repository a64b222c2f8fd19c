"""The estimates every result rests on (issue "trustworthy estimates"): J_C on batches merged
from several workers, the cost advantage's discount, and the line search's trust-region test."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from metacpo.algorithms.common import (
    TRUST_REGION_RTOL,
    Evaluation,
    backtracking_line_search,
    process_batch,
    surrogate_losses,
)
from metacpo.data.batch import Batch
from metacpo.data.gae import NoCompleteEpisodeError
from metacpo.data.normalizer import NormalizerState
from metacpo.models.policy import GaussianMLPPolicy, PolicySpec, ValueCritic
from metacpo.samplers.base import merge_parts
from metacpo.solvers import solve_cpo

OBS = 3


def _part(segments: list[tuple[list[float], bool]], seed: int) -> Batch:
    """A worker's part: episode segments ``(costs, complete)``; an incomplete one is a cut fragment."""
    rng = np.random.default_rng(seed)
    costs, trunc, cut, ep_costs, ep_lens = [], [], [], [], []
    for c, complete in segments:
        costs += c
        trunc += [False] * (len(c) - 1) + [True]
        cut += [False] * (len(c) - 1) + [not complete]
        if complete:
            ep_costs.append(sum(c))
            ep_lens.append(len(c))
    n = len(costs)
    obs = rng.normal(size=(n, OBS))
    return Batch(
        obs=obs, actions=rng.normal(size=(n, 1)), rewards=rng.normal(size=n), costs=np.asarray(costs, float),
        terminated=np.zeros(n, bool), truncated=np.asarray(trunc), cut=np.asarray(cut), next_obs=obs + 0.1,
        log_probs=np.zeros(n), episode_returns=np.zeros(len(ep_costs)), episode_costs=np.asarray(ep_costs, float),
        episode_lengths=np.asarray(ep_lens, dtype=np.int64),
    )


def _process(batch: Batch, *, cost_gamma: float = 1.0):
    torch.manual_seed(0)
    policy = GaussianMLPPolicy(PolicySpec(obs_dim=OBS, act_dim=1, hidden=(4,)))
    params = {k: v.detach() for k, v in policy.named_parameters()}
    return process_batch(batch, policy=policy, params=params, critic_r=ValueCritic(obs_dim=OBS, hidden=(4,)),
                         critic_c=ValueCritic(obs_dim=OBS, hidden=(4,)), obs_norm=NormalizerState.identity(OBS),
                         gamma=0.99, lam=0.95, cost_gamma=cost_gamma)


def test_j_c_of_a_task_split_over_workers_is_the_mean_of_its_complete_episodes():
    # Two workers' parts of one task: each a complete episode then a cut fragment, so the first
    # part's fragment sits in the middle of the merged batch (the 50 / 25 example).
    a = _part([([20.0, 20.0, 10.0], True), ([5.0], False)], seed=0)
    b = _part([([10.0, 10.0, 5.0], True), ([7.0, 7.0], False)], seed=1)
    merged = merge_parts([a, b], task=None)
    assert merged.cut.tolist() == [False, False, False, True, False, False, False, False, True]
    p = _process(merged)
    assert p.j_c == pytest.approx(37.5)  # (50 + 25) / 2; averaging the first two segments gave 27.5
    assert p.j_c == pytest.approx(float(merged.episode_costs.mean()))
    assert p.cost_scale == pytest.approx(3.0)  # the complete episodes' length
    # discounted: sum_t 0.5^t c_t of the complete episodes only
    assert _process(merged, cost_gamma=0.5).j_c == pytest.approx(((20 + 10 + 2.5) + (10 + 5 + 1.25)) / 2)


def test_a_batch_without_a_complete_episode_is_an_error_not_a_nan():
    frag = _part([([1.0, 2.0, 3.0], False)], seed=2)
    with pytest.raises(NoCompleteEpisodeError, match="no complete episode"):
        _process(frag)


def test_real_sampler_split_over_16_workers_gives_j_c_equal_to_the_mean_episode_cost():
    """The issue's case: 4,000 steps of 500-step episodes on 16 workers gave J_C 131 (true ~262)
    and cost_scale 4000; now every part is a whole episode."""
    from metacpo.samplers import LocalSampler, PolicySnapshot

    torch.manual_seed(0)
    policy = GaussianMLPPolicy(PolicySpec(obs_dim=28, act_dim=2, hidden=(8,)))
    snap = PolicySnapshot.from_policy(policy, NormalizerState.identity(28))
    with LocalSampler("SafetyPointStcircle1-v0", seed=0, num_virtual_workers=16) as s:
        (batch,) = s.sample(snapshot=snap, num_steps=4000)
    assert len(batch) == 4000 and len(batch.episode_costs) == 8 and not batch.cut.any()
    params = {k: v.detach() for k, v in policy.named_parameters()}
    p = process_batch(batch, policy=policy, params=params, critic_r=ValueCritic(obs_dim=28, hidden=(8,)),
                      critic_c=ValueCritic(obs_dim=28, hidden=(8,)), obs_norm=NormalizerState.identity(28),
                      gamma=0.99, lam=0.95)
    assert p.j_c == pytest.approx(float(batch.episode_costs.mean())) and p.j_c > 0
    assert p.cost_scale == 500.0
    assert p.rollout.num_episodes == 8 and math.isfinite(p.rollout.ep_return_mean)


# ------------------------------------------------------------------------------------------
# Cost advantages use J_C's discount: a^T x predicts the true change of J_C under delayed cost
# ------------------------------------------------------------------------------------------
T, K = 40, 20  # episode length (time limit) and the delay from a decision to its cost


class ExactDelayedCostCritic(nn.Module):
    """The exact finite-horizon value of the delayed-cost chain below for the policy N(0, 1).

    obs = [p_0 .. p_{K-1}, t]: p_j = 1 if the decision taken at t - K + j will cost 1 at step
    t + j. V(s_t) = sum_{j: t + j < T} p_j + P(a > 0) * #{u >= t: u + K < T}.
    """

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        pend, t = obs[:, :K].double(), obs[:, K].double()
        lands = (t[:, None] + torch.arange(K, dtype=torch.float64)[None, :]) < T
        return ((pend * lands).sum(-1) + 0.5 * torch.clamp(T - K - t, min=0.0)).to(obs.dtype)


def _delayed_cost_batch(n_episodes: int, seed: int) -> Batch:
    rng = np.random.default_rng(seed)
    acts = rng.normal(size=(n_episodes, T))
    fired = (acts > 0).astype(float)
    padded = np.concatenate([np.zeros((n_episodes, K)), fired], axis=1)  # padded[:, K + t] = fired[:, t]
    costs = padded[:, :T]  # c_t = fired[t - K]
    obs = np.zeros((n_episodes, T + 1, K + 1))
    for t in range(T + 1):
        obs[:, t, :K] = padded[:, t : t + K]
        obs[:, t, K] = t
    n = n_episodes * T
    trunc = np.zeros((n_episodes, T), bool)
    trunc[:, -1] = True  # the time limit
    return Batch(
        obs=obs[:, :T].reshape(n, K + 1), actions=acts.reshape(n, 1), rewards=np.zeros(n), costs=costs.reshape(n),
        terminated=np.zeros(n, bool), truncated=trunc.reshape(n), cut=np.zeros(n, bool),
        next_obs=obs[:, 1:].reshape(n, K + 1), log_probs=(-0.5 * acts**2 - 0.5 * math.log(2 * math.pi)).reshape(n),
        episode_returns=np.zeros(n_episodes), episode_costs=costs.sum(1), episode_lengths=np.full(n_episodes, T),
    )


def test_cost_gradient_matches_the_true_change_of_j_c_when_cost_is_delayed():
    """Each step's action fires a cost K = 20 steps later (if a > 0). Moving the policy's mean by
    x changes J_C by (T - K) phi(0) x to first order. With the reward's gamma (0.99) in the cost
    GAE, a^T x was 0.99^20 = 0.82 of that; with J_C's own discount (1.0) it is exact."""
    policy = GaussianMLPPolicy(PolicySpec(obs_dim=K + 1, act_dim=1, hidden=(4,), log_std_init=0.0))
    with torch.no_grad():
        last = policy.mu[-1]
        last.weight.zero_()
        last.bias.zero_()  # mean 0 whatever the observation: pi = N(0, 1)
    batch = _delayed_cost_batch(3000, seed=0)
    params = {k: v.detach().double().requires_grad_(True) for k, v in policy.double().named_parameters()}
    proc = process_batch(batch, policy=policy, params={k: v.detach() for k, v in params.items()},
                         critic_r=ExactDelayedCostCritic(), critic_c=ExactDelayedCostCritic(),
                         obs_norm=NormalizerState.identity(K + 1), gamma=0.99, lam=0.95)
    assert proc.j_c == pytest.approx((T - K) * 0.5, rel=0.02) and proc.cost_scale == T
    _, loss_c = surrogate_losses(policy, params, proc)
    (a_bias,) = torch.autograd.grad(loss_c, [params[f"mu.{len(policy.mu) - 1}.bias"]])
    true = (T - K) / math.sqrt(2 * math.pi)  # d J_C / d mean
    ratio = float(a_bias[0]) / true
    assert ratio == pytest.approx(1.0, abs=0.05), ratio  # 0.82 before the fix
    # and the finite change of J_C for a step x = 0.05 on the mean, predicted by b + a^T x
    from scipy.stats import norm

    x = 0.05
    assert float(a_bias[0]) * x == pytest.approx((T - K) * (norm.cdf(x) - 0.5), rel=0.06)
    # advantage.cost_adv_gamma < 1 trades this for variance: the delayed cost is under-weighted
    disc = process_batch(batch, policy=policy, params={k: v.detach() for k, v in params.items()},
                         critic_r=ExactDelayedCostCritic(), critic_c=ExactDelayedCostCritic(),
                         obs_norm=NormalizerState.identity(K + 1), gamma=0.99, lam=0.95, cost_adv_gamma=0.99)
    _, loss_c_disc = surrogate_losses(policy, params, disc)
    (a_disc,) = torch.autograd.grad(loss_c_disc, [params[f"mu.{len(policy.mu) - 1}.bias"]])
    assert float(a_disc[0]) / true < 0.93 and disc.j_c == proc.j_c  # J_C itself is unchanged


# ------------------------------------------------------------------------------------------
# One trust-region tolerance: exact boundary steps are accepted at fraction 1
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_exact_boundary_steps_are_accepted_whole(dtype):
    delta = 0.01
    gen = torch.Generator().manual_seed(0)
    fractions = []
    for _ in range(200):
        g = torch.randn(50, generator=gen, dtype=torch.float64)
        a = torch.randn(50, generator=gen, dtype=torch.float64)
        b = float(torch.rand(1, generator=gen)) * 0.05 * float(a.norm())  # infeasible start, active case
        sol = solve_cpo(g=g, a=a, b=b, delta=delta, normalize=False)
        step = sol.step.to(dtype)  # the step as the parameters' dtype holds it
        half_sq = 0.5 * float(step.double().pow(2).sum())

        def evaluate(f: float, step=step, half_sq=half_sq, g=g, a=a) -> Evaluation:
            s = f * step.double()
            return Evaluation(loss_r=float(g @ s), loss_c=float(a @ s), kl=0.0, trust_region=f * f * half_sq)

        ls = backtracking_line_search(evaluate=evaluate, loss_r0=0.0, loss_c0=0.0,
                                      expected_improvement=-float(g @ step.double()), delta=delta, b=b)
        fractions.append(ls.fraction)
        # the whole step meets the linearised constraint (a shrunk one would leave it violated)
        assert b + float(a @ (ls.fraction * step.double())) <= 1e-6 * abs(b) + 1e-9
    assert fractions == [1.0] * 200
    # a real violation is still refused
    assert TRUST_REGION_RTOL <= 1e-6
    too_big = backtracking_line_search(
        evaluate=lambda f: Evaluation(loss_r=-f, loss_c=0.0, kl=0.0, trust_region=f * f * delta * (1 + 1e-4)),
        loss_r0=0.0, loss_c0=0.0, expected_improvement=1.0, delta=delta, b=None)
    assert too_big.fraction == pytest.approx(0.8)


def test_time_aware_cost_critic_sees_the_fraction_of_the_episode_left():
    from metacpo.models.policy import TimeAwareValueCritic

    a = _part([([1.0, 0.0, 2.0, 0.0], True), ([5.0, 1.0], False)], seed=3)
    torch.manual_seed(0)
    policy = GaussianMLPPolicy(PolicySpec(obs_dim=OBS, act_dim=1, hidden=(4,)))
    params = {k: v.detach() for k, v in policy.named_parameters()}
    critic_c = TimeAwareValueCritic(obs_dim=OBS, hidden=(4,))
    p = process_batch(a, policy=policy, params=params, critic_r=ValueCritic(obs_dim=OBS, hidden=(4,)),
                      critic_c=critic_c, obs_norm=NormalizerState.identity(OBS), gamma=0.99, lam=0.95,
                      time_limit=4)
    np.testing.assert_allclose(p.obs_c[:, :OBS].numpy(), p.obs.numpy())
    # t restarts at every episode start (the fragment is a new episode): tau = (4 - t) / 4
    np.testing.assert_allclose(p.obs_c[:, OBS].numpy(), [1.0, 0.75, 0.5, 0.25, 1.0, 0.75])
    # the cost critic was evaluated on [obs, tau]: its targets are A_c + V(obs, tau) (before centring)
    with torch.no_grad():
        v = critic_c(p.obs_c).double().numpy()
    assert np.all(np.isfinite(p.target_c.numpy())) and p.target_c.shape == (6,)
    # time limit = terminal for the cost: the last step of the complete episode has target = its cost
    np.testing.assert_allclose(float(p.target_c[3]), 0.0 + 0.0, atol=1e-6)  # c_3 = 0, no bootstrap
    assert v.shape == (6,)
    # a plain critic gets the observations as they are
    q = _process(a)
    assert q.obs_c.shape == q.obs.shape
