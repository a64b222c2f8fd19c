"""Result records and errors shared by every CPO sub-problem backend."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from torch import Tensor


class SolverCase(enum.IntEnum):
    """Which branch of the CPO sub-problem produced the step.

    See docs/solvers.md for the exact boundaries between the cases.
    """

    UNCONSTRAINED = 0
    """The cost constraint is inactive at the trust-region (TRPO) step, or no constraint was given."""
    ACTIVE = 1
    """Both the trust region and the linearised cost constraint are active (lambda*, nu* closed form)."""
    RECOVERY = 2
    """Infeasible: no step inside the trust region satisfies the cost constraint; the step is
    the pure cost-reduction recovery step ``x = -sqrt(2 delta / s) H^-1 a``."""

    @property
    def label(self) -> str:
        """The case's name in logs: ``unconstrained``, ``active`` or ``recovery``."""
        return self.name.lower()


@dataclass(frozen=True)
class CPOSolution:
    """The solution of  min_x g^T x  s.t.  1/2 x^T H x <= delta,  b + a^T x <= 0."""

    step: Tensor
    """x*, flat, same dtype/device as g; differentiable w.r.t. g, a, b and delta."""
    lam: Tensor
    """lambda, the trust-region multiplier (scalar tensor). In RECOVERY: the trust-region
    multiplier of the recovery problem min a^T x s.t. 1/2 x^T H x <= delta, i.e. sqrt(s / 2 delta)."""
    nu: Tensor
    """nu, the cost-constraint multiplier (scalar tensor); 0 when the constraint is inactive
    or absent. In RECOVERY it is 1 (the weight of a in the recovery objective; see docs)."""
    case: SolverCase
    """Which case applied."""


class SolverError(RuntimeError):
    """A differentiable-convex-programming (cvxpylayers/diffcp/SCS) solve failed or returned a
    non-finite or infeasible result. Callers may fall back to the analytic backend."""
