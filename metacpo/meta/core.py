"""The functional core of Meta-CPO: differentiable inner adaptation and the exact meta-gradient.

Paper symbols (Achiam et al. 2017; Cho & Sun 2024):

* ``theta``     meta-parameters (a ``Params`` dict of leaf tensors; never mutated here).
* ``theta'_i``  the parameters adapted to task ``i``: ``theta + sum_k Delta_k`` (new tensors).
* ``g``         gradient of the reward-surrogate *loss* ``L_R`` (minimised).
* ``a``         gradient of the cost surrogate ``L_C``.
* ``b``         ``J_C - d``: cost estimate minus the cost limit ``d``.
* ``Delta``     the CPO step ``argmin_x g^T x  s.t. 1/2 x^T H x <= delta, b + a^T x <= 0``
  returned by :func:`metacpo.solvers.solve_cpo` (differentiable in g, a, b).
* ``G, A, B``   the outer (meta) versions: gradients w.r.t. ``theta`` of the task-mean
  post-adaptation losses, and the post-adaptation cost estimate minus ``d``.

Everything is expressed through an *objective*: a callable ``objective(params, data)`` that
returns :class:`Surrogates` (``L_R``, ``L_C`` and ``J_C`` at ``params`` on ``data``). In the
RL algorithms the objective is the importance-ratio surrogate on a rollout batch; in the
exactness tests it is a closed-form quadratic, so the whole adaptation is an exact function of
``theta`` and can be compared with finite differences.

The meta-gradient is one reverse-mode pass per outer loss through the graph kept by the inner
steps (``create_graph=True``): the vector-Jacobian products ``(d theta'_i / d theta)^T v`` that
it needs involve Hessian-vector products of the inner losses and the VJP of the solver, never a
per-parameter loop and never a materialised Jacobian.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import Tensor

from metacpo.choices import SOLVER_BACKENDS, check_choice
from metacpo.functional.params import Params, add_flat, flat_grad


@dataclass(frozen=True)
class Surrogates:
    """Surrogate values of one task at some parameters (scalars, possibly carrying a graph)."""

    loss_r: Tensor
    """``L_R``: the reward-surrogate loss (minimised); its gradient is ``g``."""
    loss_c: Tensor
    """``L_C``: the cost surrogate (its gradient is ``a``); only its gradient enters the step."""
    j_c: Tensor
    """``J_C``: the (discounted) cost estimate compared with the limit, ``b = J_C - d``."""


class Objective(Protocol):
    """``objective(params, data) -> Surrogates``: surrogate values of ``params`` on ``data``."""

    def __call__(self, params: Params, data: Any, /) -> Surrogates: ...


@dataclass(frozen=True)
class StepRule:
    """How one CPO/TRPO step is taken (inner or outer)."""

    delta: float
    """Trust-region size ``delta`` in ``1/2 x^T H x <= delta``."""
    constrained: bool = True
    """True: CPO step with the cost constraint; False: the TRPO step (``a = b = None``)."""
    backend: str = "analytic"
    """Solver backend: ``analytic`` (closed form, torch autograd) or ``dco`` (cvxpylayers)."""
    normalize: bool = True
    """Normalise ``g`` and ``a`` to unit norm before solving (as the seed)."""
    metric: Any = None
    """Metric ``H`` handed to the solver (None: identity)."""

    def __post_init__(self) -> None:
        if not self.delta > 0:
            raise ValueError(f"trust-region delta must be > 0, got {self.delta}")
        check_choice("solver backend", self.backend, SOLVER_BACKENDS)


@dataclass(frozen=True)
class InnerStepStats:
    """What one inner step did (plain floats: safe to log)."""

    case: int
    """Solver case: 0 unconstrained, 1 active constraint, 2 recovery (see SolverCase)."""
    lam: float
    """Trust-region multiplier ``lambda``."""
    nu: float
    """Cost-constraint multiplier ``nu`` (0 for TRPO steps)."""
    step_norm: float
    """Euclidean norm of the step ``Delta``."""
    loss_r: float
    """``L_R`` before the step."""
    j_c: float
    """``J_C`` before the step."""
    b: float = float("nan")
    """``b = J_C - cost_limit`` the step was solved with (``cost_limit`` is the inner target
    ``d - m`` when Meta-CPO's inner margin is on); nan for TRPO steps."""
    fell_back: bool = False
    """The dco backend failed and the analytic backend solved this step."""


def meta_parameters(params: Params) -> Params:
    """Fresh leaf copies of ``params`` that require grad (the meta-parameters ``theta``)."""
    return {k: v.detach().clone().requires_grad_(True) for k, v in params.items()}


def constraint_b(j_c: Tensor | float, cost_target: float) -> Any:
    """``b = J_C - target``: how far the cost estimate ``J_C`` lies above what the step aims at.

    ``target`` is the cost limit ``d``, or ``d - m`` with a margin ``m`` (single-task CPO's
    adaptive margin, Meta-CPO's inner margin). The one place ``b`` (and the outer ``B``) is formed;
    a tensor ``j_c`` keeps its graph (Meta-CPO's inner steps differentiate ``b``).
    """
    return j_c - cost_target


MetricFn = Callable[[Params, Any], Any]
"""``metric_fn(params, data) -> Metric``: a metric built at the current parameters (e.g. Fisher)."""


def solve_step(rule: StepRule, *, g: Tensor, a: Tensor | None, b: Tensor | float | None,
               metric: Any = None) -> tuple[Any, bool]:
    """The CPO (or, for an unconstrained rule, TRPO) sub-problem for ``rule``.

    Returns ``(solution, fell_back)``: a dco (cvxpylayers) failure falls back to the analytic
    backend (also differentiable), and the caller counts it.
    """
    from metacpo.solvers import solve_cpo_with_fallback

    metric = rule.metric if metric is None else metric
    # (the dco backend itself solves float32 inputs in float64 and casts back)
    return solve_cpo_with_fallback(
        g=g, a=a if rule.constrained else None, b=b if rule.constrained else None, delta=rule.delta,
        backend=rule.backend, metric=metric, normalize=rule.normalize,
    )


def inner_step(
    params: Params,
    data: Any,
    *,
    objective: Objective,
    rule: StepRule,
    cost_limit: float,
    second_order: bool = True,
    metric_fn: MetricFn | None = None,
) -> tuple[Params, InnerStepStats]:
    """One inner CPO (or TRPO) step ``theta' = params + Delta(g, a, b; delta)`` as new tensors.

    ``g`` and ``a`` are gradients of the surrogates at ``params`` on ``data``. With
    ``second_order`` they are taken with ``create_graph=True`` and the step keeps its graph, so
    the result is differentiable w.r.t. whatever ``params`` depends on (the meta-parameters).
    Without it the step is detached: ``d theta' / d params = I`` (first-order MAML).
    ``params`` itself is never modified. ``metric_fn`` builds the metric ``H`` at ``params``
    (None: ``rule.metric``); a :class:`~metacpo.solvers.FisherMetric` is a constant on the backward
    path, an :class:`~metacpo.solvers.ExactFisherMetric` keeps ``dH/dparams`` (docs/meta.md).
    ``cost_limit`` is the target the step aims at: ``b = J_C - cost_limit`` (Meta-CPO's inner
    steps pass ``d - m`` with the inner margin ``m``; the outer constraint keeps ``d``).
    """
    s = objective(params, data)
    g = flat_grad(s.loss_r, params, create_graph=second_order, retain_graph=True)
    a = b = None
    if rule.constrained:
        a = flat_grad(s.loss_c, params, create_graph=second_order, retain_graph=second_order)
        j_c = s.j_c if second_order else s.j_c.detach()
        b = constraint_b(j_c, cost_limit)
        if not second_order:
            a = a.detach()
    if not second_order:
        g = g.detach()
    metric = metric_fn(params, data) if metric_fn is not None else None
    sol, fell_back = solve_step(rule, g=g, a=a, b=b, metric=metric)
    step = sol.step if second_order else sol.step.detach()
    if not torch.isfinite(step).all():
        raise FloatingPointError("non-finite inner adaptation step")
    new = add_flat(params, step)
    stats = InnerStepStats(
        case=int(sol.case),
        lam=float(sol.lam.detach()),
        nu=float(sol.nu.detach()) if sol.nu is not None else 0.0,
        step_norm=float(step.detach().norm()),
        loss_r=float(s.loss_r.detach()),
        j_c=float(s.j_c.detach()),
        b=float(b.detach()) if b is not None else float("nan"),
        fell_back=fell_back,
    )
    return new, stats


def inner_loop(
    theta: Params,
    inner_data: Sequence[Any],
    *,
    objective: Objective,
    rule: StepRule,
    cost_limit: float,
    second_order: bool = True,
    metric_fn: MetricFn | None = None,
) -> tuple[Params, list[InnerStepStats]]:
    """``len(inner_data)`` inner steps from ``theta``, step ``k`` on ``inner_data[k]``.

    This is the replay form of the inner loop (used by the line search and the tests): in the
    sampling loop each ``inner_data[k]`` is collected with the policy after step ``k - 1``, and
    :func:`inner_step` is called once per round instead.
    """
    params = dict(theta)
    stats: list[InnerStepStats] = []
    for data in inner_data:
        params, st = inner_step(
            params, data, objective=objective, rule=rule, cost_limit=cost_limit,
            second_order=second_order, metric_fn=metric_fn,
        )
        stats.append(st)
    return params, stats


@dataclass(frozen=True)
class MetaGradient:
    """Outer gradients through the adaptation (flat vectors over ``theta`` in dict order)."""

    G: Tensor
    """``grad_theta mean_i L_R(theta'_i; D'_i)``."""
    A: Tensor
    """``grad_theta mean_i L_C(theta'_i; D'_i)``."""
    B: float
    """``mean_i J_C(theta'_i) - d``."""
    loss_r: float
    """``mean_i L_R(theta'_i; D'_i)``."""
    loss_c: float
    """``mean_i L_C(theta'_i; D'_i)``."""
    j_c: float
    """``mean_i J_C(theta'_i)``."""


def meta_gradient(
    theta: Params,
    adapted: Sequence[Params],
    post_data: Sequence[Any],
    *,
    objective: Objective,
    cost_limit: float,
    with_cost: bool = True,
) -> MetaGradient:
    """``G``, ``A``, ``B``: one backward pass per outer loss through the kept adaptation graphs.

    ``adapted[i]`` must have been built from ``theta`` by :func:`inner_loop` / :func:`inner_step`
    (second order: exact Jacobian; first order: identity Jacobian). ``with_cost=False`` skips
    ``A`` (Meta-TRPO), returning zeros for it.
    """
    if len(adapted) != len(post_data) or not adapted:
        raise ValueError(f"need one post-adaptation batch per task: {len(adapted)} vs {len(post_data)}")
    vals = [objective(p, d) for p, d in zip(adapted, post_data, strict=True)]
    loss_r = torch.stack([v.loss_r for v in vals]).mean()
    loss_c = torch.stack([v.loss_c for v in vals]).mean()
    j_c = torch.stack([v.j_c.detach() for v in vals]).mean()
    G = flat_grad(loss_r, theta, retain_graph=with_cost)
    A = flat_grad(loss_c, theta) if with_cost else torch.zeros_like(G)
    return MetaGradient(
        G=G.detach(),
        A=A.detach(),
        B=constraint_b(float(j_c), cost_limit),
        loss_r=float(loss_r.detach()),
        loss_c=float(loss_c.detach()),
        j_c=float(j_c),
    )


def post_adaptation_values(
    theta: Params,
    inner_data: Sequence[Sequence[Any]],
    post_data: Sequence[Any],
    *,
    objective: Objective,
    rule: StepRule,
    cost_limit: float,
    metric_fn: MetricFn | None = None,
) -> tuple[float, float, float]:
    """Task-mean ``(L_R, L_C, J_C)`` after re-adapting from ``theta`` on the recorded inner data.

    The function the outer line search evaluates: the same inner data and post-adaptation data,
    a different ``theta``. No graph is kept (values only).
    """
    theta = meta_parameters(theta)  # leaves for the inner gradients; caller's tensors untouched
    r, c, j = [], [], []
    for data_i, post_i in zip(inner_data, post_data, strict=True):
        p, _ = inner_loop(theta, data_i, objective=objective, rule=rule, cost_limit=cost_limit,
                     second_order=False, metric_fn=metric_fn)
        with torch.no_grad():
            v = objective({k: t.detach() for k, t in p.items()}, post_i)
        r.append(float(v.loss_r))
        c.append(float(v.loss_c))
        j.append(float(v.j_c))
    n = len(r)
    return sum(r) / n, sum(c) / n, sum(j) / n


def project_onto_halfspace(step: Tensor, *, A: Tensor, B: float) -> Tensor:
    """The seed's safety projection: the closest ``s`` to ``step`` with ``A^T s + B <= 0``.

    Returns ``step`` unchanged when it already satisfies the linearised constraint (or
    ``A = 0``, where the half-space is everything or nothing and no projection helps).
    """
    viol = float(A @ step) + B
    aa = float(A @ A)
    if viol <= 0 or aa == 0.0:
        return step
    return step - (viol / aa) * A
