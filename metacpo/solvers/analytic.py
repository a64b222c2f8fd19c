"""Closed-form (dual) solution of the CPO sub-problem, written in torch.

Problem (g is the gradient of the reward-surrogate LOSS, i.e. minus Achiam et al.'s g):

    min_x  g^T x   s.t.   1/2 x^T H x <= delta,   b + a^T x <= 0.

With w_g = H^-1 g, w_a = H^-1 a, q = g^T w_g, r = g^T w_a, s = a^T w_a, the Lagrangian
stationarity ``g + lam H x + nu a = 0`` gives ``x = -(g + nu a) / lam`` in the H^-1 geometry and
the dual  D(lam, nu) = -(q + 2 nu r + nu^2 s) / (2 lam) - lam delta + nu b.

* UNCONSTRAINED (nu = 0): lam = sqrt(q / 2 delta), x = -sqrt(2 delta / q) w_g; valid when the
  TRPO step satisfies the constraint: b - sqrt(2 delta / q) r <= 0.
* ACTIVE: nu = (lam b - r) / s, and with A = q - r^2/s >= 0, B = 2 delta - b^2/s > 0:
  lam = sqrt(A / B),  x = -sqrt(B / A) w_perp - (b / s) w_a,  w_perp = w_g - (r/s) w_a.
* RECOVERY (infeasible: b > 0 and B <= 0): x = -sqrt(2 delta / s) w_a.

Every branch is plain torch arithmetic, so autograd returns the exact derivative of the
solution (the one implicit differentiation of the KKT system gives) inside each case region.
Degenerate points (a = 0, a parallel to g, g = 0, the feasibility boundary) are documented in
docs/solvers.md and handled without NaNs.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .metric import Metric, solve_linear
from .types import CPOSolution, SolverCase

_REL_EPS_FACTOR = 16.0
"""Relative thresholds are this many machine epsilons of the working dtype."""


def tiny(dtype: torch.dtype) -> float:
    """Absolute threshold below which q or s counts as zero (g = 0 or a = 0)."""
    fi = torch.finfo(dtype)
    return fi.tiny / fi.eps


def rel_eps(dtype: torch.dtype) -> float:
    """Relative threshold for the near-degenerate tests (A / q and B / 2 delta)."""
    return _REL_EPS_FACTOR * torch.finfo(dtype).eps


def _scalar(value: float, like: Tensor) -> Tensor:
    return torch.tensor(value, dtype=like.dtype, device=like.device)


def trust_region_step(*, c: Tensor, w_c: Tensor, delta: Tensor) -> tuple[Tensor, Tensor]:
    """argmin_x c^T x s.t. 1/2 x^T H x <= delta, given w_c = H^-1 c.

    Returns (x, lam) with x = -sqrt(2 delta / c^T w_c) w_c and lam = sqrt(c^T w_c / 2 delta).
    At c = 0 (objective identically zero) returns the minimum-norm optimum x = 0, lam = 0.
    """
    qc = c @ w_c
    if qc.item() <= tiny(c.dtype):
        return w_c * 0.0, _scalar(0.0, c)
    return -torch.sqrt(2.0 * delta / qc) * w_c, torch.sqrt(qc / (2.0 * delta))


def solve_analytic(
    *, g: Tensor, a: Tensor | None, b: Tensor | None, delta: Tensor, metric: Metric
) -> CPOSolution:
    """Closed-form CPO step for validated inputs (see :func:`metacpo.solvers.solve_cpo`).

    ``g``, ``a`` are flat tensors of one dtype/device, ``b`` and ``delta`` 0-d tensors of that
    dtype (``a is None`` and ``b is None`` together mean: no cost constraint, TRPO step).
    """
    zero = _scalar(0.0, g)
    w_g = solve_linear(metric, g)
    if a is None:
        x, lam = trust_region_step(c=g, w_c=w_g, delta=delta)
        return CPOSolution(step=x, lam=lam, nu=zero, case=SolverCase.UNCONSTRAINED)
    assert b is not None

    w_a = solve_linear(metric, a)
    q = g @ w_g
    r = g @ w_a
    s = a @ w_a
    eps = rel_eps(g.dtype)
    small = tiny(g.dtype)
    b_val, q_val, r_val, s_val = b.item(), q.item(), r.item(), s.item()
    delta_val = delta.item()

    # a = 0: the constraint reads b <= 0 whatever x is.
    if s_val <= small:
        if b_val <= 0.0:
            x, lam = trust_region_step(c=g, w_c=w_g, delta=delta)
            return CPOSolution(step=x, lam=lam, nu=zero, case=SolverCase.UNCONSTRAINED)
        # Infeasible and no direction reduces the cost: the recovery step is zero.
        return CPOSolution(step=w_a * 0.0, lam=zero, nu=zero, case=SolverCase.RECOVERY)

    two_delta = 2.0 * delta
    big_b = two_delta - b * b / s  # B = 2 delta - b^2 / s
    # Infeasible (or feasible at a single point, which is the recovery step itself).
    if b_val > 0.0 and big_b.item() <= eps * 2.0 * delta_val:
        x = -torch.sqrt(two_delta / s) * w_a
        lam = torch.sqrt(s / two_delta)
        return CPOSolution(step=x, lam=lam, nu=torch.ones_like(lam), case=SolverCase.RECOVERY)

    # Is the TRPO step feasible?  b - sqrt(2 delta / q) r <= 0  <=>  b sqrt(q) <= sqrt(2 delta) r.
    if q_val > small:
        trpo_feasible = b_val * q_val**0.5 <= (2.0 * delta_val) ** 0.5 * r_val
    else:  # g = 0: the TRPO step is x = 0, feasible iff b <= 0
        trpo_feasible = b_val <= 0.0
    if trpo_feasible:
        x, lam = trust_region_step(c=g, w_c=w_g, delta=delta)
        return CPOSolution(step=x, lam=lam, nu=zero, case=SolverCase.UNCONSTRAINED)

    # Both constraints active.
    ratio = r / s
    w_perp = w_g - ratio * w_a  # H^-1 of the part of g H^-1-orthogonal to a
    g_perp = g - ratio * a
    big_a = torch.clamp_min(g_perp @ w_perp, 0.0)  # A = q - r^2/s, computed without cancellation
    x_lin = -(b / s) * w_a  # the H-minimum-norm point of the hyperplane a^T x = -b
    if big_a.item() > eps * q_val:
        lam = torch.sqrt(big_a / big_b)
        x = -torch.sqrt(big_b / big_a) * w_perp + x_lin
        nu = torch.clamp_min((lam * b - r) / s, 0.0)
    else:
        # a anti-parallel to g (or g = 0): every point of the slice {a^T x = -b} inside the
        # trust region is optimal; return the minimum-norm one. The trust region is inactive.
        lam = zero
        x = x_lin + 0.0 * w_perp
        nu = torch.clamp_min(-ratio, 0.0)
    return CPOSolution(step=x, lam=lam, nu=nu, case=SolverCase.ACTIVE)
