"""The trust-region policy step shared by TRPO, CPO and Meta-CPO's / Meta-TRPO's outer step.

``g, a, b -> solve -> line search -> new parameters``:

* ``g``: gradient of the reward-surrogate loss ``L_R`` (minimised); ``a``: gradient of the cost
  surrogate ``L_C``; ``b = J_C - target`` (:func:`metacpo.meta.core.constraint_b`; ``target`` is
  the cost limit ``d``, or ``d - m`` with a margin ``m``). Meta-CPO's outer step passes ``G``,
  ``A``, ``B`` (gradients through the adaptation).
* solve: the CPO sub-problem ``argmin_x g^T x s.t. 1/2 x^T H x <= delta, b + a^T x <= 0``
  (:func:`metacpo.meta.core.solve_step`; TRPO: no constraint) with the metric ``H``
  (:func:`fisher_metric`, or None for the identity), optionally projected onto the linearised
  safety half-space ``{x : a^T x + b <= 0}``;
* line search: :func:`metacpo.algorithms.common.backtracking_line_search` over fractions of
  ``x``, each candidate scored by :func:`candidate_evaluator` from the caller's ``values``
  function (the surrogates on a batch for CPO; the re-adapted post-adaptation surrogates for
  Meta-CPO);
* the result: new detached parameters (or the old ones) and a frozen :class:`TrustRegionStats`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from metacpo.algorithms.common import (
    Evaluation,
    ProcessedBatch,
    backtracking_line_search,
    fisher_vector_product,
    full_step,
    mean_kl,
    surrogate_losses,
)
from metacpo.choices import MetricKind
from metacpo.functional.params import Params, add_flat
from metacpo.meta.core import StepRule, project_onto_halfspace, solve_step
from metacpo.models.policy import GaussianMLPPolicy
from metacpo.solvers import FisherMetric, SolverCase

CandidateValues = Callable[[Params], tuple[float, float, float]]
"""``values(candidate) -> (loss_r, loss_c, mean KL)`` at candidate parameters (no graph kept)."""


@dataclass(frozen=True)
class LineSearchSettings:
    """How the solver's step is shortened until it passes the line search's tests."""

    enabled: bool = True
    """False: take the solver's step as it is (rejected only when its surrogates are non-finite)."""
    backtrack_coef: float = 0.8
    """Step shrink factor per backtrack."""
    max_backtracks: int = 15
    """Shrinks tried before the step is rejected."""
    accept_ratio: float = 0.1
    """Minimum fraction of the predicted reward-surrogate improvement a step must achieve."""


@dataclass(frozen=True)
class TrustRegionStats:
    """What one trust-region policy step did.

    ``case``: unconstrained | active | recovery, or ``skipped`` (non-finite input or step);
    ``lam``/``nu``: the solver's multipliers; ``b``: ``J_C`` minus the step's cost target (nan
    for TRPO steps); ``step_norm``: |fraction * x|; ``kl``: mean KL(old||new) at the accepted
    fraction; ``projected``: the step was projected onto the linearised safety half-space.
    """

    case: str
    lam: float
    nu: float
    b: float
    step_norm: float
    kl: float
    ls_accepted: bool
    ls_fraction: float
    ls_backtracks: int
    ls_reason: str
    loss_r_before: float
    loss_r_after: float
    loss_c_before: float
    loss_c_after: float
    expected_improvement: float
    grad_norm_r: float
    grad_norm_c: float
    solver_fallback: bool
    skipped: bool
    skip_reason: str
    projected: bool = False


def skipped_step(reason: str, *, b: float = math.nan, loss_r: float = math.nan, loss_c: float = math.nan,
                 solver_fallback: bool = False) -> TrustRegionStats:
    """The record of a step that was not taken (parameters untouched)."""
    nan = math.nan
    return TrustRegionStats(
        case="skipped", lam=nan, nu=nan, b=b, step_norm=0.0, kl=0.0, ls_accepted=False, ls_fraction=0.0,
        ls_backtracks=0, ls_reason="", loss_r_before=loss_r, loss_r_after=loss_r, loss_c_before=loss_c,
        loss_c_after=loss_c, expected_improvement=nan, grad_norm_r=nan, grad_norm_c=nan,
        solver_fallback=solver_fallback, skipped=True, skip_reason=reason,
    )


def fisher_metric(policy: GaussianMLPPolicy, params: Params, batches: Sequence[ProcessedBatch], *,
                  cg_iters: int, damping: float, cg_tol: float = 1e-10) -> FisherMetric:
    """``H = F + damping I``: the Fisher information at ``params`` averaged over ``batches``.

    ``F`` is the Hessian of the mean KL w.r.t. each batch's behaviour policy (the Fisher when
    ``params`` are the behaviour parameters), a constant for the solver's backward pass
    (single-task CPO/TRPO: one batch; Meta-CPO's outer step: the tasks' pre-update batches;
    its inner steps: each step's batch). ``cg_tol``: the CG stopping tolerance.
    """
    hvps = [fisher_vector_product(policy, params, b) for b in batches]
    if len(hvps) == 1:
        hvp = hvps[0]
    else:
        def hvp(v: Tensor) -> Tensor:
            return sum(h(v) for h in hvps) / len(hvps)  # type: ignore[return-value]
    return FisherMetric(hvp=hvp, cg_iters=cg_iters, damping=damping, cg_tol=cg_tol)


def surrogate_values(policy: GaussianMLPPolicy, processed: ProcessedBatch) -> CandidateValues:
    """``candidate -> (loss_r, loss_c, mean KL)`` on one batch: single-task CPO/TRPO's scores."""

    def values(cand: Params) -> tuple[float, float, float]:
        with torch.no_grad():
            lr, lc = surrogate_losses(policy, cand, processed)
            kl = float(mean_kl(policy, cand, processed))
        return float(lr), float(lc), kl

    return values


def candidate_evaluator(*, params: Params, step: Tensor, values: CandidateValues,
                        metric: MetricKind) -> Callable[[float], Evaluation]:
    """``frac -> Evaluation`` at ``params + frac * step``.

    The trust-region quantity is what the solver constrained: the mean KL for the Fisher metric,
    ``1/2 |frac x|^2`` for the identity metric.
    """
    half_sq_norm = 0.5 * float(step.double().pow(2).sum())

    def evaluate(frac: float) -> Evaluation:
        loss_r, loss_c, kl = values(add_flat(params, step, alpha=frac))
        tr = kl if metric == "fisher" else frac * frac * half_sq_norm
        return Evaluation(loss_r=loss_r, loss_c=loss_c, kl=kl, trust_region=tr)

    return evaluate


def trust_region_step(
    *,
    params: Params,
    g: Tensor,
    a: Tensor | None,
    b: float,
    loss_r: float,
    loss_c: float,
    rule: StepRule,
    metric: FisherMetric | None,
    metric_kind: MetricKind,
    line_search: LineSearchSettings,
    values: CandidateValues,
    project: bool = False,
) -> tuple[Params, TrustRegionStats]:
    """One step ``params + fraction * x`` with ``x`` the CPO (TRPO) step for ``g``, ``a``, ``b``.

    ``params`` are detached; ``loss_r``/``loss_c`` the surrogates there (the line search's
    reference); ``rule`` gives ``delta``, the backend and whether the cost constraint applies
    (``a``/``b`` are ignored when it does not); ``metric``: the solver's ``H`` (None: identity),
    ``metric_kind`` says which, for the line search's trust-region test. ``project`` (constrained
    only): project ``x`` onto ``{x : a^T x + b <= 0}`` (the seed's safety projection). Returns
    ``params`` itself when the step is non-finite or the line search rejects every fraction.
    """
    sol, fell_back = solve_step(rule, g=g, a=a, b=b, metric=metric)
    step = sol.step.detach()
    projected = False
    if project and rule.constrained and a is not None:
        proj = project_onto_halfspace(step, A=a, B=b)
        projected = proj is not step
        step = proj
    if not torch.isfinite(step).all():
        return params, skipped_step("non-finite step", b=b, loss_r=loss_r, loss_c=loss_c, solver_fallback=fell_back)
    step = step.to(next(iter(params.values())).dtype)
    evaluate = candidate_evaluator(params=params, step=step, values=values, metric=metric_kind)
    expected = -float(g.double() @ step.double())
    if line_search.enabled:
        ls = backtracking_line_search(
            evaluate=evaluate, loss_r0=loss_r, loss_c0=loss_c, expected_improvement=expected, delta=rule.delta,
            b=b if rule.constrained else None, recovery=sol.case == SolverCase.RECOVERY,
            backtrack_coef=line_search.backtrack_coef, max_backtracks=line_search.max_backtracks,
            accept_ratio=line_search.accept_ratio,
        )
    else:
        ls = full_step(evaluate, loss_r0=loss_r, expected_improvement=expected)
    new = {k: v.detach() for k, v in add_flat(params, step, alpha=ls.fraction).items()} if ls.accepted else params
    return new, TrustRegionStats(
        case=SolverCase(int(sol.case)).label, lam=float(sol.lam.detach()), nu=float(sol.nu.detach()), b=b,
        step_norm=ls.fraction * float(step.norm()), kl=ls.kl, ls_accepted=ls.accepted, ls_fraction=ls.fraction,
        ls_backtracks=ls.backtracks, ls_reason=ls.reason, loss_r_before=loss_r, loss_r_after=ls.loss_r,
        loss_c_before=loss_c, loss_c_after=ls.loss_c, expected_improvement=ls.expected_improvement,
        grad_norm_r=float(g.norm()), grad_norm_c=float(a.norm()) if a is not None else math.nan,
        solver_fallback=fell_back, skipped=False, skip_reason="", projected=projected,
    )
