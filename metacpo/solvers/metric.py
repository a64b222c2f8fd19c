"""The trust-region metric H: identity, an explicit matrix, or the Fisher information via CG.

Every metric offers ``solve(v) = H^-1 v`` (differentiable in ``v``) and ``matvec(v) = H v``.
For :class:`FisherMetric` the solve is conjugate gradient on Fisher-vector products and its
backward pass is again a CG solve (implicit differentiation of ``H w = v``:
``dL/dv = H^-1 dL/dw`` since H is symmetric). The Fisher matrix itself is treated as a
constant on that path: no gradient flows into whatever the ``hvp`` closure depends on.
:class:`ExactFisherMetric` keeps that dependence: its solve's derivative is the implicit
derivative of ``H(theta) w = v`` *including* ``dH/dtheta``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor


@runtime_checkable
class Metric(Protocol):
    """A symmetric positive definite matrix H, given only through products and solves."""

    def solve(self, v: Tensor) -> Tensor:
        """``H^-1 v`` (differentiable w.r.t. ``v``)."""
        ...

    def matvec(self, v: Tensor) -> Tensor:
        """``H v``."""
        ...


@dataclass(frozen=True)
class IdentityMetric:
    """H = I: the seed's Euclidean trust region ``1/2 ||x||^2 <= delta``."""

    def solve(self, v: Tensor) -> Tensor:
        """``I^-1 v = v``."""
        return v

    def matvec(self, v: Tensor) -> Tensor:
        """``I v = v``."""
        return v


@dataclass(frozen=True)
class MatrixMetric:
    """An explicit dense SPD matrix H (small problems and tests). Solves are exact
    (``torch.linalg.solve``) and differentiable w.r.t. both ``v`` and ``matrix``."""

    matrix: Tensor
    """The n x n symmetric positive definite matrix H."""

    def __post_init__(self) -> None:
        m = self.matrix
        if m.dim() != 2 or m.shape[0] != m.shape[1]:
            raise ValueError(f"MatrixMetric needs a square matrix, got shape {tuple(m.shape)}")

    def solve(self, v: Tensor) -> Tensor:
        """``H^-1 v`` by a dense solve."""
        return torch.linalg.solve(self.matrix, v)

    def matvec(self, v: Tensor) -> Tensor:
        """``H v``."""
        return self.matrix @ v


@dataclass(frozen=True)
class FisherMetric:
    """H = F + damping * I with F given only through Fisher(or KL-Hessian)-vector products.

    ``solve`` runs ``cg_iters`` conjugate-gradient iterations (at most); its backward pass is
    one more CG solve, not a differentiation through the CG iterations. F is treated as a
    constant on the backward path.
    """

    hvp: Callable[[Tensor], Tensor]
    """v -> F v for a flat vector v (e.g. the KL Hessian-vector product of the policy)."""
    cg_iters: int = 10
    """Maximum number of CG iterations per solve (forward and backward)."""
    damping: float = 0.1
    """Added to the diagonal: the metric is F + damping * I (keeps CG well posed)."""
    cg_tol: float = 1e-10
    """CG stops once ||residual|| <= cg_tol * ||right-hand side||."""

    def __post_init__(self) -> None:
        if not callable(self.hvp):
            raise ValueError(f"FisherMetric.hvp must be callable, got {type(self.hvp).__name__}")
        if self.cg_iters < 1:
            raise ValueError(f"FisherMetric.cg_iters must be >= 1, got {self.cg_iters}")
        if not (self.damping >= 0.0) or self.damping == float("inf"):
            raise ValueError(f"FisherMetric.damping must be finite and >= 0, got {self.damping}")
        if not (self.cg_tol >= 0.0):
            raise ValueError(f"FisherMetric.cg_tol must be >= 0, got {self.cg_tol}")

    def matvec(self, v: Tensor) -> Tensor:
        """``(F + damping I) v`` as a constant (detached) product."""
        with torch.enable_grad():
            fv = self.hvp(v.detach())
        if fv.shape != v.shape:
            raise ValueError(
                f"FisherMetric.hvp returned shape {tuple(fv.shape)} for an input of shape {tuple(v.shape)}"
            )
        out = fv.detach()
        if self.damping:
            out = out + self.damping * v.detach()
        return out

    def solve(self, v: Tensor) -> Tensor:
        """``(F + damping I)^-1 v`` by CG; differentiable in ``v`` via a CG backward."""
        return _CGSolve.apply(v, self)


@dataclass(frozen=True)
class ExactFisherMetric:
    """A :class:`FisherMetric` whose dependence on the parameters stays on the autograd path.

    ``base`` does the numerics (CG forward and the CG solve of the backward); ``hvp_graph(w)``
    returns ``F(theta) w`` *with* its graph back to the parameters ``theta`` the Fisher matrix
    was built at (a double backward through the KL, ``create_graph=True``).

    Solve (implicit differentiation of ``H w = v`` with ``H = F(theta) + damping I``): the
    forward value is ``w = H^-1 v`` by CG; the derivative is ``dw = H^-1 (dv - dH w)``. It is
    obtained without unrolling CG as ``w + S(z)`` with ``z = (v - v0) - (F(theta) w - F0 w)``,
    where ``v0``, ``F0 w`` are the same values detached (so ``z = 0`` and the value is ``w``) and
    ``S`` is the constant-H CG solve whose backward is ``H^-1`` (:class:`FisherMetric`). In
    reverse mode: ``lam = H^-1 dL/dw`` (one CG solve), ``dL/dv = lam`` and
    ``dL/dtheta = -d(lam^T F(theta) w)/dtheta`` (one third-order product). Exact at the solution
    of the linear system: CG must have converged (``cg_iters``/``cg_tol``), as for the constant-H
    backward.
    """

    base: FisherMetric
    """The constant-H numerics: products for CG, iterations, damping and tolerance."""
    hvp_graph: Callable[[Tensor], Tensor]
    """w -> F(theta) w (no damping) with the graph to theta kept (``create_graph=True``)."""

    def __post_init__(self) -> None:
        if not isinstance(self.base, FisherMetric):
            raise ValueError(f"ExactFisherMetric.base must be a FisherMetric, got {type(self.base).__name__}")
        if not callable(self.hvp_graph):
            raise ValueError(f"ExactFisherMetric.hvp_graph must be callable, got {type(self.hvp_graph).__name__}")

    def matvec(self, v: Tensor) -> Tensor:
        """``(F + damping I) v`` as a constant (detached) product."""
        return self.base.matvec(v)

    def solve(self, v: Tensor) -> Tensor:
        """``(F(theta) + damping I)^-1 v``, differentiable in ``v`` and in ``theta``."""
        b = self.base
        w = conjugate_gradient(b.matvec, v.detach(), b.cg_iters, b.cg_tol)
        if not torch.is_grad_enabled():
            return w
        with torch.enable_grad():
            fw = self.hvp_graph(w).to(v.dtype)
        if fw.shape != v.shape:
            raise ValueError(f"ExactFisherMetric.hvp_graph returned shape {tuple(fw.shape)} for an input of "
                             f"shape {tuple(v.shape)}")
        z = (v - v.detach()) - (fw - fw.detach())  # zero in value; carries dv - dF w
        if not z.requires_grad:
            return w
        return w + _CGSolve.apply(z, b)


def conjugate_gradient(
    hvp: Callable[[Tensor], Tensor], b: Tensor, iters: int, tol: float = 1e-10
) -> Tensor:
    """Approximately solve ``H x = b`` for SPD ``H`` given as ``hvp(v) = H v``.

    Starts from x = 0, runs at most ``iters`` iterations and stops early once
    ``||b - H x|| <= tol * ||b||``. Pure function; the result carries no autograd graph
    (``hvp`` is called with grad mode on, so it may use double backprop, and its output is
    treated as a constant).
    """
    if iters < 1:
        raise ValueError(f"conjugate_gradient needs iters >= 1, got {iters}")
    b = b.detach()
    x = torch.zeros_like(b)
    r = b.clone()
    p = r.clone()
    rr = r @ r
    stop = (tol * torch.linalg.vector_norm(b)) ** 2
    if rr <= stop:
        return x
    for _ in range(iters):
        # the product may itself use autograd (double backprop); its result is a constant here
        with torch.enable_grad():
            hp = hvp(p)
        hp = hp.detach()
        php = p @ hp
        if not torch.isfinite(php) or php <= 0:
            # H is not positive definite along p (or numerical breakdown): stop here.
            break
        alpha = rr / php
        x = x + alpha * p
        r = r - alpha * hp
        rr_new = r @ r
        if rr_new <= stop:
            break
        p = r + (rr_new / rr) * p
        rr = rr_new
    return x


class _CGSolve(torch.autograd.Function):
    """w = H^-1 v by CG; backward: dL/dv = H^-1 dL/dw (H symmetric), again by CG."""

    @staticmethod
    def forward(v: Tensor, metric: FisherMetric) -> Tensor:  # type: ignore[override]
        return conjugate_gradient(metric.matvec, v.detach(), metric.cg_iters, metric.cg_tol)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple, output: Tensor) -> None:
        ctx.metric = inputs[1]

    @staticmethod
    def backward(ctx: Any, grad_w: Tensor) -> tuple[Tensor, None]:  # type: ignore[override]
        # Applying the Function again keeps the backward itself differentiable (double backward).
        return _CGSolve.apply(grad_w, ctx.metric), None


def solve_linear(metric: Metric, v: Tensor) -> Tensor:
    """``H^-1 v`` for any metric, differentiable w.r.t. ``v``.

    With :class:`FisherMetric` the backward pass is a CG solve (implicit differentiation),
    treating the Fisher matrix as constant; with :class:`ExactFisherMetric` the same plus the
    ``dH/dtheta`` term; never unrolled CG.
    """
    return metric.solve(v)
