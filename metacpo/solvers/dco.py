"""The seed's differentiable-convex-programming backend (cvxpylayers, identity metric).

The convex programs are built once per parameter size and cached (``functools.lru_cache``);
each is asserted DPP so that cvxpylayers can differentiate it. The multipliers lam and nu are
the dual values of the two constraints, returned by cvxpylayers as extra layer outputs.

Feasibility is decided in closed form before solving (b > 0 and b^2 >= 2 delta ||a||^2): the
convex program has no solution there, so the recovery step is computed as its own convex
program  min a^T x  s.t. 1/2 ||x||^2 <= delta  (the seed did the same after catching the
solver's failure).

Size limit: cvxpy's DPP compilation of this formulation (vector parameters g and a) needs memory
that grows with n^2 (about 0.9 GB at n = 5e3, 3-4 GB at 1e4, 12.6 GB at 2e4, measured with
cvxpy 1.7.5), so :func:`solve_dco` refuses n > :data:`DCO_MAX_PARAMS` with a ValueError instead
of exhausting the machine; use the analytic backend there.
"""

from __future__ import annotations

import functools
import math
import warnings
from typing import Any

import torch
from torch import Tensor

from .analytic import rel_eps, tiny
from .types import CPOSolution, SolverCase, SolverError

DCO_SOLVER_ARGS: dict[str, Any] = {"eps_abs": 1e-10, "eps_rel": 1e-10, "max_iters": 100_000}
"""SCS settings used by default (tight, so the result matches the closed form to ~1e-8)."""

DCO_MAX_PARAMS = 20_000
"""Largest parameter count for which the cvxpylayers problem is built (see the module docstring)."""

_ACTIVE_NU_TOL = 1e-6
"""nu ||a|| above this fraction of lam ||x|| counts as an active cost constraint."""
_FEAS_TOL = 1e-6
"""Relative constraint violation above which a dco result is rejected as a solver failure."""


@functools.lru_cache(maxsize=8)
def cpo_layer(n: int) -> Any:
    """min g^T x s.t. 1/2 ||x||^2 <= delta, b + a^T x <= 0 as a CvxpyLayer over (g, a, b, delta)
    returning (x, lam, nu)."""
    import cvxpy as cp
    from cvxpylayers.torch import CvxpyLayer

    x = cp.Variable(n)
    g = cp.Parameter(n)
    a = cp.Parameter(n)
    b = cp.Parameter()
    delta = cp.Parameter(nonneg=True)
    trust = 0.5 * cp.sum_squares(x) <= delta
    cost = b + a @ x <= 0
    problem = cp.Problem(cp.Minimize(g @ x), [trust, cost])
    assert problem.is_dpp(), "the CPO sub-problem must be DPP for cvxpylayers"
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse invariant checks")
        return CvxpyLayer(
            problem,
            parameters=[g, a, b, delta],
            variables=[x, trust.dual_variables[0], cost.dual_variables[0]],
        )


@functools.lru_cache(maxsize=8)
def trust_region_layer(n: int) -> Any:
    """min c^T x s.t. 1/2 ||x||^2 <= delta as a CvxpyLayer over (c, delta) returning (x, lam).

    Used for the TRPO step (c = g) and the recovery step (c = a)."""
    import cvxpy as cp
    from cvxpylayers.torch import CvxpyLayer

    x = cp.Variable(n)
    c = cp.Parameter(n)
    delta = cp.Parameter(nonneg=True)
    trust = 0.5 * cp.sum_squares(x) <= delta
    problem = cp.Problem(cp.Minimize(c @ x), [trust])
    assert problem.is_dpp(), "the trust-region sub-problem must be DPP for cvxpylayers"
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse invariant checks")
        return CvxpyLayer(problem, parameters=[c, delta], variables=[x, trust.dual_variables[0]])


def _call(layer: Any, *params: Tensor, solver_args: dict[str, Any]) -> tuple[Tensor, ...]:
    try:
        out = layer(*params, solver_args=solver_args)
    except Exception as exc:  # diffcp / SCS / cvxpy raise a variety of types
        raise SolverError(f"cvxpylayers solve failed: {type(exc).__name__}: {exc}") from exc
    for t in out:
        if not bool(torch.isfinite(t).all()):
            raise SolverError("cvxpylayers returned a non-finite solution")
    return tuple(out)


def _check_trust(x: Tensor, delta: Tensor) -> None:
    half_sq = 0.5 * float(x.detach() @ x.detach())
    d = float(delta.detach())
    if half_sq > d * (1.0 + _FEAS_TOL) + 1e-12:
        raise SolverError(
            f"cvxpylayers step violates the trust region: 1/2||x||^2 = {half_sq:.6g} > delta = {d:.6g}"
        )


def solve_dco(
    *,
    g: Tensor,
    a: Tensor | None,
    b: Tensor | None,
    delta: Tensor,
    solver_args: dict[str, Any] | None = None,
) -> CPOSolution:
    """The CPO step by cvxpylayers (identity metric), for validated inputs.

    Raises :class:`SolverError` when the solver fails or returns a non-finite or infeasible
    point. ``solver_args`` override :data:`DCO_SOLVER_ARGS`.
    """
    if g.dtype != torch.float64:
        # cvxpylayers/diffcp work in float64; solve there (differentiably) and cast back, so
        # float32 policies can use the dco backend.
        def to64(t: Tensor | None) -> Tensor | None:
            return None if t is None else t.to(torch.float64)

        sol = solve_dco(g=to64(g), a=to64(a), b=to64(b), delta=to64(delta), solver_args=solver_args)  # type: ignore[arg-type]
        return CPOSolution(step=sol.step.to(g.dtype), lam=sol.lam.to(g.dtype), nu=sol.nu.to(g.dtype), case=sol.case)
    if g.numel() > DCO_MAX_PARAMS:
        raise ValueError(
            f"backend 'dco' supports at most DCO_MAX_PARAMS={DCO_MAX_PARAMS} parameters, got "
            f"{g.numel()}: compiling the cvxpylayers problem needs O(n^2) memory; use backend='analytic'"
        )
    args = dict(DCO_SOLVER_ARGS)
    if solver_args:
        args.update(solver_args)
    n = g.numel()
    zero = torch.zeros((), dtype=g.dtype, device=g.device)

    if a is None:
        x, lam = _call(trust_region_layer(n), g, delta, solver_args=args)
        _check_trust(x, delta)
        return CPOSolution(step=x, lam=lam.reshape(()), nu=zero, case=SolverCase.UNCONSTRAINED)
    assert b is not None

    s_val = float(a.detach() @ a.detach())
    b_val = float(b.detach())
    two_delta = 2.0 * float(delta.detach())
    if s_val <= tiny(g.dtype):  # a = 0: the constraint is the constant b <= 0
        if b_val > 0.0:
            return CPOSolution(step=a * 0.0, lam=zero, nu=zero, case=SolverCase.RECOVERY)
        x, lam = _call(trust_region_layer(n), g, delta, solver_args=args)
        _check_trust(x, delta)
        return CPOSolution(step=x, lam=lam.reshape(()), nu=zero, case=SolverCase.UNCONSTRAINED)
    if b_val > 0.0 and two_delta - b_val * b_val / s_val <= rel_eps(g.dtype) * two_delta:
        x, lam = _call(trust_region_layer(n), a, delta, solver_args=args)
        _check_trust(x, delta)
        return CPOSolution(
            step=x, lam=lam.reshape(()), nu=torch.ones_like(zero), case=SolverCase.RECOVERY
        )

    x, lam, nu = _call(cpo_layer(n), g, a, b, delta, solver_args=args)
    lam, nu = lam.reshape(()), nu.reshape(())
    _check_trust(x, delta)
    xd = x.detach()
    viol = b_val + float(a.detach() @ xd)
    scale = abs(b_val) + math.sqrt(s_val) * float(torch.linalg.vector_norm(xd)) + 1e-12
    if viol > _FEAS_TOL * scale:
        raise SolverError(f"cvxpylayers step violates the cost constraint: b + a^T x = {viol:.6g} > 0")
    active = float(nu.detach()) * math.sqrt(s_val) > _ACTIVE_NU_TOL * float(lam.detach()) * float(
        torch.linalg.vector_norm(xd)
    )
    case = SolverCase.ACTIVE if active else SolverCase.UNCONSTRAINED
    return CPOSolution(step=x, lam=lam, nu=nu, case=case)
