"""One entry point for the CPO sub-problem: input checks, normalisation, backend dispatch."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from metacpo.choices import SOLVER_BACKENDS

from .analytic import solve_analytic, tiny
from .dco import solve_dco
from .metric import IdentityMetric, Metric
from .types import CPOSolution, SolverError

BACKENDS = SOLVER_BACKENDS
"""Allowed values of ``backend`` (:data:`metacpo.choices.SOLVER_BACKENDS`)."""


def _as_scalar(name: str, value: float | Tensor, like: Tensor) -> Tensor:
    if isinstance(value, Tensor):
        if value.numel() != 1:
            raise ValueError(f"{name} must be a scalar, got a tensor of shape {tuple(value.shape)}")
        t = value.reshape(()).to(dtype=like.dtype, device=like.device)
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        t = torch.tensor(float(value), dtype=like.dtype, device=like.device)
    else:
        raise ValueError(f"{name} must be a float or a scalar tensor, got {type(value).__name__}")
    if not math.isfinite(float(t.detach())):
        raise ValueError(f"{name} must be finite, got {float(t.detach())}")
    return t


def _check_vector(name: str, v: Tensor, like: Tensor | None) -> None:
    if not isinstance(v, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(v).__name__}")
    if v.dim() != 1 or v.numel() == 0:
        raise ValueError(f"{name} must be a non-empty flat (1-D) tensor, got shape {tuple(v.shape)}")
    if not v.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor, got dtype {v.dtype}")
    if like is not None:
        if v.shape != like.shape:
            raise ValueError(f"{name} has shape {tuple(v.shape)} but g has shape {tuple(like.shape)}")
        if v.dtype != like.dtype or v.device != like.device:
            raise ValueError(
                f"{name} has dtype/device {v.dtype}/{v.device} but g has {like.dtype}/{like.device}"
            )
    finite = torch.isfinite(v.detach())
    if not bool(finite.all()):
        bad = int((~finite).sum())
        raise ValueError(f"{name} has {bad} non-finite entries (NaN or inf)")


def _unit(v: Tensor) -> Tensor:
    """v / ||v|| (Euclidean, differentiable); a zero vector stays zero."""
    norm = torch.linalg.vector_norm(v)
    if norm.item() ** 2 <= tiny(v.dtype):
        return v
    return v / norm


def solve_cpo(
    *,
    g: Tensor,
    a: Tensor | None,
    b: Tensor | float | None,
    delta: float | Tensor,
    backend: str = "analytic",
    metric: Metric | None = None,
    normalize: bool = True,
) -> CPOSolution:
    """Solve  min_x g^T x  s.t.  1/2 x^T H x <= delta,  b + a^T x <= 0.

    Args:
        g: flat gradient of the reward-surrogate loss (the loss is minimised).
        a: flat gradient of the cost surrogate, or None for no cost constraint (TRPO step).
        b: J_C - d (discounted cost estimate minus the cost limit); None iff ``a`` is None.
        delta: trust-region size (> 0).
        backend: "analytic" (closed form in torch) or "dco" (cvxpylayers; identity metric only).
        metric: H; None means the identity. :class:`FisherMetric` gives CPO proper.
        normalize: scale g and a to unit Euclidean norm first, as the seed does (b is left as
            it is, so this changes the linearised constraint; see docs/solvers.md).

    Returns:
        :class:`CPOSolution` (step differentiable w.r.t. g, a, b and delta).

    Raises:
        ValueError: bad input (delta <= 0, shape/dtype mismatch, non-finite values, unknown
            backend, dco with a non-identity metric).
        SolverError: the dco backend failed (see :func:`solve_cpo_with_fallback`).
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; allowed: {list(BACKENDS)}")
    _check_vector("g", g, None)
    if (a is None) != (b is None):
        raise ValueError(
            "a and b must both be given (CPO) or both be None (TRPO); got "
            f"a={'None' if a is None else 'tensor'}, b={'None' if b is None else b!r}"
        )
    delta_t = _as_scalar("delta", delta, g)
    if float(delta_t.detach()) <= 0.0:
        raise ValueError(f"delta must be > 0, got {float(delta_t.detach())}")
    b_t: Tensor | None = None
    if a is not None:
        _check_vector("a", a, g)
        assert b is not None
        b_t = _as_scalar("b", b, g)
    if metric is None:
        metric = IdentityMetric()
    elif not (hasattr(metric, "solve") and hasattr(metric, "matvec")):
        raise ValueError(f"metric must provide solve() and matvec(), got {type(metric).__name__}")

    if normalize:
        g = _unit(g)
        if a is not None:
            a = _unit(a)

    if backend == "analytic":
        return solve_analytic(g=g, a=a, b=b_t, delta=delta_t, metric=metric)
    if not isinstance(metric, IdentityMetric):
        raise ValueError(
            f"backend 'dco' supports only the identity metric, got {type(metric).__name__}; "
            "use backend='analytic' for a Fisher or matrix metric"
        )
    return solve_dco(g=g, a=a, b=b_t, delta=delta_t)


def solve_cpo_with_fallback(
    *,
    g: Tensor,
    a: Tensor | None,
    b: Tensor | float | None,
    delta: float | Tensor,
    backend: str = "dco",
    metric: Metric | None = None,
    normalize: bool = True,
) -> tuple[CPOSolution, bool]:
    """:func:`solve_cpo`, falling back to the analytic backend when the dco backend raises
    :class:`SolverError`. Returns ``(solution, fell_back)``; the caller logs the fallback.
    Bad input still raises ValueError (no fallback for that)."""
    try:
        sol = solve_cpo(g=g, a=a, b=b, delta=delta, backend=backend, metric=metric, normalize=normalize)
        return sol, False
    except SolverError:
        if backend == "analytic":
            raise
    sol = solve_cpo(g=g, a=a, b=b, delta=delta, backend="analytic", metric=metric, normalize=normalize)
    return sol, True
