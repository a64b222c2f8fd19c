"""Random CPO sub-problem instances placed in a chosen case (the solver tests; bench/solver.py)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from metacpo.solvers import SolverCase


@dataclass(frozen=True)
class CPOInstance:
    """One sub-problem  min g^T x  s.t. 1/2 x^T H x <= delta, b + a^T x <= 0."""

    g: Tensor
    """Flat loss gradient."""
    a: Tensor
    """Flat cost gradient."""
    b: Tensor
    """0-d tensor, J_C - d."""
    delta: Tensor
    """0-d tensor, trust-region size."""


def random_spd(n: int, *, generator: torch.Generator, dtype: torch.dtype = torch.float64) -> Tensor:
    """A random symmetric positive-definite metric ``M M^T / n + 0.2 I`` (eigenvalues >= 0.2)."""
    m = torch.randn(n, n, generator=generator, dtype=dtype)
    return m @ m.T / n + 0.2 * torch.eye(n, dtype=dtype)


def random_instance(
    *,
    n: int,
    case: SolverCase,
    generator: torch.Generator,
    dtype: torch.dtype = torch.float64,
    matrix: Tensor | None = None,
    unit: bool = False,
    margin: float = 0.05,
) -> CPOInstance:
    """Draw g, a ~ N(0, I_n), delta ~ U(0.005, 0.1) and a b that puts the instance in ``case``
    with a relative ``margin`` from the case boundaries (so finite differences stay in it).

    ``matrix`` is the metric H (None = identity); ``unit`` scales g and a to unit norm first
    (the instance then lies in ``case`` also for ``normalize=True``).
    """
    if n < 2:
        raise ValueError(f"n must be >= 2 (an ACTIVE case needs g not parallel to a), got {n}")
    if not 0.0 < margin < 0.5:
        raise ValueError(f"margin must be in (0, 0.5), got {margin}")
    g = torch.randn(n, generator=generator, dtype=dtype)
    a = torch.randn(n, generator=generator, dtype=dtype)
    if unit:
        g, a = g / g.norm(), a / a.norm()
    u = torch.rand(2, generator=generator, dtype=dtype)
    delta = 0.005 + 0.095 * u[0]
    w_g = g if matrix is None else torch.linalg.solve(matrix, g)
    w_a = a if matrix is None else torch.linalg.solve(matrix, a)
    q, r, s = g @ w_g, g @ w_a, a @ w_a
    b_max = torch.sqrt(2 * delta * s)  # feasible iff b <= b_max
    b_u = torch.sqrt(2 * delta / q) * r  # the TRPO step is feasible iff b <= b_u (<= b_max)
    t = margin + (1 - 2 * margin) * u[1]
    if case == SolverCase.UNCONSTRAINED:
        b = b_u - t * b_max
    elif case == SolverCase.ACTIVE:
        b = b_u + t * (b_max - b_u)
    elif case == SolverCase.RECOVERY:
        b = b_max * (1 + t)
    else:
        raise ValueError(f"unknown case {case!r}")
    return CPOInstance(g=g, a=a, b=b, delta=delta)
