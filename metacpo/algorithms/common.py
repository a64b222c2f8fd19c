"""Pieces shared by every policy-gradient algorithm here (TRPO, CPO, Meta-TRPO, Meta-CPO).

Everything is functional: policies are evaluated at an explicit parameter dict ``params``
(``torch.func.functional_call``), so the same code serves the single-task update (detached
parameters) and the meta-gradient path (adapted parameters with autograd history).

Paper symbols (Achiam et al. 2017, CPO):

* ``g`` -- gradient of the reward-surrogate **loss** ``loss_r = -mean(ratio * A_r)``.
* ``a`` -- gradient of the cost surrogate ``loss_c = cost_scale * mean(ratio * A_c)``.
* ``b = J_C - d`` -- the batch's episode-cost estimate minus the cost limit.

``cost_scale`` makes ``b + a^T x`` a first-order estimate of ``J_C(new) - d``: by the
performance-difference lemma ``J_C(new) - J_C(old) ~= sum_{t<T} cost_gamma^t E[ratio A_c]``, so
``cost_scale = sum_{t<T} cost_gamma^t`` with ``T`` the mean episode length (``= T`` for the
default undiscounted episode cost, ``cost_gamma = 1``). For that lemma to hold, ``A_c`` must be
the advantage of the same objective J_C measures: the cost GAE uses ``cost_gamma`` (not the
reward's ``gamma``) and its own ``cost_lam``, and treats the env's time limit as the end of the
episode (J_C is a finite-horizon episode cost: costs after the limit never count), bootstrapping
only where a worker's share cut an episode off.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch import Tensor, nn

from metacpo.data.batch import Batch
from metacpo.data.gae import NoCompleteEpisodeError, cost_estimate, gae
from metacpo.data.normalizer import NormalizerState
from metacpo.functional.params import add_flat, flat_grad
from metacpo.models.policy import GaussianMLPPolicy, ValueCritic


# --------------------------------------------------------------------------------------------
# Batch processing
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RolloutStats:
    """Episode statistics of one batch (completed episodes only)."""

    num_steps: int
    num_episodes: int
    ep_return_mean: float
    ep_return_std: float
    ep_cost_mean: float
    ep_cost_std: float
    ep_len_mean: float
    j_c: float

    @staticmethod
    def of(batch: Batch, *, j_c: float) -> "RolloutStats":
        """The figures of ``batch``'s complete episodes, with its J_C."""
        return RolloutStats(
            num_steps=len(batch),
            num_episodes=len(batch.episode_lengths),
            ep_return_mean=_mean(batch.episode_returns),
            ep_return_std=_std(batch.episode_returns),
            ep_cost_mean=_mean(batch.episode_costs),
            ep_cost_std=_std(batch.episode_costs),
            ep_len_mean=float(np.mean(batch.episode_lengths)),
            j_c=j_c,
        )


def _mean(x: np.ndarray) -> float:
    return float(np.mean(x)) if len(x) else float("nan")


def _std(x: np.ndarray) -> float:
    return float(np.std(x)) if len(x) else float("nan")


@dataclass(frozen=True)
class ProcessedBatch:
    """A batch turned into tensors for the surrogate losses (all on the policy's dtype).

    ``old_*`` are the behaviour policy's outputs at ``obs`` (detached): the importance ratio is
    ``exp(log pi_params(a|s) - old_log_probs)`` and is exactly 1 at the behaviour parameters.
    """

    obs: Tensor  # [N, obs_dim] normalised with the iteration's frozen statistics
    actions: Tensor  # [N, act_dim]
    old_log_probs: Tensor  # [N]
    old_mean: Tensor  # [N, act_dim]
    old_log_std: Tensor  # [N, act_dim]
    adv_r: Tensor  # [N] reward advantages (normalised if requested)
    adv_c: Tensor  # [N] cost advantages (centred if requested)
    target_r: Tensor  # [N] reward-critic targets (TD(lambda) returns)
    target_c: Tensor  # [N] cost-critic targets
    obs_c: Tensor  # [N, obs_dim (+1)] the cost critic's inputs: obs, and tau (episode fraction left) if time-aware
    j_c: float  # J_C of the batch (see metacpo.data.gae.cost_estimate)
    cost_scale: float  # sum_{t<T} cost_gamma^t, T = mean episode length
    behaviour_logp_gap: float  # max |recomputed - sampled| log-prob (normaliser consistency)
    rollout: RolloutStats


def _values(critic: nn.Module, obs: Tensor) -> np.ndarray:
    with torch.no_grad():
        return critic(obs).double().numpy()


def process_batch(
    batch: Batch,
    *,
    policy: GaussianMLPPolicy,
    params: Mapping[str, Tensor],
    critic_r: nn.Module,
    critic_c: nn.Module,
    obs_norm: NormalizerState,
    gamma: float,
    lam: float,
    cost_gamma: float = 1.0,
    cost_lam: float = 0.95,
    cost_adv_gamma: float | None = None,
    normalize_adv_r: bool = True,
    center_adv_c: bool = True,
    time_limit: int | None = None,
) -> ProcessedBatch:
    """Normalise observations, compute reward/cost GAE, J_C and the behaviour distribution.

    Reward advantages: GAE(``gamma``, ``lam``), bootstrapping at every truncation (time limit or
    cut). Cost advantages: GAE(``cost_gamma``, ``cost_lam``) -- the discount J_C uses, unless
    ``cost_adv_gamma`` trades that for variance -- with the time limit as the episode's end and
    bootstrapping only at cuts, so ``b + a^T x`` is a first-order estimate of ``J_C(new) - d``
    (see the module docstring). ``normalize_adv_r``
    rescales reward advantages to zero mean and unit std; ``center_adv_c`` only subtracts the
    mean of the cost advantages (their scale carries the constraint's units and must be kept).
    A batch without a complete episode is a ValueError (J_C cannot be estimated from it).
    A time-aware cost critic (``critic_c.time_aware``) also gets ``tau``, the fraction of the
    episode left at each step, with ``T = time_limit`` (default: the longest complete episode).
    """
    if len(batch) == 0:
        raise ValueError("cannot process an empty batch")
    j_c = _batch_j_c(batch, cost_gamma=cost_gamma)
    dtype = policy.log_std.dtype
    obs = torch.as_tensor(obs_norm.normalize(batch.obs), dtype=dtype)
    next_obs = torch.as_tensor(obs_norm.normalize(batch.next_obs), dtype=dtype)
    actions = torch.as_tensor(batch.actions, dtype=dtype)
    obs_c, next_obs_c = _cost_critic_inputs(batch, obs, next_obs, critic_c=critic_c, time_limit=time_limit)
    adv_r, target_r = _critic_gae(critic_r, obs, next_obs, batch.rewards, terminated=batch.terminated,
                                  truncated=batch.truncated, gamma=gamma, lam=lam)
    adv_c, target_c = _critic_gae(critic_c, obs_c, next_obs_c, batch.costs, terminated=_cost_terminal(batch),
                                  truncated=batch.truncated, lam=cost_lam,
                                  gamma=cost_gamma if cost_adv_gamma is None else cost_adv_gamma)
    if normalize_adv_r:
        adv_r = (adv_r - adv_r.mean()) / (adv_r.std() + 1e-8)
    if center_adv_c:
        adv_c = adv_c - adv_c.mean()
    with torch.no_grad():
        dist = policy.distribution(obs, params)
        old_lp = dist.log_prob(actions).sum(-1)
        old_mean, old_log_std = dist.mean, dist.stddev.log()
    rollout = RolloutStats.of(batch, j_c=j_c)
    return ProcessedBatch(
        obs=obs,
        actions=actions,
        old_log_probs=old_lp,
        old_mean=old_mean,
        old_log_std=old_log_std,
        adv_r=torch.as_tensor(adv_r, dtype=dtype),
        adv_c=torch.as_tensor(adv_c, dtype=dtype),
        target_r=torch.as_tensor(target_r, dtype=dtype),
        target_c=torch.as_tensor(target_c, dtype=dtype),
        obs_c=obs_c,
        j_c=j_c,
        cost_scale=_cost_scale(rollout.ep_len_mean, cost_gamma=cost_gamma),
        behaviour_logp_gap=float(np.max(np.abs(old_lp.double().numpy() - batch.log_probs))),
        rollout=rollout,
    )


def _batch_j_c(batch: Batch, *, cost_gamma: float) -> float:
    """J_C of ``batch`` (:func:`metacpo.data.gae.cost_estimate`); the error names the batch's task."""
    try:
        return cost_estimate(costs=batch.costs, terminated=batch.terminated, truncated=batch.truncated,
                             cut=batch.cut, cost_gamma=cost_gamma)
    except NoCompleteEpisodeError as exc:
        where = f" (task {batch.task})" if batch.task is not None else ""
        raise NoCompleteEpisodeError(f"{exc}{where}") from None


def _cost_terminal(batch: Batch) -> np.ndarray:
    """Where the cost's episode ends: at termination and at the env's time limit (J_C counts no
    cost after it), i.e. every episode end that is not a cut."""
    return np.logical_or(batch.terminated, np.logical_and(batch.truncated, ~np.asarray(batch.cut, bool)))


def _cost_scale(ep_len: float, *, cost_gamma: float) -> float:
    """``sum_{t<T} cost_gamma^t`` for ``T = ep_len`` (the mean episode length)."""
    return float(ep_len if cost_gamma == 1.0 else (1.0 - cost_gamma**ep_len) / (1.0 - cost_gamma))


def _critic_gae(critic: nn.Module, inputs: Tensor, next_inputs: Tensor, signal: np.ndarray, *,
                terminated: np.ndarray, truncated: np.ndarray, gamma: float, lam: float) -> tuple[np.ndarray, np.ndarray]:
    """GAE advantages and TD(lambda) targets of ``signal`` with ``critic`` evaluated on the inputs."""
    return gae(rewards=signal, values=_values(critic, inputs), next_values=_values(critic, next_inputs),
               terminated=terminated, truncated=truncated, gamma=gamma, lam=lam)


def _cost_critic_inputs(batch: Batch, obs: Tensor, next_obs: Tensor, *, critic_c: nn.Module,
                        time_limit: int | None) -> tuple[Tensor, Tensor]:
    """The cost critic's inputs at ``s_t`` and ``s_{t+1}``: the observations, plus ``tau`` (the
    fraction of the episode left) for a time-aware critic."""
    if not getattr(critic_c, "time_aware", False):
        return obs, next_obs
    tau, tau_next = _time_left(batch, time_limit)
    return (torch.cat([obs, torch.as_tensor(tau, dtype=obs.dtype)[:, None]], dim=1),
            torch.cat([next_obs, torch.as_tensor(tau_next, dtype=obs.dtype)[:, None]], dim=1))


def _time_left(batch: Batch, time_limit: int | None) -> tuple[np.ndarray, np.ndarray]:
    """``tau_t = (T - t) / T`` at ``s_t`` and at ``s_{t+1}``, ``t`` the step's index in its episode.

    Every episode segment of a batch starts at a reset (workers' shares start with fresh
    episodes), so ``t`` is the position within the segment."""
    from metacpo.data.gae import episode_slices

    T = float(time_limit if time_limit else max(int(np.max(batch.episode_lengths)), 1))
    t = np.empty(len(batch), dtype=np.float64)
    for sl in episode_slices(batch.terminated, batch.truncated):
        t[sl] = np.arange(sl.stop - sl.start)
    return (T - t) / T, (T - t - 1.0) / T


def advantages_finite(processed: ProcessedBatch) -> bool:
    """True when advantages, targets and J_C are all finite."""
    return bool(
        torch.isfinite(processed.adv_r).all()
        and torch.isfinite(processed.adv_c).all()
        and torch.isfinite(processed.target_r).all()
        and torch.isfinite(processed.target_c).all()
        and math.isfinite(processed.j_c)
    )


# --------------------------------------------------------------------------------------------
# Surrogates and trust region
# --------------------------------------------------------------------------------------------
def surrogate_losses(
    policy: GaussianMLPPolicy, params: Mapping[str, Tensor], processed: ProcessedBatch
) -> tuple[Tensor, Tensor]:
    """``(loss_r, loss_c)`` at ``params`` (differentiable w.r.t. ``params``).

    ``loss_r = -mean(ratio * A_r)`` (minimised); ``loss_c = cost_scale * mean(ratio * A_c)``, so
    ``J_C + loss_c(params) - loss_c(old)`` estimates the new policy's episode cost.
    """
    logp = policy.log_prob(processed.obs, processed.actions, params)
    ratio = torch.exp(logp - processed.old_log_probs)
    loss_r = -(ratio * processed.adv_r).mean()
    loss_c = processed.cost_scale * (ratio * processed.adv_c).mean()
    return loss_r, loss_c


def _gaussian_kl(mu0: Tensor, ls0: Tensor, mu1: Tensor, ls1: Tensor) -> Tensor:
    """Mean over rows of KL(N(mu0, e^{2 ls0}) || N(mu1, e^{2 ls1})) summed over action dims."""
    kl = ls1 - ls0 + (torch.exp(2 * ls0) + (mu0 - mu1) ** 2) / (2 * torch.exp(2 * ls1)) - 0.5
    return kl.sum(-1).mean()


def mean_kl(policy: GaussianMLPPolicy, params: Mapping[str, Tensor], processed: ProcessedBatch) -> Tensor:
    """Mean over states of KL(pi_old(.|s) || pi_params(.|s)) (differentiable w.r.t. ``params``)."""
    dist = policy.distribution(processed.obs, params)
    return _gaussian_kl(processed.old_mean, processed.old_log_std, dist.mean, dist.stddev.log())


def fisher_at_params(
    policy: GaussianMLPPolicy, params: Mapping[str, Tensor], processed: ProcessedBatch, *, keep_graph: bool
) -> Callable[[Tensor], Tensor]:
    """``v -> F(params) v``, the Fisher information of ``pi_params`` on the batch's states.

    ``F(params) = d^2/dx^2 KL(pi_params || pi_{params + x})`` at ``x = 0``: the old distribution
    is the policy at ``params`` itself (not the batch's behaviour policy), so ``F`` is a function
    of ``params`` alone. ``keep_graph=True`` keeps the products' graph back to ``params`` (both
    distributions depend on them), for :class:`metacpo.solvers.ExactFisherMetric`; False detaches
    ``params`` and returns constant products. No damping is added.
    """
    base = dict(params) if keep_graph else {k: v.detach() for k, v in params.items()}
    first = next(iter(base.values()))
    n = sum(v.numel() for v in base.values())
    x = torch.zeros(n, dtype=first.dtype, device=first.device, requires_grad=True)
    with torch.enable_grad():
        old = policy.distribution(processed.obs, base)
        new = policy.distribution(processed.obs, add_flat(base, x))
        kl = _gaussian_kl(old.mean, old.stddev.log(), new.mean, new.stddev.log())
        (grad_x,) = torch.autograd.grad(kl, x, create_graph=True)

    def hvp(v: Tensor) -> Tensor:
        with torch.enable_grad():
            u = v.to(grad_x.dtype) if keep_graph else v.detach().to(grad_x.dtype)
            (fv,) = torch.autograd.grad(grad_x @ u, x, create_graph=keep_graph, retain_graph=True)
        return (fv if keep_graph else fv.detach()).to(v.dtype)

    return hvp


def fisher_vector_product(
    policy: GaussianMLPPolicy, params: Mapping[str, Tensor], processed: ProcessedBatch
) -> Callable[[Tensor], Tensor]:
    """``v -> F v`` with ``F`` the Hessian of :func:`mean_kl` at ``params`` (no damping added).

    ``params`` should equal the behaviour parameters (where the KL's gradient vanishes and its
    Hessian is the Fisher information). The first derivative is built once and reused.
    """
    leaf = {k: v.detach().requires_grad_(True) for k, v in params.items()}
    grad_kl = flat_grad(mean_kl(policy, leaf, processed), leaf, create_graph=True)

    def hvp(v: Tensor) -> Tensor:
        fv = flat_grad(grad_kl @ v.detach().to(grad_kl.dtype), leaf, retain_graph=True).detach()
        return fv.to(v.dtype)

    return hvp


# --------------------------------------------------------------------------------------------
# Line search
# --------------------------------------------------------------------------------------------
TRUST_REGION_RTOL = 1e-6
"""Relative tolerance of the line search's trust-region test: ``trust_region <= delta (1 + rtol)``.

The solvers return steps exactly on the boundary ``1/2 x^T H x = delta`` whenever the trust
region binds; recomputing ``1/2 |x|^2`` in floating point lands a few ulps either side, and a
rejected exact step would leave an active constraint unmet. One tolerance, used by every step."""


@dataclass(frozen=True)
class LineSearchResult:
    """Outcome of :func:`backtracking_line_search`.

    ``fraction`` is the accepted multiple of the full step (0 when no step was accepted);
    ``trust_region`` is the tested trust-region quantity at that fraction; ``loss_r``/``loss_c``
    the surrogate losses there; ``reason`` why the last rejected candidate failed ('' if the
    full step was accepted).
    """

    accepted: bool
    fraction: float
    backtracks: int
    loss_r: float
    loss_c: float
    kl: float
    trust_region: float
    actual_improvement: float
    expected_improvement: float
    reason: str


@dataclass(frozen=True)
class Evaluation:
    """Surrogates and trust-region quantities at a candidate step (plain floats)."""

    loss_r: float
    loss_c: float
    kl: float
    trust_region: float


def backtracking_line_search(
    *,
    evaluate: Callable[[float], Evaluation],
    loss_r0: float,
    loss_c0: float,
    expected_improvement: float,
    delta: float,
    b: float | None,
    recovery: bool = False,
    backtrack_coef: float = 0.8,
    max_backtracks: int = 15,
    accept_ratio: float = 0.1,
) -> LineSearchResult:
    """Try fractions ``1, c, c^2, ...`` of the step; accept the first that passes every test.

    ``evaluate(frac)`` returns the *unnormalised* surrogates at ``params + frac * step`` and the
    trust-region quantity that the solver constrained (``1/2 x^T H x``: the actual mean KL for the
    Fisher metric, ``1/2 |x|^2`` for the identity metric). Tests, with ``dr = loss_r0 - loss_r``
    and ``dc = loss_c - loss_c0``:

    * trust region: ``trust_region <= delta (1 + TRUST_REGION_RTOL)`` (rounding of an exact
      boundary step is not a violation);
    * reward (skipped in recovery, and when the full step is not expected to improve, i.e.
      ``expected_improvement <= 0``, which happens when the constraint forces a reward loss):
      ``dr > 0`` and ``dr >= accept_ratio * frac * expected_improvement`` (``expected_improvement
      = -g^T x``, the first-order prediction on the same loss);
    * cost (only when ``b`` is given, i.e. CPO): ``dc <= max(-b, 0)``: stay within the
      linearised constraint when feasible (``b + dc <= 0``), and do not increase the cost
      surrogate when already infeasible (recovery and active-at-infeasible steps).
    """
    if not 0.0 < backtrack_coef < 1.0:
        raise ValueError(f"backtrack_coef must lie in (0, 1), got {backtrack_coef}")
    reason = "no candidate tried"
    frac = 1.0
    ev = None
    for k in range(max_backtracks + 1):
        ev = evaluate(frac)
        dr = loss_r0 - ev.loss_r
        dc = ev.loss_c - loss_c0
        values = (ev.loss_r, ev.loss_c, ev.kl, ev.trust_region)
        if not all(math.isfinite(v) for v in values):
            reason = "non-finite surrogate"
        elif ev.trust_region > delta * (1.0 + TRUST_REGION_RTOL):
            reason = f"trust region {ev.trust_region:.3g} > delta {delta:.3g}"
        elif (not recovery and expected_improvement > 0) and (
            dr <= 0 or dr < accept_ratio * frac * expected_improvement
        ):
            reason = f"reward improvement {dr:.3g} < {accept_ratio} x expected {frac * expected_improvement:.3g}"
        elif b is not None and dc > max(-b, 0.0):
            reason = f"cost surrogate change {dc:.3g} > allowed {max(-b, 0.0):.3g}"
        else:
            return LineSearchResult(
                accepted=True, fraction=frac, backtracks=k, loss_r=ev.loss_r, loss_c=ev.loss_c,
                kl=ev.kl, trust_region=ev.trust_region, actual_improvement=dr,
                expected_improvement=frac * expected_improvement, reason="" if k == 0 else reason,
            )
        frac *= backtrack_coef
    return LineSearchResult(
        accepted=False, fraction=0.0, backtracks=max_backtracks + 1, loss_r=loss_r0, loss_c=loss_c0,
        kl=0.0, trust_region=0.0, actual_improvement=0.0, expected_improvement=0.0, reason=reason,
    )


def full_step(evaluate: Callable[[float], Evaluation], *, loss_r0: float, expected_improvement: float) -> LineSearchResult:
    """The solver's step taken as it is (no line search), as Meta-CPO's inner steps take it.

    Only non-finite surrogates at the step reject it (fraction 0)."""
    ev = evaluate(1.0)
    if not all(math.isfinite(v) for v in (ev.loss_r, ev.loss_c, ev.kl, ev.trust_region)):
        return LineSearchResult(
            accepted=False, fraction=0.0, backtracks=0, loss_r=math.nan, loss_c=math.nan, kl=0.0,
            trust_region=0.0, actual_improvement=0.0, expected_improvement=0.0, reason="non-finite surrogate",
        )
    return LineSearchResult(
        accepted=True, fraction=1.0, backtracks=0, loss_r=ev.loss_r, loss_c=ev.loss_c, kl=ev.kl,
        trust_region=ev.trust_region, actual_improvement=loss_r0 - ev.loss_r, expected_improvement=expected_improvement,
        reason="",
    )


# --------------------------------------------------------------------------------------------
# Critic fitting
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CriticFitStats:
    """Mean squared error of a critic on its targets before and after fitting."""

    loss_before: float
    loss_after: float
    skipped_nonfinite: bool = False


def fit_critic(
    critic: nn.Module,
    obs: Tensor,
    targets: Tensor,
    *,
    optimizer: Literal["adam", "lbfgs"],
    lr: float,
    iters: int,
    minibatch_size: int,
    generator: torch.Generator,
    l2: float = 0.0,
    losses: bool = True,
) -> CriticFitStats:
    """Regress ``critic(obs)`` on ``targets`` in place (critics are not on the meta path).

    ``adam``: ``iters`` epochs of shuffled minibatches (a fresh optimiser each call, so no
    optimiser state has to be checkpointed). ``lbfgs``: ``iters`` full-batch L-BFGS iterations.
    ``l2`` adds ``l2 * |w|^2``. Non-finite targets: nothing is changed and the stats say so.
    ``losses=False``: the stats' losses are NaN, not evaluated (two full-batch forwards saved;
    the fit is the same).
    """
    obs = obs.detach()
    targets = targets.detach().to(obs.dtype)
    nan = float("nan")
    with torch.no_grad():
        before = float(((critic(obs) - targets) ** 2).mean()) if losses else nan
    if not torch.isfinite(targets).all():
        return CriticFitStats(loss_before=before, loss_after=before, skipped_nonfinite=True)
    params = list(critic.parameters())

    def loss_fn(o: Tensor, t: Tensor) -> Tensor:
        loss = ((critic(o) - t) ** 2).mean()
        if l2:
            loss = loss + l2 * sum((p**2).sum() for p in params)
        return loss

    if optimizer == "adam":
        opt = torch.optim.Adam(params, lr=lr)
        n = len(obs)
        mb = max(1, min(minibatch_size, n))
        for _ in range(iters):
            perm = torch.randperm(n, generator=generator)
            # one gather per epoch; the minibatches are views (the same rows as obs[perm[i:i+mb]])
            obs_p, targets_p = obs[perm], targets[perm]
            for i in range(0, n, mb):
                opt.zero_grad()
                loss_fn(obs_p[i : i + mb], targets_p[i : i + mb]).backward()
                opt.step()
    elif optimizer == "lbfgs":
        opt = torch.optim.LBFGS(params, lr=lr, max_iter=iters, line_search_fn="strong_wolfe")

        def closure() -> Tensor:
            opt.zero_grad()
            loss = loss_fn(obs, targets)
            loss.backward()
            return loss

        opt.step(closure)
    else:
        raise ValueError(f"unknown critic optimizer {optimizer!r}; allowed: ['adam', 'lbfgs']")
    with torch.no_grad():
        after = float(((critic(obs) - targets) ** 2).mean()) if losses else nan
    return CriticFitStats(loss_before=before, loss_after=after)


def fit_critics(
    fits: Sequence[tuple[nn.Module, Tensor, Tensor]],
    *,
    optimizer: Literal["adam", "lbfgs"],
    lr: float,
    iters: int,
    minibatch_size: int,
    generator: torch.Generator,
    l2: float = 0.0,
    fused: bool = True,
    losses: bool = True,
) -> tuple[CriticFitStats, ...]:
    """Fit several critics ``(critic, obs, targets)`` on the same samples; stats in ``fits`` order.

    ``fused`` (Adam only, critics that are MLPs of the same hidden sizes and activation, e.g. the
    reward and cost critics): all critics are regressed in ONE pass -- their layers stacked into
    one batched network (``torch.baddbmm``; a narrower input is zero-padded, and its padding
    weights have zero gradient so they stay zero), one (fused-kernel) Adam over the stacked weights, one
    minibatch order shared by all critics, the loss the sum of the critics' mean squared errors.
    Adam acts element-wise, so every critic gets the updates it would get fitted alone on that
    minibatch order; only the Python and dispatch overhead is shared. The fitted weights are
    copied back into the modules. Otherwise (or when a critic's targets are non-finite, or the
    critics do not stack) each critic is fitted on its own by :func:`fit_critic`, one after the
    other with the same generator (the behaviour before fused fitting existed). ``losses=False``:
    the stats' losses are NaN, not evaluated (about a quarter of a default Meta-CPO fit, whose
    caller does not log them; the fitted weights are the same).
    """
    fits = list(fits)
    if not fits:
        return ()

    def separate() -> tuple[CriticFitStats, ...]:
        return tuple(
            fit_critic(c, o, t, optimizer=optimizer, lr=lr, iters=iters, minibatch_size=minibatch_size,
                       generator=generator, l2=l2, losses=losses)
            for c, o, t in fits
        )

    if not fused or optimizer != "adam" or len(fits) < 2:
        return separate()
    layers = [_stackable_layers(c) for c, _, _ in fits]
    n = len(fits[0][1])
    if (any(ls is None for ls in layers) or any(len(o) != n or len(t) != n for _, o, t in fits)
            or len({tuple((w.shape[0], type(a)) for w, _, a in ls) for ls in layers}) != 1  # type: ignore[union-attr]
            or len({o.dtype for _, o, _ in fits}) != 1
            or not all(torch.isfinite(t.detach()).all() for _, _, t in fits)):
        return separate()
    return _fit_stacked(fits, layers, lr=lr, iters=iters, minibatch_size=minibatch_size,  # type: ignore[arg-type]
                        generator=generator, l2=l2, losses=losses)


def _stackable_layers(critic: nn.Module) -> list[tuple[Tensor, Tensor, nn.Module | None]] | None:
    """``[(weight, bias, activation after it or None), ...]`` of a :class:`ValueCritic`-shaped MLP
    (``critic.net``: Linear layers with element-wise activation modules between them), else None."""
    net = getattr(critic, "net", None)
    if not isinstance(net, nn.Sequential) or type(critic).forward is not ValueCritic.forward:
        return None
    mods = list(net)
    out: list[tuple[Tensor, Tensor, nn.Module | None]] = []
    i = 0
    while i < len(mods):
        lin = mods[i]
        if not isinstance(lin, nn.Linear) or lin.bias is None:
            return None
        act = mods[i + 1] if i + 1 < len(mods) else None
        if act is not None and (isinstance(act, nn.Linear) or not isinstance(act, (nn.Tanh, nn.ReLU, nn.ELU))):
            return None
        out.append((lin.weight, lin.bias, act))
        i += 2 if act is not None else 1
    if out[-1][2] is not None or out[-1][0].shape[0] != 1:
        return None
    return out


def _fit_stacked(
    fits: list[tuple[nn.Module, Tensor, Tensor]],
    layers: list[list[tuple[Tensor, Tensor, nn.Module | None]]],
    *,
    lr: float,
    iters: int,
    minibatch_size: int,
    generator: torch.Generator,
    l2: float,
    losses: bool = True,
) -> tuple[CriticFitStats, ...]:
    """The fused branch of :func:`fit_critics` (critics checked stackable, targets finite)."""
    k = len(fits)
    dtype = fits[0][1].dtype
    in_max = max(int(o.shape[1]) for _, o, _ in fits)
    n = len(fits[0][1])
    # inputs [k, n, in_max] (zero-padded), targets [k, n]
    x = torch.zeros(k, n, in_max, dtype=dtype)
    for j, (_, o, _) in enumerate(fits):
        x[j, :, : o.shape[1]] = o.detach()
    y = torch.stack([t.detach().to(dtype) for _, _, t in fits])
    acts = [a for _, _, a in layers[0]]
    # stacked weights [k, in, out] (transposed for baddbmm) and biases [k, 1, out], as leaves
    ws: list[Tensor] = []
    bs: list[Tensor] = []
    for li in range(len(layers[0])):
        rows = in_max if li == 0 else int(layers[0][li][0].shape[1])
        w = torch.zeros(k, rows, int(layers[0][li][0].shape[0]), dtype=dtype)
        for j in range(k):
            wj = layers[j][li][0].detach()
            w[j, : wj.shape[1]] = wj.t()
        ws.append(w.requires_grad_(True))
        bs.append(torch.stack([layers[j][li][1].detach() for j in range(k)])[:, None, :].clone().requires_grad_(True))

    def forward(inp: Tensor) -> Tensor:
        h = inp
        for w, b, act in zip(ws, bs, acts):
            h = torch.baddbmm(b, h, w)
            if act is not None:
                h = act(h)
        return h.squeeze(-1)

    def mse(pred: Tensor, tgt: Tensor) -> Tensor:  # [k] per-critic mean squared error
        return ((pred - tgt) ** 2).mean(dim=1)

    nan = [float("nan")] * k
    with torch.no_grad():
        before = mse(forward(x), y).tolist() if losses else nan
    params = ws + bs
    opt = torch.optim.Adam(params, lr=lr, fused=True)  # one kernel for all stacked weights
    mb = max(1, min(minibatch_size, n))
    for _ in range(iters):
        perm = torch.randperm(n, generator=generator)
        xp, yp = x[:, perm], y[:, perm]
        for i in range(0, n, mb):
            opt.zero_grad()
            loss = mse(forward(xp[:, i : i + mb]), yp[:, i : i + mb]).sum()
            if l2:
                loss = loss + l2 * sum((p**2).sum() for p in params)
            loss.backward()
            opt.step()
    with torch.no_grad():
        after = mse(forward(x), y).tolist() if losses else nan
        for j in range(k):
            for li, (w, b, _) in enumerate(layers[j]):
                w.copy_(ws[li][j, : w.shape[1]].t())
                b.copy_(bs[li][j, 0])
    return tuple(CriticFitStats(loss_before=before[j], loss_after=after[j]) for j in range(k))


def load_module_states(
    state: Mapping[str, object], modules: Mapping[str, nn.Module], *, what: str
) -> None:
    """Load ``state[name]`` into each of ``modules`` (checkpoint resume).

    Raises ``ValueError`` naming the missing entries of ``state`` or the module whose weights do
    not fit (e.g. a checkpoint written with another network size).
    """
    missing = set(modules) - set(state)
    if missing:
        raise ValueError(f"{what} state lacks {sorted(missing)}")
    for name, module in modules.items():
        try:
            module.load_state_dict(state[name])  # type: ignore[arg-type]
        except RuntimeError as exc:
            raise ValueError(f"{name} weights do not match this config: {' '.join(str(exc).split())}") from None
