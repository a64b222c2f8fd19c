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
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from metacpo.algorithms.common import (
    Evaluation,
    ProcessedBatch,
    advantages_finite,
    backtracking_line_search,
    build_modules,
    fisher_at_params,
    fisher_vector_product,
    fit_critics,
    load_module_states,
    mean_kl,
    process_batch,
    surrogate_losses,
)
from metacpo.algorithms.meta_config import MetaConfig
from metacpo.config.schema import AdvantageConfig, CriticConfig, TrainConfig, UpdateConfig
from metacpo.data.batch import Batch
from metacpo.data.normalizer import NormalizerState, RunningNormalizer
from metacpo.functional.params import Params, add_flat, params_of
from metacpo.meta.core import (
    MetricFn,
    StepRule,
    Surrogates,
    adapt_step,
    meta_gradient,
    meta_parameters,
    post_adaptation_values,
    project_onto_halfspace,
    solve_step,
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
    outer_case: str
    lam: float
    nu: float
    step_norm: float
    """Norm of the accepted meta-step (fraction x full step)."""
    projected: bool
    ls_fraction: float
    ls_accepted: bool
    ls_reason: str
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
            "solver/case": self.outer_case,
            "solver/lam": self.lam,
            "solver/nu": self.nu,
            "outer/step_norm": self.step_norm,
            "outer/projected": int(self.projected),
            "outer/ls_fraction": self.ls_fraction,
            "outer/ls_accepted": int(self.ls_accepted),
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
            "case": self.outer_case,
        }

    def events(self) -> list[str]:
        """Skipped updates and rejected meta-steps."""
        out = []
        if self.skipped:
            out.append(f"meta-update skipped: {self.skip_reason}")
        elif not self.ls_accepted:
            out.append(f"meta line search rejected every step ({self.ls_reason})")
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
            return FisherMetric(hvp=fisher_vector_product(policy, params, data), cg_iters=cg_iters,
                                damping=damping, cg_tol=cg_tol)
        base = FisherMetric(hvp=fisher_at_params(policy, params, data, keep_graph=False), cg_iters=cg_iters,
                            damping=damping, cg_tol=cg_tol)
        return ExactFisherMetric(base=base, hvp_graph=fisher_at_params(policy, params, data, keep_graph=True))

    return metric_fn


def _task_to_state(task: Any) -> dict[str, Any]:
    return {"type": type(task).__name__, "params": dict(task.as_dict())} if task is not None else {}


class MetaLearner:
    """The meta-learning loop: Meta-CPO when ``constrained``, Meta-TRPO otherwise.

    Components come in as constructor arguments: the policy (whose parameters are theta),
    reward/cost critics, the running observation normaliser, the sampler, the task distribution
    (``.sample(rng) -> task``) and, for ``include_level0``, the level-0 task. Randomness: ``rng``
    draws the tasks; ``torch_gen`` shuffles critic minibatches (both seeded from the run seed
    by :func:`build_meta`). Follows :class:`metacpo.training.Algorithm`.
    """

    def __init__(
        self,
        *,
        policy: GaussianMLPPolicy,
        critic_r: nn.Module,
        critic_c: nn.Module,
        normalizer: RunningNormalizer,
        sampler: Sampler,
        task_distribution: Any,
        level0_task: Any = None,
        meta: MetaConfig,
        advantage: AdvantageConfig,
        critic: CriticConfig,
        update: UpdateConfig,
        steps_per_task: int,
        rng: np.random.Generator,
        torch_gen: torch.Generator,
        constrained: bool = True,
    ) -> None:
        if meta.include_level0 and level0_task is None:
            raise ValueError("meta.include_level0 needs the level-0 task (level0_task)")
        if steps_per_task < 1:
            raise ValueError(f"steps_per_task must be >= 1, got {steps_per_task}")
        self.policy = policy
        self.critic_r = critic_r
        self.critic_c = critic_c
        self.normalizer = normalizer
        self.sampler = sampler
        self.task_distribution = task_distribution
        self.level0_task = level0_task
        self.meta = meta
        self.advantage = advantage
        self.critic_cfg = critic
        self.update_cfg = update
        self.steps_per_task = steps_per_task
        self.rng = rng
        self.torch_gen = torch_gen
        self.constrained = constrained
        self.iteration = 0
        self.env_steps = 0
        self.skipped_total = 0
        self.fallback_total = 0
        self._fixed: list[Any] | None = None
        self.objective = surrogate_objective(policy)
        self.inner_rule = StepRule(delta=meta.inner_delta, constrained=constrained, backend=meta.backend,
                                   normalize=meta.normalize_grads)
        self.outer_rule = StepRule(delta=meta.outer_delta, constrained=constrained, backend=meta.backend,
                                   normalize=meta.normalize_grads)
        self.metric_fn: MetricFn | None = None
        if meta.metric == "fisher":
            self.metric_fn = inner_fisher_metric_fn(policy, cg_iters=update.cg_iters, damping=update.damping,
                                                    exact=meta.fisher_exact)

    # ------------------------------------------------------------------ protocol bits
    def obs_norm_state(self) -> NormalizerState:
        if not self.advantage.obs_normalize:
            return NormalizerState.identity(self.policy.spec.obs_dim)
        return self.normalizer.state()

    def policy_snapshot(self, *, deterministic: bool = False) -> PolicySnapshot:
        return PolicySnapshot.from_policy(self.policy, self.obs_norm_state(), deterministic=deterministic)

    # ------------------------------------------------------------------ tasks and limits
    def cost_limit(self, iteration: int | None = None) -> float:
        """The cost limit d at ``iteration`` (annealed linearly when configured)."""
        it = self.iteration if iteration is None else iteration
        d = self.update_cfg.cost_limit
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

    # ------------------------------------------------------------------ sampling
    def _sample(self, snapshots: Sequence[PolicySnapshot], tasks: Sequence[Any]) -> list[Batch]:
        """One batch per task, task ``i`` sampled with ``snapshots[i]``, in ONE sampler call.

        Pre-adaptation all tasks share theta's snapshot; after each inner step every task has
        its own adapted policy. Either way the round's tasks are spread over all workers at once.
        """
        return self.sampler.sample(snapshot=list(snapshots), num_steps=self.steps_per_task, tasks=list(tasks))

    def _process(self, batch: Batch, params: Params, norm: NormalizerState) -> ProcessedBatch:
        adv = self.advantage
        p = process_batch(
            batch, policy=self.policy, params={k: v.detach() for k, v in params.items()},
            critic_r=self.critic_r, critic_c=self.critic_c, obs_norm=norm,
            gamma=adv.gamma, lam=adv.lam, cost_gamma=adv.cost_gamma, cost_lam=adv.cost_lam, cost_adv_gamma=adv.cost_adv_gamma,
            time_limit=getattr(self.sampler, "episode_steps", None),
            normalize_adv_r=adv.normalize_adv_r, center_adv_c=adv.center_adv_c,
        )
        if not advantages_finite(p):
            raise FloatingPointError("non-finite advantages, critic targets or J_C")
        return p

    # ------------------------------------------------------------------ one meta-iteration
    def iterate(self, iteration: int | None = None) -> MetaIterationStats:
        """One meta-iteration; updates the policy, critics and normaliser in place."""
        if iteration is not None:
            self.iteration = iteration
        meta = self.meta
        d = self.cost_limit()
        d_inner = meta.inner_cost_target(d)  # the inner steps' target d - m (d without a margin)
        norm = self.obs_norm_state()  # frozen for the whole meta-iteration
        tasks = self.draw_tasks()
        t_sample = t_inner = t_grad = 0.0

        theta = meta_parameters(params_of(self.policy))
        snap0 = PolicySnapshot.from_policy(self.policy, norm)
        t = time.perf_counter()
        batches = self._sample([snap0] * len(tasks), tasks)
        t_sample += time.perf_counter() - t
        all_batches: list[Batch] = list(batches)
        all_processed: list[ProcessedBatch] = []
        pre_rets = [_ep_mean(b.episode_returns) for b in batches]
        pre_costs = [_ep_mean(b.episode_costs) for b in batches]

        adapted: list[Params] = [dict(theta) for _ in tasks]
        inner_data: list[list[ProcessedBatch]] = [[] for _ in tasks]
        cases = [0, 0, 0]
        norms: list[float] = []
        inner_bs: list[float] = []
        pre_jc: list[float] = []
        post: list[ProcessedBatch] = []
        # Batches sampled with the adapted policies: None until measured (a meta-iteration skipped
        # before the post-update round reports NaN for them, never the pre-update batches).
        post_batches: list[Batch] | None = batches if meta.inner_steps == 0 else None
        mg = None
        skip_reason = ""
        try:
            for k in range(meta.inner_steps):
                if k > 0:
                    snaps = [PolicySnapshot.from_policy(self.policy, norm, params=p) for p in adapted]
                    t = time.perf_counter()
                    batches = self._sample(snaps, tasks)
                    t_sample += time.perf_counter() - t
                    all_batches.extend(batches)
                t = time.perf_counter()
                for i, b in enumerate(batches):
                    proc = self._process(b, adapted[i], norm)
                    if k == 0:
                        pre_jc.append(proc.j_c)
                    all_processed.append(proc)
                    inner_data[i].append(proc)
                    adapted[i], st = adapt_step(
                        adapted[i], proc, objective=self.objective, rule=self.inner_rule, cost_limit=d_inner,
                        second_order=not meta.first_order, metric_fn=self.metric_fn,
                    )
                    cases[st.case] += 1
                    inner_bs.append(st.b)
                    self.fallback_total += int(st.fell_back)
                    norms.append(st.step_norm)
                t_inner += time.perf_counter() - t
            if meta.inner_steps > 0:
                snaps = [PolicySnapshot.from_policy(self.policy, norm, params=p) for p in adapted]
                t = time.perf_counter()
                post_batches = self._sample(snaps, tasks)
                t_sample += time.perf_counter() - t
                all_batches.extend(post_batches)
            t = time.perf_counter()
            post = [self._process(b, p, norm) for b, p in zip(post_batches, adapted, strict=True)]
            if meta.inner_steps > 0:
                all_processed.extend(post)
            else:
                all_processed = list(post)
                pre_jc = [p.j_c for p in post]
            t_inner += time.perf_counter() - t
            t = time.perf_counter()
            mg = meta_gradient(theta, adapted, post, objective=self.objective, cost_limit=d,
                               with_cost=self.constrained)
            t_grad = time.perf_counter() - t
            if not (torch.isfinite(mg.G).all() and torch.isfinite(mg.A).all() and math.isfinite(mg.B)):
                raise FloatingPointError("non-finite meta-gradient")
        except FloatingPointError as exc:
            skip_reason = str(exc)
            mg = None
        del adapted  # release the adaptation graphs
        post_rets = [_ep_mean(b.episode_returns) for b in post_batches] if post_batches is not None else [math.nan]
        post_costs = [_ep_mean(b.episode_costs) for b in post_batches] if post_batches is not None else [math.nan]

        t = time.perf_counter()
        outer: dict[str, Any] = dict(case="skipped", lam=math.nan, nu=math.nan, step_norm=0.0, projected=False,
                                     fraction=0.0, accepted=False, reason="")
        if mg is not None:
            outer = self._outer_step(theta, mg, inner_data, post, d)
            if outer.get("skip_reason"):
                skip_reason = outer["skip_reason"]
        if skip_reason:
            self.skipped_total += 1
        t_outer = time.perf_counter() - t

        t = time.perf_counter()
        if all_processed:
            self._fit_critics(all_processed)
        if self.advantage.obs_normalize:
            for b in all_batches:
                self.normalizer.update(b.obs)
        t_critic = time.perf_counter() - t
        self.iteration += 1
        steps = int(sum(len(b) for b in all_batches))
        self.env_steps += steps
        nan = math.nan
        return MetaIterationStats(
            env_steps=self.env_steps, iter_env_steps=steps,
            pre_return=_spread(pre_rets), pre_cost=_spread(pre_costs),
            post_return=_spread(post_rets), post_cost=_spread(post_costs),
            pre_j_c=float(np.mean(pre_jc)) if pre_jc else nan,
            post_j_c=mg.j_c if mg is not None else nan,
            cost_limit=d,
            inner_cost_target=d_inner if self.constrained else nan,
            inner_b=float(np.mean(inner_bs)) if inner_bs and self.constrained else nan,
            inner_case_counts=(cases[0], cases[1], cases[2]),
            inner_step_norm=float(np.mean(norms)) if norms else 0.0,
            g_norm=float(mg.G.norm()) if mg is not None else nan,
            a_norm=float(mg.A.norm()) if mg is not None else nan,
            B=mg.B if mg is not None else nan,
            outer_case=str(outer["case"]), lam=float(outer["lam"]), nu=float(outer["nu"]),
            step_norm=float(outer["step_norm"]), projected=bool(outer["projected"]),
            ls_fraction=float(outer["fraction"]), ls_accepted=bool(outer["accepted"]),
            ls_reason=str(outer["reason"]),
            skipped=bool(skip_reason), skip_reason=skip_reason, skipped_total=self.skipped_total,
            fallback_total=self.fallback_total, sample_seconds=t_sample, inner_seconds=t_inner, meta_grad_seconds=t_grad,
            outer_seconds=t_outer, critic_seconds=t_critic,
        )

    # ------------------------------------------------------------------ meta-update
    def _outer_metric(self, theta: Params, pre: Sequence[ProcessedBatch]) -> Any:
        if self.meta.metric != "fisher":
            return None
        from metacpo.solvers import FisherMetric

        hvps = [fisher_vector_product(self.policy, theta, p) for p in pre]

        def hvp(v: Tensor) -> Tensor:
            return sum(h(v) for h in hvps) / len(hvps)

        return FisherMetric(hvp=hvp, cg_iters=self.update_cfg.cg_iters, damping=self.update_cfg.damping)

    def _post_values(self, params: Params, inner_data: list[list[ProcessedBatch]], post: list[ProcessedBatch],
                     d: float) -> tuple[float, float]:
        """Task-mean post-adaptation (L_R, L_C) when starting from ``params``."""
        if self.meta.inner_steps > 0:
            r, c, _ = post_adaptation_values(params, inner_data, post, objective=self.objective,
                                             rule=self.inner_rule, cost_limit=self.meta.inner_cost_target(d),
                                             metric_fn=self.metric_fn)
            return r, c
        with torch.no_grad():
            vals = [self.objective(params, p) for p in post]
        return float(np.mean([float(v.loss_r) for v in vals])), float(np.mean([float(v.loss_c) for v in vals]))

    def _outer_step(self, theta: Params, mg: Any, inner_data: list[list[ProcessedBatch]],
                    post: list[ProcessedBatch], d: float) -> dict[str, Any]:
        from metacpo.solvers import SolverCase

        meta = self.meta
        pre = [data[0] for data in inner_data] if meta.inner_steps > 0 else post
        metric = self._outer_metric(theta, pre)
        sol, fell_back = solve_step(self.outer_rule, g=mg.G, a=mg.A if self.constrained else None,
                                    b=mg.B if self.constrained else None, metric=metric)
        self.fallback_total += int(fell_back)
        step = sol.step.detach()
        projected = False
        if meta.project_meta_step and self.constrained:
            proj = project_onto_halfspace(step, A=mg.A, B=mg.B)
            projected = proj is not step
            step = proj
        info: dict[str, Any] = dict(case=SolverCase(int(sol.case)).label, lam=float(sol.lam.detach()),
                                    nu=float(sol.nu.detach()), step_norm=0.0, projected=projected,
                                    fraction=0.0, accepted=False, reason="")
        if not torch.isfinite(step).all():
            return {**info, "skip_reason": "non-finite meta-step"}
        base = {k: v.detach() for k, v in theta.items()}
        frac, accepted, reason = 1.0, True, ""
        if meta.line_search:
            half_sq = 0.5 * float(step.double().pow(2).sum())

            def evaluate(f: float) -> Evaluation:
                cand = add_flat(base, step, alpha=f)
                r, c = self._post_values(cand, inner_data, post, d)
                with torch.no_grad():
                    kl = float(np.mean([float(mean_kl(self.policy, cand, p)) for p in pre]))
                tr = kl if meta.metric == "fisher" else f * f * half_sq
                return Evaluation(loss_r=r, loss_c=c, kl=kl, trust_region=tr)

            ls = backtracking_line_search(
                evaluate=evaluate, loss_r0=mg.loss_r, loss_c0=mg.loss_c,
                expected_improvement=-float(mg.G.double() @ step.double()), delta=self.outer_rule.delta,
                b=mg.B if self.constrained else None, recovery=sol.case == SolverCase.RECOVERY,
                backtrack_coef=meta.backtrack_coef, max_backtracks=meta.max_backtracks,
                accept_ratio=meta.accept_ratio,
            )
            frac, accepted, reason = ls.fraction, ls.accepted, ls.reason
        if accepted and frac > 0:
            new = add_flat(base, step, alpha=frac)
            with torch.no_grad():
                for k, p in self.policy.named_parameters():
                    p.copy_(new[k])
        return {**info, "step_norm": frac * float(step.norm()), "fraction": frac, "accepted": accepted,
                "reason": reason}

    # ------------------------------------------------------------------ critics, state
    def _fit_critics(self, processed: list[ProcessedBatch]) -> None:
        c = self.critic_cfg
        fit_critics(
            [(self.critic_r, torch.cat([p.obs for p in processed]), torch.cat([p.target_r for p in processed])),
             (self.critic_c, torch.cat([p.obs_c for p in processed]), torch.cat([p.target_c for p in processed]))],
            optimizer=c.optimizer, lr=c.lr,  # type: ignore[arg-type]
            iters=self.meta.critic_epochs * (5 if c.optimizer == "lbfgs" else 1),
            minibatch_size=c.minibatch_size, generator=self.torch_gen, l2=c.l2, fused=c.fused,
        )

    def state_dict(self) -> dict[str, Any]:
        """Modules, normaliser, generators, counters, sampler and (if any) the fixed task set."""
        return {
            "policy": self.policy.state_dict(),
            "critic_r": self.critic_r.state_dict(),
            "critic_c": self.critic_c.state_dict(),
            "obs_norm": self.normalizer.state_dict(),
            "torch_generator": self.torch_gen.get_state(),
            "task_rng": self.rng.bit_generator.state,
            "counters": {"iteration": self.iteration, "env_steps": self.env_steps,
                         "skipped_total": self.skipped_total, "fallback_total": self.fallback_total},
            "fixed_tasks": [_task_to_state(t) for t in self._fixed] if self._fixed is not None else [],
            "sampler": self.sampler.state_dict(),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        missing = {"obs_norm", "torch_generator", "task_rng", "counters", "fixed_tasks", "sampler"} - set(state)
        if missing:
            raise ValueError(f"meta-learner state lacks {sorted(missing)}")
        load_module_states(state, {"policy": self.policy, "critic_r": self.critic_r, "critic_c": self.critic_c},
                           what="meta-learner")
        self.normalizer.load_state_dict(state["obs_norm"])
        self.torch_gen.set_state(state["torch_generator"])
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
    policy, critic_r, critic_c = build_modules(config, obs_dim=obs_dim, act_dim=act_dim)
    if meta.backend == "dco":
        from metacpo.solvers.dco import DCO_MAX_PARAMS

        n = sum(p.numel() for p in policy.parameters())
        if n > DCO_MAX_PARAMS:
            raise ValueError(f"meta.backend 'dco' supports policies of at most {DCO_MAX_PARAMS} parameters; "
                             f"this policy has {n} (use meta.backend=analytic or a smaller policy.hidden)")
    return MetaLearner(
        policy=policy, critic_r=critic_r, critic_c=critic_c,
        normalizer=RunningNormalizer(obs_dim, clip=config.advantage.obs_clip),
        sampler=sampler, task_distribution=dist, level0_task=level0,
        meta=meta, advantage=config.advantage, critic=config.critic, update=config.update,
        steps_per_task=config.sampler.steps_per_iter,
        rng=np.random.default_rng([config.run.seed, 20240]),
        torch_gen=torch.Generator().manual_seed(config.run.seed + 7919),
        constrained=constrained,
    )


def build_meta_cpo(config: TrainConfig, *, sampler: Sampler, obs_dim: int, act_dim: int) -> MetaLearner:
    return build_meta(config, sampler=sampler, obs_dim=obs_dim, act_dim=act_dim, constrained=True)


def build_meta_trpo(config: TrainConfig, *, sampler: Sampler, obs_dim: int, act_dim: int) -> MetaLearner:
    return build_meta(config, sampler=sampler, obs_dim=obs_dim, act_dim=act_dim, constrained=False)

