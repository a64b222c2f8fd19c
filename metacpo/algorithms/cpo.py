"""CPO (Achiam et al. 2017) on a single task; TRPO is the same step without the cost constraint.

One iteration: sample with the frozen policy/normaliser snapshot -> GAE for reward and cost ->
``g``, ``a``, ``b = J_C - (d - m)`` (``m``: the cost margin, :mod:`metacpo.algorithms.margin`)
-> CPO sub-problem (``metacpo.solvers``) -> backtracking line
search -> fit both critics -> fold the batch's observations into the normaliser.

Non-finite advantages, gradients or steps skip the policy update (parameters untouched); the
stats record why (``update/skipped``) and the algorithm counts such events
(``update/skipped_total``). A dco-solver failure falls back to the analytic backend
(``solver/fallback``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import torch

from metacpo.algorithms.agent import Agent
from metacpo.algorithms.common import (
    CriticFitStats,
    ProcessedBatch,
    RolloutStats,
    advantages_finite,
    surrogate_losses,
)
from metacpo.algorithms.lagrange import LagrangeMultiplier, penalised
from metacpo.algorithms.margin import CostMargin
from metacpo.algorithms.timing import Stopwatch
from metacpo.algorithms.trust_region import (
    LineSearchSettings,
    TrustRegionStats,
    fisher_metric,
    skipped_step,
    surrogate_values,
    trust_region_step,
)
from metacpo.config.schema import TrainConfig, UpdateConfig
from metacpo.data.batch import Batch
from metacpo.data.normalizer import NormalizerState
from metacpo.functional.params import Params, flat_grad
from metacpo.meta.core import StepRule, constraint_b
from metacpo.models.policy import GaussianMLPPolicy
from metacpo.samplers.base import PolicySnapshot, Sampler


def trust_region_update(
    *,
    policy: GaussianMLPPolicy,
    params: Params,
    processed: ProcessedBatch,
    settings: UpdateConfig,
    constrained: bool,
    cost_target: float | None = None,
) -> tuple[Params, TrustRegionStats]:
    """One CPO (``constrained``) or TRPO step from ``params``; returns new detached params.

    ``g = d loss_r / d theta``, ``a = d loss_c / d theta``, ``b = J_C - cost_target``
    (``cost_target``: the cost limit ``d``, or ``d - m`` with CPO's margin; TRPO: None); the metric is
    the damped KL Hessian (``settings.metric == 'fisher'``) or the identity. On any non-finite
    quantity, or when the line search rejects every fraction, ``params`` itself is returned.
    """
    if constrained and cost_target is None:
        raise TypeError("a constrained step needs its cost_target (d, or d - m with a margin)")
    target = math.nan if cost_target is None else cost_target
    b = constraint_b(processed.j_c, target) if constrained else math.nan
    if not advantages_finite(processed):
        return params, skipped_step("non-finite advantages or J_C", b=b)
    leaf = {k: v.detach().requires_grad_(True) for k, v in params.items()}
    loss_r, loss_c = surrogate_losses(policy, leaf, processed)
    # The sub-problem is solved in float64 (the step is cast back to the parameters' dtype).
    g = flat_grad(loss_r, leaf, retain_graph=True).detach().double()
    a = flat_grad(loss_c, leaf).detach().double()
    lr0, lc0 = float(loss_r.detach()), float(loss_c.detach())
    if not (torch.isfinite(g).all() and torch.isfinite(a).all()):
        return params, skipped_step("non-finite gradient", b=b, loss_r=lr0, loss_c=lc0)
    metric = None
    if settings.metric == "fisher":
        metric = fisher_metric(policy, params, [processed], cg_iters=settings.cg_iters, damping=settings.damping)
    return trust_region_step(
        params=params, g=g, a=a, b=b, loss_r=lr0, loss_c=lc0,
        rule=StepRule(delta=settings.delta, constrained=constrained, backend=settings.backend,
                      normalize=settings.normalize_grads),
        metric=metric, metric_kind=settings.metric,  # type: ignore[arg-type]
        line_search=LineSearchSettings(enabled=settings.line_search, backtrack_coef=settings.backtrack_coef,
                                       max_backtracks=settings.max_backtracks, accept_ratio=settings.accept_ratio),
        values=surrogate_values(policy, processed),
    )


@dataclass(frozen=True)
class IterationStats:
    """Everything one CPO/TRPO iteration reports (logged by the training loop only)."""

    rollout: RolloutStats
    update: TrustRegionStats
    critic_r: CriticFitStats
    critic_c: CriticFitStats
    env_steps: int
    skipped_total: int
    fallback_total: int
    behaviour_logp_gap: float
    sample_seconds: float
    update_seconds: float
    margin: float = math.nan
    prediction_error: float = math.nan
    multiplier: float = math.nan
    """TRPO-Lagrangian's lambda for this iteration's step (nan for the other algorithms)."""

    def log_row(self) -> dict[str, float | int | str]:
        """Flat ``group/name`` -> value (one progress.csv row)."""
        r, u = self.rollout, self.update
        return {
            "rollout/env_steps": self.env_steps,
            "rollout/episodes": r.num_episodes,
            "rollout/ep_return_mean": r.ep_return_mean,
            "rollout/ep_return_std": r.ep_return_std,
            "rollout/ep_cost_mean": r.ep_cost_mean,
            "rollout/ep_cost_std": r.ep_cost_std,
            "rollout/ep_len_mean": r.ep_len_mean,
            "rollout/j_c": r.j_c,
            "update/kl": u.kl,
            "update/step_norm": u.step_norm,
            "update/ls_fraction": u.ls_fraction,
            "update/ls_backtracks": u.ls_backtracks,
            "update/loss_r_improvement": u.loss_r_before - u.loss_r_after,
            "update/loss_c_change": u.loss_c_after - u.loss_c_before,
            "update/grad_norm_r": u.grad_norm_r,
            "update/grad_norm_c": u.grad_norm_c,
            "update/skipped": int(u.skipped),
            "update/skipped_total": self.skipped_total,
            "solver/case": u.case,
            "solver/lam": u.lam,
            "solver/nu": u.nu,
            "solver/b": u.b,
            "cost/margin": self.margin,
            "cost/prediction_error": self.prediction_error,
            "solver/fallback": int(u.solver_fallback),
            "solver/fallback_total": self.fallback_total,
            "critic/loss_r": self.critic_r.loss_after,
            "critic/loss_c": self.critic_c.loss_after,
            "time/sample_seconds": self.sample_seconds,
            "time/update_seconds": self.update_seconds,
            # TRPO-Lagrangian only (the other algorithms' columns stay as they were)
            **({"lagrange/lambda": self.multiplier} if math.isfinite(self.multiplier) else {}),
        }

    def summary(self) -> dict[str, str]:
        """Short figures for the progress bar."""
        r = self.rollout
        out = {
            "ret": f"{r.ep_return_mean:.1f}",
            "cost": f"{r.ep_cost_mean:.1f}",
            "J_C": f"{r.j_c:.1f}",
            "case": self.update.case,
        }
        if math.isfinite(self.margin):
            out["margin"] = f"{self.margin:.1f}"
        if math.isfinite(self.multiplier):
            out["lambda"] = f"{self.multiplier:.2f}"
        return out

    def events(self) -> list[str]:
        """Noteworthy events for the log (skips, fallbacks, rejected steps)."""
        out = []
        if self.update.skipped:
            out.append(f"update skipped: {self.update.skip_reason}")
        if self.update.solver_fallback:
            out.append("dco solver failed; fell back to the analytic backend")
        if not self.update.skipped and not self.update.ls_accepted:
            out.append(f"line search rejected every step ({self.update.ls_reason})")
        return out


class TrustRegionAlgorithm:
    """Single-task CPO (``constrained=True``) or TRPO on the :class:`Agent` it owns.

    TRPO with a ``lagrange`` config section is TRPO-Lagrangian (:mod:`metacpo.algorithms.lagrange`):
    each step is a TRPO step on the penalised advantage, after one dual step on the multiplier.

    Follows :class:`metacpo.training.Algorithm`: ``iterate``, ``state_dict``,
    ``load_state_dict``, ``policy_snapshot``.
    """

    def __init__(self, config: TrainConfig, *, sampler: Sampler, constrained: bool, obs_dim: int, act_dim: int) -> None:
        self.config = config
        self.sampler = sampler
        self.constrained = constrained
        self.agent = Agent.build(config, obs_dim=obs_dim, act_dim=act_dim)
        self.env_steps = 0
        self.skipped_total = 0
        self.fallback_total = 0
        # The margin on the cost limit (metacpo.algorithms.margin): algorithms that register a
        # ``margin`` section (single-task CPO); TRPO and multi-task CPO have none.
        margin_cfg = config.extra.get("margin") if constrained else None
        self.margin: CostMargin | None = CostMargin(margin_cfg) if margin_cfg is not None else None
        # TRPO-Lagrangian's multiplier (algorithms that register a ``lagrange`` section)
        lagrange_cfg = None if constrained else config.extra.get("lagrange")
        self.lagrange = LagrangeMultiplier(lagrange_cfg) if lagrange_cfg is not None else None

    # -- the Algorithm protocol ---------------------------------------------------------------
    def policy_snapshot(self, *, deterministic: bool = False) -> PolicySnapshot:
        return self.agent.snapshot(self.agent.obs_norm_state(), deterministic=deterministic)

    def iterate(self, iteration: int) -> IterationStats:
        clock = Stopwatch()
        obs_norm = self.agent.obs_norm_state()  # frozen for this iteration
        with clock("sample"):
            (batch,) = self.sampler.sample(snapshot=self.agent.snapshot(obs_norm),
                                           num_steps=self.config.sampler.steps_per_iter)
        with clock("update"):
            stats = self._update(batch, obs_norm)
        return replace(stats, sample_seconds=clock.seconds["sample"], update_seconds=clock.seconds["update"])

    def _update(self, batch: Batch, obs_norm: NormalizerState) -> IterationStats:
        """Policy step, critic fit and normaliser update on the iteration's batch (timing: nan)."""
        cfg, agent = self.config, self.agent
        params = {k: v.detach().clone() for k, v in agent.policy.named_parameters()}
        processed = agent.process(batch, params=params, obs_norm=obs_norm,
                                  time_limit=getattr(self.sampler, "episode_steps", None))
        d, margin = cfg.constraint.cost_limit, math.nan
        if self.margin is not None:
            self.margin.observe(processed.j_c, cost_limit=d)
            margin = self.margin.margin(d)
        step_batch, multiplier = processed, math.nan
        if self.lagrange is not None:
            multiplier = self.lagrange.observe(processed.j_c, cost_limit=d)
            step_batch = penalised(processed, multiplier)
        new_params, ustats = trust_region_update(
            policy=agent.policy, params=params, processed=step_batch, settings=cfg.update, constrained=self.constrained,
            cost_target=d if self.margin is None else d - margin,  # b = J_C - (d - m)
        )
        if self.margin is not None:
            self.margin.predict(processed.j_c, ustats.loss_c_after - ustats.loss_c_before)
        if ustats.skipped:
            self.skipped_total += 1
        if ustats.solver_fallback:
            self.fallback_total += 1
        if new_params is not params:
            agent.write_params(new_params)
        cr, cc = agent.fit_critics([processed], iters=cfg.critic.iters)
        agent.observe([batch])
        self.env_steps += len(batch)
        return IterationStats(
            rollout=processed.rollout, update=ustats, critic_r=cr, critic_c=cc, env_steps=self.env_steps,
            skipped_total=self.skipped_total, fallback_total=self.fallback_total,
            behaviour_logp_gap=processed.behaviour_logp_gap,
            sample_seconds=math.nan, update_seconds=math.nan,
            margin=margin, prediction_error=self.margin.last_error if self.margin is not None else math.nan,
            multiplier=multiplier,
        )

    def state_dict(self) -> dict[str, Any]:
        return {
            **self.agent.state_dict(),
            "counters": {"env_steps": self.env_steps, "skipped_total": self.skipped_total,
                         "fallback_total": self.fallback_total},
            "sampler": self.sampler.state_dict(),
            **({"cost_margin": self.margin.state_dict()} if self.margin is not None else {}),
            **({"lagrange": self.lagrange.state_dict()} if self.lagrange is not None else {}),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        missing = {*Agent.STATE_KEYS, "counters", "sampler"} - set(state)
        if missing:
            raise ValueError(f"algorithm state lacks {sorted(missing)}")
        self.agent.load_state_dict(state, what="algorithm")
        c = state["counters"]
        self.env_steps, self.skipped_total, self.fallback_total = (
            int(c["env_steps"]), int(c["skipped_total"]), int(c["fallback_total"])
        )
        self.sampler.load_state_dict(state["sampler"])
        if self.margin is not None:
            if "cost_margin" not in state:
                raise ValueError("algorithm state lacks ['cost_margin'] (CPO checkpoints keep the cost margin)")
            self.margin.load_state_dict(state["cost_margin"])
        if self.lagrange is not None:
            if "lagrange" not in state:
                raise ValueError("algorithm state lacks ['lagrange'] (TRPO-Lagrangian checkpoints keep the multiplier)")
            self.lagrange.load_state_dict(state["lagrange"])


def build_cpo(config: TrainConfig, *, sampler: Sampler, obs_dim: int, act_dim: int) -> TrustRegionAlgorithm:
    return TrustRegionAlgorithm(config, sampler=sampler, constrained=True, obs_dim=obs_dim, act_dim=act_dim)

