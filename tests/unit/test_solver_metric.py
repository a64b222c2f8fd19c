"""Metrics: conjugate gradient, the CG solve with a CG backward, and CPO with a Fisher metric."""

from __future__ import annotations

import pytest
import torch

from metacpo.solvers import (
    FisherMetric,
    MatrixMetric,
    SolverCase,
    conjugate_gradient,
    solve_cpo,
    solve_linear,
)
from tests.solver_instances import random_instance, random_spd

F64 = torch.float64
CASES = [SolverCase.UNCONSTRAINED, SolverCase.ACTIVE, SolverCase.RECOVERY]


class CountingHvp:
    """v -> M v with M a leaf that requires grad (so any backprop into it would show)."""

    def __init__(self, matrix: torch.Tensor) -> None:
        self.matrix = matrix.clone().requires_grad_(True)
        self.calls = 0

    def __call__(self, v: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.matrix @ v


def test_conjugate_gradient_matches_dense_solve() -> None:
    gen = torch.Generator().manual_seed(0)
    for n in (1, 5, 30):
        H = random_spd(n, generator=gen)
        b = torch.randn(n, generator=gen, dtype=F64)
        x = conjugate_gradient(lambda v: H @ v, b, iters=10 * n, tol=1e-14)
        torch.testing.assert_close(x, torch.linalg.solve(H, b), rtol=1e-10, atol=1e-12)
    # early stop on the relative residual; a zero right-hand side costs no product
    H = random_spd(40, generator=gen)
    hvp = CountingHvp(H)
    b = torch.randn(40, generator=gen, dtype=F64)
    x = conjugate_gradient(hvp, b, iters=200, tol=1e-3)
    assert 1 <= hvp.calls < 40
    assert float((b - H @ x).norm()) <= 1e-3 * float(b.norm())
    hvp.calls = 0
    assert float(conjugate_gradient(hvp, torch.zeros(40, dtype=F64), iters=5).abs().max()) == 0.0
    assert hvp.calls == 0
    with pytest.raises(ValueError, match="iters >= 1, got 0"):
        conjugate_gradient(hvp, b, iters=0)


def test_fisher_solve_forward_and_backward_are_cg_solves() -> None:
    gen = torch.Generator().manual_seed(1)
    n, iters, damping = 12, 60, 0.1
    H = random_spd(n, generator=gen)
    hvp = CountingHvp(H)
    metric = FisherMetric(hvp=hvp, cg_iters=iters, damping=damping)
    Hd = H + damping * torch.eye(n, dtype=F64)
    v = torch.randn(n, generator=gen, dtype=F64, requires_grad=True)
    u = torch.randn(n, generator=gen, dtype=F64)
    w = solve_linear(metric, v)
    torch.testing.assert_close(w, torch.linalg.solve(Hd, v.detach()), rtol=1e-9, atol=1e-12)
    assert 0 < hvp.calls <= iters
    hvp.calls = 0
    (grad_v,) = torch.autograd.grad(u @ w, v)
    # implicit differentiation: d(u^T H^-1 v)/dv = H^-1 u, obtained by one more CG solve
    torch.testing.assert_close(grad_v, torch.linalg.solve(Hd, u), rtol=1e-9, atol=1e-12)
    assert 0 < hvp.calls <= iters
    # H is a constant on the backward path: nothing flowed into the matrix behind the hvp
    assert hvp.matrix.grad is None
    # double backward: the backward is itself a differentiable CG solve.
    # f(v) = |H^-1 v|^2 has gradient 2 H^-2 v and Hessian 2 H^-2.
    w2 = solve_linear(metric, v)
    (gv,) = torch.autograd.grad(w2 @ w2, v, create_graph=True)
    Hinv = torch.linalg.inv(Hd)
    torch.testing.assert_close(gv, 2 * Hinv @ Hinv @ v.detach(), rtol=1e-8, atol=1e-10)
    (ggv,) = torch.autograd.grad(gv @ u, v)
    torch.testing.assert_close(ggv, 2 * Hinv @ Hinv @ u, rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("case", CASES)
def test_cpo_with_fisher_cg_equals_dense_solve_and_its_gradient(case: SolverCase) -> None:
    gen = torch.Generator().manual_seed(10 + int(case))
    damping = 0.1
    for i in range(30):
        n = 4 + i % 8
        F = random_spd(n, generator=gen)
        H = F + damping * torch.eye(n, dtype=F64)
        inst = random_instance(n=n, case=case, generator=gen, matrix=H)
        hvp = CountingHvp(F)
        fisher = FisherMetric(hvp=hvp, cg_iters=4 * n, damping=damping)
        cot = torch.randn(n, generator=gen, dtype=F64)
        results = []
        for metric in (fisher, MatrixMetric(H)):
            ts = [t.clone().requires_grad_(True) for t in (inst.g, inst.a, inst.b, inst.delta)]
            sol = solve_cpo(g=ts[0], a=ts[1], b=ts[2], delta=ts[3], metric=metric, normalize=False)
            forward_calls = hvp.calls
            grads = torch.autograd.grad(cot @ sol.step + sol.lam + sol.nu, ts, allow_unused=True)
            grads = [torch.zeros_like(t) if g is None else g for t, g in zip(ts, grads)]
            results.append((sol, grads, forward_calls, hvp.calls - forward_calls))
            hvp.calls = 0
        (cg, cg_grads, fwd, bwd), (dense, dense_grads, _, _) = results
        assert cg.case == dense.case == case
        torch.testing.assert_close(cg.step, dense.step, rtol=1e-8, atol=1e-12)
        torch.testing.assert_close(cg.lam, dense.lam, rtol=1e-8, atol=1e-12)
        torch.testing.assert_close(cg.nu, dense.nu, rtol=1e-8, atol=1e-12)
        for gc, gd in zip(cg_grads, dense_grads):
            torch.testing.assert_close(gc, gd, rtol=1e-7, atol=1e-10)
        # two CG solves forward (H^-1 g, H^-1 a) and at most two backward: never unrolled
        assert 0 < fwd <= 2 * fisher.cg_iters
        assert 0 < bwd <= 2 * fisher.cg_iters
        assert hvp.matrix.grad is None


@pytest.mark.parametrize("case", CASES)
def test_fisher_step_matches_cvxpylayers_in_whitened_coordinates(case: SolverCase) -> None:
    """Independent check: with H = L L^T and y = L^T x the problem is the identity-metric one
    for (L^-1 g, L^-1 a), solved by cvxpylayers; x = L^-T y. Steps and VJPs must agree."""
    gen = torch.Generator().manual_seed(20 + int(case))
    for i in range(12):
        n = 4 + i % 6
        H = random_spd(n, generator=gen)
        L = torch.linalg.cholesky(H)
        inst = random_instance(n=n, case=case, generator=gen, matrix=H)
        cot = torch.randn(n, generator=gen, dtype=F64)
        ts = [t.clone().requires_grad_(True) for t in (inst.g, inst.a, inst.b, inst.delta)]
        fisher = FisherMetric(hvp=lambda v, H=H: H @ v, cg_iters=4 * n, damping=0.0)
        sol = solve_cpo(g=ts[0], a=ts[1], b=ts[2], delta=ts[3], metric=fisher, normalize=False)
        grads = torch.autograd.grad(cot @ sol.step, ts, allow_unused=True)
        tr = [t.clone().requires_grad_(True) for t in (inst.g, inst.a, inst.b, inst.delta)]
        gw = torch.linalg.solve_triangular(L, tr[0].unsqueeze(1), upper=False).squeeze(1)
        aw = torch.linalg.solve_triangular(L, tr[1].unsqueeze(1), upper=False).squeeze(1)
        ref = solve_cpo(g=gw, a=aw, b=tr[2], delta=tr[3], backend="dco", normalize=False)
        x_ref = torch.linalg.solve_triangular(L.T, ref.step.unsqueeze(1), upper=True).squeeze(1)
        ref_grads = torch.autograd.grad(cot @ x_ref, tr, allow_unused=True)
        assert sol.case == ref.case == case
        assert float((sol.step - x_ref).detach().norm()) <= 1e-4 * float(x_ref.detach().norm())
        total = sum(float(g.norm()) for g in ref_grads if g is not None)
        for g1, g2 in zip(grads, ref_grads):
            g1 = torch.zeros(()) if g1 is None else g1
            g2 = torch.zeros(()) if g2 is None else g2
            assert float((g1 - g2).norm()) <= 1e-4 * float(g2.norm()) + 1e-6 * total


def test_fisher_metric_with_an_autograd_hessian_vector_product() -> None:
    """A real KL-Hessian-style hvp (double backprop, graph rebuilt on each call) works inside
    the CG forward and backward, which run with grad mode off, and matches the dense Hessian."""
    gen = torch.Generator().manual_seed(3)
    n, m = 9, 40
    X = torch.randn(m, n, generator=gen, dtype=F64)
    theta0 = 0.3 * torch.randn(n, generator=gen, dtype=F64)

    def kl(th: torch.Tensor) -> torch.Tensor:  # mean KL between Bernoulli(sigmoid(X th0)) and (X th)
        p0 = torch.sigmoid(X @ theta0)
        logit = X @ th
        return (p0 * (torch.nn.functional.softplus(-logit)) + (1 - p0) * torch.nn.functional.softplus(logit)).mean()

    def hvp(v: torch.Tensor) -> torch.Tensor:
        th = theta0.clone().requires_grad_(True)
        (gr,) = torch.autograd.grad(kl(th), th, create_graph=True)
        (hv,) = torch.autograd.grad(gr @ v, th)
        return hv

    F = torch.autograd.functional.hessian(kl, theta0)
    damping = 0.05
    H = F + damping * torch.eye(n, dtype=F64)
    for case in CASES:
        inst = random_instance(n=n, case=case, generator=gen, matrix=H)
        g = inst.g.clone().requires_grad_(True)
        a = inst.a.clone().requires_grad_(True)
        cg = solve_cpo(
            g=g, a=a, b=inst.b, delta=inst.delta,
            metric=FisherMetric(hvp=hvp, cg_iters=5 * n, damping=damping), normalize=False,
        )
        dense = solve_cpo(g=g, a=a, b=inst.b, delta=inst.delta, metric=MatrixMetric(H), normalize=False)
        assert cg.case == dense.case == case
        torch.testing.assert_close(cg.step, dense.step, rtol=1e-7, atol=1e-10)
        g1 = torch.autograd.grad(cg.step.sum(), (g, a), allow_unused=True)
        g2 = torch.autograd.grad(dense.step.sum(), (g, a), allow_unused=True)
        for x, y in zip(g1, g2):
            assert (x is None) == (y is None)  # the recovery step does not depend on g
            if x is not None:
                torch.testing.assert_close(x, y, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"cg_iters": 0}, "cg_iters must be >= 1, got 0"),
        ({"damping": -0.1}, "damping must be finite and >= 0, got -0.1"),
        ({"hvp": 3}, "hvp must be callable"),
    ],
)
def test_fisher_metric_rejects_bad_settings(kwargs: dict, match: str) -> None:
    args = {"hvp": lambda v: v}
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        FisherMetric(**args)


def test_hvp_with_wrong_shape_is_reported() -> None:
    metric = FisherMetric(hvp=lambda v: torch.cat([v, v]), cg_iters=3)
    with pytest.raises(ValueError, match=r"hvp returned shape \(8,\) for an input of shape \(4,\)"):
        solve_cpo(g=torch.ones(4, dtype=F64), a=None, b=None, delta=0.1, metric=metric)


def _kkt_residual(case: SolverCase, z: torch.Tensor, H: torch.Tensor, g, a, b, delta) -> torch.Tensor:
    """The active KKT equations F(z; g, a, b, delta) = 0 of each case, z = (x, lam[, nu])."""
    n = g.numel()
    x, lam = z[:n], z[n]
    Hx = H @ x
    trust = (0.5 * x @ Hx - delta).reshape(1)
    if case == SolverCase.UNCONSTRAINED:
        return torch.cat([g + lam * Hx, trust])
    if case == SolverCase.RECOVERY:  # min a^T x s.t. trust region
        return torch.cat([a + lam * Hx, trust])
    nu = z[n + 1]
    return torch.cat([g + lam * Hx + nu * a, trust, (b + a @ x).reshape(1)])


@pytest.mark.parametrize("case", CASES)
def test_fisher_gradient_equals_dense_implicit_function_gradient(case: SolverCase) -> None:
    """Reference VJP from the implicit function theorem on the KKT system with dense matrices:
    u^T dz/dtheta = -(J_z^-T u)^T dF/dtheta, J_z = dF/dz at the solution."""
    gen = torch.Generator().manual_seed(30 + int(case))
    for i in range(15):
        n = 4 + i % 6
        F = random_spd(n, generator=gen)
        damping = 0.1
        H = F + damping * torch.eye(n, dtype=F64)
        inst = random_instance(n=n, case=case, generator=gen, matrix=H)
        u = torch.randn(n, generator=gen, dtype=F64)
        ts = [t.clone().requires_grad_(True) for t in (inst.g, inst.a, inst.b, inst.delta)]
        fisher = FisherMetric(hvp=lambda v, F=F: F @ v, cg_iters=4 * n, damping=damping)
        sol = solve_cpo(g=ts[0], a=ts[1], b=ts[2], delta=ts[3], metric=fisher, normalize=False)
        assert sol.case == case
        grads = torch.autograd.grad(u @ sol.step, ts, allow_unused=True)

        parts = [sol.step.detach(), sol.lam.detach().reshape(1)]
        if case == SolverCase.ACTIVE:
            parts.append(sol.nu.detach().reshape(1))
        z = torch.cat(parts)
        theta = [t.detach().clone().requires_grad_(True) for t in (inst.g, inst.a, inst.b, inst.delta)]
        assert float(_kkt_residual(case, z, H, *theta).detach().norm()) <= 1e-9
        J = torch.autograd.functional.jacobian(lambda zz: _kkt_residual(case, zz, H, *theta), z)
        u_z = torch.cat([u, torch.zeros(z.numel() - n, dtype=F64)])
        adj = torch.linalg.solve(J.T, u_z)
        ref = torch.autograd.grad(-(adj @ _kkt_residual(case, z, H, *theta)), theta, allow_unused=True)
        for got, want in zip(grads, ref):
            got = torch.zeros(()) if got is None else got
            want = torch.zeros(()) if want is None else want
            torch.testing.assert_close(got, want.expand_as(got) if got.dim() else want, rtol=1e-7, atol=1e-10)


def test_conjugate_gradient_accepts_an_autograd_hvp_even_under_no_grad() -> None:
    gen = torch.Generator().manual_seed(4)
    M = random_spd(6, generator=gen)

    def hvp(v: torch.Tensor) -> torch.Tensor:  # Hessian of 1/2 th^T M th, by double backprop
        th = torch.zeros(6, dtype=F64, requires_grad=True)
        (gr,) = torch.autograd.grad(0.5 * th @ M @ th, th, create_graph=True)
        (hv,) = torch.autograd.grad(gr @ v, th)
        return hv

    b = torch.randn(6, generator=gen, dtype=F64)
    with torch.no_grad():
        x = conjugate_gradient(hvp, b, iters=30, tol=1e-14)
    assert not x.requires_grad
    torch.testing.assert_close(x, torch.linalg.solve(M, b), rtol=1e-10, atol=1e-12)
