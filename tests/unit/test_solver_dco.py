"""The analytic closed form against the seed's cvxpylayers formulation, and the dco fallback."""

from __future__ import annotations

import math

import pytest
import torch

from metacpo.solvers import (
    DCO_MAX_PARAMS,
    FisherMetric,
    MatrixMetric,
    SolverCase,
    SolverError,
    solve_cpo,
    solve_cpo_with_fallback,
    solve_dco,
)
from metacpo.solvers.dco import cpo_layer, trust_region_layer
from tests.solver_instances import random_instance

F64 = torch.float64
CASES = [SolverCase.UNCONSTRAINED, SolverCase.ACTIVE, SolverCase.RECOVERY]


def _rel(x: torch.Tensor, y: torch.Tensor) -> float:
    x, y = x.detach(), y.detach()
    return float((x - y).norm() / max(float(y.norm()), 1e-12))


def _solve_and_vjp(backend, g, a, b, delta, v, cl, cn, normalize=False):
    ts = [t.detach().clone().requires_grad_(True) for t in (g, a, b, delta)]
    sol = solve_cpo(g=ts[0], a=ts[1], b=ts[2], delta=ts[3], backend=backend, normalize=normalize)
    out = v @ sol.step + cl * sol.lam + cn * sol.nu
    grads = torch.autograd.grad(out, ts, allow_unused=True)
    grads = [torch.zeros_like(t) if gr is None else gr for t, gr in zip(ts, grads)]
    return sol, grads


@pytest.mark.parametrize("case", CASES)
def test_analytic_equals_cvxpylayers_step_multipliers_and_vjps(case: SolverCase) -> None:
    gen = torch.Generator().manual_seed(400 + int(case))
    for i in range(150):
        n = 3 + i % 25
        inst = random_instance(n=n, case=case, generator=gen)
        v = torch.randn(n, generator=gen, dtype=F64)
        cl, cn = torch.randn(2, generator=gen, dtype=F64)
        ana, g_ana = _solve_and_vjp("analytic", inst.g, inst.a, inst.b, inst.delta, v, cl, cn)
        dco, g_dco = _solve_and_vjp("dco", inst.g, inst.a, inst.b, inst.delta, v, cl, cn)
        assert ana.case == dco.case == case
        assert _rel(dco.step, ana.step) <= 1e-4
        assert _rel(dco.lam, ana.lam) <= 1e-4
        if case == SolverCase.ACTIVE:
            assert _rel(dco.nu, ana.nu) <= 1e-4
        else:
            assert abs(float(dco.nu.detach()) - float(ana.nu.detach())) <= 1e-6
        # relative error <= 1e-4; exact zeros (e.g. d/db while the constraint is inactive) are
        # compared against 1e-6 of the whole VJP's size (the dco solver's noise level)
        total = float(torch.cat([t.reshape(-1) for t in g_ana]).norm())
        for name, ga, gd in zip("g a b delta".split(), g_ana, g_dco):
            assert float((gd - ga).norm()) <= 1e-4 * float(ga.norm()) + 1e-6 * total, (name, i)


def _directional_fd(backend, inst, dirs, v, cl, cn, h=1e-5):
    def value(t):
        args = [x + t * d for x, d in zip((inst.g, inst.a, inst.b, inst.delta), dirs)]
        sol = solve_cpo(g=args[0], a=args[1], b=args[2], delta=args[3], backend=backend, normalize=False)
        return float(v @ sol.step + cl * sol.lam + cn * sol.nu)

    return (value(h) - value(-h)) / (2 * h)


@pytest.mark.parametrize("case", CASES)
def test_both_backends_match_central_finite_differences(case: SolverCase) -> None:
    gen = torch.Generator().manual_seed(500 + int(case))
    for i in range(20):
        n = 3 + i % 8
        inst = random_instance(n=n, case=case, generator=gen, margin=0.15)
        v = torch.randn(n, generator=gen, dtype=F64)
        cl, cn = torch.randn(2, generator=gen, dtype=F64)
        dirs = [
            torch.randn(n, generator=gen, dtype=F64),
            torch.randn(n, generator=gen, dtype=F64),
            torch.randn((), generator=gen, dtype=F64),
            0.005 * torch.randn((), generator=gen, dtype=F64),
        ]
        for backend in ("analytic", "dco"):
            _, grads = _solve_and_vjp(backend, inst.g, inst.a, inst.b, inst.delta, v, cl, cn)
            predicted = sum(float((gr * d).sum()) for gr, d in zip(grads, dirs))
            fd = _directional_fd(backend, inst, dirs, v, cl, cn)
            assert abs(predicted - fd) <= 1e-4 * max(abs(fd), 1.0), (backend, i, predicted, fd)


def test_dco_with_normalisation_and_trpo_mode_match_analytic() -> None:
    gen = torch.Generator().manual_seed(6)
    for case in CASES:
        for i in range(20):
            n = 3 + i % 10
            inst = random_instance(n=n, case=case, generator=gen, unit=True)
            g, a = 3.0 * inst.g, 0.2 * inst.a
            v = torch.randn(n, generator=gen, dtype=F64)
            ana, g_ana = _solve_and_vjp("analytic", g, a, inst.b, inst.delta, v, 0.0, 0.0, normalize=True)
            dco, g_dco = _solve_and_vjp("dco", g, a, inst.b, inst.delta, v, 0.0, 0.0, normalize=True)
            assert ana.case == dco.case == case
            assert _rel(dco.step, ana.step) <= 1e-4
            for ga, gd in zip(g_ana, g_dco):
                assert float((gd - ga).norm()) <= 1e-4 * max(float(ga.norm()), 1e-3)
    for i in range(30):
        n = 2 + i % 20
        g = torch.randn(n, generator=gen, dtype=F64, requires_grad=True)
        v = torch.randn(n, generator=gen, dtype=F64)
        ana = solve_cpo(g=g, a=None, b=None, delta=0.02, backend="analytic", normalize=False)
        dco = solve_cpo(g=g, a=None, b=None, delta=0.02, backend="dco", normalize=False)
        assert ana.case == dco.case == SolverCase.UNCONSTRAINED
        assert _rel(dco.step, ana.step) <= 1e-4 and _rel(dco.lam, ana.lam) <= 1e-4
        (ga,) = torch.autograd.grad(v @ ana.step, g)
        (gd,) = torch.autograd.grad(v @ dco.step, g)
        assert _rel(gd, ga) <= 1e-4


def test_dco_degenerate_a_zero_agrees_with_analytic() -> None:
    g = torch.tensor([1.0, -2.0, 0.5, 0.3], dtype=F64)
    a = torch.zeros(4, dtype=F64)
    for b in (-0.3, 0.3):
        ana = solve_cpo(g=g, a=a, b=b, delta=0.02)
        dco = solve_cpo(g=g, a=a, b=b, delta=0.02, backend="dco")
        assert ana.case == dco.case
        assert float((ana.step - dco.step).norm()) <= 1e-6


def test_dco_refuses_non_identity_metrics() -> None:
    g = torch.tensor([1.0, 0.0], dtype=F64)
    a = torch.tensor([0.0, 1.0], dtype=F64)
    for metric in (FisherMetric(hvp=lambda v: 2.0 * v), MatrixMetric(torch.eye(2, dtype=F64))):
        with pytest.raises(ValueError, match="backend 'dco' supports only the identity metric"):
            solve_cpo(g=g, a=a, b=0.1, delta=0.01, backend="dco", metric=metric)


def test_dco_refuses_sizes_it_cannot_compile() -> None:
    n = DCO_MAX_PARAMS + 1
    g = torch.ones(n, dtype=F64)
    with pytest.raises(ValueError, match=f"at most DCO_MAX_PARAMS={DCO_MAX_PARAMS} parameters, got {n}"):
        solve_cpo(g=g, a=g, b=0.1, delta=0.01, backend="dco")
    # the analytic backend has no such limit
    assert solve_cpo(g=g, a=-g, b=0.1, delta=0.01).case == SolverCase.ACTIVE


def test_problems_are_cached_per_size_and_dpp() -> None:
    assert cpo_layer(17) is cpo_layer(17)
    assert cpo_layer(17) is not cpo_layer(18)
    assert trust_region_layer(17) is trust_region_layer(17)


def test_solver_failure_raises_solver_error_and_falls_back_to_analytic() -> None:
    gen = torch.Generator().manual_seed(8)
    inst = random_instance(n=10, case=SolverCase.ACTIVE, generator=gen)
    # SCS cannot cope with a gradient of norm ~1e100 (it reports 'unbounded, inaccurate').
    huge = dict(g=1e100 * inst.g, a=inst.a, b=inst.b, delta=inst.delta, normalize=False)
    with pytest.raises(SolverError, match="cvxpylayers solve failed"):
        solve_cpo(backend="dco", **huge)
    sol, fell_back = solve_cpo_with_fallback(backend="dco", **huge)
    assert fell_back is True
    ref = solve_cpo(backend="analytic", **huge)
    assert sol.case == ref.case == SolverCase.ACTIVE
    torch.testing.assert_close(sol.step, ref.step)
    # a truncated solve returns an infeasible point, which is rejected too
    with pytest.raises(SolverError, match="violates the trust region"):
        solve_dco(g=inst.g, a=inst.a, b=inst.b, delta=inst.delta, solver_args={"max_iters": 5})
    # healthy instances do not fall back
    sol, fell_back = solve_cpo_with_fallback(g=inst.g, a=inst.a, b=inst.b, delta=inst.delta, normalize=False)
    assert fell_back is False and sol.case == SolverCase.ACTIVE
    sol, fell_back = solve_cpo_with_fallback(
        g=inst.g, a=inst.a, b=inst.b, delta=inst.delta, backend="analytic", normalize=False
    )
    assert fell_back is False
    # bad input is not a solver failure: no fallback, a ValueError
    with pytest.raises(ValueError, match="delta must be > 0"):
        solve_cpo_with_fallback(g=inst.g, a=inst.a, b=inst.b, delta=-1.0)
    assert math.isfinite(float(sol.lam))


def test_dco_accepts_float32_and_matches_analytic():
    import torch

    from metacpo.solvers import solve_cpo

    gen = torch.Generator().manual_seed(5)
    g = torch.randn(20, generator=gen, dtype=torch.float32, requires_grad=True)
    a = torch.randn(20, generator=gen, dtype=torch.float32, requires_grad=True)
    b = torch.tensor(0.05, dtype=torch.float32)
    dco = solve_cpo(g=g, a=a, b=b, delta=0.01, backend="dco", normalize=False)
    ana = solve_cpo(g=g, a=a, b=b, delta=0.01, backend="analytic", normalize=False)
    assert dco.step.dtype == torch.float32 and dco.case == ana.case
    torch.testing.assert_close(dco.step, ana.step, rtol=1e-4, atol=1e-6)
    (dco.step.sum()).backward()
    assert g.grad is not None and g.grad.dtype == torch.float32 and torch.isfinite(g.grad).all()
