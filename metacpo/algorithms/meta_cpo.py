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
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor, nn

from metacpo.algorithms.common import (
    Evaluation,
    ProcessedBatch,
    advantages_finite,
    backtracking_line_search,
    fisher_vector_product,
    fit_critic,
    mean_kl,
    process_batch,
    surrogate_losses,
)
from metacpo.data.batch import Batch
from metacpo.data.normalizer import NormalizerState, RunningNormalizer
from metacpo.functional.params import Params, add_flat, flatten, params_of
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
class MetaConfig:
    """Settings of the meta-learning loop shared by Meta-CPO and Meta-TRPO."""

    meta_batch_size: int = 3
    """Tasks per meta-iteration."""
    inner_steps: int = 3
    """Differentiable CPO/TRPO steps per task (each on fresh samples)."""
    inner_delta: float = 0.02
    """Trust-region size of the inner steps."""
    outer_delta: float = 0.01
    """Trust-region size of the meta-step."""
    first_order: bool = False
    """Treat d theta'/d theta = I (first-order MAML): no second-order terms."""
    task_level: int = 1
    """Level of the task distribution tasks are drawn from during meta-training."""
    fixed_tasks: bool = False
    """Draw ``meta_batch_size`` tasks once and reuse them every meta-iteration."""
    include_level0: bool = False
    """Replace the last task of every meta-batch by the level-0 (nominal) task, as the seed did."""
    project_meta_step: bool = False
    """Project the meta-step onto the linearised safety half-space {s : A s + B <= 0} (seed)."""
    anneal_cost_limit_from: float | None = None
    """Cost-limit annealing: start from this limit and move linearly to the run's cost limit."""
    anneal_iters: int = 0
    """Meta-iterations over which the cost limit is annealed (0 with a start value: no annealing)."""
    backend: Literal["analytic", "dco"] = "analytic"
    """Solver backend for inner and outer steps."""
    metric: Literal["identity", "fisher"] = "identity"
    """Trust-region metric H: identity (seed; meta-gradient exact) or Fisher (treated as a
    constant on the meta-gradient path)."""
    normalize_grads: bool = True
    """Normalise g and a (G and A) to unit norm before solving (seed)."""
    line_search: bool = True
    """Backtracking line search on the post-adaptation surrogates for the meta-step."""
    backtrack_coef: float = 0.8
    """Step shrink factor of the line search."""
    max_backtracks: int = 10
    """Maximum number of shrinks of the meta-step."""
    accept_ratio: float = 0.1
    """Minimum fraction of the predicted surrogate improvement the line search accepts."""

    def __post_init__(self) -> None:
        if self.meta_batch_size < 1:
            raise ValueError(f"meta_batch_size must be >= 1, got {self.meta_batch_size}")
        if self.inner_steps < 0:
            raise ValueError(f"inner_steps must be >= 0, got {self.inner_steps}")
        for name in ("inner_delta", "outer_delta"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
                raise ValueError(f"{name} must be a finite number > 0, got {v}")
        if self.backend not in ("analytic", "dco"):
            raise ValueError(f"unknown solver backend {self.backend!r}; allowed: 'analytic', 'dco'")
        if self.metric not in ("identity", "fisher"):
            raise ValueError(f"unknown metric {self.metric!r}; allowed: 'identity', 'fisher'")
        if self.backend == "dco" and self.metric != "identity":
            raise ValueError("the dco backend supports only metric='identity'")
        if self.task_level < 0:
            raise ValueError(f"task_level must be >= 0, got {self.task_level}")
        if self.anneal_cost_limit_from is not None and self.anneal_cost_limit_from < 0:
            raise ValueError(f"anneal_cost_limit_from must be >= 0, got {self.anneal_cost_limit_from}")
        if self.anneal_iters < 0:
            raise ValueError(f"anneal_iters must be >= 0, got {self.anneal_iters}")
        if not 0.0 < self.backtrack_coef < 1.0:
            raise ValueError(f"backtrack_coef must lie in (0, 1), got {self.backtrack_coef}")
        if self.max_backtracks < 0:
            raise ValueError(f"max_backtracks must be >= 0, got {self.max_backtracks}")


@dataclass(frozen=True)
class RLConfig:
    """Advantage estimation and critic fitting used by the meta loop (mirrors single-task CPO)."""

    steps_per_task: int = 3000
    """Environment steps per task per sampling round."""
    cost_limit: float = 25.0
    """The cost limit d on J_C (undiscounted episode cost by default)."""
    gamma: float = 0.99
    """Discount of the reward GAE."""
    lam: float = 0.95
    """GAE lambda (reward and cost)."""
    cost_gamma: float = 1.0
    """Discount of the episode cost J_C (1: the undiscounted episode cost of Safety-Gymnasium)."""
    critic_optimizer: Literal["adam", "lbfgs"] = "adam"
    """Critic optimiser."""
    critic_lr: float = 1e-3
    """Critic learning rate."""
    critic_iters: int = 5
    """Adam epochs (or L-BFGS iterations) per fit."""
    critic_minibatch: int = 256
    """Adam minibatch size."""

    def __post_init__(self) -> None:
        if self.steps_per_task < 1:
            raise ValueError(f"steps_per_task must be >= 1, got {self.steps_per_task}")
        if not (math.isfinite(self.cost_limit) and self.cost_limit >= 0):
            raise ValueError(f"cost_limit must be a finite number >= 0, got {self.cost_limit}")


@dataclass(frozen=True)
class MetaIterationStats:
    """Everything one meta-iteration did (logged by the training loop under ``group/name``)."""

    env_steps: int
    pre_return_mean: float
    pre_return_min: float
    pre_return_max: float
    pre_cost_mean: float
    pre_cost_min: float
    pre_cost_max: float
    post_return_mean: float
    post_return_min: float
    post_return_max: float
    post_cost_mean: float
    post_cost_min: float
    post_cost_max: float
    pre_j_c: float
    post_j_c: float
    cost_limit: float
    inner_case_mean: float
    inner_step_norm: float
    g_norm: float
    a_norm: float
    B: float
    outer_case: int
    lam: float
    nu: float
    step_norm: float
    projected: bool
    ls_fraction: float
    ls_accepted: bool
    post_loss_r: float
    skipped: bool
    sample_seconds: float
    inner_seconds: float
    meta_grad_seconds: float
    outer_seconds: float
    critic_seconds: float

    def log_dict(self) -> dict[str, float]:
        """Flat ``group/name`` keys (``meta/...``, ``solver/...``, ``time/...``)."""
        out: dict[str, float] = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if f.name.endswith("_seconds"):
                key = f"time/{f.name.removesuffix('_seconds')}"
            elif f.name in ("outer_case", "lam", "nu", "step_norm", "projected", "ls_fraction",
                            "ls_accepted", "g_norm", "a_norm", "B", "inner_case_mean", "inner_step_norm"):
                key = f"solver/{f.name}"
            else:
                key = f"meta/{f.name}"
            out[key] = float(v)
        return out


def _spread(x: Sequence[float]) -> tuple[float, float, float]:
    a = np.asarray([v for v in x if math.isfinite(v)], dtype=np.float64)
    if a.size == 0:
        return float("nan"), float("nan"), float("nan")
    return float(a.mean()), float(a.min()), float(a.max())


def _ep_mean(x: np.ndarray) -> float:
    return float(np.mean(x)) if len(x) else float("nan")


def surrogate_objective(policy: GaussianMLPPolicy):
    """The importance-ratio surrogates of :mod:`metacpo.algorithms.common` as an Objective."""

    def objective(params: Params, data: ProcessedBatch) -> Surrogates:
        loss_r, loss_c = surrogate_losses(policy, params, data)
        return Surrogates(loss_r=loss_r, loss_c=loss_c, j_c=torch.tensor(data.j_c, dtype=loss_r.dtype))

    return objective


class MetaLearner:
    """The meta-learning loop (Meta-CPO when ``constrained``, Meta-TRPO otherwise).

    Components come in as constructor arguments: the policy (whose parameters are the
    meta-parameters theta), reward/cost critics, the running observation normaliser, a sampler
    and a task distribution (``.sample(rng) -> task``). Randomness: ``rng`` draws tasks,
    ``torch_gen`` shuffles critic minibatches; both seeded from the run seed by the caller.
    """

    def __init__(
        self,
        *,
        policy: GaussianMLPPolicy,
        critic_r: nn.Module,
        critic_c: nn.Module,
        obs_norm: RunningNormalizer,
        sampler: Sampler,
        task_distribution: Any,
        level0_task: Any = None,
        meta: MetaConfig,
        rl: RLConfig,
        rng: np.random.Generator,
        torch_gen: torch.Generator,
        constrained: bool = True,
    ) -> None:
        if meta.include_level0 and level0_task is None:
            raise ValueError("include_level0=True needs the level-0 task (level0_task)")
        self.policy = policy
        self.critic_r = critic_r
        self.critic_c = critic_c
        self.obs_norm = obs_norm
        self.sampler = sampler
        self.task_distribution = task_distribution
        self.level0_task = level0_task
        self.meta = meta
        self.rl = rl
        self.rng = rng
        self.torch_gen = torch_gen
        self.constrained = constrained
        self.iteration = 0
        self.skipped_updates = 0
        self._fixed: list[Any] | None = None
        self.objective = surrogate_objective(policy)
        self.inner_rule = StepRule(delta=meta.inner_delta, constrained=constrained, backend=meta.backend,
                                   normalize=meta.normalize_grads)
        self.outer_rule = StepRule(delta=meta.outer_delta, constrained=constrained, backend=meta.backend,
                                   normalize=meta.normalize_grads)
        self.metric_fn: MetricFn | None = None
        if meta.metric == "fisher":
            from metacpo.solvers import FisherMetric

            def metric_fn(params: Params, data: ProcessedBatch) -> Any:
                return FisherMetric(hvp=fisher_vector_product(policy, params, data))

            self.metric_fn = metric_fn

    # ------------------------------------------------------------------ tasks and limits
    def cost_limit(self, iteration: int | None = None) -> float:
        """The (possibly annealed) cost limit d at ``iteration``."""
        it = self.iteration if iteration is None else iteration
        start = self.meta.anneal_cost_limit_from
        if start is None or self.meta.anneal_iters == 0:
            return self.rl.cost_limit
        frac = min(1.0, it / self.meta.anneal_iters)
        return start + frac * (self.rl.cost_limit - start)

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
        """One batch per task, task ``i`` sampled with ``snapshots[i]``.

        One sampler call for all tasks when they share a snapshot; otherwise one call per task
        (each call still spreads its task over all workers). The Sampler interface takes a
        single snapshot per call; see docs/meta.md.
        """
        n = self.rl.steps_per_task
        if all(s is snapshots[0] for s in snapshots):
            return self.sampler.sample(snapshot=snapshots[0], num_steps=n, tasks=list(tasks))
        out: list[Batch] = []
        for snap, task in zip(snapshots, tasks, strict=True):
            out.extend(self.sampler.sample(snapshot=snap, num_steps=n, tasks=[task]))
        return out

    def _process(self, batch: Batch, params: Params, norm: NormalizerState) -> ProcessedBatch:
        p = process_batch(
            batch, policy=self.policy, params={k: v.detach() for k, v in params.items()},
            critic_r=self.critic_r, critic_c=self.critic_c, obs_norm=norm,
            gamma=self.rl.gamma, lam=self.rl.lam, cost_gamma=self.rl.cost_gamma,
        )
        if not advantages_finite(p):
            raise FloatingPointError("non-finite advantages, critic targets or J_C")
        return p

    # ------------------------------------------------------------------ one meta-iteration
    def iterate(self) -> MetaIterationStats:
        """Run one meta-iteration and update the policy, critics and normaliser in place."""
        meta = self.meta
        d = self.cost_limit()
        norm = self.obs_norm.state()
        tasks = self.draw_tasks()
        t_sample = t_inner = 0.0

        theta = meta_parameters(params_of(self.policy))
        snap0 = PolicySnapshot.from_policy(self.policy, norm)
        t = time.perf_counter()
        batches = self._sample([snap0] * len(tasks), tasks)
        t_sample += time.perf_counter() - t
        all_batches: list[Batch] = list(batches)
        all_processed: list[ProcessedBatch] = []

        adapted: list[Params] = [dict(theta) for _ in tasks]
        inner_data: list[list[ProcessedBatch]] = [[] for _ in tasks]
        pre_rets = [_ep_mean(b.episode_returns) for b in batches]
        pre_costs = [_ep_mean(b.episode_costs) for b in batches]
        inner_cases: list[int] = []
        inner_norms: list[float] = []
        pre_jc: list[float] = []
        skipped = False
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
                        adapted[i], proc, objective=self.objective, rule=self.inner_rule, cost_limit=d,
                        second_order=not meta.first_order, metric_fn=self.metric_fn,
                    )
                    inner_cases.append(st.case)
                    inner_norms.append(st.step_norm)
                t_inner += time.perf_counter() - t
            snaps = [PolicySnapshot.from_policy(self.policy, norm, params=p) for p in adapted]
            if meta.inner_steps == 0:
                snaps = [snap0] * len(tasks)
            t = time.perf_counter()
            post_batches = self._sample(snaps, tasks)
            t_sample += time.perf_counter() - t
            all_batches.extend(post_batches)
            t = time.perf_counter()
            post = [self._process(b, p, norm) for b, p in zip(post_batches, adapted, strict=True)]
            all_processed.extend(post)
            if meta.inner_steps == 0:
                pre_jc = [p.j_c for p in post]
            t_inner += time.perf_counter() - t
            t = time.perf_counter()
            mg = meta_gradient(theta, adapted, post, objective=self.objective, cost_limit=d,
                               with_cost=self.constrained)
            t_grad = time.perf_counter() - t
            if not (torch.isfinite(mg.G).all() and torch.isfinite(mg.A).all() and math.isfinite(mg.B)):
                raise FloatingPointError("non-finite meta-gradient")
        except FloatingPointError:
            skipped = True
            t_grad = 0.0
            mg = None
        del adapted  # release the adaptation graphs

        post_rets = [_ep_mean(b.episode_returns) for b in all_batches[-len(tasks):]]
        post_costs = [_ep_mean(b.episode_costs) for b in all_batches[-len(tasks):]]

        t = time.perf_counter()
        outer = dict(case=-1, lam=float("nan"), nu=float("nan"), step_norm=0.0, projected=False,
                     fraction=0.0, accepted=False)
        if mg is not None:
            outer = self._outer_step(theta, mg, inner_data, post, d)
            skipped = outer.get("skipped", False)
        if skipped:
            self.skipped_updates += 1
        t_outer = time.perf_counter() - t

        t = time.perf_counter()
        self._fit_critics(all_processed)
        for b in all_batches:
            self.obs_norm.update(b.obs)
        t_critic = time.perf_counter() - t
        self.iteration += 1

        pr, pc = _spread(pre_rets), _spread(pre_costs)
        qr, qc = _spread(post_rets), _spread(post_costs)
        return MetaIterationStats(
            env_steps=int(sum(len(b) for b in all_batches)),
            pre_return_mean=pr[0], pre_return_min=pr[1], pre_return_max=pr[2],
            pre_cost_mean=pc[0], pre_cost_min=pc[1], pre_cost_max=pc[2],
            post_return_mean=qr[0], post_return_min=qr[1], post_return_max=qr[2],
            post_cost_mean=qc[0], post_cost_min=qc[1], post_cost_max=qc[2],
            pre_j_c=float(np.mean(pre_jc)) if pre_jc else float("nan"),
            post_j_c=mg.j_c if mg is not None else float("nan"),
            cost_limit=d,
            inner_case_mean=float(np.mean(inner_cases)) if inner_cases else float("nan"),
            inner_step_norm=float(np.mean(inner_norms)) if inner_norms else 0.0,
            g_norm=float(mg.G.norm()) if mg is not None else float("nan"),
            a_norm=float(mg.A.norm()) if mg is not None else float("nan"),
            B=mg.B if mg is not None else float("nan"),
            outer_case=int(outer["case"]),
            lam=float(outer["lam"]),
            nu=float(outer["nu"]),
            step_norm=float(outer["step_norm"]),
            projected=bool(outer["projected"]),
            ls_fraction=float(outer["fraction"]),
            ls_accepted=bool(outer["accepted"]),
            post_loss_r=mg.loss_r if mg is not None else float("nan"),
            skipped=skipped,
            sample_seconds=t_sample, inner_seconds=t_inner, meta_grad_seconds=t_grad,
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

        return FisherMetric(hvp=hvp)

    def _outer_step(self, theta: Params, mg: Any, inner_data: list[list[ProcessedBatch]],
                    post: list[ProcessedBatch], d: float) -> dict[str, Any]:
        meta = self.meta
        pre = [data[0] for data in inner_data] if meta.inner_steps > 0 else post
        metric = self._outer_metric(theta, pre)
        sol = solve_step(self.outer_rule, g=mg.G, a=mg.A if self.constrained else None,
                         b=mg.B if self.constrained else None, metric=metric)
        step = sol.step.detach()
        projected = False
        if meta.project_meta_step and self.constrained:
            proj = project_onto_halfspace(step, A=mg.A, B=mg.B)
            projected = proj is not step
            step = proj
        info: dict[str, Any] = dict(case=int(sol.case), lam=float(sol.lam.detach()), nu=float(sol.nu.detach()),
                                    step_norm=float(step.norm()), projected=projected)
        if not torch.isfinite(step).all():
            return {**info, "fraction": 0.0, "accepted": False, "skipped": True}
        base = {k: v.detach() for k, v in theta.items()}
        frac = 1.0
        accepted = True
        if meta.line_search:
            half_sq = 0.5 * float(step.double().pow(2).sum())

            def evaluate(f: float) -> Evaluation:
                cand = add_flat(base, step, alpha=f)
                r, c, _ = post_adaptation_values(
                    cand, inner_data, post, objective=self.objective, rule=self.inner_rule, cost_limit=d,
                    metric_fn=self.metric_fn,
                ) if meta.inner_steps > 0 else self._values_at(cand, post)
                with torch.no_grad():
                    kl = float(np.mean([float(mean_kl(self.policy, cand, p)) for p in pre]))
                tr = kl if meta.metric == "fisher" else f * f * half_sq
                return Evaluation(loss_r=r, loss_c=c, kl=kl, trust_region=tr)

            from metacpo.solvers import SolverCase

            ls = backtracking_line_search(
                evaluate=evaluate, loss_r0=mg.loss_r, loss_c0=mg.loss_c,
                expected_improvement=-float(mg.G @ step),
                # float tolerance: the solver's step lies on the trust-region boundary
                delta=self.outer_rule.delta * (1 + 1e-6) if meta.metric == "identity" else self.outer_rule.delta,
                b=mg.B if self.constrained else None,
                recovery=sol.case == SolverCase.RECOVERY,
                backtrack_coef=meta.backtrack_coef, max_backtracks=meta.max_backtracks,
                accept_ratio=meta.accept_ratio,
            )
            frac, accepted = ls.fraction, ls.accepted
        if accepted and frac > 0:
            new = add_flat(base, step, alpha=frac)
            with torch.no_grad():
                for k, p in self.policy.named_parameters():
                    p.copy_(new[k])
        return {**info, "fraction": frac, "accepted": accepted}

    def _values_at(self, params: Params, post: list[ProcessedBatch]) -> tuple[float, float, float]:
        with torch.no_grad():
            vals = [self.objective(params, p) for p in post]
        return (float(np.mean([float(v.loss_r) for v in vals])), float(np.mean([float(v.loss_c) for v in vals])),
                float(np.mean([float(v.j_c) for v in vals])))

    # ------------------------------------------------------------------ critics, state
    def _fit_critics(self, processed: list[ProcessedBatch]) -> None:
        if not processed:
            return
        obs = torch.cat([p.obs for p in processed])
        for critic, key in ((self.critic_r, "target_r"), (self.critic_c, "target_c")):
            fit_critic(critic, obs, torch.cat([getattr(p, key) for p in processed]),
                       optimizer=self.rl.critic_optimizer, lr=self.rl.critic_lr, iters=self.rl.critic_iters,
                       minibatch_size=self.rl.critic_minibatch, generator=self.torch_gen)

    def state_dict(self) -> dict[str, Any]:
        """Loop state beyond the modules: iteration, task generator, fixed tasks, skip count."""
        return {
            "iteration": self.iteration,
            "skipped_updates": self.skipped_updates,
            "rng": self.rng.bit_generator.state,
            "torch_gen": self.torch_gen.get_state(),
            "fixed_tasks": None if self._fixed is None else [asdict(t) for t in self._fixed],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.iteration = int(state["iteration"])
        self.skipped_updates = int(state["skipped_updates"])
        self.rng.bit_generator.state = state["rng"]
        self.torch_gen.set_state(state["torch_gen"])
        if state.get("fixed_tasks") is not None:
            # a fixed set is re-drawn identically from the restored generator only at start;
            # store the task objects' parameters and rebuild them with the distribution's type
            cls = type(self.task_distribution.sample(np.random.default_rng(0)))
            self._fixed = [cls(**t) for t in state["fixed_tasks"]]


def flat_policy_params(policy: GaussianMLPPolicy) -> Tensor:
    """Detached flat copy of the policy's parameters."""
    return flatten(params_of(policy, detach=True))
