"""The CPO sub-problem as a differentiable layer.

``solve_cpo`` solves  min_x g^T x  s.t.  1/2 x^T H x <= delta,  b + a^T x <= 0  with either the
closed-form dual ("analytic", torch, any metric) or cvxpylayers ("dco", identity metric), and
returns the step, the multipliers and the case. See docs/solvers.md.
"""

from .analytic import solve_analytic, trust_region_step
from .cpo import BACKENDS, solve_cpo, solve_cpo_with_fallback
from .dco import DCO_MAX_PARAMS, DCO_SOLVER_ARGS, solve_dco
from .metric import (
    ExactFisherMetric,
    FisherMetric,
    IdentityMetric,
    MatrixMetric,
    Metric,
    conjugate_gradient,
    solve_linear,
)
from .types import CPOSolution, SolverCase, SolverError

__all__ = [
    "BACKENDS",
    "CPOSolution",
    "DCO_MAX_PARAMS",
    "DCO_SOLVER_ARGS",
    "ExactFisherMetric",
    "FisherMetric",
    "IdentityMetric",
    "MatrixMetric",
    "Metric",
    "SolverCase",
    "SolverError",
    "conjugate_gradient",
    "solve_analytic",
    "solve_cpo",
    "solve_cpo_with_fallback",
    "solve_dco",
    "solve_linear",
    "trust_region_step",
]
