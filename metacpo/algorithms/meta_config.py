"""The ``meta`` config section of Meta-CPO and Meta-TRPO (a light module: building a config
imports it, not the algorithm)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

from metacpo.algorithms.margin import fixed_margin
from metacpo.choices import MetricKind
from metacpo.config.schema import StepConfig


@dataclass(frozen=True)
class MetaConfig(StepConfig):
    """Settings of the meta-learning loop shared by Meta-CPO and Meta-TRPO.

    The solver and line-search settings are :class:`~metacpo.config.schema.StepConfig`'s (the
    single-task ``update`` step's type): ``metric``, ``backend`` and ``normalize_grads`` apply to
    the inner steps and the meta-step, the line search to the meta-step (the inner steps take
    the solver's step as it is). Two defaults differ from ``update``'s: the identity metric and
    at most 10 backtracks."""

    SECTION: ClassVar[str] = "meta"

    meta_batch_size: int = 3
    """Tasks per meta-iteration."""
    inner_steps: int = 3
    """Differentiable CPO/TRPO steps per task (each on fresh samples)."""
    inner_delta: float = 0.005
    """Trust-region size of the inner steps (identity metric: |x| <= sqrt(2 delta) = 0.1, about a
    mean KL of 0.015 for a fresh (64, 64) policy on PointStcircle -- CPO's usual 0.01 scale)."""
    outer_delta: float = 0.003
    """Trust-region size of the meta-step (identity metric: about a mean KL of 0.01)."""
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
    metric: MetricKind = "identity"
    """Trust-region metric H: identity (seed; meta-gradient exact) or Fisher (treated as a
    constant on the meta-gradient path)."""
    critic_epochs: int = 1
    """Adam epochs (L-BFGS: iterations x 5) of critic fitting over ALL the meta-iteration's data
    (meta_batch_size x (inner_steps + 1) batches); replaces critic.iters for meta algorithms.
    One epoch over 36,000 samples is about as many Adam steps as single-task CPO's 10 epochs
    over 4,000."""
    max_backtracks: int = 10
    """Maximum number of shrinks of the meta-step (line search on the post-adaptation surrogates)."""
    inner_cost_margin: float = 0.0
    """Conservative inner target, episode-cost units (>= 0): the inner CPO steps aim at
    ``J_C <= d - m`` with ``m = inner_cost_margin + inner_margin_fraction * d`` (clipped to d);
    the outer constraint stays at d. ``metacpo adapt`` adapts the run with the same target."""
    inner_margin_fraction: float = 0.0
    """The part of the inner margin proportional to the cost limit, a fraction of d in [0, 1]
    (added to ``inner_cost_margin``; follows d when it is annealed or overridden at meta-test)."""
    fisher_exact: bool = False
    """With ``metric=fisher``: keep the inner Fisher matrix's dependence on the parameters on the
    meta-gradient path (implicit differentiation of ``H w = v`` including ``dH/dtheta``; about
    one extra third-order product per inner solve). False: H is a constant on that path."""

    def inner_margin(self, cost_limit: float) -> float:
        """The inner margin ``m = min(inner_cost_margin + inner_margin_fraction * d, d)``."""
        return fixed_margin(cost_limit, margin=self.inner_cost_margin, fraction=self.inner_margin_fraction)

    def inner_cost_target(self, cost_limit: float) -> float:
        """What the inner steps aim at: ``d - m`` (``d`` itself without a margin)."""
        return cost_limit - self.inner_margin(cost_limit)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.meta_batch_size < 1:
            raise ValueError(f"meta_batch_size must be >= 1, got {self.meta_batch_size}")
        if self.inner_steps < 0:
            raise ValueError(f"inner_steps must be >= 0, got {self.inner_steps}")
        for name in ("inner_delta", "outer_delta"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
                raise ValueError(f"{name} must be a finite number > 0, got {v}")
        if self.task_level < 0:
            raise ValueError(f"task_level must be >= 0, got {self.task_level}")
        if self.anneal_cost_limit_from is not None and self.anneal_cost_limit_from < 0:
            raise ValueError(f"anneal_cost_limit_from must be >= 0, got {self.anneal_cost_limit_from}")
        if self.anneal_iters < 0:
            raise ValueError(f"anneal_iters must be >= 0, got {self.anneal_iters}")
        if self.critic_epochs < 1:
            raise ValueError(f"critic_epochs must be >= 1, got {self.critic_epochs}")
        m = self.inner_cost_margin
        if isinstance(m, bool) or not (isinstance(m, (int, float)) and math.isfinite(m) and m >= 0):
            raise ValueError(f"meta.inner_cost_margin must be a finite number >= 0 (episode cost), got {m!r}")
        f = self.inner_margin_fraction
        if isinstance(f, bool) or not (isinstance(f, (int, float)) and 0.0 <= f <= 1.0):
            raise ValueError(f"meta.inner_margin_fraction must lie in [0, 1], got {f!r}")
        if self.fisher_exact and self.metric != "fisher":
            raise ValueError(f"meta.fisher_exact=true needs meta.metric='fisher', got metric={self.metric!r}")
