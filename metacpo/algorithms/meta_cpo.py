"""Meta-CPO (CPO steps inside MAML, differentiated end to end) and Meta-TRPO (the same loop
with TRPO steps and no cost constraint).

One meta-iteration (see docs/meta.md):

1. draw ``meta_batch_size`` tasks (level 1 by default; or a fixed set drawn once; optionally
   the level-0 task in place of the last one);
2. sample ``D_i`` with ``pi_theta`` for every task in ONE sampler call; take ``inner_steps``
   differentiable CPO steps ``theta'_i = theta + Delta(g_i, a_i, b_i; inner_delta)``, each on
   fresh samples from the current adapted policies (one sampler round per step), the graph
   kept on the driver (workers only see detached snapshots);
3. sample ``D'_i`` with ``pi_theta'_i``; ``G``, ``A`` by one backward pass per outer loss through
   the adaptation; ``B = mean_i J_C(theta'_i) - d``;
4. ``theta <- theta + Delta(G, A, B; outer_delta)`` (optionally projected onto
   ``{s : A s + B <= 0}``), with a backtracking line search on the post-adaptation surrogates
   (re-adapting from each candidate on the recorded inner data).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from metacpo.algorithms.agent import Agent
from metacpo.algorithms.common import (
    ProcessedBatch,
    advantages_finite,
    fisher_at_params,
    mean_kl,
    surrogate_losses,
)
from metacpo.algorithms.meta_config import MetaConfig
from metacpo.algorithms.timing import Stopwatch
from metacpo.algorithms.trust_region import (
    LineSearchSettings,
    TrustRegionStats,
    fisher_metric,
    skipped_step,
    trust_region_step,
)
from metacpo.config.schema import ConstraintConfig, TrainConfig, UpdateConfig
from metacpo.data.batch import Batch
from metacpo.data.normalizer import NormalizerState
from metacpo.functional.params import Params, params_of
from metacpo.meta.core import (
    InnerStepStats,
    MetaGradient,
    MetricFn,
    StepRule,
    Surrogates,
    inner_step,
    meta_gradient,
    meta_parameters,
    post_adaptation_values,
)
from metacpo.models.policy import GaussianMLPPolicy
from metacpo.samplers.base import PolicySnapshot, Sampler


@dataclass(frozen=True)
class MetaIterationStats:
    """Everything one meta-iteration did (logged by the training loop under ``group/name``).

    ``pre_*``: episodes sampled with ``pi_theta`` (before adaptation); ``post_*``: episodes
    sampled with the adapted policies ``pi_theta'_i``. ``*_mean/min/max`` are over the tasks of
    the meta-batch (each task's value is its mean episode return/cost).
    """

    env_steps: int
    """Environment steps so far (cumulative)."""
    iter_env_steps: int
    """Environment steps of this meta-iteration (all tasks, all sampling rounds)."""
    pre_return: tuple[float, float, float]
    pre_cost: tuple[float, float, float]
    post_return: tuple[float, float, float]
    post_cost: tuple[float, float, float]
    pre_j_c: float
    """Mean over tasks of J_C of the pre-adaptation batches."""
    post_j_c: float
    """Mean over tasks of J_C after adaptation (B + d)."""
    cost_limit: float
    """The (possibly annealed) cost limit d of this iteration."""
    inner_cost_target: float
    """What the inner steps aimed at: ``d - m`` (meta.inner_cost_margin/fraction; nan for Meta-TRPO)."""
    inner_b: float
    """Mean over the inner steps of ``b = J_C - (d - m)`` (nan for Meta-TRPO)."""
    inner_case_counts: tuple[int, int, int]
    """How many inner steps were unconstrained / active / recovery."""
    inner_step_norm: float
    g_norm: float
    a_norm: float
    B: float
    outer: TrustRegionStats
    """The meta-step ``theta <- theta + Delta(G, A, B; outer_delta)`` (``skipped`` when no
    meta-gradient was formed)."""
    skipped: bool
    skip_reason: str
    skipped_total: int
    fallback_total: int
    """Solves (inner and outer) where the dco backend failed and the analytic one was used."""
    sample_seconds: float
    inner_seconds: float
    meta_grad_seconds: float
    outer_seconds: float
    critic_seconds: float

    def log_row(self) -> dict[str, float | int | str]:
        """Flat ``group/name`` -> value (one progress.csv row; same keys every iteration)."""
        row: dict[str, float | int | str] = {
            "rollout/env_steps": self.env_steps,
            "rollout/iter_env_steps": self.iter_env_steps,
            # the common rollout/* columns hold the post-adaptation figures (what meta-training optimises)
            "rollout/ep_return_mean": self.post_return[0],
            "rollout/ep_cost_mean": self.post_cost[0],
            "rollout/j_c": self.post_j_c,
        }
        for name in ("pre_return", "pre_cost", "post_return", "post_cost"):
            m, lo, hi = getattr(self, name)
            key = name.replace("return", "ep_return").replace("cost", "ep_cost")
            row[f"meta/{key}_mean"] = m
            row[f"meta/{key}_min"] = lo
            row[f"meta/{key}_max"] = hi
        row.update({
            "meta/pre_j_c": self.pre_j_c,
            "meta/post_j_c": self.post_j_c,
            "meta/cost_limit": self.cost_limit,
            "inner/cost_target": self.inner_cost_target,
            "inner/b": self.inner_b,
            "inner/unconstrained": self.inner_case_counts[0],
            "inner/active": self.inner_case_counts[1],
            "inner/recovery": self.inner_case_counts[2],
            "inner/step_norm": self.inner_step_norm,
            "outer/G_norm": self.g_norm,
            "outer/A_norm": self.a_norm,
            "outer/B": self.B,
            "solver/case": self.outer.case,
            "solver/lam": self.outer.lam,
            "solver/nu": self.outer.nu,
            "outer/step_norm": self.outer.step_norm,
            "outer/projected": int(self.outer.projected),
            "outer/ls_fraction": self.outer.ls_fraction,
            "outer/ls_accepted": int(self.outer.ls_accepted),
            "update/skipped": int(self.skipped),
            "update/skipped_total": self.skipped_total,
            "solver/fallback_total": self.fallback_total,
            "time/sample_seconds": self.sample_seconds,
            "time/inner_seconds": self.inner_seconds,
            "time/meta_grad_seconds": self.meta_grad_seconds,
            "time/outer_seconds": self.outer_seconds,
            "time/critic_seconds": self.critic_seconds,
        })
        return row

    def summary(self) -> dict[str, str]:
        """Short figures for the progress bar."""
        return {
            "ret": f"{self.pre_return[0]:.1f}->{self.post_return[0]:.1f}",
            "cost": f"{self.pre_cost[0]:.1f}->{self.post_cost[0]:.1f}",
            "J_C'": f"{self.post_j_c:.1f}",
            "case": self.outer.case,
        }

    def events(self) -> list[str]:
        """Skipped updates and rejected meta-steps."""
        out = []
        if self.skipped:
            out.append(f"meta-update skipped: {self.skip_reason}")
        elif not self.outer.ls_accepted:
            out.append(f"meta line search rejected every step ({self.outer.ls_reason})")
        return out


def _spread(x: Sequence[float]) -> tuple[float, float, float]:
    a = np.asarray([v for v in x if math.isfinite(v)], dtype=np.float64)
    if a.size == 0:
        return math.nan, math.nan, math.nan
    return float(a.mean()), float(a.min()), float(a.max())


def _ep_mean(x: np.ndarray) -> float:
    return float(np.mean(x)) if len(x) else math.nan


def surrogate_objective(policy: GaussianMLPPolicy):
    """The importance-ratio surrogates of :mod:`metacpo.algorithms.common` as an Objective.

    ``loss_r = -mean(ratio A_r)``, ``loss_c = cost_scale mean(ratio A_c)`` with per-timestep
    ratios ``pi_params(a|s) / pi_behaviour(a|s)``; their Hessians are the low-variance curvature
    (LVC) estimates of ProMP. ``j_c`` is the first-order estimate of J_C at ``params``.
    """

    def objective(params: Params, data: ProcessedBatch) -> Surrogates:
        loss_r, loss_c = surrogate_losses(policy, params, data)
        # J_C(params) ~= J_C(behaviour) + L_C(params) - L_C(behaviour): the batch's estimate in
        # value at the behaviour parameters, with gradient a. Differentiating b = J_C - d through
        # the inner steps therefore includes db/dtheta (the constraint's own dependence on theta).
        old_c = data.cost_scale * data.adv_c.mean()  # L_C at the behaviour parameters (ratio = 1)
        j_c = data.j_c + (loss_c - old_c)
        return Surrogates(loss_r=loss_r, loss_c=loss_c, j_c=j_c)

    return objective


def inner_fisher_metric_fn(policy: GaussianMLPPolicy, *, cg_iters: int, damping: float, exact: bool,
                           cg_tol: float = 1e-10) -> MetricFn:
    """The inner steps' Fisher metric ``H = F + damping I`` built at the step's parameters.

    ``exact=False`` (``meta.fisher_exact=false``): the KL Hessian w.r.t. the batch's behaviour
    policy at ``params`` (the Fisher when they coincide, as in the sampling loop), a constant on
    the meta-gradient path. ``exact=True``: the Fisher of ``pi_params`` itself
    (:func:`fisher_at_params`) in an :class:`~metacpo.solvers.ExactFisherMetric`, whose solves
    are differentiated through ``H``'s dependence on ``params`` too.
    """
    from metacpo.solvers import ExactFisherMetric, FisherMetric

    def metric_fn(params: Params, data: ProcessedBatch) -> Any:
        if not exact:
            return fisher_metric(policy, params, [data], cg_iters=cg_iters, damping=damping, cg_tol=cg_tol)
        base = FisherMetric(hvp=fisher_at_params(policy, params, data, keep_graph=False), cg_iters=cg_iters,
                            damping=damping, cg_tol=cg_tol)
        return ExactFisherMetric(base=base, hvp_graph=fisher_at_params(policy, params, data, keep_graph=True))

    return metric_fn


@dataclass
class _MetaBatchData:
    """What one meta-iteration has collected so far (filled while it runs).

    ``batches``/``processed``: every batch in sampling order (the normaliser and the critics are
    fitted on all of them); ``inner_data[i]``: task ``i``'s processed inner-round batches (the
    outer line search re-adapts on them); ``post``: the post-update batches ``D'_i``;
    ``post_batches`` stays None until the post-update round was sampled.
    """

    inner_data: list[list[ProcessedBatch]]
    batches: list[Batch] = field(default_factory=list)
    processed: list[ProcessedBatch] = field(default_factory=list)
    pre_batches: list[Batch] = field(default_factory=list)
    post_batches: list[Batch] | None = None
    post: list[ProcessedBatch] = field(default_factory=list)
    steps: list[InnerStepStats] = field(default_factory=list)

    def add_round(self, batches: list[Batch], *, post: bool = False) -> None:
        if not self.batches:
            self.pre_batches = batches
        self.batches.extend(batches)
        if post:
            self.post_batches = batches

    def add_inner(self, task: int, processed: ProcessedBatch) -> None:
        self.processed.append(processed)
        self.inner_data[task].append(processed)

    def add_post(self, post: list[ProcessedBatch]) -> None:
        self.post = post
        self.processed.extend(post)

    @property
    def pre_processed(self) -> list[ProcessedBatch]:
        """The batches sampled with theta, processed (the first inner round; the post-update round
        when there are no inner steps)."""
        return [d[0] for d in self.inner_data if d] if any(self.inner_data) else self.post


def _task_to_state(task: Any) -> dict[str, Any]:
    return {"type": type(task).__name__, "params": dict(task.as_dict())} if task is not None else {}


class MetaLearner:
    """The meta-learning loop: Meta-CPO when ``constrained``, Meta-TRPO otherwise.

    Components come in as constructor arguments: the :class:`Agent` (policy, whose parameters
    are theta, reward/cost critics, running observation normaliser, critic-minibatch generator),
    the sampler, the task distribution (``.sample(rng) -> task``) and, for ``include_level0``,
    the level-0 task. ``rng`` draws the tasks (seeded from the run seed by :func:`build_meta`,
    as is the agent). Follows :class:`metacpo.training.Algorithm`.
    """

    def __init__(
        self,
        *,
        agent: Agent,
        sampler: Sampler,
        task_distribution: Any,
        level0_task: Any = None,
        meta: MetaConfig,
        update: UpdateConfig,
        constraint: ConstraintConfig,
        steps_per_task: int,
        rng: np.random.Generator,
        constrained: bool = True,
    ) -> None:
        if meta.include_level0 and level0_task is None:
            raise ValueError("meta.include_level0 needs the level-0 task (level0_task)")
        if steps_per_task < 1:
            raise ValueError(f"steps_per_task must be >= 1, got {steps_per_task}")
        self.agent = agent
        self.sampler = sampler
        self.task_distribution = task_distribution
        self.level0_task = level0_task
        self.meta = meta
        self.update_cfg = update
        self.constraint = constraint
        self.steps_per_task = steps_per_task
        self.rng = rng
        self.constrained = constrained
        self.iteration = 0
        self.env_steps = 0
        self.skipped_total = 0
        self.fallback_total = 0
        self._fixed: list[Any] | None = None
        self.objective = surrogate_objective(agent.policy)
        self.inner_rule = StepRule(delta=meta.inner_delta, constrained=constrained, backend=meta.backend,
                                   normalize=meta.normalize_grads)
        self.outer_rule = StepRule(delta=meta.outer_delta, constrained=constrained, backend=meta.backend,
                                   normalize=meta.normalize_grads)
        self.metric_fn: MetricFn | None = None
        if meta.metric == "fisher":
            self.metric_fn = inner_fisher_metric_fn(agent.policy, cg_iters=update.cg_iters, damping=update.damping,
                                                    exact=meta.fisher_exact)

    # ------------------------------------------------------------------ protocol bits
    def policy_snapshot(self, *, deterministic: bool = False) -> PolicySnapshot:
        return self.agent.snapshot(self.agent.obs_norm_state(), deterministic=deterministic)

    # ------------------------------------------------------------------ tasks and limits
    def cost_limit(self, iteration: int | None = None) -> float:
        """The cost limit d at ``iteration`` (annealed linearly when configured)."""
        it = self.iteration if iteration is None else iteration
        d = self.constraint.cost_limit
        start = self.meta.anneal_cost_limit_from
        if start is None or self.meta.anneal_iters == 0:
            return d
        frac = min(1.0, it / self.meta.anneal_iters)
        return start + frac * (d - start)

    def draw_tasks(self) -> list[Any]:
        """This meta-iteration's tasks (from ``rng``; a fixed set if configured)."""
        n = self.meta.meta_batch_size
        if self.meta.fixed_tasks:
            if self._fixed is None:
                self._fixed = [self.task_distribution.sample(self.rng) for _ in range(n)]
            tasks = list(self._fixed)
        else:
            tasks = [self.task_distribution.sample(self.rng) for _ in range(n)]
        if self.meta.include_level0:
            tasks[-1] = self.level0_task
        return tasks

    # ------------------------------------------------------------------ one meta-iteration
    def iterate(self, iteration: int | None = None) -> MetaIterationStats:
        """One meta-iteration (docs/meta.md's algorithm box); updates policy, critics and normaliser.

        A non-finite advantage, inner step or meta-gradient skips the meta-update (``update/skipped``);
        figures of a round that was never sampled (the post-update round) are NaN.
        """
        if iteration is not None:
            self.iteration = iteration
        meta, d = self.meta, self.cost_limit()
        norm = self.agent.obs_norm_state()  # frozen for the whole meta-iteration
        tasks = self.draw_tasks()
        clock = Stopwatch()
        theta = meta_parameters(params_of(self.agent.policy))
        data = _MetaBatchData(inner_data=[[] for _ in tasks])
        adapted: list[Params] = [dict(theta) for _ in tasks]
        mg: MetaGradient | None = None
        skip_reason = ""
        try:
            for k in range(meta.inner_steps):  # sample with theta'_i, then one differentiable step per task
                with clock("sample"):
                    batches = self._sample_round(adapted if k > 0 else None, tasks, norm)
                data.add_round(batches)
                with clock("inner"):
                    adapted = [self._inner_step(data, i, b, adapted[i], norm, d=d) for i, b in enumerate(batches)]
            with clock("sample"):  # D'_i, sampled with the adapted policies
                post_batches = self._sample_round(adapted if meta.inner_steps > 0 else None, tasks, norm)
            data.add_round(batches=post_batches, post=True)
            with clock("inner"):
                post = [self._process(b, p, norm) for b, p in zip(post_batches, adapted, strict=True)]
            data.add_post(post)
            with clock("meta_grad"):  # G, A, B through the adaptation
                mg = meta_gradient(theta, adapted, post, objective=self.objective, cost_limit=d,
                                   with_cost=self.constrained)
            if not (torch.isfinite(mg.G).all() and torch.isfinite(mg.A).all() and math.isfinite(mg.B)):
                raise FloatingPointError("non-finite meta-gradient")
        except FloatingPointError as exc:
            skip_reason, mg = str(exc), None
        del adapted  # release the adaptation graphs
        with clock("outer"):
            outer = self._outer_step(theta, mg, data, d=d) if mg is not None else skipped_step(skip_reason)
        skip_reason = skip_reason or outer.skip_reason
        with clock("critic"):
            self._fit_critics(data.processed)
            self.agent.observe(data.batches)
        return self._finish(data, mg=mg, outer=outer, d=d, skip_reason=skip_reason, seconds=clock.seconds)

    def _sample_round(self, adapted: Sequence[Params] | None, tasks: Sequence[Any],
                      norm: NormalizerState) -> list[Batch]:
        """One batch per task in ONE sampler call: task ``i`` with ``adapted[i]``, or all with theta
        (the policy's own parameters, one shared snapshot) when ``adapted`` is None."""
        if adapted is None:
            snaps = [self.agent.snapshot(norm)] * len(tasks)
        else:
            snaps = [self.agent.snapshot(norm, params=p) for p in adapted]
        return self.sampler.sample(snapshot=snaps, num_steps=self.steps_per_task, tasks=list(tasks))

    def _process(self, batch: Batch, params: Params, norm: NormalizerState) -> ProcessedBatch:
        p = self.agent.process(batch, params=params, obs_norm=norm,
                               time_limit=getattr(self.sampler, "episode_steps", None))
        if not advantages_finite(p):
            raise FloatingPointError("non-finite advantages, critic targets or J_C")
        return p

    def _inner_step(self, data: _MetaBatchData, task: int, batch: Batch, params: Params, norm: NormalizerState,
                    *, d: float) -> Params:
        """``theta'_i <- theta'_i + Delta(g_i, a_i, b_i; inner_delta)`` on task ``task``'s new batch."""
        proc = self._process(batch, params, norm)
        data.add_inner(task, proc)
        new, st = inner_step(params, proc, objective=self.objective, rule=self.inner_rule,
                             cost_limit=self.meta.inner_cost_target(d), second_order=not self.meta.first_order,
                             metric_fn=self.metric_fn)
        data.steps.append(st)
        return new

    # ------------------------------------------------------------------ meta-update
    def _post_values(self, params: Params, data: _MetaBatchData, *, d: float) -> tuple[float, float]:
        """Task-mean post-adaptation (L_R, L_C) when starting from ``params``."""
        if self.meta.inner_steps > 0:
            r, c, _ = post_adaptation_values(params, data.inner_data, data.post, objective=self.objective,
                                             rule=self.inner_rule, cost_limit=self.meta.inner_cost_target(d),
                                             metric_fn=self.metric_fn)
            return r, c
        with torch.no_grad():
            vals = [self.objective(params, p) for p in data.post]
        return float(np.mean([float(v.loss_r) for v in vals])), float(np.mean([float(v.loss_c) for v in vals]))

    def _outer_step(self, theta: Params, mg: MetaGradient, data: _MetaBatchData, *, d: float) -> TrustRegionStats:
        """``theta <- theta + Delta(G, A, B; outer_delta)``, line-searched on the re-adapted surrogates."""
        meta = self.meta
        pre = data.pre_processed
        metric = None
        if meta.metric == "fisher":
            metric = fisher_metric(self.agent.policy, theta, pre, cg_iters=self.update_cfg.cg_iters,
                                   damping=self.update_cfg.damping)

        def values(cand: Params) -> tuple[float, float, float]:
            r, c = self._post_values(cand, data, d=d)
            with torch.no_grad():
                kl = float(np.mean([float(mean_kl(self.agent.policy, cand, p)) for p in pre]))
            return r, c, kl

        base = {k: v.detach() for k, v in theta.items()}
        new, stats = trust_region_step(
            params=base, g=mg.G, a=mg.A, b=mg.B, loss_r=mg.loss_r, loss_c=mg.loss_c, rule=self.outer_rule,
            metric=metric, metric_kind=meta.metric,  # type: ignore[arg-type]
            line_search=LineSearchSettings(enabled=meta.line_search, backtrack_coef=meta.backtrack_coef,
                                           max_backtracks=meta.max_backtracks, accept_ratio=meta.accept_ratio),
            values=values, project=meta.project_meta_step,
        )
        if new is not base:
            self.agent.write_params(new)
        return stats

    def _finish(self, data: _MetaBatchData, *, mg: MetaGradient | None, outer: TrustRegionStats, d: float,
                skip_reason: str, seconds: Mapping[str, float]) -> MetaIterationStats:
        """Counters forward, and the iteration's stats record."""
        self.fallback_total += sum(int(st.fell_back) for st in data.steps) + int(outer.solver_fallback)
        self.skipped_total += int(bool(skip_reason))
        self.iteration += 1
        steps = int(sum(len(b) for b in data.batches))
        self.env_steps += steps
        nan = math.nan
        inner_bs = [st.b for st in data.steps]
        norms = [st.step_norm for st in data.steps]
        post = data.post_batches
        pre_jc = [p.j_c for p in data.pre_processed]
        return MetaIterationStats(
            env_steps=self.env_steps, iter_env_steps=steps,
            pre_return=_spread([_ep_mean(b.episode_returns) for b in data.pre_batches]),
            pre_cost=_spread([_ep_mean(b.episode_costs) for b in data.pre_batches]),
            post_return=_spread([_ep_mean(b.episode_returns) for b in post] if post is not None else [nan]),
            post_cost=_spread([_ep_mean(b.episode_costs) for b in post] if post is not None else [nan]),
            pre_j_c=float(np.mean(pre_jc)) if pre_jc else nan,
            post_j_c=mg.j_c if mg is not None else nan,
            cost_limit=d,
            inner_cost_target=self.meta.inner_cost_target(d) if self.constrained else nan,
            inner_b=float(np.mean(inner_bs)) if inner_bs and self.constrained else nan,
            inner_case_counts=tuple(sum(st.case == c for st in data.steps) for c in range(3)),  # type: ignore[arg-type]
            inner_step_norm=float(np.mean(norms)) if norms else 0.0,
            g_norm=float(mg.G.norm()) if mg is not None else nan,
            a_norm=float(mg.A.norm()) if mg is not None else nan,
            B=mg.B if mg is not None else nan,
            outer=outer, skipped=bool(skip_reason), skip_reason=skip_reason, skipped_total=self.skipped_total,
            fallback_total=self.fallback_total, sample_seconds=seconds["sample"], inner_seconds=seconds["inner"],
            meta_grad_seconds=seconds["meta_grad"], outer_seconds=seconds["outer"], critic_seconds=seconds["critic"],
        )

    # ------------------------------------------------------------------ critics, state
    def _fit_critics(self, processed: list[ProcessedBatch]) -> None:
        if processed:
            lbfgs = self.agent.critic.optimizer == "lbfgs"
            # the losses are not logged: not evaluated (two forwards over 36,000 samples by default)
            self.agent.fit_critics(processed, iters=self.meta.critic_epochs * (5 if lbfgs else 1), losses=False)

    def state_dict(self) -> dict[str, Any]:
        """Modules, normaliser, generators, counters, sampler and (if any) the fixed task set."""
        return {
            **self.agent.state_dict(),
            "task_rng": self.rng.bit_generator.state,
            "counters": {"iteration": self.iteration, "env_steps": self.env_steps,
                         "skipped_total": self.skipped_total, "fallback_total": self.fallback_total},
            "fixed_tasks": [_task_to_state(t) for t in self._fixed] if self._fixed is not None else [],
            "sampler": self.sampler.state_dict(),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        missing = {*Agent.STATE_KEYS, "task_rng", "counters", "fixed_tasks", "sampler"} - set(state)
        if missing:
            raise ValueError(f"meta-learner state lacks {sorted(missing)}")
        self.agent.load_state_dict(state, what="meta-learner")
        self.rng.bit_generator.state = state["task_rng"]
        c = state["counters"]
        self.iteration, self.env_steps, self.skipped_total, self.fallback_total = (
            int(c["iteration"]), int(c["env_steps"]), int(c["skipped_total"]), int(c["fallback_total"]))
        if state["fixed_tasks"]:
            cls = type(self.task_distribution.sample(np.random.default_rng(0)))
            self._fixed = [cls(**t["params"]) for t in state["fixed_tasks"]]
        self.sampler.load_state_dict(state["sampler"])


# ---------------------------------------------------------------------------------------------
# Builders and registration
# ---------------------------------------------------------------------------------------------
def task_distributions(env_id: str, level: int) -> tuple[Any, Any]:
    """(distribution of ``level``, the level-0 task) of the task family of ``env_id``."""
    from metacpo.tasks import get_distribution, parse_env_id

    try:
        _, family, _ = parse_env_id(env_id)
    except ValueError as exc:
        raise ValueError(f"meta-learning needs one of metacpo's task-family env ids "
                         f"(e.g. SafetyPointStcircle1-v0): {exc}") from None
    dist = get_distribution(family, level)
    level0 = get_distribution(family, 0).sample(np.random.default_rng(0))
    return dist, level0


def build_meta(config: TrainConfig, *, sampler: Sampler, obs_dim: int, act_dim: int,
               constrained: bool) -> MetaLearner:
    """A :class:`MetaLearner` for ``config`` (its ``meta`` section) with seeded components."""
    meta: MetaConfig = config.section("meta")
    dist, level0 = task_distributions(config.env.env_id, meta.task_level)
    agent = Agent.build(config, obs_dim=obs_dim, act_dim=act_dim)
    if meta.backend == "dco":
        from metacpo.solvers.dco import DCO_MAX_PARAMS

        n = sum(p.numel() for p in agent.policy.parameters())
        if n > DCO_MAX_PARAMS:
            raise ValueError(f"meta.backend 'dco' supports policies of at most {DCO_MAX_PARAMS} parameters; "
                             f"this policy has {n} (use meta.backend=analytic or a smaller policy.hidden)")
    return MetaLearner(
        agent=agent, sampler=sampler, task_distribution=dist, level0_task=level0,
        meta=meta, update=config.update, constraint=config.constraint, steps_per_task=config.sampler.steps_per_iter,
        rng=np.random.default_rng([config.run.seed, 20240]),
        constrained=constrained,
    )


def build_meta_cpo(config: TrainConfig, *, sampler: Sampler, obs_dim: int, act_dim: int) -> MetaLearner:
    return build_meta(config, sampler=sampler, obs_dim=obs_dim, act_dim=act_dim, constrained=True)


def build_meta_trpo(config: TrainConfig, *, sampler: Sampler, obs_dim: int, act_dim: int) -> MetaLearner:
    return build_meta(config, sampler=sampler, obs_dim=obs_dim, act_dim=act_dim, constrained=False)

